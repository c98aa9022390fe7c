package netstack

import (
	"net/netip"
	"sync/atomic"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
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
