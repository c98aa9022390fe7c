package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/clawnet/clawnet/dnsproxy"
	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/tun"
)

// Agent is one attached agent: its namespace, TUN, stack and live flows.
type Agent struct {
	g           *Gateway
	log         hclog.Logger
	name        string
	policy      string
	target      string
	containerID string
	pid         int
	ns          *tun.Netns
	dev         *tun.Device
	stack       *netstack.Stack
	addrIdx     int
	addrs       []netip.Prefix
	names       *dnsproxy.NameTable // this agent's own DNS answers, IP → names
	attachedAt  time.Time
	notes       []string

	ctx    context.Context // cancelled at detach; bounds dials
	cancel context.CancelFunc

	mu       sync.Mutex
	flows    map[*flow]struct{} // guarded by mu
	closed   bool               // guarded by mu
	reserved int64              // buffer bytes reserved by live flows; guarded by mu
	// listeners are the agent's published ports; guarded by mu.
	listeners map[control.Publish]*published
	wg        sync.WaitGroup // flow goroutines

	// setup is true while the agent is in its policy's setup phase (see
	// phase.go): policyNow is then the policy's setup-phase Decider. It
	// goes from true to false only.
	setup      atomic.Bool
	setupUntil time.Time   // when setupTimer ends the phase; zero: no timer; guarded by mu
	setupTimer *time.Timer // guarded by mu

	newFlows  *rate.Limiter // limits.new_flows_per_second; nil: none
	nflows    atomic.Int64
	bytesUp   atomic.Uint64
	bytesDown atomic.Uint64

	// audit rate limits the agent's audit lines, each event on its own,
	// so a scanning or failing agent cannot flood the log (what it leaves
	// out is counted on the next line of that event), and counts every
	// line, written or not, for the metrics.
	audit agentAudit
}

type attachSpec struct {
	name, policy, target, containerID string
	pid                               int
	ns                                *tun.Netns
	force                             bool
	ifname                            string // the TUN's name; "": network.interface
	// phase is the recorded phase of an agent attached again ("": a new
	// attach, in setup if its policy has setup rules); setupUntil ends a
	// setup phase by a timer, setupTimeout starts one.
	phase        string
	setupUntil   time.Time
	setupTimeout time.Duration
}

func (g *Gateway) attach(ctx context.Context, s attachSpec) (*Agent, error) {
	links, err := tun.Links(s.ns)
	if err != nil {
		return nil, err
	}
	var others []string
	for _, l := range links {
		if l != "lo" {
			others = append(others, l)
		}
	}
	if len(others) > 0 && !s.force {
		return nil, fmt.Errorf("%w: %s has interfaces besides lo (%v), a way around the gateway; run it with --network none, or pass --force", ErrUnreachable, s.target, others)
	}
	idx, err := g.pool.get()
	if err != nil {
		return nil, err
	}
	p4, p6 := g.pool.addrs(idx)
	ifname := s.ifname
	if ifname == "" {
		ifname = g.cfg.Network.Interface
	}
	dev, err := tun.Create(s.ns, tun.Config{Name: ifname, MTU: g.cfg.Network.MTU, Addrs: []netip.Prefix{p4, p6}, Checksum: true})
	if err != nil {
		g.pool.put(idx)
		if errors.Is(err, tun.ErrExists) {
			return nil, fmt.Errorf("%w: %v", ErrConflict, err)
		}
		return nil, fmt.Errorf("create tun in %s: %w", s.target, err)
	}
	a := &Agent{
		g: g, log: g.log.Named("agent").With("agent", s.name),
		name: s.name, policy: s.policy, target: s.target, containerID: s.containerID, pid: s.pid,
		ns: s.ns, dev: dev, addrIdx: idx, addrs: []netip.Prefix{p4},
		attachedAt: time.Now(),
		flows:      map[*flow]struct{}{},
		names:      dnsproxy.NewNameTable(),
		newFlows:   rate.NewLimiter(rate.Limit(g.cfg.Limits.NewFlowsPerSecond), g.cfg.Limits.NewFlowsBurst),
	}
	if dev.IPv6 {
		a.addrs = append(a.addrs, p6)
	} else {
		a.notes = append(a.notes, "IPv6 is disabled in this namespace; the agent has IPv4 only")
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	st, err := netstack.New(netstack.Config{
		Device:              dev,
		MTU:                 g.cfg.Network.MTU,
		Gateway:             []netip.Addr{g.gw4, g.gw6},
		MaxInFlight:         g.cfg.Limits.HandshakesPerAgent,
		PacketsPerSecond:    g.cfg.Limits.PacketsPerSecond,
		PacketBurst:         g.cfg.Limits.PacketBurst,
		UDPPacketsPerSecond: g.cfg.Limits.UDPPacketsPerSecond,
		UDPPacketBurst:      g.cfg.Limits.UDPPacketBurst,
		TCP:                 a.handleTCP,
		UDP:                 a.handleUDP,
		DNS:                 a.handleDNS,
	})
	if err != nil {
		dev.Close()
		g.pool.put(idx)
		a.cancel()
		return nil, fmt.Errorf("start netstack: %w", err)
	}
	a.stack = st
	a.startPhase(s)
	return a, nil
}

func (a *Agent) info() *control.Agent {
	ai := &control.Agent{
		Name: a.name, Target: a.target, ContainerID: a.containerID, PID: a.pid,
		Netns: a.ns.Path(), Interface: a.dev.IfName, Policy: a.policy,
		Flows: a.nflows.Load(), BytesUp: a.bytesUp.Load(), BytesDown: a.bytesDown.Load(),
		BufferReserved: a.bufferReserved(), Published: a.publishedSpecs(),
		AttachedAt: a.attachedAt, Notes: a.notes, Phase: a.phase(),
	}
	if until := a.setupDeadline(); !until.IsZero() {
		ai.SetupUntil = &until
	}
	for _, p := range a.addrs {
		ai.Addresses = append(ai.Addresses, p.String())
	}
	ai.Gateway = []string{a.g.gw4.String()}
	if a.dev.IPv6 {
		ai.Gateway = append(ai.Gateway, a.g.gw6.String())
	}
	return ai
}

// close tears the agent down: no new flows, every live flow closed, the TUN
// removed (the agent has no network from here on), the stack stopped.
func (a *Agent) close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	if a.setupTimer != nil {
		a.setupTimer.Stop()
	}
	flows := make([]*flow, 0, len(a.flows))
	for f := range a.flows {
		flows = append(flows, f)
	}
	a.mu.Unlock()
	a.closeListeners()
	a.cancel()
	for _, f := range flows {
		f.abort()
	}
	a.stack.Close()
	a.wg.Wait()
	a.g.pool.put(a.addrIdx)
	a.ns.Close()
}

// track registers a flow, refusing it past the agent's limit or after detach.
func (a *Agent) track(f *flow) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("agent is detaching")
	}
	if a.newFlows != nil && !f.in && !a.newFlows.Allow() {
		return fmt.Errorf("more than %g new flows a second (limits.new_flows_per_second)", a.g.cfg.Limits.NewFlowsPerSecond)
	}
	if len(a.flows) >= a.g.cfg.Limits.FlowsPerAgent {
		return fmt.Errorf("flow limit (%d) reached", a.g.cfg.Limits.FlowsPerAgent)
	}
	if n := a.g.nflows.Add(1); n > int64(a.g.cfg.Limits.Flows) {
		a.g.nflows.Add(-1)
		return fmt.Errorf("the gateway's flow limit (%d, limits.flows) reached", a.g.cfg.Limits.Flows)
	}
	if err := a.reserveLocked(f); err != nil {
		a.g.nflows.Add(-1)
		return err
	}
	a.flows[f] = struct{}{}
	a.nflows.Add(1)
	a.wg.Add(1)
	return nil
}

func (a *Agent) bufferReserved() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reserved
}

func (a *Agent) untrack(f *flow) {
	a.mu.Lock()
	delete(a.flows, f)
	a.reserved -= f.reserved
	a.g.nflows.Add(-1)
	a.mu.Unlock()
	a.nflows.Add(-1)
	a.wg.Done()
}

// event is where every audit line of the agent goes, flow and DNS: it is
// counted for the metrics whether or not it is written, then written
// unless the agent's rate limit for its event leaves it out.
func (a *Agent) event(ev *AuditEvent) {
	ev.Agent = a.name
	ev.Policy = a.policy
	// A line may already stand for others that an earlier limit left out
	// (the resolver's own, on rate-limited queries): they count too.
	a.audit.counts.count(ev, 1+ev.Suppressed)
	a.g.metrics.line(ev)
	c, limited := classOf(ev)
	if limited {
		a.g.metrics.suppress(c, ev.Suppressed)
		if !a.audit.admit(a.g.cfg.AuditLimits, c, ev) {
			a.g.metrics.suppress(c, 1)
			return
		}
	}
	a.g.audit.Log(ev)
}
