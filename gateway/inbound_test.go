package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	proxyproto "github.com/pires/go-proxyproto"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/gateway/control"
)

const (
	alicePolicy = `version: v1
name: dnstest
egress:
  - agents: [bob]
    ports: [8080, 8081, 9090]
  - agents: [bob]
    ports: [5353]
    protocol: udp
`
	bobPolicy = `version: v1
name: bobpol
ingress:
  - agents: [alice]
    ports: [8080]
  - agents: [alice]
    ports: [8081]
    proxy_protocol: v2
  - host: true
    ports: [8080]
  - host: true
    ports: [8082]
    proxy_protocol: v2
  - agents: [alice]
    ports: [5353]
    protocol: udp
  - host: true
    ports: [5354]
    protocol: udp
`
	carolPolicy = `version: v1
name: carolpol
egress:
  - agents: [bob]
    ports: [8080]
`
)

// twoAgents is alice, bob and carol on real netstacks, each with its own
// agent-side stack, registered with the gateway as attached agents.
type agentsTest struct {
	g                  *Gateway
	audit              *syncBuffer
	alice, bob, carol  *Agent
	aliceK, bobK, carK *stack.Stack
}

func newAgentsTest(t *testing.T) *agentsTest {
	t.Helper()
	g, audit := dnsTestGateway(t, alicePolicy, nil, netip.MustParseAddrPort("127.0.0.1:1"))
	for name, pol := range map[string]string{"bob.yaml": bobPolicy, "carol.yaml": carolPolicy} {
		if err := os.WriteFile(filepath.Join(g.cfg.PolicyDir, name), []byte(pol), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.ReloadPolicies(); err != nil {
		t.Fatal(err)
	}
	at := &agentsTest{g: g, audit: audit}
	mk := func(name, pol string, idx int) (*Agent, *stack.Stack) {
		a := dnsTestAgent(t, g, name)
		a.policy = pol
		p4, _ := g.pool.addrs(idx)
		a.addrs = []netip.Prefix{p4}
		g.mu.Lock()
		if g.agents == nil {
			g.agents = map[string]*Agent{}
		}
		g.agents[name] = a
		g.mu.Unlock()
		return a, testLink(t, a, p4.Addr())
	}
	at.alice, at.aliceK = mk("alice", "dnstest", 2)
	at.bob, at.bobK = mk("bob", "bobpol", 3)
	at.carol, at.carK = mk("carol", "carolpol", 4)
	return at
}

// serverLog records what a test server inside an agent saw.
type serverLog struct {
	mu      sync.Mutex
	remotes []string
	got     []string
}

func (l *serverLog) add(remote, got string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.remotes = append(l.remotes, remote)
	l.got = append(l.got, got)
}

func (l *serverLog) seen() ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.remotes...), append([]string(nil), l.got...)
}

// listenIn runs a line server inside an agent's kernel (its side of the
// link): it records the peer and the first line, answers "hi <line>".
// With proxy set it reads a PROXY v2 header first and records its TLV.
func listenIn(t *testing.T, k *stack.Stack, addr netip.AddrPort, proxy bool) *serverLog {
	t.Helper()
	ln, err := gonet.ListenTCP(k, tcpip.FullAddress{Addr: tcpip.AddrFrom4(addr.Addr().As4()), Port: addr.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	log := &serverLog{}
	serveAll(t, ln, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		remote := c.RemoteAddr().String()
		if proxy {
			h, err := proxyproto.Read(r)
			if err != nil {
				log.add(remote, "bad proxy header: "+err.Error())
				return
			}
			tlvs, _ := h.TLVs()
			for _, tlv := range tlvs {
				if tlv.Type == PP2TypeClawnetPeer {
					remote = h.SourceAddr.String() + " " + string(tlv.Value)
				}
			}
		}
		line, _ := r.ReadString('\n')
		log.add(remote, line)
		io.WriteString(c, "hi "+line)
	})
	return log
}

func dialFrom(t *testing.T, k *stack.Stack, dst netip.AddrPort) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return gonet.DialContextTCP(ctx, k, fullAddr(dst), ipv4.ProtocolNumber)
}

func (at *agentsTest) waitLine(t *testing.T, agent string, ev Event, dst netip.AddrPort) AuditEvent {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range at.audit.events(t) {
			if e.Agent == agent && e.Event == ev && e.Dst == dst.String() {
				return e
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s line of %s for %s; log: %+v", ev, agent, dst, at.audit.events(t))
	return AuditEvent{}
}

// TestAgentToAgent: alice reaches bob's server only where alice's egress
// names bob and bob's ingress names alice; bob's server sees alice's own
// address, and a refused attempt never reaches it.
func TestAgentToAgent(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	bobAddr := at.bob.addrs[0].Addr()
	plain := listenIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 8080), false)
	closed := listenIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 9090), false)

	dst := netip.AddrPortFrom(bobAddr, 8080)
	c, err := dialFrom(t, at.aliceK, dst)
	if err != nil {
		t.Fatalf("alice → bob:8080: %v", err)
	}
	io.WriteString(c, "from alice\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || reply != "hi from alice\n" {
		t.Fatalf("reply = %q, %v", reply, err)
	}
	remotes, _ := plain.seen()
	if len(remotes) != 1 || !strings.HasPrefix(remotes[0], at.alice.addrs[0].Addr().String()+":") {
		t.Fatalf("bob's server saw %v, want alice's address", remotes)
	}
	if e := at.waitLine(t, "bob", EventOpen, dst); e.Direction != "in" || e.Peer != "agent:alice" || !strings.Contains(e.Rule, "ingress[0]") {
		t.Errorf("bob's open line = %+v", e)
	}
	if e := at.waitLine(t, "alice", EventOpen, dst); e.Direction != "" || e.Peer != "agent:bob" {
		t.Errorf("alice's open line = %+v", e)
	}
	if e := at.waitLine(t, "bob", EventClose, dst); *e.BytesDown != uint64(len("from alice\n")) || *e.BytesUp != uint64(len(reply)) {
		t.Errorf("bob's close line counts up %d down %d", *e.BytesUp, *e.BytesDown)
	}

	// 9090: alice's egress names it, bob's ingress does not.
	refused := netip.AddrPortFrom(bobAddr, 9090)
	if c, err := dialFrom(t, at.aliceK, refused); err == nil {
		c.Close()
		t.Fatal("alice → bob:9090 connected; bob's ingress does not allow it")
	}
	if e := at.waitLine(t, "bob", EventDeny, refused); e.Direction != "in" || e.Peer != "agent:alice" {
		t.Errorf("bob's deny line = %+v", e)
	}
	// carol's egress names bob, but bob's ingress does not name carol.
	if c, err := dialFrom(t, at.carK, dst); err == nil {
		c.Close()
		t.Fatal("carol → bob:8080 connected; bob's ingress names only alice")
	}
	at.waitLine(t, "carol", EventDeny, dst)
	// bob's egress names nobody: bob cannot call alice, whatever alice allows.
	back := netip.AddrPortFrom(at.alice.addrs[0].Addr(), 8080)
	if c, err := dialFrom(t, at.bobK, back); err == nil {
		c.Close()
		t.Fatal("bob → alice connected without an egress rule")
	}
	at.waitLine(t, "bob", EventDeny, back)
	// The barrier: one more allowed call goes through after the refused
	// ones, so they had their chance to arrive.
	c, err = dialFrom(t, at.aliceK, dst)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "sentinel\n")
	bufio.NewReader(c).ReadString('\n')
	c.Close()
	if r, _ := closed.seen(); len(r) != 0 {
		t.Fatalf("bob's server on 9090 was reached by %v", r)
	}
	if r, got := plain.seen(); len(r) != 2 || got[1] != "sentinel\n" {
		t.Fatalf("bob's server on 8080 saw %v %q, want alice twice and nothing from carol", r, got)
	}
}

// TestAgentToAgentProxyProtocol: where bob's ingress asks for it, bob's
// server gets a PROXY v2 header naming alice.
func TestAgentToAgentProxyProtocol(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	bobAddr := at.bob.addrs[0].Addr()
	log := listenIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 8081), true)
	c, err := dialFrom(t, at.aliceK, netip.AddrPortFrom(bobAddr, 8081))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if reply, err := bufio.NewReader(c).ReadString('\n'); err != nil || reply != "hi hello\n" {
		t.Fatalf("reply = %q, %v", reply, err)
	}
	remotes, _ := log.seen()
	want := at.alice.addrs[0].Addr().String()
	if len(remotes) != 1 || !strings.HasPrefix(remotes[0], want+":") || !strings.HasSuffix(remotes[0], " agent:alice") {
		t.Fatalf("bob's server read PROXY source and peer %v, want %s:PORT agent:alice", remotes, want)
	}
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestPublish: a port published on the host's loopback reaches bob's
// server when bob's ingress allows the host, from the gateway's address,
// with the client named in a PROXY v2 header where asked; a spec no rule
// could pass, UDP and a taken port are refused; unpublish closes it.
func TestPublish(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	t.Cleanup(at.bob.closeListeners)
	bobAddr := at.bob.addrs[0].Addr()
	plain := listenIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 8080), false)
	proxied := listenIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 8082), true)
	lo := netip.MustParseAddr("127.0.0.1")
	p1 := control.Publish{HostAddr: lo, HostPort: freePort(t), AgentPort: 8080, Proto: "tcp"}
	p2 := control.Publish{HostAddr: lo, HostPort: freePort(t), AgentPort: 8082, Proto: "tcp"}
	if err := at.g.Publish("bob", []control.Publish{p1, p2}); err != nil {
		t.Fatal(err)
	}
	ask := func(p control.Publish, line string) (string, error) {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(p.HostAddr, p.HostPort).String(), 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, line)
		return bufio.NewReader(c).ReadString('\n')
	}
	if got, err := ask(p1, "from the host\n"); err != nil || got != "hi from the host\n" {
		t.Fatalf("through %s: %q, %v", p1, got, err)
	}
	if r, _ := plain.seen(); len(r) != 1 || !strings.HasPrefix(r[0], at.g.gw4.String()+":") {
		t.Fatalf("bob's server saw %v, want the gateway's address", r)
	}
	e := at.waitLine(t, "bob", EventOpen, netip.AddrPortFrom(bobAddr, 8080))
	if e.Direction != "in" || e.Peer != "host" || !strings.HasPrefix(e.Src, "127.0.0.1:") {
		t.Errorf("bob's open line = %+v", e)
	}
	if got, err := ask(p2, "proxied\n"); err != nil || got != "hi proxied\n" {
		t.Fatalf("through %s: %q, %v", p2, got, err)
	}
	if r, _ := proxied.seen(); len(r) != 1 || !strings.HasPrefix(r[0], "127.0.0.1:") || !strings.HasSuffix(r[0], " host") {
		t.Fatalf("PROXY header = %v, want the client 127.0.0.1 and peer host", r)
	}

	for _, tt := range []struct {
		p    control.Publish
		want error
	}{
		{control.Publish{HostAddr: lo, HostPort: freePort(t), AgentPort: 9999, Proto: "tcp"}, ErrBadRequest}, // no ingress rule
		{control.Publish{HostAddr: lo, HostPort: freePort(t), AgentPort: 8080, Proto: "udp"}, ErrBadRequest},
		{control.Publish{HostAddr: lo, HostPort: p1.HostPort, AgentPort: 8082, Proto: "tcp"}, ErrConflict}, // port taken
	} {
		if err := at.g.Publish("bob", []control.Publish{tt.p}); !errors.Is(err, tt.want) {
			t.Errorf("Publish(%s) = %v, want %v", tt.p, err, tt.want)
		}
	}
	if err := at.g.Unpublish("bob", []control.Publish{p1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(p1, "after\n"); err == nil {
		t.Fatal("an unpublished port still answers")
	}
	if got := at.bob.publishedSpecs(); len(got) != 1 || got[0] != p2.String() {
		t.Fatalf("published = %v, want only %s", got, p2)
	}
}

// TestAgentNames: the gateway's DNS names an attached agent for the agents
// whose egress names it, and for no one else.
func TestAgentNames(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	ask := func(k *stack.Stack, name string) *dns.Msg {
		t.Helper()
		c, err := gonet.DialUDP(k, nil, ptrTo(fullAddr(netip.AddrPortFrom(at.g.gw4, 53))), ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(dnstest.Query(name, dns.TypeA, 1232))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("ask %s: %v", name, err)
		}
		return dnstest.MustUnpack(t, buf[:n])
	}
	m := ask(at.aliceK, "bob."+AgentZone+".")
	if got := dnstest.Addrs(m); len(got) != 1 || got[0] != at.bob.addrs[0].Addr() {
		t.Fatalf("alice asking for bob got %v, want %s", got, at.bob.addrs[0].Addr())
	}
	for _, q := range []struct {
		k    *stack.Stack
		name string
	}{
		{at.carK, "alice." + AgentZone + "."}, // carol's egress names only bob
		{at.aliceK, "nobody." + AgentZone + "."},
		{at.bobK, "alice." + AgentZone + "."}, // bob's egress names nobody
	} {
		if m := ask(q.k, q.name); m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
			t.Errorf("asking for %s = %s %v, want NXDOMAIN", q.name, dns.RcodeToString[m.Rcode], m.Answer)
		}
	}
}

// udpEchoIn runs a UDP socket at addr inside an agent's kernel (its side of
// the link): it reports each datagram as "FROM PAYLOAD" and answers
// "re PAYLOAD". It is closed when t ends.
func udpEchoIn(t *testing.T, k *stack.Stack, addr netip.AddrPort) <-chan string {
	t.Helper()
	srv, err := gonet.DialUDP(k, ptrTo(fullAddr(addr)), nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	got := make(chan string, 4)
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- from.String() + " " + string(buf[:n])
			srv.WriteTo(append([]byte("re "), buf[:n]...), from)
		}
	}()
	return got
}

// TestAgentToAgentUDP: a UDP flow between agents needs both policies too,
// and reaches bob's socket from alice's own address.
func TestAgentToAgentUDP(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	bobAddr := at.bob.addrs[0].Addr()
	got := udpEchoIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 5353))
	send := func(k *stack.Stack) (*gonet.UDPConn, error) {
		c, err := gonet.DialUDP(k, nil, ptrTo(fullAddr(netip.AddrPortFrom(bobAddr, 5353))), ipv4.ProtocolNumber)
		if err != nil {
			return nil, err
		}
		_, err = c.Write([]byte("ping"))
		return c, err
	}
	c, err := send(at.aliceK)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "re ping" {
		t.Fatalf("alice's reply = %q, %v", buf[:n], err)
	}
	if s := <-got; !strings.HasPrefix(s, at.alice.addrs[0].Addr().String()+":") {
		t.Fatalf("bob's socket saw %q, want alice's address", s)
	}
	if e := at.waitLine(t, "bob", EventOpen, netip.AddrPortFrom(bobAddr, 5353)); e.Direction != "in" || e.Proto != "udp" || e.Peer != "agent:alice" {
		t.Errorf("bob's open line = %+v", e)
	}
	// carol's egress does not name bob on UDP: refused, never delivered.
	c2, err := send(at.carK)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	at.waitLine(t, "carol", EventDeny, netip.AddrPortFrom(bobAddr, 5353))
	c.Write([]byte("sentinel"))
	if s := <-got; !strings.HasSuffix(s, " sentinel") {
		t.Fatalf("bob's socket saw %q before alice's sentinel: carol's datagram got through", s)
	}
}

// TestAgentToAgentForgedSource (DESIGN.md invariants 1 and 8): alice's
// kernel sends from carol's address; the gateway knows the flow is alice's
// by the link it came on, and bob's servers, TCP and UDP, see it from
// alice's own address, never from the one her packets claimed.
func TestAgentToAgentForgedSource(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	aliceAddr, carolAddr, bobAddr := at.alice.addrs[0].Addr(), at.carol.addrs[0].Addr(), at.bob.addrs[0].Addr()
	forged := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFrom4(carolAddr.As4()).WithPrefix()}
	if err := at.aliceK.AddProtocolAddress(1, forged, stack.AddressProperties{}); err != nil {
		t.Fatalf("add carol's address to alice's kernel: %v", err)
	}
	from := fullAddr(netip.AddrPortFrom(carolAddr, 0))

	plain := listenIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 8080), false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := gonet.DialTCPWithBind(ctx, at.aliceK, from, fullAddr(netip.AddrPortFrom(bobAddr, 8080)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("alice as carol → bob:8080: %v", err)
	}
	io.WriteString(c, "alice as carol\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || reply != "hi alice as carol\n" {
		t.Fatalf("reply = %q, %v", reply, err)
	}
	if remotes, _ := plain.seen(); len(remotes) != 1 || !strings.HasPrefix(remotes[0], aliceAddr.String()+":") {
		t.Errorf("bob's TCP server saw %v, want alice's own address %s", remotes, aliceAddr)
	}

	got := udpEchoIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 5353))
	u, err := gonet.DialUDP(at.aliceK, &from, ptrTo(fullAddr(netip.AddrPortFrom(bobAddr, 5353))), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte("alice as carol")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if !strings.HasPrefix(s, aliceAddr.String()+":") || !strings.HasSuffix(s, " alice as carol") {
			t.Errorf("bob's UDP socket saw %q, want alice's datagram from her own address %s", s, aliceAddr)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bob's UDP socket got nothing from alice as carol")
	}
}

// TestPublishUDP: a published UDP port carries a host client's datagrams
// into the agent from the gateway's address, and the answers back.
func TestPublishUDP(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	t.Cleanup(at.bob.closeListeners)
	bobAddr := at.bob.addrs[0].Addr()
	seen := udpEchoIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 5354))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	pc.Close()
	p := control.Publish{HostAddr: netip.MustParseAddr("127.0.0.1"), HostPort: port, AgentPort: 5354, Proto: "udp"}
	if err := at.g.Publish("bob", []control.Publish{p}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", netip.AddrPortFrom(p.HostAddr, p.HostPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "re hello" {
		t.Fatalf("reply through %s = %q, %v", p, buf[:n], err)
	}
	if from := <-seen; !strings.HasPrefix(from, at.g.gw4.String()+":") {
		t.Fatalf("bob's socket saw %s, want the gateway's address", from)
	}
	if e := at.waitLine(t, "bob", EventOpen, netip.AddrPortFrom(bobAddr, 5354)); e.Direction != "in" || e.Peer != "host" || e.Proto != "udp" {
		t.Errorf("bob's open line = %+v", e)
	}
	// A client whose flow ended (idle, revoked) gets a new one with its
	// next datagram.
	for _, f := range flowsTo(at.bob, netip.AddrPortFrom(bobAddr, 5354)) {
		f.close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.Write([]byte("again"))
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "re again" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no answer through a new flow 5s after the client's flow ended")
		}
	}
}
