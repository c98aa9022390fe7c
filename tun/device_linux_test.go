package tun

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// newTestNetns makes a network namespace for the test and opens it.
func newTestNetns(t *testing.T) *Netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace and a TUN device")
	}
	name := "clawnet-tuntest-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := OpenNetns("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// sum16 is the Internet checksum's one's complement sum of b, folded.
func sum16(b []byte, initial uint32) uint16 {
	s := initial
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// udpPacket builds an IP packet carrying a UDP datagram of payload from src
// to dst. partial leaves the UDP checksum as a partial one (the pseudo
// header's sum); otherwise it is whole, and wrong when bad is set.
func udpPacket(src, dst netip.AddrPort, payload []byte, partial, bad bool) (pkt []byte, ipLen int) {
	ulen := 8 + len(payload)
	var pseudo []byte
	if src.Addr().Is4() {
		ipLen = 20
		pkt = make([]byte, ipLen+ulen)
		pkt[0], pkt[8], pkt[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(pkt[12:], s[:])
		copy(pkt[16:], d[:])
		binary.BigEndian.PutUint16(pkt[10:], ^sum16(pkt[:20], 0))
		pseudo = append(append(append([]byte(nil), s[:]...), d[:]...), 0, 17, byte(ulen>>8), byte(ulen))
	} else {
		ipLen = 40
		pkt = make([]byte, ipLen+ulen)
		pkt[0], pkt[6], pkt[7] = 0x60, 17, 64
		binary.BigEndian.PutUint16(pkt[4:], uint16(ulen))
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(pkt[8:], s[:])
		copy(pkt[24:], d[:])
		pseudo = append(append(append([]byte(nil), s[:]...), d[:]...), 0, 0, byte(ulen>>8), byte(ulen), 0, 0, 0, 17)
	}
	u := pkt[ipLen:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(ulen))
	copy(u[8:], payload)
	ps := sum16(pseudo, 0)
	if partial {
		binary.BigEndian.PutUint16(u[6:], ps)
		return pkt, ipLen
	}
	c := ^sum16(u, uint32(ps))
	if bad {
		c ^= 0x00ff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return pkt, ipLen
}

// A device opened with Checksum hands the agent's kernel packets whose UDP
// or TCP checksum is left partial, and the kernel, delivering them
// locally, takes them without summing (a whole checksum that is wrong is
// still dropped); it takes packets longer than the interface's MTU too,
// which the gateway's stack sends rather than fragment (netstack's
// unfragmentedMTU). Reads come without the virtio-net header, and the
// agent's kernel leaves its own checksums partial.
func TestPartialChecksumAndOversizeDelivered(t *testing.T) {
	ns := newTestNetns(t)
	agent4, agent6 := netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("fd77::2")
	d, err := Create(ns, Config{Name: "tt0", MTU: 65520, Checksum: true,
		Addrs: []netip.Prefix{netip.PrefixFrom(agent4, 24), netip.PrefixFrom(agent6, 64)}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.PartialChecksum() {
		t.Fatal("PartialChecksum is false on a device opened with Checksum")
	}
	var conns []*net.UDPConn
	if err := ns.Do(func() error {
		for _, a := range []netip.Addr{agent4, agent6} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 9999)))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		defer c.Close()
	}
	recvd := func(c *net.UDPConn) []byte {
		c.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 1<<17)
		n, err := c.Read(b)
		if err != nil {
			return nil
		}
		return b[:n]
	}
	for i, far := range []netip.Addr{netip.MustParseAddr("198.18.0.9"), netip.MustParseAddr("2001:db8::9")} {
		c := conns[i]
		src := netip.AddrPortFrom(far, 4000)
		dst := netip.AddrPortFrom([]netip.Addr{agent4, agent6}[i], 9999)
		// The largest packet of each family: over the interface's MTU.
		size := 65535 - 20 - 8
		if far.Is6() {
			size = 65535 - 8
		}
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		pkt, ipLen := udpPacket(src, dst, payload, true, false)
		if err := d.WriteVectoredPartial(uint16(ipLen), 6, [][]byte{pkt[:ipLen], pkt[ipLen:]}); err != nil {
			t.Fatalf("%s: write %d bytes: %v", far, len(pkt), err)
		}
		if got := recvd(c); !bytes.Equal(got, payload) {
			t.Fatalf("%s: a %d-byte packet with a partial checksum: the agent's socket got %d bytes, want %d", far, len(pkt), len(got), len(payload))
		}
		bad, _ := udpPacket(src, dst, []byte("bad checksum"), false, true)
		if err := d.WriteVectored([][]byte{bad}); err != nil {
			t.Fatal(err)
		}
		good, _ := udpPacket(src, dst, []byte("good checksum"), false, false)
		if err := d.WriteVectored([][]byte{good}); err != nil {
			t.Fatal(err)
		}
		if got := string(recvd(c)); got != "good checksum" {
			t.Fatalf("%s: after a wrong and a right whole checksum the agent's socket got %q, want only the right one", far, got)
		}
	}

	// From the agent: a datagram to a far address arrives without the
	// header in front.
	if err := ns.Do(func() error {
		c, err := net.Dial("udp", "198.18.0.9:53")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("from the agent"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 65535)}, []int{0}
	stop := time.AfterFunc(5*time.Second, func() { d.Close() }) // a Read waiting then fails
	defer stop.Stop()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, err := d.Read(bufs, sizes, 0); err != nil {
			t.Fatal(err)
		}
		p := bufs[0][:sizes[0]]
		if len(p) >= 28 && p[0] == 0x45 && p[9] == 17 && bytes.HasSuffix(p, []byte("from the agent")) {
			if got := binary.BigEndian.Uint16(p[2:]); int(got) != len(p) {
				t.Fatalf("read a %d-byte packet whose IPv4 length says %d: the header was not taken off", len(p), got)
			}
			// TUN_F_CSUM: the agent's kernel left the checksum for the
			// gateway, which, trusting it, never sums it.
			if d.file.rhdr[0]&vnetNeedsCsum == 0 {
				t.Errorf("the agent's datagram came with header % x, want its checksum left partial (NEEDS_CSUM)", d.file.rhdr)
			}
			return
		}
	}
	t.Fatal("the agent's datagram never came out of the device")
}
