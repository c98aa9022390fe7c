package gateway

import (
	"strings"

	"testing"

	"golang.org/x/time/rate"

	"github.com/clawnet/clawnet/policy"
)

// TestBufferBudget: flows reserve their most, full-sized ones take the
// first half of the budget, small ones the rest, and a flow past the
// budget is refused until another closes.
func TestBufferBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Limits.BufferPerAgent = 64 << 20
	a := &Agent{g: &Gateway{cfg: cfg}, flows: map[*flow]struct{}{}}
	full, small := flowCost(policy.ProtoTCP, tcpBufFull), flowCost(policy.ProtoTCP, tcpBufSmall)
	var flows []*flow
	for {
		f := &flow{proto: policy.ProtoTCP}
		if err := a.track(f); err != nil {
			break
		}
		flows = append(flows, f)
		if len(flows) > 10000 {
			t.Fatal("track() never refused a flow: no buffer budget")
		}
	}
	nFull := 0
	for _, f := range flows {
		if f.buf == tcpBufFull {
			nFull++
		}
	}
	limit := int64(cfg.Limits.BufferPerAgent)
	wantFull := int(limit / 2 / full)
	wantSmall := int((limit - int64(wantFull)*full) / small)
	if nFull != wantFull || len(flows)-nFull != wantSmall {
		t.Fatalf("64 MiB budget admitted %d full and %d small flows, want %d and %d", nFull, len(flows)-nFull, wantFull, wantSmall)
	}
	if got := a.bufferReserved(); got > limit {
		t.Fatalf("reserved %d bytes, over the %d budget", got, limit)
	}
	if err := a.track(&flow{proto: policy.ProtoUDP}); err == nil {
		t.Fatal("a UDP flow past the budget was admitted")
	}
	for _, f := range flows[:3] {
		a.untrack(f)
	}
	if err := a.track(&flow{proto: policy.ProtoTCP}); err != nil {
		t.Fatalf("track() after closing three flows = %v", err)
	}
	for _, f := range flows[3:] {
		a.untrack(f)
	}
	if got := a.bufferReserved(); got != small {
		t.Fatalf("after closing all but one small flow, %d bytes reserved, want %d", got, small)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"512MiB", 512 << 20, true},
		{"64KiB", 64 << 10, true},
		{"2GiB", 2 << 30, true},
		{"1048576", 1 << 20, true},
		{"100B", 100, true},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"MiB", 0, false},
		{"1TB", 0, false},
	}
	for _, tt := range tests {
		got, err := parseByteSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestNewFlowRate: past limits.new_flows_per_second (and its burst) a new
// flow is refused; inbound flows do not count against the agent's own.
func TestNewFlowRate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Limits.NewFlowsPerSecond, cfg.Limits.NewFlowsBurst = 0.001, 5
	a := &Agent{g: &Gateway{cfg: cfg}, flows: map[*flow]struct{}{},
		newFlows: rate.NewLimiter(rate.Limit(cfg.Limits.NewFlowsPerSecond), cfg.Limits.NewFlowsBurst)}
	for i := 0; i < 5; i++ {
		if err := a.track(&flow{proto: policy.ProtoTCP}); err != nil {
			t.Fatalf("flow %d within the burst: %v", i, err)
		}
	}
	err := a.track(&flow{proto: policy.ProtoUDP})
	if err == nil || !strings.Contains(err.Error(), "limits.new_flows_per_second") {
		t.Fatalf("flow past the burst: %v, want a refusal naming the limit", err)
	}
	if err := a.track(&flow{proto: policy.ProtoTCP, in: true}); err != nil {
		t.Fatalf("an inbound flow was refused by the agent's own rate: %v", err)
	}
}

// TestGatewayFlowLimit: limits.flows bounds live flows over all agents;
// a closed flow frees its place.
func TestGatewayFlowLimit(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Limits.Flows = 3
	g := &Gateway{cfg: cfg}
	a := &Agent{g: g, flows: map[*flow]struct{}{}}
	b := &Agent{g: g, flows: map[*flow]struct{}{}}
	f1, f2 := &flow{proto: policy.ProtoTCP}, &flow{proto: policy.ProtoTCP}
	for _, tr := range []struct {
		a *Agent
		f *flow
	}{{a, f1}, {b, f2}, {b, &flow{proto: policy.ProtoUDP}}} {
		if err := tr.a.track(tr.f); err != nil {
			t.Fatalf("track within limits.flows: %v", err)
		}
	}
	if err := a.track(&flow{proto: policy.ProtoTCP}); err == nil || !strings.Contains(err.Error(), "limits.flows") {
		t.Fatalf("a fourth flow = %v, want a refusal naming limits.flows", err)
	}
	a.untrack(f1)
	if err := b.track(&flow{proto: policy.ProtoTCP}); err != nil {
		t.Fatalf("after a close: %v", err)
	}
}

func TestValidIfName(t *testing.T) {
	for name, want := range map[string]bool{
		"eth0": true, "clawnet0": true, "net1": true, "a23456789012345": true,
		"": false, "a234567890123456": false, "lo": false, ".": false, "..": false,
		"eth/0": false, "eth:0": false, "eth 0": false, "eth\t0": false,
	} {
		if got := validIfName(name); got != want {
			t.Errorf("validIfName(%q) = %v, want %v", name, got, want)
		}
	}
}
