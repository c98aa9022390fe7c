package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// Phases: an agent attached under a policy with setup rules starts in its
// setup phase, where policyNow is the policy's setup-phase Decider (egress
// and setup rules); otherwise, and from the end of that phase on, it is in
// run, where policyNow is the policy itself. The phase ends by a control
// request (clawnet policy phase AGENT run) or by a timer the attach asked
// for, which the daemon owns. Ending it decides the agent's live flows
// again on the run phase's Decider, with the revocation machinery
// (revoke.go): a flow only a setup rule allowed is reset, with a revoke
// line naming that rule. The phase goes from setup to run only; the state
// file records it, so a restart never opens setup again.

// startPhase sets a new agent's phase from s: recorded, or setup when its
// policy has a setup phase, with a timer when s asks for one.
func (a *Agent) startPhase(s attachSpec) {
	switch s.phase {
	case policy.PhaseRun:
		return
	case "":
		p := a.g.policies.Get(a.policy)
		if policy.ForPhase(p, policy.PhaseSetup) == p {
			return
		}
	}
	until := s.setupUntil
	if until.IsZero() && s.setupTimeout > 0 {
		until = time.Now().Add(s.setupTimeout)
	}
	if !until.IsZero() && !time.Now().Before(until) {
		return // its timeout passed while the gateway was down
	}
	a.setup.Store(true)
	if !until.IsZero() {
		a.armSetupTimer(until)
	}
}

// armSetupTimer ends a's setup phase at until (at once when it is past).
func (a *Agent) armSetupTimer(until time.Time) {
	a.mu.Lock()
	if a.closed || !a.setup.Load() {
		a.mu.Unlock()
		return
	}
	if a.setupTimer != nil {
		a.setupTimer.Stop()
	}
	a.setupUntil = until
	a.setupTimer = time.AfterFunc(time.Until(until), func() {
		a.endSetup("setup timeout")
	})
	a.mu.Unlock()
	// Kept for the next attach. An agent not yet registered (startPhase,
	// during its attach) is recorded by recordAttach.
	a.g.recordPhase(a)
}

// inPhase is p as it applies to a now: p's setup-phase Decider while a is
// in setup, else p.
func (a *Agent) inPhase(p policy.Decider) policy.Decider {
	if p == nil || !a.setup.Load() {
		return p
	}
	return policy.ForPhase(p, policy.PhaseSetup)
}

func (a *Agent) phase() string {
	if a.setup.Load() {
		return policy.PhaseSetup
	}
	return policy.PhaseRun
}

func (a *Agent) setupDeadline() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.setupUntil
}

// endSetup moves a to run, records it, and revokes the live flows the run
// phase denies; it returns how many. why says what ended the phase, for the
// logs. An agent already in run is left alone.
func (a *Agent) endSetup(why string) int {
	if !a.setup.CompareAndSwap(true, false) {
		return 0
	}
	a.mu.Lock()
	if a.setupTimer != nil {
		a.setupTimer.Stop()
		a.setupTimer = nil
	}
	a.setupUntil = time.Time{}
	a.mu.Unlock()
	a.g.recordPhase(a)
	revs := a.redecide()
	for _, r := range revs {
		// The run phase's rule and reason, and the setup rule that had
		// allowed the flow until now.
		was := r.f.decideAgain(r.was)
		r.line.Reason = "the setup phase is over (" + why + "); it was allowed by " + was.Rule + "; now " + r.line.Reason
		r.close()
	}
	a.log.Info("setup phase over", "why", why, "revoked", len(revs))
	return len(revs)
}

// SetPhase moves the agent called name to phase, which must be run, and
// answers how many live flows that revoked.
func (g *Gateway) SetPhase(name, phase string) (*control.PhaseResult, error) {
	if phase != control.PhaseRun {
		return nil, fmt.Errorf("%w: phase %q: an agent moves from setup to run only (want %q)", ErrBadRequest, phase, control.PhaseRun)
	}
	a := g.agent(name)
	if a == nil {
		return nil, fmt.Errorf("%w: no agent called %q", ErrNotFound, name)
	}
	n := a.endSetup("clawnet policy phase")
	return &control.PhaseResult{Agent: name, Phase: a.phase(), Revoked: n}, nil
}

// handlePhase serves POST /v1/agents/{name}/phase (a control.PhaseRequest).
func (g *Gateway) handlePhase(w http.ResponseWriter, r *http.Request) {
	var req control.PhaseRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	res, err := g.SetPhase(r.PathValue("name"), req.Phase)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// parseSetupTimeout reads AttachRequest.SetupTimeout.
func parseSetupTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: setup timeout %q: want a positive duration such as 90s or 5m", ErrBadRequest, s)
	}
	return d, nil
}
