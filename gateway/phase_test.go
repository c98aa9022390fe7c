package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// phaseTestPolicy opens 198.18.0.3:7 for good and 198.18.0.2:7 in the
// setup phase only.
const phaseTestPolicy = `version: v1
name: dnstest
egress:
  - cidrs: [198.18.0.3/32]
    ports: [7]
setup:
  - cidrs: [198.18.0.2/32]
    ports: [7]
    from: "test: launcher download"
`

// newPhaseTest is a revoke test under phaseTestPolicy, its agent started
// as an attach starts it.
func newPhaseTest(t *testing.T, up upstreamEnd, s attachSpec) *flowTest {
	t.Helper()
	ft := newRevokeTest(t, up.serve)
	writePolicy(t, ft.a.g, "dnstest.yaml", phaseTestPolicy)
	reload(t, ft.a.g)
	ft.a.startPhase(s)
	return ft
}

// TestPhaseRun: in the setup phase a setup rule allows; moving to run
// resets the live flow it allowed, with a revoke line naming the setup
// rule, refuses a new one, and leaves the egress flow alone.
func TestPhaseRun(t *testing.T) {
	dnstest.LeakCheck(t)
	up := make(upstreamEnd, 2)
	ft := newPhaseTest(t, up, attachSpec{})
	g := ft.a.g
	if got := ft.a.phase(); got != policy.PhaseSetup {
		t.Fatalf("phase at attach = %s, want setup", got)
	}
	setupDst := netip.AddrPortFrom(flowTestServer, 7)
	runDst := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.3"), 7)
	c := ft.live(t, setupDst, "setup")
	other := ft.live(t, runDst, "before")

	if _, err := g.SetPhase("flowtest", "setup"); err == nil || !errors.Is(err, ErrBadRequest) {
		t.Errorf("SetPhase(setup) = %v; want a bad request", err)
	}
	res, err := g.SetPhase("flowtest", "run")
	if err != nil || res.Revoked != 1 || res.Phase != policy.PhaseRun {
		t.Fatalf("SetPhase(run) = %+v, %v; want 1 revoked, phase run", res, err)
	}
	expectReset(t, c)
	if err := up.wait(t); errors.Is(err, io.EOF) {
		t.Errorf("the upstream saw an orderly close (%v), want a reset", err)
	}
	e := ft.waitEvent(t, EventRevoke, setupDst)
	if e.Verdict != "deny" || e.Rule != policy.RuleDefault || !strings.Contains(e.Reason, "the setup phase is over") || !strings.Contains(e.Reason, "dnstest.yaml:7 setup[0]") {
		t.Errorf("revoke line = %+v; want the run phase's rule and the setup rule that had allowed it", e)
	}
	exchange(t, other, "after")
	if c, err := ft.dial(t, setupDst); err == nil {
		c.Close()
		t.Fatal("a new flow to the setup-only address connected in phase run")
	}
	// Again: nothing left to revoke, still run.
	if res, err := g.SetPhase("flowtest", "run"); err != nil || res.Revoked != 0 || res.Phase != policy.PhaseRun {
		t.Errorf("SetPhase(run) again = %+v, %v", res, err)
	}
	if _, err := g.SetPhase("nobody", "run"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPhase(nobody) = %v; want not found", err)
	}
}

// TestPhaseTimeout: the daemon's timer ends the setup phase by itself; a
// recorded phase run, or a timeout already past, never opens setup.
func TestPhaseTimeout(t *testing.T) {
	dnstest.LeakCheck(t)
	up := make(upstreamEnd, 2)
	ft := newPhaseTest(t, up, attachSpec{setupTimeout: 300 * time.Millisecond})
	if ft.a.phase() != policy.PhaseSetup || ft.a.setupDeadline().IsZero() {
		t.Fatalf("phase %s, setup until %v; want setup with a deadline", ft.a.phase(), ft.a.setupDeadline())
	}
	setupDst := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, setupDst, "setup")
	expectResetWithin(t, c, 2*time.Second)
	if e := ft.waitEvent(t, EventRevoke, setupDst); !strings.Contains(e.Reason, "setup timeout") {
		t.Errorf("revoke line = %+v; want the timeout named", e)
	}
	if ft.a.phase() != policy.PhaseRun || !ft.a.setupDeadline().IsZero() {
		t.Errorf("after the timeout: phase %s, setup until %v", ft.a.phase(), ft.a.setupDeadline())
	}

	for _, s := range []attachSpec{
		{phase: policy.PhaseRun},
		{phase: policy.PhaseSetup, setupUntil: time.Now().Add(-time.Second)},
	} {
		b := &Agent{g: ft.a.g, policy: "dnstest"}
		b.startPhase(s)
		if b.phase() != policy.PhaseRun {
			t.Errorf("startPhase(%+v) = %s; want run", s, b.phase())
		}
	}
}

// expectResetWithin is expectReset with a longer wait.
func expectResetWithin(t *testing.T, c interface {
	SetReadDeadline(time.Time) error
	Read([]byte) (int, error)
}, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("agent's read = %d, %v; want a reset within %v", n, err, d)
	}
}

// TestPhaseRecorded: the state file keeps an agent's phase, and a
// container agent's by container ID (with the end of a setup timeout),
// which a restarted gateway reads back for the container's next attach; a
// stop or removal keeps it (its agent cannot reopen setup by restarting
// the container), a user's detach forgets it.
func TestPhaseRecorded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{state: st, agents: map[string]*Agent{}}
	byNetns := &Agent{g: g, name: "n"}
	byNetns.setup.Store(true)
	box := &Agent{g: g, name: "c", containerID: "abc123"}
	box.setup.Store(true)
	timed := &Agent{g: g, name: "t", containerID: "def456"}
	timed.setup.Store(true)
	g.agents["n"], g.agents["c"], g.agents["t"] = byNetns, box, timed
	if err := st.change(func(m map[string]agentRecord) bool { m["n"] = testRecord("n", 5); return true }); err != nil {
		t.Fatal(err)
	}
	g.recordPhase(byNetns)
	if r := st.records["n"]; r.Phase != policy.PhaseSetup {
		t.Errorf("record of an agent in setup: phase %q", r.Phase)
	}
	until := time.Now().Add(time.Hour).Round(time.Second).UTC()
	timed.armSetupTimer(until)
	defer timed.setupTimer.Stop()
	byNetns.setup.Store(false)
	box.setup.Store(false)
	g.recordPhase(byNetns)
	g.recordPhase(box)
	g.forgetAttach("c") // the engine stopped it: the watcher detaches it
	st.close()

	st2, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.close()
	g2 := &Gateway{state: st2, agents: map[string]*Agent{}}
	if r := st2.records["n"]; r.Phase != policy.PhaseRun || r.SetupUntil != nil {
		t.Errorf("read back: phase %q until %v, want run", r.Phase, r.SetupUntil)
	}
	if got, _ := g2.containerPhase("abc123"); got != policy.PhaseRun {
		t.Errorf("containerPhase of a container in run, stopped, after a restart = %q, want run", got)
	}
	if got, end := g2.containerPhase("def456"); got != policy.PhaseSetup || !end.Equal(until) {
		t.Errorf("containerPhase of a container with a setup timeout = %q until %v, want setup until %v", got, end, until)
	}
	if got, _ := g2.containerPhase("other"); got != "" {
		t.Errorf("containerPhase of another container = %q, want none", got)
	}
	g2.forgetContainer("abc123")
	if got, _ := g2.containerPhase("abc123"); got != "" {
		t.Errorf("containerPhase after a user's detach = %q, want none", got)
	}
}

// TestContainerPhasesBounded: the state file keeps the most recent
// maxContainerPhases container phases; the oldest go first.
func TestContainerPhasesBounded(t *testing.T) {
	st, err := openState(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	err = st.change(func(map[string]agentRecord) bool {
		for i := range maxContainerPhases + 2 {
			id := fmt.Sprintf("c%05d", i)
			st.containers[id] = containerRecord{ID: id, Phase: policy.PhaseRun, Since: t0.Add(time.Duration(i) * time.Second)}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	_, oldest := st.containers["c00000"]
	_, second := st.containers["c00001"]
	_, newest := st.containers[fmt.Sprintf("c%05d", maxContainerPhases+1)]
	if len(st.containers) != maxContainerPhases || oldest || second || !newest {
		t.Errorf("%d container phases kept (oldest %v, second %v, newest %v); want %d, the newest", len(st.containers), oldest, second, newest, maxContainerPhases)
	}
}
