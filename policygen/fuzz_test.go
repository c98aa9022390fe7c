package policygen

import (
	"strings"
	"testing"

	"github.com/clawnet/clawnet/policy"
)

// FuzzRead: no configuration makes Read panic, and whatever it reads,
// Generate writes a policy clawnet takes.
func FuzzRead(f *testing.F) {
	f.Add("openclaw.json", `{agents: {defaults: {model: {primary: "anthropic/x", fallbacks: ["openai/y"]}}}, channels: {telegram: {accounts: {a: {webhookUrl: "https://x"}}}}}`)
	f.Add(".mcp.json", `{"mcpServers": {"a": {"command": "npx", "args": ["-y", "mcp-remote", "https://h.example/sse"]}, "b": {"url": "http://[::1]:80"}}}`)
	f.Add("config.toml", "[mcp_servers.a]\ncommand = \"docker\"\nargs = [\"run\", \"ghcr.io/x/y\"]\n")
	f.Add(".vscode/mcp.json", `{"servers": {"x\ny": {"type": "http", "url": "https://10.0.0.1:8443/mcp"}}}`)
	f.Fuzz(func(t *testing.T, name, data string) {
		r, err := Read(name, []byte(data), Options{})
		if err != nil {
			return
		}
		out := Generate(r, GenerateOptions{ApproveProject: true, Name: "fuzz"})
		pf, err := policy.Parse("gen.yaml", out)
		if err != nil {
			t.Fatalf("generated policy refused: %v\n%s", err, out)
		}
		if _, err := policy.Compile(pf, policy.Options{}); err != nil {
			t.Fatalf("generated policy refused: %v\n%s", err, out)
		}
	})
}

// FuzzApprove: no policy file makes Approve panic; what it writes is a
// policy clawnet takes, with no pending rule left after --all and every
// one of them in egress.
func FuzzApprove(f *testing.F) {
	f.Add("version: v1\nname: x\n# c\negress:\n  - domains: [a.example]\n    ports: [443]\npending:\n  # p\n  - domains: [b.example]\n    ports: [443]\n    from: \".mcp.json: k\"\n    sha256: " + sha64 + "\n")
	f.Add("version: v1\nname: x\npending:\n  - cidrs: [\"10.0.0.1\"]\n    ports: [80]\n    from: f\n    sha256: " + sha64 + "\negress:\n")
	f.Add("version: v1\nname: x\negress: []\npending: [{domains: [c.example], ports: [1], from: f, sha256: " + sha64 + "}]\n")
	f.Fuzz(func(t *testing.T, data string) {
		in, err := policy.Parse("p.yaml", []byte(data))
		if err != nil {
			return
		}
		out, moved, err := Approve("p.yaml", []byte(data), nil, true)
		if err != nil {
			if len(in.Pending) > 0 && !strings.Contains(err.Error(), "would be refused") {
				t.Fatalf("Approve(--all) of a valid file with %d pending rules = %v", len(in.Pending), err)
			}
			return
		}
		f, err := policy.Parse("p.yaml", out)
		if err != nil {
			t.Fatalf("approved file refused: %v\n%s", err, out)
		}
		if len(f.Pending) != 0 || len(moved) != len(in.Pending) || len(f.Egress) != len(in.Egress)+len(in.Pending) {
			t.Fatalf("Approve(--all): %d pending left, %d moved, egress %d -> %d\n%s", len(f.Pending), len(moved), len(in.Egress), len(f.Egress), out)
		}
	})
}

const sha64 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
