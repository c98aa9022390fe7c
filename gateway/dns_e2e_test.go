package gateway

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/clawnet/clawnet/dnsproxy"
	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/netstack"
)

// dnsTestAgentAddr is the agent's address on its test link.
var dnsTestAgentAddr = netip.MustParseAddr("100.96.0.2")

// dnsTestLink gives agent a its real netstack on a channel TUN, and returns
// the agent's side: a second gVisor stack wired to the other end of the
// TUN, where the test opens sockets as a process in the agent would.
func dnsTestLink(t *testing.T, a *Agent) *stack.Stack {
	t.Helper()
	return testLink(t, a, dnsTestAgentAddr)
}

// testLink is dnsTestLink with the agent's side at addr.
func testLink(t *testing.T, a *Agent, addr netip.Addr) *stack.Stack {
	t.Helper()
	ch := tuntest.NewChannelTUN()
	st, err := netstack.New(netstack.Config{
		Device:  ch.TUN(),
		MTU:     tuntest.DefaultMTU,
		Gateway: []netip.Addr{a.g.gw4, a.g.gw6},
		TCP:     a.handleTCP,
		UDP:     a.handleUDP,
		DNS:     a.handleDNS,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.stack = st

	cs := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
	})
	ep := channel.New(256, tuntest.DefaultMTU, "")
	if err := cs.CreateNIC(1, ep); err != nil {
		t.Fatalf("create nic: %v", err)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddrFrom4(addr.As4()).WithPrefix()}
	if err := cs.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
		t.Fatalf("add address: %v", err)
	}
	cs.SetRouteTable([]tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: 1}})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { // agent → gateway
		defer func() { done <- struct{}{} }()
		for {
			pkt := ep.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			b := slices.Clone(v.AsSlice())
			v.Release()
			pkt.DecRef()
			select {
			case ch.Outbound <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { // gateway → agent
		defer func() { done <- struct{}{} }()
		for {
			select {
			case b := <-ch.Inbound:
				proto := ipv4.ProtocolNumber
				if len(b) > 0 && b[0]>>4 == 6 {
					proto = ipv6.ProtocolNumber
				}
				pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(b)})
				ep.InjectInbound(proto, pkt)
				pkt.DecRef()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		st.Close()
		cs.Close()
		cs.Wait()
	})
	return cs
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}
}

// TestDNSEndToEndUDP sends real datagrams from the agent's side of a TUN to
// port 53 of arbitrary addresses: each is answered by the gateway from the
// address asked (a connected socket takes nothing else), allowed names are
// bound, denied names never reach the upstream.
func TestDNSEndToEndUDP(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t, dnstest.Zone...)
	g, audit := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	a := dnsTestAgent(t, g, "alice")
	cs := dnsTestLink(t, a)

	for _, server := range []string{"100.96.0.1:53", "192.0.2.53:53", "198.51.100.7:53"} {
		t.Run(server, func(t *testing.T) {
			srv := netip.MustParseAddrPort(server)
			conn, err := gonet.DialUDP(cs, nil, ptrTo(fullAddr(srv)), ipv4.ProtocolNumber)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ask := func(name string, qtype uint16) *dns.Msg {
				t.Helper()
				if _, err := conn.Write(dnstest.Query(name, qtype, 1232)); err != nil {
					t.Fatal(err)
				}
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatalf("no answer from %s: %v", server, err)
				}
				return dnstest.MustUnpack(t, buf[:n])
			}
			m := ask("api.example.com.", dns.TypeA)
			if m.Id != 0x4242 || len(dnstest.Addrs(m)) != 1 {
				t.Fatalf("answer = %v", m)
			}
			m = ask("secret-data.attacker.example.", dns.TypeA)
			if m.Rcode != dns.RcodeNameError || dnstest.EDE(m) == nil {
				t.Fatalf("denied name answered %s (%v), want NXDOMAIN with an extended error", dnstest.Rcode(m.Rcode), dnstest.EDE(m))
			}
			m = ask("api.example.com.", dns.TypeTXT)
			if m.Rcode != dns.RcodeRefused {
				t.Fatalf("TXT answered %s, want REFUSED", dnstest.Rcode(m.Rcode))
			}
		})
	}
	ip := netip.MustParseAddr("93.184.216.34")
	if !a.names.Has("api.example.com", ip) {
		t.Fatal("the answer did not bind api.example.com")
	}
	for _, q := range up.Queries() {
		if q.Name != "api.example.com." || q.Type != "A" {
			t.Errorf("upstream saw %v: only allowed A queries may reach it", q)
		}
	}
	// The first lookup's answer is kept: the other two come from the cache.
	if n := len(up.Queries()); n != 1 {
		t.Errorf("upstream saw %d queries, want 1", n)
	}
	var lines int
	for _, ev := range audit.events(t) {
		if ev.Kind != "dns" || ev.Proto != "udp" || ev.Src == "" || ev.Dst == "" {
			t.Errorf("audit line = %+v", ev)
		}
		lines++
	}
	if lines != 9 {
		t.Errorf("audit lines = %d, want one per query (9)", lines)
	}
	if n := a.nflows.Load(); n != 0 {
		t.Errorf("UDP DNS counted %d flows, want none", n)
	}
}

// TestDNSEndToEndTCP opens DNS-over-TCP connections through the agent's
// netstack: answered, counted as the agent's flows while open.
func TestDNSEndToEndTCP(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t, dnstest.Zone...)
	g, _ := dnsTestGateway(t, dnstest.Policy, nil, up.Addr)
	a := dnsTestAgent(t, g, "alice")
	cs := dnsTestLink(t, a)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := gonet.DialContextTCP(ctx, cs, fullAddr(netip.MustParseAddrPort("203.0.113.9:53")), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	m := tcpExchange(t, conn, dnstest.Query("many.example.com.", dns.TypeAAAA, 0))
	if m.Truncated || len(m.Answer) != dnsproxy.MaxBindingsPerName {
		t.Fatalf("TCP answer TC = %v with %d records, want %d", m.Truncated, len(m.Answer), dnsproxy.MaxBindingsPerName)
	}
	if n := a.nflows.Load(); n != 1 {
		t.Errorf("flows while the DNS connection is open = %d, want 1", n)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for a.nflows.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the DNS connection's flow was not released after close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !a.names.Has("many.example.com", netip.MustParseAddr("2606:2800:220:1::1")) {
		t.Fatal("the TCP answer did not bind")
	}
}

func ptrTo[T any](v T) *T { return &v }
