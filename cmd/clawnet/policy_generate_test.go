package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sampleOpenClaw = `{
  // a small OpenClaw config
  agents: { defaults: { model: { primary: "anthropic/claude-opus-4-6", fallbacks: ["openai/gpt-5.2"] } } },
  channels: { telegram: { botToken: "SECRET-token" }, pigeon: {} },
}
`

func TestPolicyGenerate(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "openclaw.json")
	os.WriteFile(cfg, []byte(sampleOpenClaw), 0o600)
	out := filepath.Join(dir, "agent.yaml")

	code, stdout, stderr := runCLI(t, "policy", "generate", cfg)
	if code != exitOK || !strings.Contains(stdout, "  - anthropic\n") || !strings.Contains(stdout, "domains: [api.telegram.org]") {
		t.Fatalf("generate = %d %q %q", code, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "SECRET") {
		t.Errorf("a secret reached the output: %s %s", stdout, stderr)
	}
	if want := "warning: " + cfg + ": channels.pigeon: unknown channel"; !strings.HasPrefix(stderr, want) {
		t.Errorf("generate stderr = %q, want a warning naming the key", stderr)
	}

	code, stdout, _ = runCLI(t, "policy", "generate", "--name", "claw", "--out", out, cfg)
	if code != exitOK || stdout != "wrote "+out+"\n" {
		t.Fatalf("generate --out = %d %q", code, stdout)
	}
	code, stdout, stderr = runCLI(t, "policy", "check", out)
	if code != exitOK || !strings.Contains(stdout, `ok (policy "claw")`) {
		t.Errorf("policy check of the generated file = %d %q %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "policy", "explain", "--file", out, "api.telegram.org:443")
	if code != exitOK || !strings.HasPrefix(stdout, "claw tcp api.telegram.org:443: allow by agent.yaml:") || !strings.Contains(stdout, "(from: "+cfg+": channels.telegram (long polling))") {
		t.Errorf("explain --file = %d %q, want allow with where the rule came from", code, stdout)
	}

	code, stdout, stderr = runCLI(t, "policy", "generate", "--name", "claw", "--check", out, cfg)
	if code != exitOK || stdout != out+": up to date\n" {
		t.Errorf("generate --check (fresh) = %d %q %q", code, stdout, stderr)
	}
	// The agent gains a Discord channel: the policy on disk is stale.
	os.WriteFile(cfg, []byte(strings.Replace(sampleOpenClaw, "pigeon: {}", "discord: {token: 'x'}", 1)), 0o600)
	code, stdout, stderr = runCLI(t, "policy", "generate", "--name", "claw", "--check", out, cfg)
	if code != exitStale || !strings.Contains(stderr, "+  - domains: [cdn.discordapp.com, discord.com, gateway.discord.gg]") || !strings.Contains(stderr, "is out of date") {
		t.Errorf("generate --check (stale) = %d %q %q, want exit %d and the diff", code, stdout, stderr, exitStale)
	}
	code, stdout, _ = runCLI(t, "policy", "generate", "--name", "claw", "--diff", out, cfg)
	if code != exitOK || !strings.HasPrefix(stdout, "--- "+out+"\n+++ generated\n@@") || !strings.Contains(stdout, "+    from: \""+cfg+": channels.discord (gateway and REST)\"") {
		t.Errorf("generate --diff = %d %q", code, stdout)
	}

	bad := filepath.Join(dir, "bad", ".mcp.json")
	os.MkdirAll(filepath.Dir(bad), 0o700)
	os.WriteFile(bad, []byte("{\n  \"mcpServers\": {\n    \"a\": {\"url\": 5}\n  }\n}\n"), 0o600)
	code, _, stderr = runCLI(t, "policy", "generate", bad)
	if code != exitError || stderr != "clawnet: "+bad+":3: mcpServers.a.url: want a string\n" {
		t.Errorf("generate of a bad file = %d %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "policy", "generate")
	if code != exitUsage || !strings.Contains(stderr, "generate takes one or more agent configuration files") {
		t.Errorf("generate with no file = %d %q", code, stderr)
	}
}

// TestPolicyCheckEvery: check prints every problem of a file, one a line.
func TestPolicyCheckEvery(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("version: v1\nname: bad\negres: []\negress:\n  - domains: [\"*.com\"]\n    ports: [443]\n  - cidrs: [10.0.0.0/8]\n    ports: [0]\n"), 0o600)
	code, _, stderr := runCLI(t, "policy", "check", bad)
	want := bad + `:3: unknown key "egres" (did you mean "egress"?)` + "\n" +
		bad + `:5: domain "*.com": a wildcard directly over a top-level domain is refused` + "\n" +
		bad + `:8: bad port "0" (want 1-65535)` + "\n" +
		"clawnet: 1 of 1 policy files refused\n"
	if code != exitError || stderr != want {
		t.Errorf("policy check = %d\n%s\nwant:\n%s", code, stderr, want)
	}
}

// TestExplainFile: explain --file answers offline, outbound and inbound.
func TestExplainFile(t *testing.T) {
	t.Setenv("CLAWNET_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	file := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(file, []byte("version: v1\nname: gw\npresets: [anthropic]\ningress:\n  - ports: [18789]\n    host: true\n"), 0o600)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"api.anthropic.com:443"}, "gw tcp api.anthropic.com:443: allow by gw.yaml:3 preset anthropic: "},
		{[]string{"evil.example"}, "gw tcp evil.example: deny by default: dns query for evil.example: deny by default"},
		{[]string{"--proto", "udp", "169.254.169.254:53"}, "gw udp 169.254.169.254:53: deny by builtin:metadata: "},
		{[]string{"--from", "host", ":18789"}, "gw tcp from host to :18789: allow by gw.yaml:5 ingress[0]: "},
	}
	for _, tt := range tests {
		code, out, stderr := runCLI(t, append([]string{"policy", "explain", "--file", file}, tt.args...)...)
		if code != exitOK || !strings.HasPrefix(out, tt.want) {
			t.Errorf("explain --file %v = %d %q %q, want %q...", tt.args, code, out, stderr, tt.want)
		}
	}
	code, _, stderr := runCLI(t, "policy", "explain", "--file", file, "--policy", "gw", "x")
	if code != exitUsage || !strings.Contains(stderr, "not both") {
		t.Errorf("explain --file --policy = %d %q", code, stderr)
	}
}
