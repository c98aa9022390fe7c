package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

func TestExplainInboundCLI(t *testing.T) {
	d := startFakeDaemon(t)
	d.answer = control.Explanation{Policy: "gw", Proto: "tcp", Port: 18789, From: "agent:cli",
		Verdict: "allow", Rule: "gw.yaml:5 ingress[0]", Reason: "agent cli may connect to tcp 18789"}
	code, out, stderr := runCLI(t, "policy", "explain", "--policy", "gw", "--from", "agent:cli", ":18789")
	if want := "gw tcp from agent:cli to :18789: allow by gw.yaml:5 ingress[0]: agent cli may connect to tcp 18789\n"; code != exitOK || out != want {
		t.Errorf("explain --from agent:cli :18789 = %d %q %q; want %q", code, out, stderr, want)
	}
	d.answer = control.Explanation{Policy: "gw", Proto: "udp", Verdict: "deny", Rule: "default", Reason: "no ingress rule allows remote 192.0.2.7"}
	code, out, _ = runCLI(t, "policy", "explain", "--policy", "gw", "--proto", "udp", "--from", "::ffff:192.0.2.7")
	if want := "gw udp from remote:192.0.2.7 to any port: deny by default: no ingress rule allows remote 192.0.2.7\n"; code != exitOK || out != want {
		t.Errorf("explain --from an address, no port = %d %q; want %q", code, out, want)
	}
	runCLI(t, "policy", "explain", "--policy", "gw", "--from", "host", "8080")
	want := []string{
		"GET /v1/explain?from=agent%3Acli&policy=gw&port=18789&proto=tcp",
		"GET /v1/explain?from=remote%3A192.0.2.7&policy=gw&port=0&proto=udp",
		"GET /v1/explain?from=host&policy=gw&port=8080&proto=tcp",
	}
	if got := d.requests(); !slices.Equal(got, want) {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestPolicyCheckUnattached: check warns about agents a file names that
// are not attached, when a daemon answers, and still succeeds; with no
// daemon it says nothing about agents.
func TestPolicyCheckUnattached(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gw.yaml")
	os.WriteFile(file, []byte(`version: v1
name: gw
egress:
  - agents: [db]
    ports: [5432]
ingress:
  - ports: [18789]
    agents: [cli, db, gone]
    host: true
`), 0o600)
	t.Setenv(control.SocketEnv, filepath.Join(t.TempDir(), "none.sock"))
	code, out, stderr := runCLI(t, "policy", "check", file)
	if code != exitOK || !strings.Contains(out, "ok") || stderr != "" {
		t.Errorf("policy check with no daemon = %d %q %q; want ok and nothing about agents", code, out, stderr)
	}

	d := startFakeDaemon(t)
	d.agents = []control.Agent{{Name: "cli"}}
	code, out, stderr = runCLI(t, "policy", "check", file)
	want := file + `:4: warning: egress names agent "db", which is not attached; the rule applies once an agent of that name is` + "\n" +
		file + `:8: warning: ingress names agent "gone", which is not attached; the rule applies once an agent of that name is` + "\n"
	if code != exitOK || !strings.Contains(out, `gw.yaml: ok (policy "gw")`) || stderr != want {
		t.Errorf("policy check with cli attached = %d %q\n%s\nwant exit 0 and:\n%s", code, out, stderr, want)
	}
}
