package netstack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	agentAddr = netip.MustParseAddr("100.96.0.2")
	gwAddr    = netip.MustParseAddr("100.96.0.1")
	farAddr   = netip.MustParseAddr("198.18.0.2")
)

// newTestStack runs a stack on a channel TUN: packets the test writes to
// ch.Outbound are what the agent sends; the stack's replies appear on
// ch.Inbound.
func newTestStack(t *testing.T, cfg Config) (*Stack, *tuntest.ChannelTUN) {
	t.Helper()
	ch := tuntest.NewChannelTUN()
	cfg.Device = ch.TUN()
	cfg.MTU = 1500
	cfg.Gateway = []netip.Addr{gwAddr}
	if cfg.TCP == nil {
		cfg.TCP = func(r *TCPRequest) { r.Reject() }
	}
	if cfg.UDP == nil {
		cfg.UDP = func(*UDPRequest) bool { return false }
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, ch
}

func tcpSYN(src, dst netip.AddrPort) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1000,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), header.TCPMinimumSize)
	tcp.SetChecksum(^tcp.CalculateChecksum(sum))
	return pkt
}

func udpPacket(src, dst netip.AddrPort, payload []byte) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(pkt[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(pkt[header.IPv4MinimumSize+header.UDPMinimumSize:], payload)
	return pkt
}

func echoRequest(src, dst netip.Addr) []byte {
	pkt := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+4)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(7)
	icmp.SetSequence(1)
	copy(icmp[header.ICMPv4MinimumSize:], "ping")
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return pkt
}

func recv(t *testing.T, ch *tuntest.ChannelTUN) header.IPv4 {
	t.Helper()
	select {
	case p := <-ch.Inbound:
		return header.IPv4(p)
	case <-time.After(5 * time.Second):
		t.Fatal("no packet from the stack within 5s")
		return nil
	}
}

func TestTCPRejectIsReset(t *testing.T) {
	got := make(chan *TCPRequest, 1)
	_, ch := newTestStack(t, Config{TCP: func(r *TCPRequest) { got <- r; r.Reject() }})
	src, dst := netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 443)
	ch.Outbound <- tcpSYN(src, dst)
	r := <-got
	if r.Src != src || r.Dst != dst {
		t.Errorf("request = %v → %v, want %v → %v", r.Src, r.Dst, src, dst)
	}
	ip := recv(t, ch)
	tcp := header.TCP(ip.Payload())
	if ip.TransportProtocol() != header.TCPProtocolNumber || tcp.Flags()&header.TCPFlagRst == 0 {
		t.Fatalf("reply to a rejected SYN: proto %d flags %v, want a RST", ip.TransportProtocol(), tcp.Flags())
	}
	if ip.SourceAddress().As4() != farAddr.As4() || tcp.SourcePort() != 443 {
		t.Errorf("RST from %v:%d, want it from the destination the agent asked for", ip.SourceAddress(), tcp.SourcePort())
	}
}

func TestUDPDenyIsPortUnreachable(t *testing.T) {
	_, ch := newTestStack(t, Config{})
	ch.Outbound <- udpPacket(netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 9999), []byte("x"))
	ip := recv(t, ch)
	icmp := header.ICMPv4(ip.Payload())
	if ip.TransportProtocol() != header.ICMPv4ProtocolNumber || icmp.Type() != header.ICMPv4DstUnreachable || icmp.Code() != header.ICMPv4PortUnreachable {
		t.Fatalf("reply to a denied datagram: proto %d type %d code %d, want ICMP port unreachable", ip.TransportProtocol(), icmp.Type(), icmp.Code())
	}
}

func TestDNSHookSeesEveryPort53AndAnswers(t *testing.T) {
	type q struct {
		src, dst netip.AddrPort
		payload  string
	}
	got := make(chan q, 2)
	var s *Stack
	s, ch := newTestStack(t, Config{
		UDP: func(*UDPRequest) bool { t.Error("a port 53 datagram reached the UDP forwarder"); return false },
		DNS: func(src, dst netip.AddrPort, p []byte) { got <- q{src, dst, string(p)} },
	})
	src := netip.AddrPortFrom(agentAddr, 5353)
	for _, dst := range []netip.AddrPort{netip.AddrPortFrom(gwAddr, 53), netip.AddrPortFrom(farAddr, 53)} {
		ch.Outbound <- udpPacket(src, dst, []byte("query"))
		g := <-got
		if g.src != src || g.dst != dst || g.payload != "query" {
			t.Errorf("DNS hook got %v → %v %q, want %v → %v \"query\"", g.src, g.dst, g.payload, src, dst)
		}
		// The channel TUN hands packets over unbuffered: answer from
		// another goroutine, as the resolver does.
		errc := make(chan error, 1)
		go func() { errc <- s.WriteUDP(dst, src, []byte("answer")) }()
		ip := recv(t, ch)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		u := header.UDP(ip.Payload())
		if ip.SourceAddress().As4() != dst.Addr().As4() || u.SourcePort() != 53 || string(u.Payload()) != "answer" {
			t.Errorf("answer from %v:%d %q", ip.SourceAddress(), u.SourcePort(), u.Payload())
		}
		if !ip.IsChecksumValid() {
			t.Errorf("answer has a bad IPv4 checksum")
		}
		sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), u.Length())
		if checksum.Checksum(u[:u.Length()], sum) != 0xffff {
			t.Errorf("answer has a bad UDP checksum")
		}
	}
}

// TestWriteUDPZeroChecksum: an IPv6 datagram whose checksum computes to
// zero goes out with all ones, which means the same: zero would say "no
// checksum", which IPv6 forbids, and the agent's kernel would drop the
// answer (RFC 8200 8.1).
func TestWriteUDPZeroChecksum(t *testing.T) {
	s, ch := newTestStack(t, Config{})
	src, dst := netip.MustParseAddrPort("[fd00::1]:53"), netip.MustParseAddrPort("[fd00::2]:5353")
	// The last two bytes of the payload make the one's complement sum of
	// the datagram all ones, so that its checksum computes to zero.
	payload := []byte("answer\x00\x00")
	sa, da := tcpip.AddrFrom16(src.Addr().As16()), tcpip.AddrFrom16(dst.Addr().As16())
	udpLen := uint16(header.UDPMinimumSize + len(payload))
	u := make(header.UDP, udpLen)
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: udpLen})
	copy(u.Payload(), payload)
	sum := checksum.Checksum(u, header.PseudoHeaderChecksum(header.UDPProtocolNumber, sa, da, udpLen))
	binary.BigEndian.PutUint16(payload[len(payload)-2:], ^sum)

	errc := make(chan error, 1)
	go func() { errc <- s.WriteUDP(src, dst, payload) }()
	p := <-ch.Inbound
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	got := header.UDP(header.IPv6(p).Payload())
	if string(got.Payload()) != string(payload) {
		t.Fatalf("payload %q, want %q", got.Payload(), payload)
	}
	if got.Checksum() != 0xffff {
		t.Errorf("checksum %#04x, want 0xffff for a sum that computes to zero", got.Checksum())
	}
}

func TestEchoOnlyForTheGateway(t *testing.T) {
	_, ch := newTestStack(t, Config{})
	// A ping to a far address is dropped: nothing comes back.
	ch.Outbound <- echoRequest(agentAddr, farAddr)
	// A ping to the gateway is answered.
	ch.Outbound <- echoRequest(agentAddr, gwAddr)
	ip := recv(t, ch)
	if ip.SourceAddress().As4() != gwAddr.As4() {
		t.Fatalf("echo reply from %v: only the gateway's own address answers", ip.SourceAddress())
	}
	select {
	case p := <-ch.Inbound:
		t.Fatalf("unexpected second packet from %v", header.IPv4(p).SourceAddress())
	case <-time.After(200 * time.Millisecond):
	}
}

// TestForeignEchoBehindExtensionHeaders: an IPv6 ping to a far address
// behind a destination options header (a raw socket in the agent can add
// one) is dropped like a plain one, not answered.
func TestForeignEchoBehindExtensionHeaders(t *testing.T) {
	_, ch := newTestStack(t, Config{})
	body := append([]byte{0, 7, 0, 1}, "ping"...)
	icmp := icmpMsg(agentAddr6, farAddr6, uint8(header.ICMPv6EchoRequest), 0, body)
	// The channel TUN hands packets over unbuffered, and a reply is
	// written before the next packet is read: send from another goroutine.
	go func() {
		ch.Outbound <- ip6(agentAddr6, farAddr6, header.ICMPv6ProtocolNumber, icmp, optsExt6(header.IPv6DestinationOptionsExtHdrIdentifier, nil))
		// The barrier: a ping to the gateway, answered after it.
		ch.Outbound <- echoRequest(agentAddr, gwAddr)
	}()
	if p := <-ch.Inbound; header.IPVersion(p) != header.IPv4Version || header.IPv4(p).SourceAddress().As4() != gwAddr.As4() {
		t.Fatalf("first packet back % x; want only the gateway's echo reply", p)
	}
	select {
	case p := <-ch.Inbound:
		t.Fatalf("unexpected second packet % x", p)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestTCPOptions: the stack runs the TCP options tune sets: SACK, loss
// recovery without RACK-TLP, reno pinned, no TIME-WAIT (see stack.go).
func TestTCPOptions(t *testing.T) {
	s, _ := newTestStack(t, Config{})
	var sack tcpip.TCPSACKEnabled
	var rec tcpip.TCPRecovery
	var cc tcpip.CongestionControlOption
	var tw tcpip.TCPTimeWaitTimeoutOption
	for _, o := range []tcpip.GettableTransportProtocolOption{&sack, &rec, &cc, &tw} {
		if err := s.s.TransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			t.Fatalf("%T: %v", o, err)
		}
	}
	if !sack || rec != 0 || cc != "reno" || tw != 0 {
		t.Errorf("SACK %v, recovery %v (want 0), congestion control %q, TIME-WAIT %v", sack, rec, cc, tw)
	}
}
