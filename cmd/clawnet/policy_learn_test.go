package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPolicyLearn(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "audit.log")
	now := time.Now().UTC()
	line := func(ago time.Duration, agent, sni, verdict string) string {
		return `{"time":"` + now.Add(-ago).Format(time.RFC3339Nano) + `","kind":"flow","event":"open","agent":"` + agent +
			`","policy":"p","proto":"tcp","dst":"93.184.216.34:443","name":"` + sni + `","sni":"` + sni + `","verdict":"` + verdict + `","rule":"default"}` + "\n"
	}
	os.WriteFile(log, []byte(
		line(48*time.Hour, "coder", "old.example.org", "would_deny")+
			line(time.Hour, "coder", "api.stripe.com", "would_deny")+
			line(time.Minute, "coder", "api.stripe.com", "deny")+
			line(time.Minute, "other", "evil.example", "would_deny")), 0o600)

	code, out, stderr := runCLI(t, "policy", "learn", "coder", "--audit", log, "--since", "24h")
	if code != exitOK || !strings.Contains(out, "      - api.stripe.com  # 2 flows, first ") || strings.Contains(out, "old.example.org") || strings.Contains(out, "evil") {
		t.Errorf("learn coder --since 24h = %d %q %q", code, out, stderr)
	}
	prop := filepath.Join(dir, "prop.yaml")
	code, out, _ = runCLI(t, "policy", "learn", "coder", "--audit", log, "--out", prop)
	data, _ := os.ReadFile(prop)
	if code != exitOK || out != "wrote "+prop+"\n" || !strings.Contains(string(data), "old.example.org") {
		t.Errorf("learn --out = %d %q, file %q", code, out, data)
	}
	code, _, stderr = runCLI(t, "policy", "learn", "nobody", "--audit", log)
	if code != exitOK || !strings.Contains(stderr, "has no line of agent nobody") {
		t.Errorf("learn nobody = %d %q, want a warning", code, stderr)
	}
	for _, args := range [][]string{
		{"policy", "learn", "coder"},
		{"policy", "learn", "--audit", log},
		{"policy", "learn", "bad name", "--audit", log},
		{"policy", "learn", "coder", "--audit", log, "--since", "-1h"},
	} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage {
			t.Errorf("clawnet %v = %d %q, want a usage error", args, code, stderr)
		}
	}
}
