package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/gateway/control"
)

// TestRunAgentConfig: clawnet run --agent-config writes the generated policy
// into the policy directory, named after the agent, and reloads; it uses a
// file that already says the same, and refuses, with the difference, one
// that says something else; it fails when the daemon did not load it.
func TestRunAgentConfig(t *testing.T) {
	d := startFakeDaemon(t)
	d.answer = control.ReloadResult{Policies: []string{"assistant", "default"}}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "openclaw.json")
	if err := os.WriteFile(cfg, []byte(sampleOpenClaw), 0o600); err != nil {
		t.Fatal(err)
	}
	pdir := filepath.Join(dir, "policies")
	os.Mkdir(pdir, 0o755)
	prepare := func(o container.RunOptions) (string, string, error) {
		var out, errb bytes.Buffer
		e := &env{stdout: &out, stderr: &errb}
		name, err := agentConfigPolicy(context.Background(), e, o)
		return name, errb.String(), err
	}
	o := container.RunOptions{Name: "assistant", AgentConfig: []string{cfg}, PolicyDir: pdir}

	name, stderr, err := prepare(o)
	file := filepath.Join(pdir, "assistant.yaml")
	if err != nil || name != "assistant" || !strings.Contains(stderr, "wrote "+file) {
		t.Fatalf("first run: %q, %v; stderr %q", name, err, stderr)
	}
	code, want, _ := runCLI(t, "policy", "generate", "--name", "assistant", cfg)
	got, _ := os.ReadFile(file)
	if code != exitOK || string(got) != want {
		t.Errorf("%s is not what policy generate writes:\n%s\nwant:\n%s", file, got, want)
	}
	if strings.Contains(string(got), "SECRET") {
		t.Errorf("a secret reached the policy:\n%s", got)
	}
	if reqs := d.requests(); len(reqs) != 1 || reqs[0] != "POST /v1/reload" {
		t.Errorf("daemon was asked %q, want one reload", reqs)
	}

	if name, stderr, err = prepare(o); err != nil || name != "assistant" || !strings.Contains(stderr, "up to date") {
		t.Errorf("second run: %q, %v; stderr %q", name, err, stderr)
	}

	// A policy of that name that says something else is never overwritten.
	edited := strings.Replace(string(got), "  - openai\n", "", 1)
	os.WriteFile(file, []byte(edited), 0o644)
	if _, stderr, err = prepare(o); err == nil || !strings.Contains(err.Error(), "already exists and differs") || !strings.Contains(stderr, "+  - openai") {
		t.Errorf("edited file: %v; stderr %q, want a refusal with the diff", err, stderr)
	}
	if b, _ := os.ReadFile(file); string(b) != edited {
		t.Errorf("the edited policy was overwritten")
	}

	// --policy names the policy; a daemon that did not load it (another
	// policy_dir) is an error.
	o.Policy = "other"
	if _, _, err = prepare(o); err == nil || !strings.Contains(err.Error(), "--policy-dir") {
		t.Errorf("policy the daemon did not load: %v, want an error naming --policy-dir", err)
	}
	if _, err := os.Stat(filepath.Join(pdir, "other.yaml")); err != nil {
		t.Errorf("--policy other: %v", err)
	}

	for _, bad := range []container.RunOptions{
		{AgentConfig: []string{cfg}, PolicyDir: pdir},                // no name
		{Name: "Upper", AgentConfig: []string{cfg}, PolicyDir: pdir}, // not a policy name
		{Name: "x", AgentConfig: []string{cfg + ".missing"}, PolicyDir: pdir},
	} {
		if _, _, err := prepare(bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if code, _, stderr := runCLI(t, "run", "--policy-dir", pdir, "--", "img"); code != exitUsage || !strings.Contains(stderr, "--policy-dir goes with --agent-config") {
		t.Errorf("run --policy-dir alone = %d %q, want a usage error", code, stderr)
	}
}
