package suite

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
	"github.com/clawnet/clawnet/bench/internal/report"
)

// system is one way for a client namespace to reach the server namespace.
type system interface {
	name() string
	// setup builds the client namespace and its path to the server.
	setup(ctx context.Context) error
	// netns is the client namespace the measuring tools run in.
	netns() string
	// target is the server's address as this system's client reaches it.
	target() netip.Addr
	// pid is the userspace process that moves the packets, whose CPU the
	// suite charges to the system; 0 for the kernel path.
	pid() int
	// alive reports a data-path process (or a server of its own) that
	// has died.
	alive() error
	close() error
}

// inbounder is a system with a way in from the host: a client in the host
// namespace reaches a probe server behind it at inboundAddr.
type inbounder interface {
	inboundAddr() netip.AddrPort
}

// inboundServer is the probe's echo server inside a system's own
// namespace, which its published or forwarded port leads to.
func inboundServer(ns, probeBin string) (*proc, error) {
	// Not a context: the server lives until the system closes.
	cmd := nsCommand(context.Background(), ns, probeBin, "server", "-listen", fmt.Sprintf(":%d", probePort))
	return startProc("inbound probe server in "+ns, cmd, nil)
}

// waitProbe waits until an echo comes back through addr: a forwarder
// accepts before the server behind it listens, so a connection alone
// proves nothing.
func waitProbe(ctx context.Context, addr netip.AddrPort) error {
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = probe.Ping(ctx, addr.String()); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no echo through %s after 10s: %w", addr, err)
}

// onLoopback is port on the host's 127.0.0.1, where the systems publish
// their inbound ports.
func onLoopback(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port)
}

// freePort returns a TCP port nothing listens on on 127.0.0.1, for a
// system to publish or forward; another program could take it before
// the system does, which then fails its setup with the tool's message.
func freePort() (uint16, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port), nil
}

// serverExited reports an inbound server that has ended.
func serverExited(p *proc) error {
	if p == nil {
		return nil
	}
	if gone, err := p.exited(); gone {
		return err
	}
	return nil
}

// vethSystem is the ceiling: a client namespace joined to the server
// namespace by one veth pair, the kernel all the way. The server's
// host-side address, which the DNS server answers for the workloads by
// name, is routed over that veth too.
type vethSystem struct {
	t  *topology
	ns string
}

func (v *vethSystem) name() string       { return report.Veth }
func (v *vethSystem) netns() string      { return v.ns }
func (v *vethSystem) target() netip.Addr { return addrIn(v.t.prefix, blockVeth, 1) }
func (v *vethSystem) pid() int           { return 0 }
func (v *vethSystem) alive() error       { return nil }

func (v *vethSystem) setup(ctx context.Context) error {
	v.ns = v.t.nsName("veth")
	if err := addNetns(ctx, v.ns); err != nil {
		return err
	}
	srv := netip.PrefixFrom(v.target(), 24).String()
	cli := netip.PrefixFrom(addrIn(v.t.prefix, blockVeth, 2), 24).String()
	return ipBatch(ctx,
		[]string{"-n", v.ns, "link", "add", "eth0", "mtu", linkMTU, "type", "veth", "peer", "name", "veth1", "mtu", linkMTU, "netns", v.t.serverNS},
		[]string{"-n", v.ns, "addr", "add", cli, "dev", "eth0"},
		[]string{"-n", v.ns, "link", "set", "eth0", "up"},
		[]string{"-n", v.t.serverNS, "addr", "add", srv, "dev", "veth1"},
		[]string{"-n", v.t.serverNS, "link", "set", "veth1", "up"},
		// The workloads by name go where the DNS server's answer points,
		// the server's host-side address: over the same direct veth.
		[]string{"-n", v.ns, "route", "add", netip.PrefixFrom(v.t.addr, 32).String(), "via", v.target().String(), "dev", "eth0"},
	)
}

func (v *vethSystem) close() error { return delNetns(v.ns) }

// inboundAddr is the ceiling of the inbound figures: the host reaches the
// server namespace's probe server straight over the host's veth.
func (v *vethSystem) inboundAddr() netip.AddrPort { return netip.AddrPortFrom(v.t.addr, probePort) }

// slirpSystem is slirp4netns in the host namespace serving a client
// namespace whose only way out is its tap device.
type slirpSystem struct {
	t  *topology
	ns string
	p  *proc
}

func (s *slirpSystem) name() string       { return report.Slirp }
func (s *slirpSystem) netns() string      { return s.ns }
func (s *slirpSystem) target() netip.Addr { return s.t.addr }
func (s *slirpSystem) pid() int           { return s.p.pid() }

func (s *slirpSystem) alive() error {
	if gone, err := s.p.exited(); gone {
		return err
	}
	return nil
}

func (s *slirpSystem) setup(ctx context.Context) error {
	s.ns = s.t.nsName("slirp")
	if err := addNetns(ctx, s.ns); err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cidr := netip.PrefixFrom(addrIn(s.t.prefix, blockSlirp, 0), 24)
	cmd := exec.Command("slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
		"--cidr="+cidr.String(), "--netns-type=path", "--ready-fd=3", netnsPath(s.ns), "tap0")
	cmd.ExtraFiles = []*os.File{w}
	s.p, err = startProc("slirp4netns", cmd, nil)
	w.Close()
	if err != nil {
		return err
	}
	// slirp4netns writes "1" to the ready fd once tap0 is configured.
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := r.Read(b)
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			_, perr := s.p.exited()
			return fmt.Errorf("slirp4netns never became ready: %v (%v)", err, perr)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("slirp4netns not ready after 10s: %s", s.p.out.String())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slirpSystem) close() error {
	if s.p != nil {
		s.p.stop()
	}
	return delNetns(s.ns)
}

// pastaSystem is pasta in the host namespace serving a client namespace
// through its tap device, run as root (--runas 0) as the issue asks. With
// inbound it also forwards a port of the host's 127.0.0.1 (-t) to the
// probe server it runs in the namespace.
type pastaSystem struct {
	t       *topology
	inbound bool
	ns      string
	p       *proc
	port    uint16 // forwarded from 127.0.0.1 to the namespace's probePort
	srv     *proc  // the probe server in the namespace
}

func (s *pastaSystem) inboundAddr() netip.AddrPort {
	return onLoopback(s.port)
}

func (s *pastaSystem) name() string       { return report.Pasta }
func (s *pastaSystem) netns() string      { return s.ns }
func (s *pastaSystem) target() netip.Addr { return s.t.addr }
func (s *pastaSystem) pid() int           { return s.p.pid() }

func (s *pastaSystem) alive() error {
	if gone, err := s.p.exited(); gone {
		return err
	}
	return serverExited(s.srv)
}

func (s *pastaSystem) setup(ctx context.Context) error {
	s.ns = s.t.nsName("pasta")
	if err := addNetns(ctx, s.ns); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "clawbench-pasta-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pidFile := filepath.Join(dir, "pid")
	addr := addrIn(s.t.prefix, blockPasta, 2)
	gw := addrIn(s.t.prefix, blockPasta, 1)
	// -i names our own host-side veth as the template, so pasta copies
	// nothing from the host's real interfaces; -a/-g/-n give the namespace
	// its own addresses from the benchmarking range. No port forwarding
	// but, for the inbound tests, one port of the host's 127.0.0.1 to the
	// probe server in the namespace (pasta splices such connections to
	// the namespace's loopback).
	forward := "none"
	if s.inbound {
		if s.srv, err = inboundServer(s.ns, s.t.probe); err != nil {
			return err
		}
		if s.port, err = freePort(); err != nil {
			return err
		}
		forward = fmt.Sprintf("127.0.0.1/%d:%d", s.port, probePort)
	}
	cmd := exec.Command("pasta", "--runas", "0", "--foreground", "--quiet", "--ipv4-only", "--config-net",
		"--mtu", "65520", "-i", s.t.hostIf, "-a", addr.String(), "-n", "24", "-g", gw.String(),
		"-I", "tap0", "-t", forward, "-u", "none", "-T", "none", "-U", "none", "--no-map-gw",
		"-P", pidFile, "--netns", netnsPath(s.ns))
	if s.p, err = startProc("pasta", cmd, nil); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if gone, err := s.p.exited(); gone {
			return err
		}
		b, _ := os.ReadFile(pidFile)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 && s.hasAddr(ctx, addr) {
			if pid != s.p.pid() {
				return fmt.Errorf("pasta forked (pid %d, want %d): the suite could not stop or account it", pid, s.p.pid())
			}
			if s.inbound {
				return waitProbe(ctx, s.inboundAddr())
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("pasta not ready after 10s: %s", s.p.out.String())
}

func (s *pastaSystem) hasAddr(ctx context.Context, a netip.Addr) bool {
	out, err := exec.CommandContext(ctx, "ip", "-n", s.ns, "-4", "-o", "addr", "show", "dev", "tap0").Output()
	return err == nil && strings.Contains(string(out), a.String()+"/")
}

func (s *pastaSystem) close() error {
	if s.p != nil {
		s.p.stop()
	}
	if s.srv != nil {
		s.srv.stop()
	}
	return delNetns(s.ns)
}
