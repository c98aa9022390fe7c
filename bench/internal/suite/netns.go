package suite

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchRange is the only range the suite addresses anything from: RFC 2544
// reserves it for benchmarking, so it collides with nothing real.
var benchRange = netip.MustParsePrefix("198.18.0.0/15")

// ipCmd runs `ip args...` and returns an error carrying its output.
func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs several ip commands, stopping at the first error.
func ipBatch(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if err := ipCmd(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

// netnsPath is where `ip netns add` binds a namespace.
func netnsPath(ns string) string { return "/run/netns/" + ns }

// addNetns creates a namespace with lo up.
func addNetns(ctx context.Context, ns string) error {
	return ipBatch(ctx, []string{"netns", "add", ns}, []string{"-n", ns, "link", "set", "lo", "up"})
}

// delNetns removes a namespace; its interfaces (and their veth peers) go
// with it.
func delNetns(ns string) error {
	if _, err := os.Stat(netnsPath(ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ipCmd(ctx, "netns", "del", ns)
}

// nsCommand runs name inside ns, or in the host namespace when ns is
// empty. `ip netns exec` execs the program, so the process (and its pid)
// is the program itself.
func nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	if ns != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// pickPrefix chooses a /22 in the benchmarking range that overlaps no
// address or route of the host, starting from a place derived from seed so
// that concurrent runs (and other tests' namespaces) tend not to meet.
func pickPrefix(ctx context.Context, seed int) (netip.Prefix, error) {
	var used []netip.Prefix
	for _, args := range [][]string{{"-4", "-o", "addr", "show"}, {"-4", "route", "show", "table", "all"}} {
		out, err := exec.CommandContext(ctx, "ip", args...).Output()
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		used = append(used, prefixesIn(string(out))...)
	}
	return freePrefix(used, seed)
}

// freePrefix returns the first /22 of the benchmarking range, counting
// from seed, that overlaps none of used. It looks in 198.19.0.0/16 first:
// the integration harness and the demo take their subnets from
// 198.18.0.0/16, so a namespace of theirs made after this run picked its
// prefix cannot land on it.
func freePrefix(used []netip.Prefix, seed int) (netip.Prefix, error) {
	const n = 1 << (22 - 15) // /22s in a /15
	base := benchRange.Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16
	for i := range n {
		k := uint32((n/2 + seed%(n/2) + i) % n)
		a := start + k<<10
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), 22)
		free := true
		for _, u := range used {
			// A default route overlaps everything but claims nothing.
			if u.Bits() > 0 && u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free /22 left in %s", benchRange)
}

// prefixesIn pulls every IPv4 prefix or address out of ip's output.
func prefixesIn(out string) []netip.Prefix {
	var ps []netip.Prefix
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if p, err := netip.ParsePrefix(f); err == nil && p.Addr().Is4() {
				ps = append(ps, p.Masked())
			} else if a, err := netip.ParseAddr(f); err == nil && a.Is4() {
				ps = append(ps, netip.PrefixFrom(a, 32))
			}
		}
	}
	return ps
}

// addrIn returns the address at offset (block of 256, host) inside p.
func addrIn(p netip.Prefix, block, host int) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(block)<<8 + uint32(host)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// proc is a process the suite started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *tailBuffer
	done chan struct{}
	err  error // set before done closes
}

// startProc starts cmd, keeping the tail of its output for error messages
// and copying all of it to log when that is not nil.
func startProc(name string, cmd *exec.Cmd, log io.Writer) (*proc, error) {
	p := &proc{name: name, cmd: cmd, out: &tailBuffer{max: 4096}, done: make(chan struct{})}
	var w io.Writer = p.out
	if log != nil {
		w = io.MultiWriter(p.out, log)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = w
	}
	if cmd.Stderr == nil {
		cmd.Stderr = w
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, fmt.Errorf("%s exited: %v: %s", p.name, p.err, p.out.String())
	default:
		return false, nil
	}
}

// stop asks the process to end, then makes it.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// procStat is a process's resident memory and CPU time so far.
type procStat struct {
	rssKiB float64
	cpu    time.Duration // user + system
}

// userHZ is the kernel's clock tick as seen in /proc; 100 on every Linux
// architecture Go supports.
const userHZ = 100

func readProcStat(pid int) (procStat, error) {
	var s procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				s.rssKiB, _ = strconv.ParseFloat(f[0], 64)
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	s.cpu = cpu
	return s, nil
}

// parseStatCPU returns utime+stime from a /proc/PID/stat line. The command
// name (field 2) may hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed /proc stat times %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}
