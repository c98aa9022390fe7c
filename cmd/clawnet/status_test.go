package main

import (
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

// TestReloadCLI: clawnet reload prints one line per agent that lost live
// flows to the reload, and nothing more when none did.
func TestReloadCLI(t *testing.T) {
	d := startFakeDaemon(t)
	d.answer = control.ReloadResult{Policies: []string{"coder", "default"}}
	if code, out, errOut := runCLI(t, "reload"); code != 0 || out != "policies reloaded\n" || errOut != "" {
		t.Fatalf("reload = %d %q %q", code, out, errOut)
	}
	d.answer = control.ReloadResult{Policies: []string{"coder"}, Changed: []string{"coder"},
		Revoked: map[string]int{"web": 1, "coder-2": 3}}
	code, out, _ := runCLI(t, "reload")
	want := "policies reloaded\nagent coder-2: 3 live flows revoked\nagent web: 1 live flow revoked\n"
	if code != 0 || out != want {
		t.Fatalf("reload = %d %q, want %q", code, out, want)
	}
}
