// Package gateway is clawnet's data path and control API: it attaches
// agents (a TUN in the agent's namespace, a netstack on it), decides every
// flow and DNS query against the agent's policy, proxies what is allowed
// from the host's own sockets, writes the audit log, and serves the control
// API. It is the only package that ties tun, netstack and policy together.
// A Gateway is built from Options, the same way by cmd/clawnetd and by
// tests.
//
// It must never be the daemon: no flags, no signal handlers, no container
// engine client, and it logs only through the hclog.Logger it is given.
// cmd/clawnetd does that wiring and hands the engine in through
// ContainerResolver and ContainerFollower; deps_test.go keeps it so.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// Errors callers branch on.
var (
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("conflict")
	ErrBadRequest  = errors.New("bad request")
	ErrUnreachable = errors.New("namespace has another way out")
	// ErrLimit refuses what would take the gateway past a configured limit.
	ErrLimit = errors.New("limit reached")
	// ErrShuttingDown refuses what arrives while the gateway closes.
	ErrShuttingDown = errors.New("gateway is shutting down")
)

// Gateway owns every attached agent.
type Gateway struct {
	cfg      *Config
	log      hclog.Logger
	audit    *Audit
	policies *policyStore
	pool     *addrPool
	host     *hostAddrs
	dns      *resolver
	gw4, gw6 netip.Addr
	dialer   net.Dialer
	dialFunc DialFunc // nil: dialer, with dial's exact-address checks
	metrics  *metrics
	memory   *memoryReturner
	nflows   atomic.Int64 // live flows over all agents (limits.flows)

	containers ContainerResolver // nil: container targets are refused
	follower   ContainerFollower // nil: containers are attached, not followed
	podPolicy  func(context.Context, control.PodRef) (string, error)
	refused    func(control.PodRef, error)
	state      *stateStore // nil: what is attached is not kept

	mu      sync.Mutex
	agents  map[string]*Agent // by name; guarded by mu
	byNetns map[string]string // netns ID → agent name; guarded by mu
	closed  bool              // guarded by mu
}

// DialFunc connects an allowed flow upstream, to exactly dst (an IP literal:
// nothing is resolved again between the decision and the connection).
type DialFunc func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error)

// Options is what a Gateway is built from; the daemon and the tests fill the
// same struct. Every field has a working default.
type Options struct {
	Config *Config      // nil: DefaultConfig()
	Log    hclog.Logger // nil: no logs
	Audit  *Audit       // nil: audit lines are discarded
	// Containers finds containers for attach by name; nil: container
	// targets are refused.
	Containers ContainerResolver
	// Follower attaches the containers the control API names and follows
	// them through their life; nil: they are attached once, through
	// Containers.
	Follower ContainerFollower
	// Dial connects allowed flows upstream; nil: the host's own sockets.
	Dial DialFunc
	// StateDir is where the gateway keeps what it has attached, for
	// Restore after a restart (clawnetd gives it Config.StateDir); empty:
	// nothing is kept.
	StateDir string
	// PodPolicy names the policy of a Kubernetes pod that an attach request
	// names (control.AttachRequest.Pod) without a policy: "" means
	// default_policy; an error fails the attach (fail closed: a pod whose
	// policy cannot be read does not start on a guess). nil: such pods get
	// default_policy.
	PodPolicy func(ctx context.Context, pod control.PodRef) (string, error)
	// AttachRefused, if set, is told of every attach request naming a pod
	// (control.AttachRequest.Pod) that fails, with why: clawnetd turns it
	// into an event on the pod. It must not block.
	AttachRefused func(pod control.PodRef, err error)
}

// New builds a gateway from opts. It does not listen; see Serve.
func New(opts Options) (*Gateway, error) {
	cfg, log, audit := opts.Config, opts.Log, opts.Audit
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if audit == nil {
		audit = NewAudit(io.Discard)
	}
	ps, err := newPolicyStore(cfg, log.Named("policy"))
	if err != nil {
		return nil, err
	}
	if ps.Get(cfg.DefaultPolicy) == nil {
		return nil, fmt.Errorf("%s: default_policy %q is not defined (policies: %v)", cfg.path, cfg.DefaultPolicy, ps.Names())
	}
	st, err := openState(opts.StateDir)
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:        cfg,
		log:        log,
		audit:      audit,
		policies:   ps,
		pool:       newAddrPool(cfg.Network.IPv4, cfg.Network.IPv6),
		host:       newHostAddrs(time.Second),
		dialFunc:   opts.Dial,
		containers: opts.Containers,
		follower:   opts.Follower,
		podPolicy:  opts.PodPolicy,
		refused:    opts.AttachRefused,
		state:      st,
		agents:     map[string]*Agent{},
		byNetns:    map[string]string{},
	}
	g.gw4, g.gw6 = g.pool.gateway()
	g.metrics = newMetrics(g)
	if g.dns, err = newResolver(cfg, log.Named("dns")); err != nil {
		g.host.close()
		st.close()
		return nil, err
	}
	g.dialer = net.Dialer{
		Timeout: cfg.Timeouts.Dial.D(),
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     cfg.Timeouts.Keepalive.D(),
			Interval: cfg.Timeouts.Keepalive.D(),
			Count:    4,
		},
	}
	g.memory = newMemoryReturner(30*time.Second, int64(cfg.Limits.MemoryLimit))
	return g, nil
}

// Policies names the policies in force.
func (g *Gateway) Policies() []string { return g.policies.Names() }

// ReloadPolicies is Reload for callers that need only its error.
func (g *Gateway) ReloadPolicies() error {
	_, err := g.Reload()
	return err
}

// Agents lists the attached agents by name.
func (g *Gateway) Agents() []control.Agent {
	g.mu.Lock()
	as := make([]*Agent, 0, len(g.agents))
	for _, a := range g.agents {
		if a != nil {
			as = append(as, a)
		}
	}
	g.mu.Unlock()
	out := make([]control.Agent, 0, len(as))
	for _, a := range as {
		out = append(out, *a.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Explain answers what the named policy would decide for host:port.
func (g *Gateway) Explain(pol, proto, host string, port uint16) (*control.Explanation, error) {
	p := g.policies.Get(pol)
	if p == nil {
		return nil, fmt.Errorf("%w: unknown policy %q (known: %v)", ErrNotFound, pol, g.policies.Names())
	}
	pr, err := policy.ParseProto(proto)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	var d policy.Decision
	if ip, err := netip.ParseAddr(host); err == nil {
		if gd, guarded := g.guard(ip, port); guarded {
			d = gd
		} else {
			d = p.DecideFlow(policy.Flow{Proto: pr, Dst: netip.AddrPortFrom(ip, port)})
		}
	} else if cp, ok := p.(*policy.Policy); ok {
		d = policy.Explain(cp, pr, host, port)
	} else {
		d = p.DecideName(host, pr, port)
	}
	return &control.Explanation{Policy: pol, Proto: pr.String(), Host: host, Port: port,
		Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason}, nil
}

// guard applies the gateway's own rules, which no policy can open: the
// gateway's link addresses (DNS only), other agents, loopback, the host's
// own addresses, the network and broadcast addresses of its subnets,
// limited broadcast and multicast, in every IPv4-in-IPv6 form.
func (g *Gateway) guard(dst netip.Addr, port uint16) (policy.Decision, bool) {
	dst = dst.Unmap()
	switch {
	case dst == g.gw4 || dst == g.gw6:
		if port == 53 {
			return policy.Decision{Verdict: policy.Allow, Rule: "builtin:dns", Reason: "the gateway's resolver"}, true
		}
		return policy.Decision{Rule: "builtin:gateway", Reason: "only DNS (port 53) is served on the gateway's address"}, true
	case g.pool.contains(dst):
		return policy.Decision{Rule: "builtin:agents", Reason: "no other agent is attached at " + dst.String()}, true
	case dst.IsLoopback() || dst.IsUnspecified():
		return policy.Decision{Rule: "builtin:host", Reason: "the gateway host's loopback is never reachable"}, true
	}
	if info := policy.ClassifyAddr(dst); info.Inner.IsValid() {
		// An IPv4 address wrapped in IPv6 (NAT64, 6to4, ...) names the
		// same host: guard the address inside as well.
		if d, ok := g.guardHost(info.Inner); ok {
			return d, true
		}
	}
	return g.guardHost(dst)
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// guardHost refuses the gateway host's own addresses, the network and
// broadcast addresses of every subnet it is on, limited broadcast and
// multicast.
func (g *Gateway) guardHost(dst netip.Addr) (policy.Decision, bool) {
	switch k, _ := g.host.lookup(dst); k {
	case hostOwn:
		return policy.Decision{Rule: "builtin:host", Reason: "the gateway host's own addresses are never reachable"}, true
	case hostNetwork:
		return policy.Decision{Rule: "builtin:host", Reason: dst.String() + " is the network address of a subnet the gateway host is on"}, true
	case hostBroadcast:
		return policy.Decision{Rule: "builtin:broadcast", Reason: dst.String() + " is the broadcast address of a subnet the gateway host is on"}, true
	}
	if dst == limitedBroadcast || dst.IsMulticast() {
		return policy.Decision{Rule: "builtin:broadcast", Reason: dst.String() + " is a broadcast or multicast address: the gateway proxies one peer per flow, never a whole link"}, true
	}
	return policy.Decision{}, false
}

// Close detaches every agent.
func (g *Gateway) Close() {
	g.mu.Lock()
	g.closed = true
	as := make([]*Agent, 0, len(g.agents))
	for _, a := range g.agents {
		if a != nil {
			as = append(as, a)
		}
	}
	g.agents = map[string]*Agent{}
	g.byNetns = map[string]string{}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Add(1)
		go func() { defer wg.Done(); a.close() }()
	}
	wg.Wait()
	g.host.close()
	g.dns.close()
	if g.memory != nil {
		g.memory.close()
	}
	g.state.close()
}

// Flows counts live flows over all agents.
func (g *Gateway) Flows() int64 {
	var n int64
	for _, a := range g.Agents() {
		n += a.Flows
	}
	return n
}
