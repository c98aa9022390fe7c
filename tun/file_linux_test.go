package tun

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// newPairDevice is a device on one end of a SOCK_SEQPACKET pair, which
// stands in for the TUN: it keeps packet boundaries and is polled as the
// device is. peer is the other end, the agent's side.
func newPairDevice(t *testing.T, vnet bool) (d *fileDevice, peer int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	d, err = newFileDevice(fds[0], "test0", 1500, vnet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, fds[1]
}

// A packet written from several parts arrives whole, as one packet, and
// the write allocates nothing: it is the gateway's every packet to an
// agent.
func TestWriteVectored(t *testing.T) {
	d, peer := newPairDevice(t, false)
	parts := [][]byte{[]byte("header|"), []byte("payload")}
	buf := make([]byte, 64)
	if err := d.WriteVectored(parts); err != nil {
		t.Fatal(err)
	}
	n, err := unix.Read(peer, buf)
	if err != nil || !bytes.Equal(buf[:n], []byte("header|payload")) {
		t.Fatalf("read %q, %v; want the parts as one packet", buf[:n], err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.WriteVectored(parts); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Read(peer, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("WriteVectored allocates %v times a packet, want 0", allocs)
	}
}

// With virtio-net headers, every packet written goes behind a header (all
// zero, or saying where a partial checksum is to be finished), reads give
// the packet without its header, and neither allocates.
func TestVnetHeaders(t *testing.T) {
	f, peer := newPairDevice(t, true)
	d := &Device{Device: f, file: f}
	parts := [][]byte{[]byte("header|"), []byte("payload")}
	buf := make([]byte, 64)
	for _, c := range []struct {
		name  string
		write func() error
		hdr   []byte
	}{
		{"WriteVectored", func() error { return d.WriteVectored(parts) }, make([]byte, vnetHdrLen)},
		{"WriteVectoredPartial", func() error { return d.WriteVectoredPartial(20, 16, parts) }, []byte{1, 0, 0, 0, 0, 0, 20, 0, 16, 0}},
		{"Write", func() error { _, err := d.Write([][]byte{[]byte("xxheader|payload")}, 2); return err }, make([]byte, vnetHdrLen)},
	} {
		if err := c.write(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		n, err := unix.Read(peer, buf)
		want := append(append([]byte(nil), c.hdr...), "header|payload"...)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("%s: read % x, %v; want % x", c.name, buf[:n], err, want)
		}
	}
	in := append(make([]byte, vnetHdrLen), "from the agent"...)
	if _, err := unix.Write(peer, in); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 64)}, []int{0}
	if n, err := d.Read(bufs, sizes, 4); err != nil || n != 1 || string(bufs[0][4:4+sizes[0]]) != "from the agent" {
		t.Fatalf("Read = %d, %v, %q; want the packet without its header", n, err, bufs[0][4:4+sizes[0]])
	}
	// A GSO super-packet (an agent with NET_RAW can make one through a
	// packet socket with PACKET_VNET_HDR on its TUN) is many segments in
	// one: it is dropped, never handed on as one packet.
	gso := append([]byte{0, 1 /* VIRTIO_NET_HDR_GSO_TCPV4 */, 0, 0, 0x40, 0x05}, make([]byte, 4)...)
	if _, err := unix.Write(peer, append(gso, "super-packet"...)); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Read(bufs, sizes, 0); err != nil || n != 0 {
		t.Fatalf("Read of a GSO packet = %d, %v; want no packet and no error", n, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.WriteVectoredPartial(20, 16, parts); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Read(peer, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(peer, in); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Read(bufs, sizes, 0); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("a partial write and a read allocate %v times, want 0", allocs)
	}
}
