package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// A published port is a listener the gateway opens on the host for one
// agent. What it accepts is decided against the agent's ingress rules (the
// peer is the host itself when the client's address is one of the host's,
// a remote client otherwise) and, when allowed, carried into the agent's
// stack from the gateway's own link address, so the agent's kernel needs
// no route back; the client's identity goes in the audit line, and in a
// PROXY v2 header where the rule asks for one.

// published is one listener of an agent's. Its accept loop is its own;
// each connection it hands on is then the agent's (tracked, and aborted
// at detach like any flow), so closing a listener never waits for one.
type published struct {
	a    *Agent
	spec control.Publish
	ln   net.Listener   // TCP
	pc   net.PacketConn // UDP (see publish_udp.go)
	wg   sync.WaitGroup // the accept or read loop
}

func (l *published) closeSocket() {
	if l.ln != nil {
		l.ln.Close()
	}
	if l.pc != nil {
		l.pc.Close()
	}
}

// Publish opens host listeners for the agent called name. Each spec is
// refused when its host port is taken, or when the agent's policy has no
// ingress rule for its port and protocol (nothing could ever pass it).
func (g *Gateway) Publish(name string, ps []control.Publish) error {
	a := g.agent(name)
	if a == nil {
		return fmt.Errorf("%w: no agent called %q", ErrNotFound, name)
	}
	defer g.stateChanged()
	for _, p := range ps {
		if err := a.publish(p); err != nil {
			return err
		}
	}
	return nil
}

// Unpublish closes the agent's listeners for ps.
func (g *Gateway) Unpublish(name string, ps []control.Publish) error {
	a := g.agent(name)
	if a == nil {
		return fmt.Errorf("%w: no agent called %q", ErrNotFound, name)
	}
	defer g.stateChanged()
	for _, p := range ps {
		a.mu.Lock()
		l := a.listeners[p]
		delete(a.listeners, p)
		a.mu.Unlock()
		if l == nil {
			return fmt.Errorf("%w: agent %q has no published port %s", ErrNotFound, name, p)
		}
		l.close()
	}
	return nil
}

func (g *Gateway) agent(name string) *Agent {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.agents[name]
}

func (a *Agent) publish(p control.Publish) error {
	proto, err := policy.ParseProto(p.Proto)
	if err != nil {
		return fmt.Errorf("%w: publish %s: %v", ErrBadRequest, p, err)
	}
	if pol := a.policyNow(); pol == nil || !pol.HasIngress(proto, p.AgentPort) {
		return fmt.Errorf("%w: publish %s: policy %q has no ingress rule for %s port %d, so nothing could pass it", ErrBadRequest, p, a.policy, p.Proto, p.AgentPort)
	}
	l := &published{a: a, spec: p}
	addr := netip.AddrPortFrom(p.HostAddr, p.HostPort).String()
	if proto == policy.ProtoUDP {
		l.pc, err = net.ListenPacket("udp", addr)
	} else {
		l.ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w: publish %s: host port %d is already in use", ErrConflict, p, p.HostPort)
		}
		return fmt.Errorf("%w: publish %s: %v", ErrBadRequest, p, err)
	}
	a.mu.Lock()
	if a.listeners == nil {
		a.listeners = map[control.Publish]*published{}
	}
	if a.closed || a.listeners[p] != nil {
		a.mu.Unlock()
		l.closeSocket()
		return fmt.Errorf("%w: publish %s: already published, or the agent is detaching", ErrConflict, p)
	}
	a.listeners[p] = l
	a.mu.Unlock()
	l.wg.Add(1)
	if l.pc != nil {
		go l.serveUDP()
	} else {
		go l.serve()
	}
	a.log.Info("port published", "publish", p.String())
	return nil
}

// close stops accepting; live flows stay until the agent detaches.
func (l *published) close() {
	l.closeSocket()
	l.wg.Wait()
}

func (l *published) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		go l.a.acceptPublished(l.spec, c.(*net.TCPConn))
	}
}

// peerOf says who a client of a published port is: the host itself when
// it connected from one of the host's addresses, a remote client otherwise.
func (g *Gateway) peerOf(addr netip.Addr) policy.Peer {
	addr = addr.Unmap()
	if addr.IsLoopback() || g.host.contains(addr) {
		return policy.Peer{Kind: policy.PeerHost}
	}
	return policy.Peer{Kind: policy.PeerRemote, Addr: addr}
}

// acceptPublished decides a connection a published port accepted and, when
// the agent's ingress allows its peer, carries it into the agent.
func (a *Agent) acceptPublished(p control.Publish, c *net.TCPConn) {
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	peer := a.g.peerOf(client.Addr())
	dst := netip.AddrPortFrom(a.agentAddr(false), p.AgentPort)
	f := a.inboundFlow(policy.ProtoTCP, client, dst, peer.String())
	refuse := func(ev Event, d policy.Decision, err error) {
		_ = c.SetLinger(0)
		c.Close()
		f.audit(ev, d, err)
	}
	d := f.decideInbound(peer)
	if !d.Allowed() {
		refuse(EventDeny, d.Decision, nil)
		return
	}
	if err := a.track(f); err != nil {
		refuse(EventDeny, limitDecision(err), nil)
		return
	}
	// From the gateway's own address: the agent's kernel routes the
	// answer back through the TUN whoever the client is.
	src := netip.AddrPortFrom(a.g.gw4, 0)
	ac, err := a.openInto(a.ctx, f, src, dst, d.ProxyProtocol, client, netip.AddrPortFrom(p.HostAddr, p.HostPort))
	if err != nil {
		a.untrack(f)
		refuse(EventFail, d.Decision, err)
		return
	}
	f.agent, f.upstream = ac, c
	f.audit(EventOpen, d.Decision, nil)
	f.armIdle()
	defer a.untrack(f)
	f.spliceTCP()
	f.close()
	f.audit(EventClose, d.Decision, nil)
}

// publishedSpecs lists the agent's published ports.
func (a *Agent) publishedSpecs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.listeners))
	for p := range a.listeners {
		out = append(out, p.String())
	}
	return out
}

// closeListeners stops every published port of the agent's (detach).
func (a *Agent) closeListeners() {
	a.mu.Lock()
	ls := a.listeners
	a.listeners = map[control.Publish]*published{}
	a.mu.Unlock()
	for _, l := range ls {
		l.close()
	}
}
