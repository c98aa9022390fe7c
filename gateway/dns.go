package gateway

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/clawnet/clawnet/dnsproxy"
	"github.com/clawnet/clawnet/netstack"
	"github.com/clawnet/clawnet/policy"
)

// What one agent's DNS may cost the gateway. Past the rate or the in-flight
// bound a query is answered REFUSED at once: the agent's stub resolver
// retries later, and nothing queues up inside the gateway.
const (
	dnsInFlight       = 64   // upstream queries of one agent at once
	dnsInFlightTotal  = 1024 // upstream queries of all agents at once
	dnsTCPConns       = 16   // DNS-over-TCP connections of one agent at once
	dnsTCPIdle        = 10 * time.Second
	dnsTCPMaxQueries  = 1000 // queries on one TCP connection before it is closed
	dnsLimitLogPerSec = 1    // rate-limited audit lines per second and agent
)

// ruleDNSRateLimit is the rule of a query refused by the limits above.
const ruleDNSRateLimit = "builtin:dns-rate-limit"

const (
	defaultResolvConf  = "/etc/resolv.conf"
	dnsIPUDPHeaders    = 40 + 8 // IPv6 and UDP headers, the larger case
	dnsAuditKind       = KindDNS
	dnsAuditProtoUDP   = "udp"
	dnsAuditProtoTCP   = "tcp"
	dnsRefusedLimitMsg = "over the agent's dns rate limit"
)

// resolver is the gateway's DNS: every query an agent sends, to any
// address, is answered here, locally or through the configured upstream,
// and a name the agent's policy does not allow never leaves the gateway.
type resolver struct {
	*dnsproxy.Answerer
	log hclog.Logger

	slots chan struct{} // upstream queries of all agents in flight

	rate  rate.Limit // queries per second and agent, sustained
	burst int

	agents sync.Map // *Agent → *agentDNS, dropped when the agent's ctx ends
}

// agentDNS is one agent's share of the resolver.
type agentDNS struct {
	limit    *rate.Limiter
	inflight atomic.Int32
	tcpConns atomic.Int32

	// limitLog bounds the audit lines of rate-limited queries; what it
	// leaves out is counted on the next one.
	limitLog   *rate.Limiter
	suppressed atomic.Uint64
	// refusals bounds the REFUSED answers to UDP queries past the limit:
	// beyond a few a second they are dropped unparsed, so a flood costs
	// the gateway as little as it can.
	refusals *rate.Limiter
}

// dnsRefusalsPerSec is how many UDP queries a second past an agent's limit
// are still answered REFUSED (the rest are dropped).
const dnsRefusalsPerSec = 20

func newResolver(cfg *Config, log hclog.Logger) (*resolver, error) {
	up, err := dnsproxy.NewUpstream(dnsproxy.UpstreamOptions{System: cfg.DNS.Upstream.System,
		Servers: cfg.DNS.Upstream.Servers, ResolvConf: defaultResolvConf, TryTimeout: cfg.DNS.TryTimeout.D()}, log)
	if err != nil {
		return nil, err
	}
	return &resolver{
		Answerer: dnsproxy.NewAnswerer(up, answererOptions(cfg)),
		log:      log,
		slots:    make(chan struct{}, dnsInFlightTotal),
		rate:     rate.Limit(cfg.DNS.QueriesPerSecond),
		burst:    cfg.DNS.Burst,
	}, nil
}

// answererOptions is what cfg says the answer path keeps.
func answererOptions(cfg *Config) dnsproxy.AnswererOptions {
	return dnsproxy.AnswererOptions{Public: cfg.TreatAsPublic, CacheSize: cfg.DNS.CacheSize, FailureTTL: cfg.DNS.ServfailTTL.D()}
}

// close releases the resolver. Upstream queries belong to agents (their
// contexts end at detach), so there is nothing of its own to stop.
func (r *resolver) close() {}

// state returns a's share of the resolver, made at its first query and
// forgotten when a detaches.
func (r *resolver) state(a *Agent) *agentDNS {
	if st, ok := r.agents.Load(a); ok {
		return st.(*agentDNS)
	}
	st, loaded := r.agents.LoadOrStore(a, &agentDNS{
		limit:    rate.NewLimiter(r.rate, r.burst),
		limitLog: rate.NewLimiter(dnsLimitLogPerSec, 1),
		refusals: rate.NewLimiter(dnsRefusalsPerSec, dnsRefusalsPerSec),
	})
	if !loaded && a.ctx != nil {
		context.AfterFunc(a.ctx, func() { r.agents.Delete(a) })
	}
	return st.(*agentDNS)
}

// acquire takes an upstream slot for one of st's queries.
func (r *resolver) acquire(st *agentDNS) bool {
	if st.inflight.Add(1) > dnsInFlight {
		st.inflight.Add(-1)
		return false
	}
	select {
	case r.slots <- struct{}{}:
		return true
	default:
		st.inflight.Add(-1)
		return false
	}
}

func (r *resolver) release(st *agentDNS) {
	<-r.slots
	st.inflight.Add(-1)
}

// dnsCall is one query from an agent on its way through the resolver.
type dnsCall struct {
	a        *Agent
	st       *agentDNS
	proto    string
	src, dst netip.AddrPort
}

// start runs the local part of the path: parse, rate limit, policy, type,
// cache. done means res is final; otherwise q must be resolved upstream,
// in a slot already taken (release it after).
func (c *dnsCall) start(raw []byte) (q *dnsproxy.Query, res dnsproxy.Result, done bool) {
	r := c.a.g.dns
	if !c.st.limit.Allow() {
		if c.proto != dnsAuditProtoTCP && c.st.refusals != nil && !c.st.refusals.Allow() {
			return nil, dnsproxy.Result{Rule: ruleDNSRateLimit, Reason: dnsRefusedLimitMsg + "; dropped"}, true
		}
		q, _, _ = dnsproxy.ParseQuery(raw, c.proto == dnsAuditProtoTCP)
		if q == nil {
			// Junk over the limit is not even answered.
			return nil, dnsproxy.Result{Rule: ruleDNSRateLimit, Reason: dnsRefusedLimitMsg + "; dropped"}, true
		}
		return nil, q.Refuse(ruleDNSRateLimit, dnsRefusedLimitMsg), true
	}
	q, res, done = dnsproxy.ParseQuery(raw, c.proto == dnsAuditProtoTCP)
	if done {
		return nil, res, true
	}
	// WriteUDP does not fragment: a reply must fit the agent's link.
	if mtu := c.a.g.cfg.Network.MTU; c.proto != dnsAuditProtoTCP && mtu > 0 {
		q.CapReply(mtu - dnsIPUDPHeaders)
	}
	if c.a.g.host != nil {
		q.IsHost = c.a.g.host.contains
	}
	if res, ok := c.agentName(q); ok {
		return nil, res, true
	}
	if res, done := q.Decide(c.a.policyNow()); done {
		return nil, res, true
	}
	// Decided for this agent first: the cache never answers a denied name.
	// A kept answer or failure takes no slot, so a flapping upstream
	// cannot fill them with names it already answered.
	if res, ok := r.Cached(q); ok {
		return nil, res, true
	}
	if !r.acquire(c.st) {
		return nil, q.Refuse(ruleDNSRateLimit, "too many dns queries in flight"), true
	}
	return q, dnsproxy.Result{}, false
}

// resolve asks upstream for q, bounded by the agent's lifetime.
func (c *dnsCall) resolve(q *dnsproxy.Query) dnsproxy.Result {
	defer c.a.g.dns.release(c.st)
	ctx, cancel := context.WithTimeout(c.a.ctx, dnsproxy.UpstreamTimeout)
	defer cancel()
	return c.a.g.dns.Resolve(ctx, q)
}

// finish binds what the answer returned (before the agent can see it, so
// it can connect at once) and writes the audit line.
func (c *dnsCall) finish(res dnsproxy.Result) {
	for _, ip := range res.Binds {
		c.a.names.Bind(res.QName, ip, res.TTL)
	}
	ev := &AuditEvent{Kind: dnsAuditKind, Proto: c.proto, Src: c.src.String(), Dst: c.dst.String(),
		QName: res.QName, QType: res.QType, RCode: res.RCode, Verdict: res.Verdict.String(),
		Rule: res.Rule, Reason: res.Reason, Error: res.Err}
	if res.Rule == ruleDNSRateLimit {
		if !c.st.limitLog.Allow() {
			c.st.suppressed.Add(1)
			return
		}
		ev.Suppressed = c.st.suppressed.Swap(0)
	}
	c.a.event(ev)
}

// handleDNS answers a DNS datagram from the agent (any destination address,
// port 53). It runs on the packet path and must not block: what is decided
// locally is answered at once, upstream queries run in a goroutine owned by
// the agent (bounded by acquire, ended by its context at detach).
func (a *Agent) handleDNS(src, dst netip.AddrPort, payload []byte) {
	c := &dnsCall{a: a, st: a.g.dns.state(a), proto: dnsAuditProtoUDP, src: src, dst: dst}
	q, res, done := c.start(payload)
	if done {
		c.reply(res)
		return
	}
	if !a.goDNS(func() { c.reply(c.resolve(q)) }) {
		a.g.dns.release(c.st)
	}
}

// reply binds, answers the agent from the address it asked and audits.
func (c *dnsCall) reply(res dnsproxy.Result) {
	c.finish(res)
	if res.Reply != nil {
		// The agent's resolver only accepts an answer from the address and
		// port it asked.
		_ = c.a.stack.WriteUDP(c.dst, c.src, res.Reply)
	}
}

// goDNS runs fn in a goroutine the agent waits for at detach, unless the
// agent is already detaching.
func (a *Agent) goDNS(fn func()) bool {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return false
	}
	a.wg.Add(1)
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		fn()
	}()
	return true
}

// handleDNSTCP serves DNS over TCP on one agent connection (any
// destination address, port 53): length-prefixed queries answered in turn
// (RFC 7766), closed after dnsTCPIdle without a whole query. The connection
// is one of the agent's flows: it counts against its flow limit and is
// closed at detach.
func (a *Agent) handleDNSTCP(r *netstack.TCPRequest) {
	st := a.g.dns.state(a)
	deny := func(why string) {
		r.Reject()
		a.event(&AuditEvent{Kind: dnsAuditKind, Proto: dnsAuditProtoTCP, Src: r.Src.String(), Dst: r.Dst.String(),
			Verdict: "deny", Rule: "builtin:limit", Reason: why})
	}
	if st.tcpConns.Add(1) > dnsTCPConns {
		st.tcpConns.Add(-1)
		deny("too many dns-over-tcp connections")
		return
	}
	defer st.tcpConns.Add(-1)
	f := newFlow(a, policy.ProtoTCP, r.Src, r.Dst, dnsTCPIdle)
	if err := a.track(f); err != nil {
		deny(err.Error())
		return
	}
	defer a.untrack(f)
	conn, err := r.Accept()
	if err != nil {
		return
	}
	f.agent = conn
	f.armIdle()
	defer f.close()
	c := &dnsCall{a: a, st: st, proto: dnsAuditProtoTCP, src: r.Src, dst: r.Dst}
	c.serve(conn, func() { f.last.Store(time.Now().UnixNano()) })
}

// serve answers the queries on conn until it ends, a query is dropped, or
// dnsTCPMaxQueries have been answered. touch marks activity for the idle
// timer: only whole queries count, so a trickle of bytes does not hold the
// connection open.
func (c *dnsCall) serve(conn net.Conn, touch func()) {
	var lenBuf [2]byte
	buf := make([]byte, dnsproxy.MaxQuery)
	for range dnsTCPMaxQueries {
		if _, err := io.ReadFull(conn, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if n > dnsproxy.MaxQuery {
			// Not a query we would answer: do not read 64 KiB to say so.
			return
		}
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			return
		}
		touch()
		q, res, done := c.start(buf[:n])
		if !done {
			res = c.resolve(q)
		}
		c.finish(res)
		if res.Reply == nil {
			return
		}
		out := make([]byte, 2+len(res.Reply))
		binary.BigEndian.PutUint16(out, uint16(len(res.Reply)))
		copy(out[2:], res.Reply)
		if _, err := conn.Write(out); err != nil {
			return
		}
		touch()
	}
}

// AgentZone is the zone in which the gateway's DNS names attached agents,
// NAME.agents.clawnet.internal, for the agents whose egress names them.
// It is answered locally and never sent upstream.
const AgentZone = "agents.clawnet.internal"

// agentTTL is short: an agent re-attached gets a new address.
const agentTTL = 10 * time.Second

// agentName answers a query in AgentZone: the link addresses of the agent
// it names, when that agent is attached and this agent's egress names it
// on some port; NXDOMAIN otherwise. ok is false for any other name.
func (c *dnsCall) agentName(q *dnsproxy.Query) (dnsproxy.Result, bool) {
	name, in := strings.CutSuffix(q.Name(), "."+AgentZone)
	if !in && q.Name() != AgentZone {
		return dnsproxy.Result{}, false
	}
	b := c.a.g.agent(name)
	pol := c.a.policyNow()
	if b == nil || b == c.a || pol == nil || !namesAgent(pol, name) {
		return q.Local(nil, 0, policy.Decision{Rule: "builtin:agents", Reason: "no attached agent " + strconv.Quote(name) + " that this agent's egress names"}), true
	}
	addrs := make([]netip.Addr, 0, len(b.addrs))
	for _, p := range b.addrs {
		addrs = append(addrs, p.Addr())
	}
	return q.Local(addrs, agentTTL, policy.Decision{Verdict: policy.Allow, Rule: "builtin:agents", Reason: "agent " + name + "'s link address"}), true
}

// namesAgent reports whether pol's egress lets its agent reach agent name
// on some port, TCP or UDP.
func namesAgent(pol policy.Decider, name string) bool {
	cp, ok := pol.(*policy.Policy)
	if !ok {
		return false
	}
	return policy.ExplainAgent(cp, name, policy.ProtoTCP, 0).Allowed() || policy.ExplainAgent(cp, name, policy.ProtoUDP, 0).Allowed()
}
