package tun

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// Netns is an open handle on a network namespace. Holding it keeps the
// namespace alive; Close releases it.
type Netns struct {
	f    *os.File
	path string
	dev  uint64
	ino  uint64
}

// ErrNotNetns is returned when a path exists but is not a network namespace.
var ErrNotNetns = errors.New("not a network namespace")

// OpenNetns opens the network namespace at path (for example
// /var/run/netns/NAME or /proc/PID/ns/net).
func OpenNetns(path string) (*Netns, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat netns %s: %w", path, err)
	}
	// NS_GET_NSTYPE tells a namespace file from any other file.
	typ, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, ErrNotNetns)
	}
	return &Netns{f: f, path: path, dev: uint64(st.Dev), ino: st.Ino}, nil
}

// NetnsOfPID opens the network namespace of process pid.
func NetnsOfPID(pid int) (*Netns, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid %d", pid)
	}
	return OpenNetns("/proc/" + strconv.Itoa(pid) + "/ns/net")
}

// ID identifies the namespace itself, whichever path opened it.
func (n *Netns) ID() string { return fmt.Sprintf("net:[%d:%d]", n.dev, n.ino) }

// Path is the path the namespace was opened by.
func (n *Netns) Path() string { return n.path }

// Fd is the namespace file descriptor, valid until Close.
func (n *Netns) Fd() int { return int(n.f.Fd()) }

// Close releases the handle.
func (n *Netns) Close() error { return n.f.Close() }

// IsHost reports whether n is the network namespace clawnetd itself runs in.
func (n *Netns) IsHost() bool {
	self, err := OpenNetns("/proc/self/ns/net")
	if err != nil {
		return false
	}
	defer self.Close()
	return self.ID() == n.ID()
}

// Do runs fn on an OS thread that has entered the namespace. Sockets and
// devices fn creates belong to that namespace for their whole life.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is locked for the goroutine's whole life: if switching
		// back fails, the goroutine exits still locked and Go discards the
		// thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(n.Fd(), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
