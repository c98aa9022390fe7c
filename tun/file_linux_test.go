package tun

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"
)

// A packet written from several parts arrives whole, as one packet, and
// the write allocates nothing: it is the gateway's every packet to an
// agent. A SOCK_SEQPACKET pair stands in for the TUN: it keeps packet
// boundaries and is polled as the device is.
func TestWriteVectored(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	d, err := newFileDevice(fds[0], "test0", 1500)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	parts := [][]byte{[]byte("header|"), []byte("payload")}
	buf := make([]byte, 64)
	if err := d.WriteVectored(parts); err != nil {
		t.Fatal(err)
	}
	n, err := unix.Read(fds[1], buf)
	if err != nil || !bytes.Equal(buf[:n], []byte("header|payload")) {
		t.Fatalf("read %q, %v; want the parts as one packet", buf[:n], err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.WriteVectored(parts); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Read(fds[1], buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("WriteVectored allocates %v times a packet, want 0", allocs)
	}
}
