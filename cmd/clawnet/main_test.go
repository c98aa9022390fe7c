package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	t.Setenv("CLAWNET_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"attach"}, "name exactly one target"},
		{[]string{"attach", "c1", "--pid", "5"}, "name exactly one target"},
		{[]string{"attach", "--pid", "-3"}, "--pid must be a positive process ID"},
		{[]string{"attach", "a", "b"}, "attach takes one container"},
		{[]string{"attach", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"detach"}, "detach takes one agent name"},
		{[]string{"policy", "check"}, "check takes one or more policy files"},
		{[]string{"policy", "explain", "api.github.com"}, "--policy is required"},
		{[]string{"policy", "explain", "--policy", "p", "h:0"}, `bad port in "h:0"`},
		{[]string{"policy", "explain", "--policy", "p"}, "explain takes one HOST[:PORT], or --from PEER"},
		{[]string{"policy", "explain", "--from", "host", ":80"}, "--policy is required"},
		{[]string{"policy", "explain", "--policy", "p", "--from", "agent:a b", ":80"}, `--from: bad agent name "a b"`},
		{[]string{"policy", "explain", "--policy", "p", "--from", "nobody", ":80"}, `--from: bad peer "nobody" (want agent:NAME, host or an IP address)`},
		{[]string{"policy", "explain", "--policy", "p", "--from", "host", "api.github.com:443"}, `bad port "api.github.com:443": with --from, give the agent's port as :PORT`},
		{[]string{"policy", "explain", "--policy", "p", "--from", "host", ":0"}, `bad port ":0"`},
		{[]string{"policy", "explain", "--policy", "p", "--from", "host", ":80", ":81"}, "explain --from takes at most one :PORT"},
		{[]string{"attach", "c1", "-p", "80"}, `publish "80": no agent port`},
		{[]string{"attach", "c1", "-p", "8080:80", "--publish", "8080:80/sctp"}, `publish "8080:80/sctp": protocol must be tcp or udp`},
		{[]string{"publish"}, "publish takes an agent name and one or more ports, [HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp]"},
		{[]string{"publish", "a1"}, "publish takes an agent name and one or more ports"},
		{[]string{"publish", "a1", "localhost:8080:80"}, `host address "localhost" is not an IP address`},
		{[]string{"unpublish", "a1"}, "unpublish takes an agent name and one or more ports"},
		{[]string{"unpublish", "a1", "8080:99999"}, `publish "8080:99999": agent port`},
		{[]string{"run", "-p", "80", "--", "img"}, `publish "80": no agent port`},
		{[]string{"run", "--rm", "--publish=8080:80/sctp", "--", "img"}, `publish "8080:80/sctp": protocol must be tcp or udp`},
	}
	for _, tt := range tests {
		code, _, stderr := runCLI(t, tt.args...)
		if code != exitUsage {
			t.Errorf("clawnet %v exit = %d, want %d (stderr %q)", tt.args, code, exitUsage, stderr)
		}
		if !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("clawnet %v stderr = %q, want one line containing %q", tt.args, stderr, tt.want)
		}
	}
}

func TestNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	code, _, stderr := runCLI(t, "--socket", sock, "ls")
	if code != exitError {
		t.Errorf("ls without a daemon exit = %d, want %d", code, exitError)
	}
	if !strings.Contains(stderr, "clawnetd is not running") || !strings.Contains(stderr, sock) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("ls without a daemon stderr = %q, want one line naming the socket", stderr)
	}
}

func TestPolicyCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("version: v1\nname: good\negress:\n  - cidrs: [198.18.0.0/24]\n    ports: [443]\n"), 0o600)
	os.WriteFile(bad, []byte("version: v1\nname: bad\negres:\n  - cidrs: [198.18.0.0/24]\n"), 0o600)

	code, out, stderr := runCLI(t, "policy", "check", good)
	if code != exitOK || !strings.Contains(out, `good.yaml: ok (policy "good")`) {
		t.Errorf("policy check good = %d %q %q", code, out, stderr)
	}
	code, out, stderr = runCLI(t, "policy", "check", good, bad)
	if code != exitError {
		t.Errorf("policy check good bad exit = %d, want %d", code, exitError)
	}
	if !strings.Contains(stderr, bad+":3:") || !strings.Contains(stderr, `"egres"`) {
		t.Errorf("policy check bad stderr = %q, want the file, line 3 and the key", stderr)
	}
	if !strings.Contains(out, "good.yaml: ok") {
		t.Errorf("policy check still reports the good file: %q", out)
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port uint16
	}{
		{"api.github.com", "api.github.com", 0},
		{"api.github.com:443", "api.github.com", 443},
		{"[2001:db8::1]:53", "2001:db8::1", 53},
		{"2001:db8::1", "2001:db8::1", 0},
	}
	for _, tt := range tests {
		h, p, err := splitHostPort(tt.in)
		if err != nil || h != tt.host || p != tt.port {
			t.Errorf("splitHostPort(%q) = %q, %d, %v, want %q, %d", tt.in, h, p, err, tt.host, tt.port)
		}
	}
}
