package netstack

import (
	"bytes"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// vectorTUN is a channel TUN that also takes packets as vectors, as the
// real device does (tun.Device.WriteVectored), and counts them.
type vectorTUN struct {
	wgtun.Device
	vectored atomic.Int32
}

func (v *vectorTUN) WriteVectored(parts [][]byte) error {
	v.vectored.Add(1)
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	_, err := v.Device.Write([][]byte{b}, 0)
	return err
}

// A device that takes vectors gets every packet that way, whole: the
// endpoint does not copy packets into one buffer first.
func TestWritesVectors(t *testing.T) {
	ch := tuntest.NewChannelTUN()
	dev := &vectorTUN{Device: ch.TUN()}
	s, err := New(Config{Device: dev, MTU: 1500, Gateway: []netip.Addr{gwAddr},
		TCP: func(r *TCPRequest) { r.Reject() }, UDP: func(*UDPRequest) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	src, dst := netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 443)
	ch.Outbound <- tcpSYN(src, dst)
	ip := recv(t, ch)
	if n := dev.vectored.Load(); n != 1 {
		t.Fatalf("%d packets written as vectors, want the one RST", n)
	}
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.TCPProtocolNumber {
		t.Fatalf("the RST written as a vector is not a whole IPv4 TCP packet: % x", []byte(ip))
	}
	if got, want := header.TCP(ip.Payload()).DestinationPort(), src.Port(); got != want {
		t.Errorf("RST to port %d, want %d", got, want)
	}
}

// newUDPAcceptingStack runs a stack at MTU 65520 on dev that refuses TCP
// and accepts every UDP flow, handing the agent's side of each on conns.
func newUDPAcceptingStack(t *testing.T, dev wgtun.Device) <-chan *gonet.UDPConn {
	t.Helper()
	conns := make(chan *gonet.UDPConn, 1)
	s, err := New(Config{Device: dev, MTU: 65520, Gateway: []netip.Addr{gwAddr},
		TCP: func(r *TCPRequest) { r.Reject() },
		UDP: func(r *UDPRequest) bool {
			c, err := r.Accept()
			if err != nil {
				t.Error(err)
				return false
			}
			conns <- c
			return true
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return conns
}

// Packets read from the device are handed to the stack in the view they were
// read into when large, and copied when small: every datagram of a run that
// mixes both, still queued unread when the next ones are read, arrives
// whole and in order (a read view reused while the stack still held it
// would overwrite the earlier ones).
func TestLargeAndSmallPacketsArriveWhole(t *testing.T) {
	ch := tuntest.NewChannelTUN()
	conns := newUDPAcceptingStack(t, ch.TUN())
	src, dst := netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 9999)
	sizes := []int{handOver + 100, 200, maxPacket - header.IPv4MinimumSize - header.UDPMinimumSize, handOver - 100, 40000, 1}
	var want [][]byte
	for i, n := range sizes {
		p := bytes.Repeat([]byte{byte('a' + i)}, n)
		want = append(want, p)
		ch.Outbound <- udpPacket(src, dst, p)
	}
	c := <-conns
	defer c.Close()
	buf := make([]byte, maxPacket)
	for i, w := range want {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d (%d bytes): %v", i, len(w), err)
		}
		if !bytes.Equal(buf[:n], w) {
			t.Fatalf("datagram %d: got %d bytes starting %q, want %d bytes of %q", i, n, buf[:min(n, 4)], len(w), w[:1])
		}
	}
}

// partialTUN is a channel TUN that takes packets with a partial checksum,
// as tun's Device opened with Checksum does, and finishes the checksum as
// the kernel would before passing the packet on.
type partialTUN struct {
	wgtun.Device
	partial atomic.Int32
}

func (p *partialTUN) PartialChecksum() bool { return true }

func (p *partialTUN) WriteVectoredPartial(start, off uint16, parts [][]byte) error {
	p.partial.Add(1)
	var b []byte
	for _, s := range parts {
		b = append(b, s...)
	}
	sum := ^checksum.Checksum(b[start:], 0)
	b[int(start+off)], b[int(start+off)+1] = byte(sum>>8), byte(sum)
	_, err := p.Device.Write([][]byte{b}, 0)
	return err
}

// With a device that takes partial checksums, the stack sums no TCP or UDP
// packet it sends (the device is told where to), the checksum the kernel
// finishes from what the stack left is right, and a UDP datagram larger
// than the interface's MTU goes out whole: a fragment cannot carry a
// partial checksum.
func TestPartialChecksums(t *testing.T) {
	ch := tuntest.NewChannelTUN()
	dev := &partialTUN{Device: ch.TUN()}
	conns := newUDPAcceptingStack(t, dev)

	// TCP: the stack's reset to a refused SYN.
	src, dst := netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 443)
	ch.Outbound <- tcpSYN(src, dst)
	ip := recv(t, ch)
	tcp := header.TCP(ip.Payload())
	if ip.TransportProtocol() != header.TCPProtocolNumber || tcp.Flags()&header.TCPFlagRst == 0 {
		t.Fatalf("want the stack's RST, got % x", []byte(ip))
	}
	if !tcp.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(tcp.Payload(), 0), uint16(len(tcp.Payload()))) {
		t.Error("the RST's finished checksum is wrong")
	}
	if dev.partial.Load() != 1 {
		t.Fatalf("%d packets written with a partial checksum, want the RST", dev.partial.Load())
	}

	// UDP: a reply on an accepted flow, small and then larger than the MTU.
	usrc, udst := netip.AddrPortFrom(agentAddr, 40001), netip.AddrPortFrom(farAddr, 9999)
	ch.Outbound <- udpPacket(usrc, udst, []byte("q"))
	c := <-conns
	defer c.Close()
	for _, n := range []int{5, 65500} {
		payload := bytes.Repeat([]byte{'r'}, n)
		// The channel TUN takes a packet only as it is received.
		go func() {
			if _, err := c.Write(payload); err != nil {
				t.Error(err)
			}
		}()
		ip := recv(t, ch)
		if ip.FragmentOffset() != 0 || ip.More() {
			t.Fatalf("a %d-byte datagram went out fragmented", n)
		}
		u := header.UDP(ip.Payload())
		if ip.TransportProtocol() != header.UDPProtocolNumber || !bytes.Equal(u.Payload(), payload) {
			t.Fatalf("want the %d-byte reply whole, got a %d-byte packet", n, len(ip))
		}
		if !u.IsChecksumValid(ip.SourceAddress(), ip.DestinationAddress(), checksum.Checksum(u.Payload(), 0)) {
			t.Errorf("the %d-byte reply's finished checksum is wrong", n)
		}
	}
	if got := dev.partial.Load(); got != 3 {
		t.Errorf("%d packets written with a partial checksum, want 3", got)
	}
}
