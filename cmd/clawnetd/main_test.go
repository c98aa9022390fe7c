package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
)

// syncBuffer is stderr for a daemon whose goroutines log while the test
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runDaemon runs clawnetd as main does and returns its exit code and stderr.
func runDaemon(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	code := exitCode(run(context.Background(), args, &stderr), &stderr)
	return code, stderr.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--config"}, "flag needs an argument: -config"},
		{[]string{"--log-format", "xml"}, `--log-format must be text or json, not "xml"`},
		{[]string{"--log-level", "loud"}, `--log-level must be trace, debug, info, warn, error or off, not "loud"`},
		{[]string{"serve"}, `unexpected argument "serve"`},
	}
	for _, tt := range tests {
		code, stderr := runDaemon(t, tt.args...)
		if code != exitUsage {
			t.Errorf("clawnetd %v exit = %d, want %d (stderr %q)", tt.args, code, exitUsage, stderr)
		}
		if !strings.HasPrefix(stderr, "clawnetd: ") || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("clawnetd %v stderr = %q, want one line containing %q", tt.args, stderr, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir, policies := t.TempDir(), t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	unknown := writeFile(t, dir, "unknown.yaml", "version: v1\npolicy_dir: "+policies+"\nsockett: /x\n")
	badValue := writeFile(t, dir, "bad.yaml", "version: v1\ntimeouts:\n  dial: soon\n")
	noPolicy := writeFile(t, dir, "nopolicy.yaml", "version: v1\npolicy_dir: "+policies+"\ndefault_policy: coder\n")
	tests := []struct {
		path string
		want []string
	}{
		{missing, []string{missing, "no such file"}},
		{unknown, []string{unknown + ":3:", `unknown key "sockett"`}},
		{badValue, []string{badValue + ":3:", `bad duration "soon"`}},
		{noPolicy, []string{noPolicy + ":", `default_policy "coder" is not defined`}},
	}
	for _, tt := range tests {
		code, stderr := runDaemon(t, "--config", tt.path, "--log-level", "off")
		if code != exitError {
			t.Errorf("clawnetd --config %s exit = %d, want %d (stderr %q)", tt.path, code, exitError, stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr, w) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("clawnetd --config %s stderr = %q, want one line containing %q", tt.path, stderr, w)
			}
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, stderr := runDaemon(t, "--help")
	if code != exitOK || !strings.HasPrefix(stderr, usage+"\n") || !strings.Contains(stderr, "-log-format") {
		t.Errorf("clawnetd --help = %d, %q; want 0 and the usage", code, stderr)
	}
	code, stderr = runDaemon(t, "--version")
	if code != exitOK || !strings.HasPrefix(stderr, "clawnetd ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("clawnetd --version = %d, %q; want 0 and one line", code, stderr)
	}
}

func TestSocketPrecedence(t *testing.T) {
	cfgPath := writeFile(t, t.TempDir(), "c.yaml", "version: v1\nsocket: /from/file.sock\n")
	tests := []struct {
		env, flag, want string
	}{
		{"", "", "/from/file.sock"},
		{"/from/env.sock", "", "/from/env.sock"},
		{"/from/env.sock", "/from/flag.sock", "/from/flag.sock"},
	}
	for _, tt := range tests {
		t.Setenv(control.SocketEnv, tt.env)
		cfg, err := loadConfig(&flags{config: cfgPath, socket: tt.flag})
		if err != nil || cfg.Socket != tt.want {
			t.Errorf("loadConfig(env %q, --socket %q) = %v, %v; want socket %s", tt.env, tt.flag, cfg.Socket, err, tt.want)
		}
	}
}

// TestServeAndStop runs the daemon on a config of its own until its context
// ends: it must listen on the socket, log its start, and return nil having
// removed the socket.
func TestServeAndStop(t *testing.T) {
	dir := t.TempDir()
	// No engine answers here: the Watcher retries until stopped, and never
	// touches a real engine's containers.
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(dir, "no-engine.sock"))
	t.Setenv(control.SocketEnv, "")
	sock := filepath.Join(dir, "clawnet.sock")
	cfgPath := writeFile(t, dir, "clawnetd.yaml", "version: v1\npolicy_dir: "+t.TempDir()+
		"\naudit_log: "+filepath.Join(dir, "audit.log")+"\nstate_dir: "+filepath.Join(dir, "state")+
		"\ndns:\n  upstream: [\"127.0.0.1:9\"]\n")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"--config", cfgPath, "--socket", sock, "--log-format", "json"}, &stderr)
	}()
	waitFor(t, errc, func() bool { return strings.Contains(stderr.String(), `"@message":"clawnetd started"`) })
	if c, err := net.Dial("unix", sock); err != nil {
		t.Errorf("dial %s: %v", sock, err)
	} else {
		c.Close()
	}
	if os.Geteuid() == 0 {
		st, err := control.NewClient(sock).Status(ctx)
		if err != nil || st.Agents != 0 || len(st.Policies) == 0 {
			t.Errorf("status = %+v, %v; want no agents and the policies", st, err)
		}
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not return within 10s of its context ending")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket %s still exists after stop (%v)", sock, err)
	}
}

// waitFor polls cond until it holds, failing the test if run returned
// first or 10s pass.
func waitFor(t *testing.T, errc <-chan error, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		select {
		case err := <-errc:
			t.Fatalf("run returned %v before it was ready", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon not ready within 10s")
		}
	}
}
