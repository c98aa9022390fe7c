package gateway

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/clawnet/clawnet/policy"
)

// A published UDP port has one host socket for every client. The first
// datagram from a client address is decided like a TCP connection; an
// allowed client gets a flow into the agent's stack (from the gateway's
// address, as for TCP) that lives until it is quiet for timeouts.udp_idle.
// Answers from the agent go back from the published socket to that client.

// serveUDP reads the published socket and hands each datagram to its
// client's flow, deciding a new client first.
func (l *published) serveUDP() {
	defer l.wg.Done()
	var mu sync.Mutex
	flows := map[netip.AddrPort]*flow{} // by client; guarded by mu
	buf := make([]byte, 65535)
	for {
		n, from, err := l.pc.(*net.UDPConn).ReadFromUDPAddrPort(buf)
		if err != nil {
			mu.Lock()
			for _, f := range flows {
				f.close()
			}
			mu.Unlock()
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		mu.Lock()
		f := flows[from]
		if f == nil {
			f = l.a.openPublishedUDP(l, from, func() {
				mu.Lock()
				delete(flows, from)
				mu.Unlock()
			})
			if f != nil {
				flows[from] = f
			}
		}
		mu.Unlock()
		if f == nil {
			continue
		}
		if _, err := f.agent.Write(buf[:n]); err != nil {
			f.close()
			continue
		}
		f.down.Add(uint64(n))
		f.a.bytesDown.Add(uint64(n))
		f.last.Store(time.Now().UnixNano())
	}
}

// openPublishedUDP decides a new client of a published UDP port and, when
// the agent's ingress allows it, opens its flow into the agent and starts
// carrying the agent's answers back; gone is called once the flow is
// closed. nil means refused (audited).
func (a *Agent) openPublishedUDP(l *published, client netip.AddrPort, gone func()) *flow {
	peer := a.g.peerOf(client.Addr())
	dst := netip.AddrPortFrom(a.agentAddr(false), l.spec.AgentPort)
	f := a.inboundFlow(policy.ProtoUDP, client, dst, peer.String())
	d := f.decideInbound(peer)
	if !d.Allowed() {
		f.audit(EventDeny, d.Decision, nil)
		return nil
	}
	if err := a.track(f); err != nil {
		f.audit(EventDeny, limitDecision(err), nil)
		return nil
	}
	c, err := a.stack.DialUDP(netip.AddrPortFrom(a.g.gw4, 0), dst)
	if err != nil {
		a.untrack(f)
		f.audit(EventFail, d.Decision, err)
		return nil
	}
	f.agent = c
	f.audit(EventOpen, d.Decision, nil)
	f.armIdle()
	go func() {
		defer a.untrack(f)
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if _, err := l.pc.(*net.UDPConn).WriteToUDPAddrPort(buf[:n], client); err != nil {
				break
			}
			f.up.Add(uint64(n))
			a.bytesUp.Add(uint64(n))
			f.last.Store(time.Now().UnixNano())
		}
		f.close()
		gone()
		f.audit(EventClose, d.Decision, nil)
	}()
	return f
}
