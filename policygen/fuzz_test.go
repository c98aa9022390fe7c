package policygen

import (
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
