package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// Revocation: a policy change applies to live flows too. A reload that
// changes an agent's policy decides each of the agent's live flows again,
// on the new policy, with what the flow was admitted by. What the new
// policy denies is reset on the agent's side, its other side is reset or
// closed, and an audit line "revoke" gives the new rule and reason. A flow
// that stays moves to the new policy, so its later checks (each plaintext
// HTTP request's name) use it. Loosening revokes nothing, and a reload
// that leaves a policy's bytes as they were does not even look.

// flowStage is how far a flow has come, for revocation; guarded by its
// agent's mu.
type flowStage uint8

const (
	// stageSetup: decided, still dialling or accepting. A reload leaves
	// it to settle, which decides it again once it is connected.
	stageSetup   flowStage = iota
	stageLive              // connected both ways: a reload decides it again
	stageRevoked           // closed by a revocation
)

// revocation is a flow the policy in force denies, with its audit line.
type revocation struct {
	f    *flow
	line *AuditEvent
	was  policy.Decider // the policy f was decided on until now
}

// Reload re-reads the policy directory, then decides again the live flows
// of every agent whose policy the reload changed and closes those now
// denied. Errors name each bad file, whose last good version stays in
// force; the result says what was applied either way.
func (g *Gateway) Reload() (*control.ReloadResult, error) {
	res := &control.ReloadResult{}
	errs := g.policies.Reload(func(changed []string) {
		res.Changed = changed
		res.Revoked = g.revoke(changed)
	})
	res.Policies = g.policies.Names()
	for _, e := range errs {
		g.log.Error("policy reload", "error", e)
	}
	g.log.Info("policies reloaded", "policies", res.Policies, "changed", res.Changed, "errors", len(errs))
	g.metrics.reload(errors.Join(errs...))
	_ = g.audit.Reopen() // so that clawnet reload after a rotation needs no signal
	for _, a := range sortedKeys(res.Revoked) {
		g.log.Info("live flows revoked", "agent", a, "flows", res.Revoked[a])
	}
	return res, errors.Join(errs...)
}

// revoke decides again the live flows of the agents on the changed
// policies and closes those now denied; it returns how many each agent
// lost. Every decision is made before any flow is closed, so a flow
// between two agents whose policies both changed is judged by both, and
// each side that denies it says so in its own audit line.
func (g *Gateway) revoke(changed []string) map[string]int {
	if len(changed) == 0 {
		return nil
	}
	g.mu.Lock()
	var as []*Agent
	for _, a := range g.agents {
		if a != nil && slices.Contains(changed, a.policy) {
			as = append(as, a)
		}
	}
	g.mu.Unlock()
	var revs []revocation
	for _, a := range as {
		revs = append(revs, a.redecide()...)
	}
	if len(revs) == 0 {
		return nil
	}
	n := map[string]int{}
	for _, r := range revs {
		r.close()
		n[r.f.a.name]++
	}
	return n
}

// redecide decides a's live flows again on the policy in force and returns
// those it denies; the others move to that policy.
func (a *Agent) redecide() []revocation {
	p := a.policyNow()
	a.mu.Lock()
	defer a.mu.Unlock()
	var revs []revocation
	for f := range a.flows {
		if f.stage != stageLive {
			continue
		}
		if r, ok := f.redecideLocked(p); ok {
			revs = append(revs, r)
		}
	}
	return revs
}

// settle marks f live once it is connected both ways. A reload that
// changed the policy while f was being set up (a dial can take seconds)
// left it alone: it is decided again here on the policy in force, and so
// is the side of a flow between agents that the callee tracks.
func (f *flow) settle() {
	var revs []revocation
	for _, s := range []*flow{f, f.mirror} {
		if s == nil {
			continue
		}
		s.a.mu.Lock()
		s.stage = stageLive
		if r, ok := s.redecideLocked(s.a.policyNow()); ok {
			revs = append(revs, r)
		}
		s.a.mu.Unlock()
	}
	for _, r := range revs {
		r.close()
	}
}

// redecideLocked decides f again on p (nil: the agent's policy is gone)
// and reports a revocation if p denies it; if p allows it, f moves to p.
// A flow already decided on p, closing, or never decided by a policy (the
// gateway's own DNS) is left as it is. f.a.mu is held.
func (f *flow) redecideLocked(p policy.Decider) (revocation, bool) {
	if f.pol == nil || f.pol == p || f.closing() {
		return revocation{}, false
	}
	d := f.decideAgain(p)
	if d.Allowed() {
		f.pol = p
		return revocation{}, false
	}
	f.stage = stageRevoked
	return revocation{f: f, line: f.line(EventRevoke, d, nil), was: f.pol}, true
}

// decideAgain is f's decision on p from what f was admitted by: the peer
// that reached the agent, the agent it reaches, or its destination with
// the names bound to it then and, where only a name allows the address,
// the name the client presented (SNI or Host).
func (f *flow) decideAgain(p policy.Decider) policy.Decision {
	if p == nil {
		return policy.Decision{Rule: "builtin:policy-missing", Reason: fmt.Sprintf("policy %q is no longer defined", f.a.policy)}
	}
	port := f.dst.Port()
	switch {
	case f.in:
		peer, err := policy.ParsePeer(f.peer)
		if err != nil {
			return policy.Decision{Rule: policy.RuleBadPeer, Reason: err.Error()}
		}
		return p.DecideInbound(policy.Inbound{Proto: f.proto, Port: port, Peer: peer}).Decision
	case f.to != nil:
		return p.DecideAgent(f.to.name, f.proto, port)
	}
	dst := netip.AddrPortFrom(f.dst.Addr().Unmap(), port)
	d := p.DecideFlow(policy.Flow{Proto: f.proto, Dst: dst, Names: f.names})
	name := f.sni
	if name == "" {
		name = f.host
	}
	if !d.Allowed() || name == "" || p.DecideFlow(policy.Flow{Proto: f.proto, Dst: dst}).Allowed() {
		// The name the client presented counts only where the address
		// alone is not allowed, as at admission. A flow without one
		// (admitted by its address, or of a protocol that names no
		// server) stands on its bound names.
		return d
	}
	if nd := p.DecideName(name, f.proto, port); !nd.Allowed() {
		return nd
	}
	return d
}

// close resets both sides of a revoked flow (the agent's, and an upstream
// socket or the other agent's connection) and writes the revoke line. The
// flow's own goroutine then ends it as usual, with its close line.
func (r revocation) close() {
	sides := []*flow{r.f}
	if c := r.f.caller(); c != nil {
		sides = append(sides, c)
	}
	// Every side is marked closed before any connection is reset: a pipe
	// that reads the end of a reset stream must not pass it on as an
	// orderly close (see pipe), or the far side would see one.
	var conns []net.Conn
	for _, s := range sides {
		s.closeOnce.Do(func() {
			close(s.done)
			if s.timer != nil {
				s.timer.Stop()
			}
			conns = append(conns, s.agent, s.upstream)
		})
	}
	for _, c := range conns {
		switch c := c.(type) {
		case aborter:
			c.Abort()
		case *net.TCPConn:
			_ = c.SetLinger(0)
		}
		if c != nil {
			c.Close()
		}
	}
	r.f.a.event(r.line)
}

// caller is the calling agent's side of f when f is the callee's side of a
// flow between agents: the side whose goroutines carry it.
func (f *flow) caller() *flow {
	name, ok := strings.CutPrefix(f.peer, "agent:")
	if !f.in || !ok {
		return nil
	}
	a := f.a.g.agent(name)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for c := range a.flows {
		if c.mirror == f {
			return c
		}
	}
	return nil
}

// snapshot is the policy f is decided on; a reload that keeps f moves it
// to the new one.
func (f *flow) snapshot() policy.Decider {
	f.a.mu.Lock()
	defer f.a.mu.Unlock()
	return f.pol
}

// closing reports whether f has been closed.
func (f *flow) closing() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}
