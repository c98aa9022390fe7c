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

// Packets read from the device are handed to the stack in the view they were
// read into when large, and copied when small: every datagram of a run that
// mixes both, still queued unread when the next ones are read, arrives
// whole and in order (a read view reused while the stack still held it
// would overwrite the earlier ones).
func TestLargeAndSmallPacketsArriveWhole(t *testing.T) {
	ch := tuntest.NewChannelTUN()
	conns := make(chan *gonet.UDPConn, 1)
	s, err := New(Config{Device: ch.TUN(), MTU: 65520, Gateway: []netip.Addr{gwAddr},
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
