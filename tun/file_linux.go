package tun

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// fileDevice is a TUN device without offloads: one bare IP packet per
// read and write, through Go's poller. It carries none of the GRO tables
// wireguard-go's native device keeps for virtio headers (about 1.6 MiB of
// heap per agent), which a device opened without IFF_VNET_HDR never uses.
// netstack/endpoint.go is where its packets are read.
type fileDevice struct {
	f      *os.File
	rc     syscall.RawConn
	name   string
	mtu    int
	vnet   bool // every packet read or written starts with a virtio-net header
	events chan wgtun.Event
	once   sync.Once

	// The state of WriteVectored, kept here so that a write allocates
	// nothing: a closure passed to rc.Write would be, once a packet.
	wmu    sync.Mutex
	parts  [][]byte              // the packet being written; guarded by wmu
	whdr   [vnetHdrLen]byte      // its virtio-net header; guarded by wmu
	iov    [][]byte              // header and parts, reused; guarded by wmu
	werr   error                 // what writev returned; guarded by wmu
	writev func(fd uintptr) bool // d.writevFD, bound once

	// The state of Read with virtio-net headers, likewise (one reader).
	rhdr  [vnetHdrLen]byte
	riov  [2][]byte
	rn    int
	rerr  error
	readv func(fd uintptr) bool
}

// vnetHdrLen is the size of struct virtio_net_hdr, the header a device
// opened with IFF_VNET_HDR puts before every packet.
const vnetHdrLen = 10

// virtio_net_hdr flags.
const vnetNeedsCsum = 1

// vnetHdr is a header that says the packet's transport checksum is partial.
func vnetHdr(csumStart, csumOffset uint16) [vnetHdrLen]byte {
	var h [vnetHdrLen]byte
	h[0] = vnetNeedsCsum
	// gso_type 0, hdr_len 0, gso_size 0; the device is little-endian
	// (TUNSETVNETLE is unset on a little-endian host, the only kind the
	// stack runs on).
	h[6], h[7] = byte(csumStart), byte(csumStart>>8)
	h[8], h[9] = byte(csumOffset), byte(csumOffset>>8)
	return h
}

var _ wgtun.Device = (*fileDevice)(nil)

// newFileDevice takes ownership of fd, an open TUN device.
func newFileDevice(fd int, name string, mtu int, vnet bool) (*fileDevice, error) {
	// Non-blocking, so reads park in the poller instead of a thread, and
	// Close wakes a pending read.
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("tun %s: set non-blocking: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, _ := f.SyscallConn() // fails only for a nil *os.File
	d := &fileDevice{f: f, rc: rc, name: name, mtu: mtu, vnet: vnet, events: make(chan wgtun.Event)}
	d.writev = d.writevFD
	d.readv = d.readvFD
	return d, nil
}

func (d *fileDevice) File() *os.File { return d.f }

// Read reads one packet into bufs[0][offset:].
func (d *fileDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.vnet {
		return d.readVnet(bufs, sizes, offset)
	}
	n, err := d.f.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// readVnet reads one packet and the header before it. The device is given
// only checksum offload (TUN_F_CSUM), so the header says at most that the
// packet's checksum is partial, which the stack above, trusting the local
// kernel, never verifies anyway.
func (d *fileDevice) readVnet(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.riov[0], d.riov[1] = d.rhdr[:], bufs[0][offset:]
	d.rn, d.rerr = 0, nil
	if err := d.rc.Read(d.readv); err != nil {
		return 0, os.ErrClosed
	}
	if d.rerr != nil {
		return 0, &os.PathError{Op: "readv", Path: d.f.Name(), Err: d.rerr}
	}
	if d.rn < vnetHdrLen {
		return 0, &os.PathError{Op: "readv", Path: d.f.Name(), Err: unix.EINVAL}
	}
	if d.rhdr[1] != 0 {
		// A GSO packet, which the device is never given the
		// offloads to send: not one packet, so none is read.
		return 0, nil
	}
	sizes[0] = d.rn - vnetHdrLen
	return 1, nil
}

func (d *fileDevice) readvFD(fd uintptr) bool {
	d.rn, d.rerr = unix.Readv(int(fd), d.riov[:])
	return d.rerr != unix.EAGAIN
}

// Write writes each of bufs[i][offset:] as one packet.
func (d *fileDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.vnet {
		for i, b := range bufs {
			if err := d.writeVectoredHdr([vnetHdrLen]byte{}, [][]byte{b[offset:]}); err != nil {
				return i, err
			}
		}
		return len(bufs), nil
	}
	for i, b := range bufs {
		if _, err := d.f.Write(b[offset:]); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

// WriteVectored writes the concatenation of parts as one packet, with one
// writev(2) and no copy in user space: a packet built by the stack is a
// header view and a payload view, and the payload may be 64 KiB.
func (d *fileDevice) WriteVectored(parts [][]byte) error {
	if d.vnet {
		return d.writeVectoredHdr([vnetHdrLen]byte{}, parts)
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.writevLocked(parts)
}

// writeVectoredHdr writes one packet behind the virtio-net header hdr.
func (d *fileDevice) writeVectoredHdr(hdr [vnetHdrLen]byte, parts [][]byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.whdr = hdr
	d.iov = append(append(d.iov[:0], d.whdr[:]), parts...)
	err := d.writevLocked(d.iov)
	clear(d.iov)
	return err
}

func (d *fileDevice) writevLocked(parts [][]byte) error {
	d.parts, d.werr = parts, nil
	err := d.rc.Write(d.writev)
	werr := d.werr
	d.parts, d.werr = nil, nil
	if err != nil {
		// The poller's only refusal is a closed file; say it as Write
		// does.
		return fmt.Errorf("%w: %v", os.ErrClosed, err)
	}
	if werr != nil {
		return &os.PathError{Op: "writev", Path: d.f.Name(), Err: werr}
	}
	return nil
}

// writevFD is WriteVectored's step on the file descriptor, which the
// poller repeats until the device takes the packet.
func (d *fileDevice) writevFD(fd uintptr) bool {
	_, d.werr = unix.Writev(int(fd), d.parts)
	return d.werr != unix.EAGAIN
}

func (d *fileDevice) MTU() (int, error)          { return d.mtu, nil }
func (d *fileDevice) Name() (string, error)      { return d.name, nil }
func (d *fileDevice) Events() <-chan wgtun.Event { return d.events }
func (d *fileDevice) BatchSize() int             { return 1 }

// Close closes the device: the interface disappears from the agent's
// namespace (it is never persistent) and a pending Read returns
// os.ErrClosed.
func (d *fileDevice) Close() error {
	var err error
	d.once.Do(func() {
		err = d.f.Close()
		close(d.events)
	})
	return err
}
