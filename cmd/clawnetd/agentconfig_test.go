package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/gateway"
)

const labelConfig = `{
  agents: { defaults: { model: { primary: "anthropic/claude-opus-4-6" } } },
  channels: { telegram: { botToken: "SECRET-token" } },
}
`

// TestConfigPolicy: the policy of a container labelled with its agent's
// configuration is generated into policy_dir as AGENT.yaml and loaded; a
// file of that name that says the same is used, one that says something
// else is never overwritten.
func TestConfigPolicy(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.DefaultConfig()
	cfg.PolicyDir = filepath.Join(dir, "policies")
	os.Mkdir(cfg.PolicyDir, 0o755)
	g, err := gateway.New(gateway.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	conf := filepath.Join(dir, "openclaw.json")
	os.WriteFile(conf, []byte(labelConfig), 0o600)
	att := &attacher{g: g, policyDir: cfg.PolicyDir}
	ctx := context.Background()

	name, err := att.configPolicy(ctx, "claw", []string{conf})
	if err != nil || name != "claw" || !slices.Contains(g.Policies(), "claw") {
		t.Fatalf("configPolicy(claw) = %q, %v; policies %v", name, err, g.Policies())
	}
	file := filepath.Join(cfg.PolicyDir, "claw.yaml")
	body, _ := os.ReadFile(file)
	if !strings.Contains(string(body), "domains: [api.telegram.org]") || strings.Contains(string(body), "SECRET") {
		t.Errorf("generated %s:\n%s", file, body)
	}
	if name, err := att.configPolicy(ctx, "claw", []string{conf}); err != nil || name != "claw" {
		t.Errorf("configPolicy(claw) again = %q, %v; want the same file used", name, err)
	}
	edited := strings.Replace(string(body), "api.telegram.org", "api.telegram.org, evil.example", 1)
	os.WriteFile(file, []byte(edited), 0o644)
	if _, err := att.configPolicy(ctx, "claw", []string{conf}); err == nil || !strings.Contains(err.Error(), "already exists and says something else") {
		t.Errorf("configPolicy over an edited file = %v; want a refusal", err)
	}
	if got, _ := os.ReadFile(file); string(got) != edited {
		t.Error("configPolicy overwrote an edited file")
	}
	if _, err := att.configPolicy(ctx, "Claw", []string{conf}); err == nil || !strings.Contains(err.Error(), `the agent's name "Claw" cannot name a policy`) {
		t.Errorf("configPolicy(Claw) = %v", err)
	}
	if _, err := att.configPolicy(ctx, "other", []string{filepath.Join(dir, "missing.json")}); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Errorf("configPolicy(missing file) = %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.PolicyDir, "other.yaml")); err == nil {
		t.Error("a failed generation left a file")
	}
}
