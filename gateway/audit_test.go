package gateway

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/clawnet/clawnet/policy"
)

// TestAuditLineFields: every field shared/DESIGN.md promises on a flow
// decision is on each event's line, and a close adds its counts.
func TestAuditLineFields(t *testing.T) {
	a := &Agent{name: "alice", policy: "coder"}
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), netip.MustParseAddrPort("198.18.0.2:443"), 0)
	f.name, f.sni = "api.example", "api.example"
	allow := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "api.example on tcp port 443"}
	deny := policy.Decision{Rule: "default", Reason: "no rule allows tcp to 198.18.0.2:443"}
	common := []string{"time", "kind", "event", "agent", "policy", "proto", "src", "dst", "name", "sni", "verdict", "rule", "reason"}
	tests := []struct {
		ev    Event
		d     policy.Decision
		err   error
		extra []string
	}{
		{EventOpen, allow, nil, nil},
		{EventClose, allow, nil, []string{"bytes_up", "bytes_down", "duration_ms"}},
		{EventDeny, deny, nil, nil},
		{EventFail, allow, errors.New("connect: connection refused"), []string{"error"}},
	}
	for _, tt := range tests {
		ev := f.line(tt.ev, tt.d, tt.err)
		ev.Agent, ev.Policy = a.name, a.policy
		var buf syncBuffer
		NewAudit(&buf).Log(ev)
		var m map[string]any
		if err := json.Unmarshal(buf.b.Bytes(), &m); err != nil {
			t.Fatalf("%s line %q: %v", tt.ev, buf.b.String(), err)
		}
		for _, k := range append(append([]string(nil), common...), tt.extra...) {
			if v, ok := m[k]; !ok || v == "" {
				t.Errorf("%s line lacks %q: %s", tt.ev, k, buf.b.String())
			}
		}
		if m["kind"] != "flow" || m["event"] != string(tt.ev) || m["verdict"] != tt.d.Verdict.String() {
			t.Errorf("%s line = %s", tt.ev, buf.b.String())
		}
	}
}
