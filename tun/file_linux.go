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
	events chan wgtun.Event
	once   sync.Once

	// The state of WriteVectored, kept here so that a write allocates
	// nothing: a closure passed to rc.Write would be, once a packet.
	wmu    sync.Mutex
	parts  [][]byte              // the packet being written; guarded by wmu
	werr   error                 // what writev returned; guarded by wmu
	writev func(fd uintptr) bool // d.writevFD, bound once
}

var _ wgtun.Device = (*fileDevice)(nil)

// newFileDevice takes ownership of fd, an open TUN device.
func newFileDevice(fd int, name string, mtu int) (*fileDevice, error) {
	// Non-blocking, so reads park in the poller instead of a thread, and
	// Close wakes a pending read.
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("tun %s: set non-blocking: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	rc, _ := f.SyscallConn() // fails only for a nil *os.File
	d := &fileDevice{f: f, rc: rc, name: name, mtu: mtu, events: make(chan wgtun.Event)}
	d.writev = d.writevFD
	return d, nil
}

func (d *fileDevice) File() *os.File { return d.f }

// Read reads one packet into bufs[0][offset:].
func (d *fileDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.f.Read(bufs[0][offset:])
	if err != nil {
		return 0, err
	}
	sizes[0] = n
	return 1, nil
}

// Write writes each of bufs[i][offset:] as one packet.
func (d *fileDevice) Write(bufs [][]byte, offset int) (int, error) {
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
	d.wmu.Lock()
	defer d.wmu.Unlock()
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
