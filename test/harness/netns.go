package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NetNS is a named network namespace (under /run/netns) made by the harness.
type NetNS struct {
	Name string
	// Path is the namespace's bind mount, what clawnet attach --netns takes.
	Path string
}

// NewNetNS makes an empty namespace with only lo, and lo up: what an agent
// container started with --network none looks like. It is deleted, and every
// process still in it killed, when t ends.
func NewNetNS(t testing.TB, role string) *NetNS {
	t.Helper()
	RequireRoot(t)
	sweepStaleOnce()
	ns := &NetNS{Name: uniqueName(role)}
	ns.Path = filepath.Join("/run/netns", ns.Name)
	mustRun(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(func() {
		if err := deleteNetNS(ns.Name); err != nil {
			t.Errorf("delete namespace: %v", err)
		}
	})
	mustRun(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	return ns
}

// deleteNetNS kills what still runs in the namespace (a process inside would
// keep it, and any veth in it, alive after the unmount) and deletes it.
func deleteNetNS(name string) error {
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return run("ip", "netns", "del", name)
}

var staleOnce sync.Once

var staleName = regexp.MustCompile(`^` + namePrefix + `(\d+)-\d+-`)

// sweepStaleOnce deletes namespaces left by harness runs whose process is
// gone (killed before its cleanups ran). A stale internet namespace would
// keep a second 198.18.0.1 on the host and break routing for later runs.
func sweepStaleOnce() {
	staleOnce.Do(func() {
		entries, err := os.ReadDir("/run/netns")
		if err != nil {
			return
		}
		for _, e := range entries {
			m := staleName.FindStringSubmatch(e.Name())
			if m == nil {
				continue
			}
			pid, _ := strconv.Atoi(m[1])
			if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
				continue
			}
			deleteNetNS(e.Name())
		}
	})
}

// Do runs fn on an OS thread that has entered the namespace. Sockets made in
// fn belong to the namespace for their whole life, even after the thread
// returns to the host namespace. fn must not start goroutines that make
// sockets: they would run on other threads, in the host namespace.
func (ns *NetNS) Do(fn func() error) error {
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Only unlock when the thread is back home; otherwise the goroutine
		// exits locked and the runtime throws the tainted thread away.
		restored := false
		defer func() {
			if restored {
				runtime.UnlockOSThread()
			}
		}()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- result{fmt.Errorf("open own namespace: %w", err)}
			return
		}
		defer home.Close()
		target, err := os.Open(ns.Path)
		if err != nil {
			restored = true
			done <- result{fmt.Errorf("open namespace %s: %w", ns.Name, err)}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			restored = true
			done <- result{fmt.Errorf("enter namespace %s: %w", ns.Name, err)}
			return
		}
		ferr := fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{fmt.Errorf("return from namespace %s: %w", ns.Name, err)}
			return
		}
		restored = true
		done <- result{ferr}
	}()
	return (<-done).err
}

// WaitLocal6 waits until the namespace's kernel takes each of addrs, IPv6
// addresses added to one of its interfaces, as its own: until then a packet
// to them is dropped (see waitLocal6). It fails t after 10s.
func (ns *NetNS) WaitLocal6(t testing.TB, addrs ...netip.Addr) {
	t.Helper()
	waitLocal6(t, ns.Name, addrs...)
}

// Dial connects from inside the namespace. Use IP literals: a name lookup
// would run on another thread, in the host namespace.
func (ns *NetNS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return ns.DialFrom(ctx, network, "", addr)
}

// DialFrom is Dial with a local address to bind first ("" for any).
func (ns *NetNS) DialFrom(ctx context.Context, network, laddr, raddr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{}
		if laddr != "" {
			var err error
			switch {
			case strings.HasPrefix(network, "tcp"):
				d.LocalAddr, err = net.ResolveTCPAddr(network, laddr)
			case strings.HasPrefix(network, "udp"):
				d.LocalAddr, err = net.ResolveUDPAddr(network, laddr)
			}
			if err != nil {
				return err
			}
		}
		var err error
		c, err = d.DialContext(ctx, network, raddr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace.
func (ns *NetNS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket (UDP) inside the namespace.
func (ns *NetNS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Command returns a command that runs inside the namespace (through
// nsenter, which enters and execs without forking).
func (ns *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	all := append([]string{"--net=" + ns.Path, "--", name}, args...)
	return exec.CommandContext(ctx, "nsenter", all...)
}

// Run runs a command inside the namespace and returns what it did.
func (ns *NetNS) Run(timeout time.Duration, name string, args ...string) Result {
	return RunCmd(ns.Command(context.Background(), name, args...), timeout)
}

// MustRun runs a command inside the namespace and fails t unless it exits 0.
func (ns *NetNS) MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	r := ns.Run(time.Minute, name, args...)
	if !r.OK() {
		t.Fatalf("in %s: %s %s: %v", ns.Name, name, strings.Join(args, " "), r)
	}
	return r.Stdout
}

// Link is one interface as ip -json reports it.
type Link struct {
	Name  string   `json:"ifname"`
	Flags []string `json:"flags"`
	MTU   int      `json:"mtu"`
	Type  string   `json:"link_type"`
	Addrs []Addr   `json:"addr_info"`
}

// Addr is one interface address.
type Addr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	PrefixLen int    `json:"prefixlen"`
	Scope     string `json:"scope"`
}

// Prefix parses the address with its prefix length.
func (a Addr) Prefix() netip.Prefix {
	ip, err := netip.ParseAddr(a.Local)
	if err != nil {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(ip, a.PrefixLen)
}

// Up reports whether the interface is administratively up.
func (l Link) Up() bool {
	for _, f := range l.Flags {
		if f == "UP" {
			return true
		}
	}
	return false
}

// Links lists the namespace's interfaces with their addresses.
func (ns *NetNS) Links() ([]Link, error) {
	r := RunCmd(exec.Command("ip", "-n", ns.Name, "-json", "addr", "show"), time.Minute)
	if !r.OK() {
		return nil, fmt.Errorf("list links of %s: %v", ns.Name, r)
	}
	var links []Link
	if err := json.Unmarshal([]byte(r.Stdout), &links); err != nil {
		return nil, fmt.Errorf("parse ip -json addr of %s: %w", ns.Name, err)
	}
	return links, nil
}

// LinkNames lists the names of the namespace's interfaces.
func (ns *NetNS) LinkNames(t testing.TB) []string {
	t.Helper()
	links, err := ns.Links()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	return names
}

// Routes returns the namespace's routes of one family ("-4" or "-6") as ip
// prints them, one per line, for assertions and failure messages.
func (ns *NetNS) Routes(family string) (string, error) {
	r := RunCmd(exec.Command("ip", "-n", ns.Name, family, "route", "show"), time.Minute)
	if !r.OK() {
		return "", fmt.Errorf("list routes of %s: %v", ns.Name, r)
	}
	return r.Stdout, nil
}
