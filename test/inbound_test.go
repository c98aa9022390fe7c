package integration_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/test/harness"
)

// The tests in this file are DESIGN.md invariant 8: nothing reaches an
// agent unless its ingress rules name the peer, a peer is the link it came
// from or the published listener it came through, never a source address,
// and agent to agent needs both sides' policies. The far side is a server
// the test runs inside the agent's namespace (harness.Server), which logs
// every connection it accepts: who its kernel says connected, the PROXY v2
// header where one is expected, and the first line. After a refused attempt
// a test makes an allowed connection to the same server (the sentinel) and
// only once the server has logged it asserts that nothing else arrived
// (Server.NothingBefore): a listener accepts in arrival order.

// The agent ports of the callee's policy, b-in.
const (
	portPlain   = 8080 // ingress: agents a and d, and the host
	portNamedC  = 8081 // ingress: agent c only
	portProxy   = 8443 // ingress: agent a and the host, with a PROXY v2 header
	portNoRule  = 9090 // no ingress rule; a's egress allows it
	portNowhere = 9999 // in no rule of either side
)

// bIn is the callee's policy: no egress, ingress as the constants above say.
func bIn(*harness.Internet) (string, string) {
	return "b-in", fmt.Sprintf(`version: v1
name: b-in
egress: []
ingress:
  - ports: [%d]
    agents: [a, d]
    host: true
  - ports: [%d]
    agents: [c]
  - ports: [%d]
    agents: [a]
    host: true
    proxy_protocol: v2
`, portPlain, portNamedC, portProxy)
}

// aOut lets agent a reach agent b on the ports b allows it, and on one b's
// ingress does not cover.
func aOut(*harness.Internet) (string, string) {
	return "a-out", fmt.Sprintf(`version: v1
name: a-out
egress:
  - agents: [b]
    ports: [%d, %d, %d]
`, portPlain, portProxy, portNoRule)
}

// cOut names b in its egress; b's ingress names c only on portNamedC.
func cOut(*harness.Internet) (string, string) {
	return "c-out", fmt.Sprintf(`version: v1
name: c-out
egress:
  - agents: [b]
    ports: [%d, %d]
`, portPlain, portNamedC)
}

// dOut is named in b's ingress, but its own egress names another agent.
func dOut(*harness.Internet) (string, string) {
	return "d-out", fmt.Sprintf(`version: v1
name: d-out
egress:
  - agents: [a]
    ports: [%d]
`, portPlain)
}

// attachPublish attaches a new namespace through the control API with
// published ports and returns it as an agent.
func (e *env) attachPublish(name, policy string, publish ...string) *agent {
	e.t.Helper()
	ns := harness.NewNetNS(e.t, "agent")
	if _, err := e.d.AttachRequest(control.AttachRequest{Netns: ns.Path, Name: name, Policy: policy, Publish: publish}); err != nil {
		e.t.Fatalf("attach %s with publish %v: %v", name, publish, err)
	}
	info, ok := e.d.Lookup(e.t, name)
	if !ok {
		e.t.Fatalf("attached %s but clawnet ls does not list it", name)
	}
	return e.attachedAgent(ns, name, info)
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

// exchange sends a fresh marker on c, checks the server's answer and
// returns the marker.
func exchange(t *testing.T, c net.Conn, label string) string {
	t.Helper()
	marker := label + " " + uniq()
	got, err := harness.Exchange(c, marker, sentinelWithin)
	if err != nil || got != "ack "+marker {
		t.Fatalf("%s: exchange through %s: answer %q, %v", label, c.RemoteAddr(), got, err)
	}
	return marker
}

// line matches the server's entry for the connection that sent marker.
func line(marker string) func(harness.ServerConn) bool {
	return func(c harness.ServerConn) bool { return c.Line == marker }
}

// sentinel makes an allowed connection from agent a to dst, sends a marker
// and returns the predicate for the server's entry of it.
func (a *agent) sentinel(t *testing.T, dst netip.AddrPort) func(harness.ServerConn) bool {
	t.Helper()
	c := a.dial(t, "tcp", dst)
	defer c.Close()
	return line(exchange(t, c, "sentinel from "+a.name))
}

// hostSentinel is sentinel from the host namespace.
func hostSentinel(t *testing.T, dst netip.AddrPort) func(harness.ServerConn) bool {
	t.Helper()
	c := hostDial(t, "tcp", dst)
	defer c.Close()
	return line(exchange(t, c, "host sentinel"))
}

func rawStr(e harness.AuditEntry, key string) string {
	s, _ := e.Raw[key].(string)
	return s
}

// inLine matches the audit line of an inbound connection to agent, from
// peer, to port, with event ev.
func inLine(agentName, peer, ev string, port uint16) func(harness.AuditEntry) bool {
	return func(e harness.AuditEntry) bool {
		return e.Agent == agentName && rawStr(e, "direction") == "in" && rawStr(e, "peer") == peer &&
			e.Event == ev && e.DstAddr().Port() == port
	}
}

// outLine matches the audit line of agent's own flow to peer on port.
func outLine(agentName, peer, ev string, port uint16) func(harness.AuditEntry) bool {
	return func(e harness.AuditEntry) bool {
		return e.Agent == agentName && rawStr(e, "direction") == "" && rawStr(e, "peer") == peer &&
			e.Event == ev && e.DstAddr().Port() == port
	}
}

// expectConnClosed checks that c, a connection the host's kernel accepted,
// is closed by the far end without carrying the exchange: what a published
// listener does to a client the agent's ingress refuses.
func expectConnClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	defer c.Close()
	got, err := harness.Exchange(c, "must not arrive "+uniq(), 5*time.Second)
	if err == nil {
		t.Errorf("%s: answered %q; it must be refused", what, got)
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s: neither answered nor closed within 5s (%v); a refusal closes at once", what, err)
	}
}

// TestPublishedPortLoopbackOnly publishes an agent's port on the host's
// loopback: a client of the host reaches the agent's server (which sees the
// gateway's link address as its peer); the host's other address has no
// listener, so a client on the test internet reaches nothing. A second
// port published on that other address by name shows the ingress decision
// itself: the host may connect, a remote client the rule does not name
// may not.
func TestPublishedPortLoopbackOnly(t *testing.T) {
	e := newEnv(t, bIn)
	p, named := harness.FreePort(t), harness.FreePort(t)
	b := e.attachPublish("b", "b-in",
		fmt.Sprintf("%d:%d", p, portPlain), // loopback by default
		fmt.Sprintf("%s:%d:%d", e.in.Host4, named, portPlain))
	srv := b.ns.Serve(t, fmt.Sprintf(":%d", portPlain), false)
	lo := ap(loopback4, p)

	t.Run("from the host's loopback", func(t *testing.T) {
		c := hostDial(t, "tcp", lo)
		defer c.Close()
		marker := exchange(t, c, "host client")
		_, got := srv.WaitFor(t, sentinelWithin, "the host's connection", line(marker))
		if got.Remote.Addr() != gatewayV4 {
			t.Errorf("the agent's server saw the host's connection from %s, want the gateway's link address %s", got.Remote, gatewayV4)
		}
		client := localOf(c)
		ev := e.d.WaitAudit(t, 5*time.Second, "b's inbound open line from the host", inLine("b", "host", "open", portPlain))
		if ev.SrcAddr() != client {
			t.Errorf("audit line of the published connection has src %q, want the client %s: %s", ev.Src, client, ev.Line)
		}
		if ev.Verdict != "allow" {
			t.Errorf("audit line of the published connection: verdict %q: %s", ev.Verdict, ev.Line)
		}
	})

	t.Run("not from another address", func(t *testing.T) {
		mark := srv.Mark()
		// Nothing listens on the host's other addresses for the loopback
		// publish: the host's kernel refuses, whoever dials.
		for _, dst := range []netip.AddrPort{ap(e.in.Host4, p), ap(netip.IPv6Loopback(), p), ap(e.in.Host6, p)} {
			if c, err := net.DialTimeout("tcp", dst.String(), 2*time.Second); err == nil {
				c.Close()
				t.Errorf("the host reached %s; the port is published on 127.0.0.1 only", dst)
			} else if !harness.IsRefused(err) {
				t.Errorf("dial %s from the host: %v, want connection refused", dst, err)
			}
		}
		if c, err := e.in.NS.Dial(ctxTimeout(t, 2*time.Second), "tcp", ap(e.in.Host4, p).String()); err == nil {
			t.Errorf("a client on the test internet reached %s", ap(e.in.Host4, p))
			exchange(t, c, "from the internet")
			c.Close()
		} else if !harness.IsRefused(err) {
			t.Errorf("dial %s from the test internet: %v, want connection refused", ap(e.in.Host4, p), err)
		}
		srv.NothingBefore(t, mark, sentinelWithin, "the host's sentinel", hostSentinel(t, lo), "a connection from another address")
	})

	t.Run("published on a named address", func(t *testing.T) {
		at := ap(e.in.Host4, named)
		mark := srv.Mark()
		// A remote client: the host's kernel accepts, the gateway decides
		// (b-in names no cidrs) and resets it, before or after the
		// client's connect returns.
		from := e.in.Addr4(5)
		c, err := e.in.NS.DialFrom(ctxTimeout(t, 2*time.Second), "tcp", ap(from, 0).String(), at.String())
		if err == nil {
			expectConnClosed(t, c, "a remote client of "+at.String())
		} else if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("dial %s from %s on the test internet: %v, want a connection the gateway resets", at, from, err)
		}
		ev := e.d.WaitAudit(t, 5*time.Second, "b's inbound deny line for the remote client",
			inLine("b", "remote:"+from.String(), "deny", portPlain))
		if ev.SrcAddr().Addr() != from || (c != nil && ev.SrcAddr() != localOf(c)) {
			t.Errorf("deny line of the remote client has src %q, want the client %s: %s", ev.Src, from, ev.Line)
		}
		// The host itself, from its own address on that side: the host
		// peer, allowed. It is also the sentinel.
		srv.NothingBefore(t, mark, sentinelWithin, "the host's sentinel through "+at.String(), hostSentinel(t, at), "the remote client")
	})
}

// TestAgentToAgentPolicies checks agent to agent over TCP: allowed only
// when the caller's egress names the callee and the callee's ingress names
// the caller, refused at once (an RST) otherwise, with the callee's server
// never seeing the refused caller; the callee's server sees the caller's
// own link address, and both sides audit the flow.
func TestAgentToAgentPolicies(t *testing.T) {
	e := newEnv(t, bIn, aOut, cOut, dOut)
	b := e.attach("b", "b-in")
	a := e.attach("a", "a-out")
	c := e.attach("c", "c-out")
	d := e.attach("d", "d-out")
	srv := b.ns.Serve(t, fmt.Sprintf(":%d", portPlain), false)
	noRule := b.ns.Serve(t, fmt.Sprintf(":%d", portNoRule), false)

	for _, fam := range families {
		t.Run("both allow/"+fam.name, func(t *testing.T) {
			dst := ap(b.addr(fam.n), portPlain)
			conn := a.dial(t, "tcp", dst)
			marker := exchange(t, conn, "from a")
			_, got := srv.WaitFor(t, sentinelWithin, "a's connection", line(marker))
			if want := localOf(conn); got.Remote != want {
				t.Errorf("b's server saw a's connection from %s, want a's own address and port %s", got.Remote, want)
			}
			conn.Close()
			src := localOf(conn).String()
			e.d.WaitAudit(t, 5*time.Second, "a's open line to agent:b", func(ev harness.AuditEntry) bool {
				return outLine("a", "agent:b", "open", portPlain)(ev) && ev.Src == src && ev.Verdict == "allow"
			})
			e.d.WaitAudit(t, 5*time.Second, "b's inbound open line from agent:a", func(ev harness.AuditEntry) bool {
				return inLine("b", "agent:a", "open", portPlain)(ev) && ev.Src == src && ev.Verdict == "allow"
			})
		})
	}

	t.Run("callee's ingress refuses", func(t *testing.T) {
		mark, markNoRule := srv.Mark(), noRule.Mark()
		for _, fam := range families {
			// c's egress names b, b's ingress does not name c on this port.
			c.expectRefused(t, ap(b.addr(fam.n), portPlain))
			// a's egress allows this port, b's ingress has no rule for it.
			a.expectRefused(t, ap(b.addr(fam.n), portNoRule))
		}
		e.d.WaitAudit(t, 5*time.Second, "c's deny line to agent:b", outLine("c", "agent:b", "deny", portPlain))
		e.d.WaitAudit(t, 5*time.Second, "b's inbound deny line for agent:c", inLine("b", "agent:c", "deny", portPlain))
		e.d.WaitAudit(t, 5*time.Second, "a's deny line to agent:b", outLine("a", "agent:b", "deny", portNoRule))
		e.d.WaitAudit(t, 5*time.Second, "b's inbound deny line for agent:a", inLine("b", "agent:a", "deny", portNoRule))
		// Barriers: a's allowed connection to the same server; for the
		// port nothing may reach from outside, b reaches its own server.
		srv.NothingBefore(t, mark, sentinelWithin, "a's sentinel", a.sentinel(t, ap(b.v4, portPlain)), "c's connection")
		own, err := b.ns.Dial(ctxTimeout(t, 2*time.Second), "tcp", ap(b.v4, portNoRule).String())
		if err != nil {
			t.Fatalf("b cannot reach its own server: %v", err)
		}
		defer own.Close()
		noRule.NothingBefore(t, markNoRule, sentinelWithin, "b's own connection", line(exchange(t, own, "b itself")), "a's connection to a port b's ingress does not cover")
	})

	t.Run("caller's egress refuses", func(t *testing.T) {
		mark := srv.Mark()
		for _, fam := range families {
			// b's ingress names d, d's egress does not name b.
			d.expectRefused(t, ap(b.addr(fam.n), portPlain))
		}
		e.d.WaitAudit(t, 5*time.Second, "d's deny line to agent:b", outLine("d", "agent:b", "deny", portPlain))
		srv.NothingBefore(t, mark, sentinelWithin, "a's sentinel", a.sentinel(t, ap(b.v4, portPlain)), "d's connection")
		for _, ev := range e.d.Audit(t) {
			if ev.Agent == "b" && rawStr(ev, "peer") == "agent:d" && ev.Verdict == "allow" {
				t.Errorf("b's side allowed a flow d's own egress refuses: %s", ev.Line)
			}
		}
	})
}

// TestInboundForgedSource checks that identity is the link, not the source
// address (invariants 1 and 8): agent c, which b's ingress does not name on
// portPlain, sends as agent a (which it does name), below its kernel and
// through it, and b's server never sees it. Where b's ingress does name c
// (portNamedC), c is let in as itself, and b's server must not be told it
// is a.
func TestInboundForgedSource(t *testing.T) {
	e := newEnv(t, bIn, aOut, cOut)
	b := e.attach("b", "b-in")
	a := e.attach("a", "a-out")
	c := e.attach("c", "c-out")
	srv := b.ns.Serve(t, fmt.Sprintf(":%d", portPlain), false)
	namedC := b.ns.Serve(t, fmt.Sprintf(":%d", portNamedC), false)

	t.Run("raw packets", func(t *testing.T) {
		ps, err := c.ns.OpenPacketSocket(tunName)
		if err != nil {
			t.Fatal(err)
		}
		defer ps.Close()
		mark := srv.Mark()
		for i, fam := range families {
			src := ap(a.addr(fam.n), uint16(41000+i))
			dst := ap(b.addr(fam.n), portPlain)
			payload := []byte("forged as a " + uniq() + "\n")
			const seq = 1000
			// A SYN carrying data, then the data again as if the
			// handshake had been completed.
			if err := ps.Send(harness.TCPSegment(src, dst, seq, 0, harness.TCPSyn, payload)); err != nil {
				t.Fatalf("send forged SYN: %v", err)
			}
			var ack uint32
			reply, err := recvTCP(ps, src, time.Second)
			switch {
			case err != nil:
				t.Logf("%s: no answer to the forged SYN (%v)", fam.name, err)
			case reply.TCPFlags&harness.TCPSyn != 0:
				t.Errorf("%s: the forged SYN from %s to %s was accepted: %v", fam.name, src, dst, reply)
				ack = reply.seq + 1
			case reply.TCPFlags&harness.TCPRst == 0:
				t.Errorf("%s: the forged SYN was answered with %v, want an RST", fam.name, reply)
			}
			if err := ps.Send(harness.TCPSegment(src, dst, seq+1, ack, harness.TCPAck|harness.TCPPsh, payload)); err != nil {
				t.Fatalf("send forged data: %v", err)
			}
		}
		srv.NothingBefore(t, mark, sentinelWithin, "a's sentinel", a.sentinel(t, ap(b.v4, portPlain)), "c's forged packets")
	})

	// Control: c's own connection to the port b names it on, before c
	// holds anyone else's address.
	t.Run("named peer as itself", func(t *testing.T) {
		conn := c.dial(t, "tcp", ap(b.v4, portNamedC))
		marker := exchange(t, conn, "c as itself")
		if _, got := namedC.WaitFor(t, sentinelWithin, "c's connection", line(marker)); got.Remote.Addr() != c.v4 {
			t.Errorf("b's server saw c's connection from %s, want c's address %s", got.Remote, c.v4)
		}
	})

	// Through c's own kernel, with a's addresses bound as the source.
	c.ns.MustRun(t, "ip", "addr", "add", netip.PrefixFrom(a.v4, 32).String(), "dev", tunName)
	c.ns.MustRun(t, "ip", "-6", "addr", "add", netip.PrefixFrom(a.v6, 128).String(), "dev", tunName, "nodad")
	// The kernel makes an IPv6 address local a moment after it is added:
	// until then the gateway's RST to it is dropped (see tun.waitLocal).
	c.ns.WaitLocal6(t, a.v6)

	t.Run("through the kernel", func(t *testing.T) {
		mark := srv.Mark()
		for _, fam := range families {
			dst := ap(b.addr(fam.n), portPlain)
			start := time.Now()
			conn, err := c.ns.DialFrom(ctxTimeout(t, 5*time.Second), "tcp", ap(a.addr(fam.n), 0).String(), dst.String())
			took := time.Since(start)
			switch {
			case err == nil:
				t.Errorf("%s: c, with a's address as its source, reached %s", fam.name, dst)
				exchange(t, conn, "c as a")
				conn.Close()
			case !harness.IsRefused(err):
				t.Errorf("%s: c as a: dial %s: %v, want connection refused", fam.name, dst, err)
			case took > denyWithin:
				t.Errorf("%s: c as a: refused after %v, want within %v", fam.name, took, denyWithin)
			}
		}
		e.d.WaitAudit(t, 5*time.Second, "b's inbound deny line naming c", inLine("b", "agent:c", "deny", portPlain))
		srv.NothingBefore(t, mark, sentinelWithin, "a's sentinel", a.sentinel(t, ap(b.v4, portPlain)), "c's connection with a's source address")
	})

	t.Run("named peer as another", func(t *testing.T) {
		for _, fam := range families {
			dst := ap(b.addr(fam.n), portNamedC)
			conn, err := c.ns.DialFrom(ctxTimeout(t, 5*time.Second), "tcp", ap(a.addr(fam.n), 0).String(), dst.String())
			if err != nil {
				// Refusing a forged source outright is fine too.
				t.Logf("%s: c as a to %s: %v", fam.name, dst, err)
				continue
			}
			marker := exchange(t, conn, "c as a")
			conn.Close()
			src := localOf(conn).String()
			// The gateway knows who it is: c, let in by b's rule for c.
			e.d.WaitAudit(t, 5*time.Second, "b's inbound open line naming c", func(ev harness.AuditEntry) bool {
				return inLine("b", "agent:c", "open", portNamedC)(ev) && ev.Src == src
			})
			// b's server must not be told otherwise.
			_, got := namedC.WaitFor(t, sentinelWithin, "c's connection with a's source", line(marker))
			if got.Remote.Addr() == a.addr(fam.n) {
				t.Errorf("%s: b's server saw c's connection (audited as agent:c, let in by b's rule for c) as coming from a's address %s: "+
					"the gateway opened it into b from the source address c's packets claimed, not from c's own link address %s",
					fam.name, got.Remote, c.addr(fam.n))
			}
		}
	})
}

// tcpReply is a TCP segment the gateway sent back to a forged source.
type tcpReply struct {
	harness.Packet
	seq uint32
}

// recvTCP waits for the gateway's answer to a segment from src.
func recvTCP(ps *harness.PacketSocket, src netip.AddrPort, timeout time.Duration) (tcpReply, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := ps.Recv(time.Until(deadline))
		if err != nil {
			return tcpReply{}, err
		}
		p, err := harness.ParsePacket(b)
		if err != nil || p.Proto != harness.ProtoTCP || p.Dst != src.Addr() || p.DstPort != src.Port() {
			continue
		}
		seq, _, _ := harness.TCPSeqAck(b)
		return tcpReply{Packet: p, seq: seq}, nil
	}
}

// TestInboundProxyV2 checks the peer's identity as the agent's server gets
// it where its ingress rule asks for a PROXY v2 header: TLV 0xE0 is
// agent:NAME for another agent and host for a client of a published port
// on the host's loopback, and the header's addresses are the caller's.
func TestInboundProxyV2(t *testing.T) {
	e := newEnv(t, bIn, aOut)
	p := harness.FreePort(t)
	b := e.attachPublish("b", "b-in", fmt.Sprintf("127.0.0.1:%d:%d", p, portProxy))
	a := e.attach("a", "a-out")
	srv := b.ns.Serve(t, fmt.Sprintf(":%d", portProxy), true)

	check := func(t *testing.T, got harness.ServerConn, peer string, src, dst netip.AddrPort) {
		t.Helper()
		if got.Proxy == nil {
			t.Fatalf("no PROXY v2 header before the data: %s", got)
		}
		if !got.Proxy.HasPeer || got.Proxy.Peer != peer {
			t.Errorf("PROXY v2 TLV 0xE0 = %q (present: %v), want %q", got.Proxy.Peer, got.Proxy.HasPeer, peer)
		}
		if got.Proxy.Src != src || got.Proxy.Dst != dst {
			t.Errorf("PROXY v2 header says %s -> %s, want %s -> %s", got.Proxy.Src, got.Proxy.Dst, src, dst)
		}
	}
	for _, fam := range families {
		t.Run("agent/"+fam.name, func(t *testing.T) {
			dst := ap(b.addr(fam.n), portProxy)
			conn := a.dial(t, "tcp", dst)
			marker := exchange(t, conn, "from a")
			_, got := srv.WaitFor(t, sentinelWithin, "a's connection", line(marker))
			check(t, got, "agent:a", localOf(conn), dst)
			if got.Remote != localOf(conn) {
				t.Errorf("b's server saw a's connection from %s, want %s", got.Remote, localOf(conn))
			}
		})
	}
	t.Run("published", func(t *testing.T) {
		at := ap(loopback4, p)
		conn := hostDial(t, "tcp", at)
		defer conn.Close()
		marker := exchange(t, conn, "from the host")
		_, got := srv.WaitFor(t, sentinelWithin, "the host's connection", line(marker))
		check(t, got, "host", localOf(conn), at)
		if got.Remote.Addr() != gatewayV4 {
			t.Errorf("b's server saw the host's connection from %s, want the gateway's link address %s", got.Remote, gatewayV4)
		}
	})
}

// TestPublishGoneAtDetach checks that an agent's published listeners close
// when it detaches, also while a connection through one is open (the
// detach must not wait for that connection, which it closes), and that
// clawnet ls no longer lists the agent.
func TestPublishGoneAtDetach(t *testing.T) {
	e := newEnv(t, bIn)
	for _, held := range []bool{false, true} {
		name := map[bool]string{false: "idle", true: "busy"}[held]
		t.Run(name, func(t *testing.T) {
			p := harness.FreePort(t)
			b := e.attachPublish(name, "b-in", fmt.Sprintf("%d:%d", p, portPlain))
			srv := b.ns.Serve(t, fmt.Sprintf(":%d", portPlain), false)
			at := ap(loopback4, p)
			want := fmt.Sprintf("127.0.0.1:%d:%d/tcp", p, portPlain)
			if got := publishedOf(t, e.d, name); !slices.Contains(got, want) {
				t.Errorf("clawnet ls --json lists %s with published %v, want %s", name, got, want)
			}
			// The published port works before the detach.
			c := hostDial(t, "tcp", at)
			defer c.Close()
			srv.WaitFor(t, sentinelWithin, "the host's connection", line(exchange(t, c, "before detach")))
			if !held {
				c.Close()
			}

			done := make(chan harness.Result, 1)
			start := time.Now()
			go func() { done <- e.d.CLI("detach", name) }()
			var r harness.Result
			select {
			case r = <-done:
			case <-time.After(5 * time.Second):
				t.Errorf("clawnet detach %s still running after 5s while a connection through its published port %s is open: "+
					"the detach waits for that connection to end instead of closing it", name, at)
				c.Close()
				r = <-done
			}
			if !r.OK() {
				t.Fatalf("clawnet detach %s (after %v): %v", name, time.Since(start).Round(time.Millisecond), r)
			}
			if held {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err := c.Read(make([]byte, 1))
				var ne net.Error
				if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
					t.Errorf("the connection through %s is still open after the detach (read: %v)", at, err)
				}
			}
			if c, err := net.DialTimeout("tcp", at.String(), 2*time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts after clawnet detach %s", at, name)
			} else if !harness.IsRefused(err) {
				t.Errorf("dial %s after the detach: %v, want connection refused", at, err)
			}
			if _, ok := e.d.Lookup(t, name); ok {
				t.Errorf("clawnet ls still lists %s after the detach", name)
			}
		})
	}
}

// publishedOf returns the published ports clawnet ls --json lists for the
// agent called name.
func publishedOf(t *testing.T, d *harness.Daemon, name string) []string {
	t.Helper()
	var as []control.Agent
	out := d.MustCLI(t, "ls", "--json")
	if err := json.Unmarshal([]byte(out), &as); err != nil {
		t.Fatalf("clawnet ls --json: %v\n%s", err, out)
	}
	for _, a := range as {
		if a.Name == name {
			return a.Published
		}
	}
	t.Fatalf("clawnet ls --json does not list %s:\n%s", name, out)
	return nil
}

// TestPublishBadInput checks the publish requests an attach must refuse: a
// host port already taken, a port the agent's policy has no ingress rule
// for, and UDP where the policy has only a TCP ingress rule. Each fails the attach with one line that says why, and
// leaves nothing behind: no agent, no interface in the namespace, no
// listener for the request's other ports. The same namespace then attaches.
func TestPublishBadInput(t *testing.T) {
	e := newEnv(t, bIn)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	q := taken.Addr().(*net.TCPAddr).Port
	free := harness.FreePort(t)
	ns := harness.NewNetNS(t, "agent")
	for _, tc := range []struct {
		name    string
		publish []string
		want    []string // each must be in the error, case aside
	}{
		{"host port taken", []string{fmt.Sprintf("%d:%d", free, portPlain), fmt.Sprintf("127.0.0.1:%d:%d", q, portPlain)},
			[]string{strconv.Itoa(q), "in use"}},
		{"no ingress rule", []string{fmt.Sprintf("%d:%d", free, portNowhere)},
			[]string{strconv.Itoa(portNowhere), "ingress"}},
		{"udp without a udp ingress rule", []string{fmt.Sprintf("%d:%d/udp", free, portPlain)},
			[]string{"udp", "ingress"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.d.AttachRequest(control.AttachRequest{Netns: ns.Path, Name: "bad", Policy: "b-in", Publish: tc.publish})
			if err == nil {
				t.Fatalf("attach with publish %v succeeded; it must be refused", tc.publish)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if _, ok := e.d.Lookup(t, "bad"); ok {
				t.Errorf("the refused attach left agent bad attached")
			}
			if ok, names := onlyLo(ns); !ok {
				t.Errorf("the refused attach left interfaces in the namespace: %v", names)
			}
			if c, err := net.DialTimeout("tcp", ap(loopback4, free).String(), 2*time.Second); err == nil {
				c.Close()
				t.Errorf("the refused attach left a listener on 127.0.0.1:%d", free)
			}
		})
	}
	t.Run("then attaches", func(t *testing.T) {
		spec := fmt.Sprintf("%d:%d", free, portPlain)
		if _, err := e.d.AttachRequest(control.AttachRequest{Netns: ns.Path, Name: "bad", Policy: "b-in", Publish: []string{spec}}); err != nil {
			t.Fatalf("attach after the refusals: %v", err)
		}
		want := fmt.Sprintf("127.0.0.1:%d:%d/tcp", free, portPlain)
		if got := publishedOf(t, e.d, "bad"); !slices.Contains(got, want) {
			t.Errorf("published %v, want %s", got, want)
		}
	})
}
