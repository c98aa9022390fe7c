package harness_test

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/test/harness"
)

// openTUN makes a TUN device inside ns and returns its file: the test plays
// the part clawnetd plays in the real tests.
func openTUN(t *testing.T, ns *harness.NetNS, name string) *os.File {
	t.Helper()
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "tun")
		return nil
	})
	if err != nil {
		t.Fatalf("make TUN: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// readTUN returns the next packet matching keep that the namespace sent out
// of the TUN.
func readTUN(t *testing.T, f *os.File, keep func(harness.Packet) bool) harness.Packet {
	t.Helper()
	buf := make([]byte, 65536)
	f.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatalf("read TUN: %v", err)
		}
		p, err := harness.ParsePacket(buf[:n])
		if err == nil && keep(p) {
			return p
		}
	}
}

// TestPacketSocket checks the forged-packet helpers against the kernel: a
// packet socket's sends come out of the TUN unchanged, and the kernel
// accepts the built UDP and TCP packets (so their checksums are right) and
// answers them.
func TestPacketSocket(t *testing.T) {
	ns := harness.NewNetNS(t, "pkt")
	tun := openTUN(t, ns, "tst0")
	ns.MustRun(t, "ip", "addr", "add", "203.0.113.1/24", "dev", "tst0")
	ns.MustRun(t, "ip", "-6", "addr", "add", "2001:db8:ffff::1/64", "dev", "tst0", "nodad")
	ns.MustRun(t, "ip", "link", "set", "tst0", "up")
	ns.WaitLocal6(t, netip.MustParseAddr("2001:db8:ffff::1"))

	ps, err := ns.OpenPacketSocket("tst0")
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()

	for _, fam := range []struct {
		name       string
		local, far netip.Addr
	}{
		{"ipv4", netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.7")},
		{"ipv6", netip.MustParseAddr("2001:db8:ffff::1"), netip.MustParseAddr("2001:db8:ffff::7")},
	} {
		t.Run(fam.name, func(t *testing.T) {
			// Out: what the packet socket sends is what the TUN reader gets.
			out := harness.UDPPacket(netip.AddrPortFrom(fam.local, 1000), netip.AddrPortFrom(fam.far, 2000), []byte("out"))
			if err := ps.Send(out); err != nil {
				t.Fatal(err)
			}
			got := readTUN(t, tun, func(p harness.Packet) bool { return p.Proto == harness.ProtoUDP && p.DstPort == 2000 })
			if got.Src != fam.local || got.Dst != fam.far || got.SrcPort != 1000 {
				t.Errorf("TUN read %v", got)
			}

			// In: a UDP datagram written into the TUN reaches a socket, so
			// the kernel found its checksum good.
			pc, err := ns.ListenPacket("udp", netip.AddrPortFrom(fam.local, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
			if _, err := tun.Write(harness.UDPPacket(netip.AddrPortFrom(fam.far, 3000), netip.AddrPortFrom(fam.local, port), []byte("in"))); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := pc.ReadFrom(buf)
			if err != nil || !bytes.Equal(buf[:n], []byte("in")) || from.(*net.UDPAddr).Port != 3000 {
				t.Fatalf("socket read %q from %v: %v", buf[:n], from, err)
			}
			// The packet socket sees incoming packets too.
			if _, err := ps.RecvMatch(2*time.Second, func(p harness.Packet) bool {
				return p.Proto == harness.ProtoUDP && p.DstPort == port && p.Src == fam.far
			}); err != nil {
				t.Errorf("packet socket did not see the incoming datagram: %v", err)
			}

			// A SYN to a listener gets a SYN-ACK, to a closed port an RST.
			ln, err := ns.Listen("tcp", netip.AddrPortFrom(fam.local, 0).String())
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			lport := uint16(ln.Addr().(*net.TCPAddr).Port)
			for _, c := range []struct {
				port uint16
				want uint8
			}{{lport, harness.TCPSyn | harness.TCPAck}, {1, harness.TCPRst | harness.TCPAck}} {
				if _, err := tun.Write(harness.TCPSYN(netip.AddrPortFrom(fam.far, 4000+c.port%100), netip.AddrPortFrom(fam.local, c.port), 1)); err != nil {
					t.Fatal(err)
				}
				p := readTUN(t, tun, func(p harness.Packet) bool { return p.Proto == harness.ProtoTCP && p.SrcPort == c.port })
				if p.TCPFlags != c.want {
					t.Errorf("SYN to port %d: answer %v, want flags %#x", c.port, p, c.want)
				}
			}
		})
	}
}
