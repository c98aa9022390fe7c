package harness

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// The test internet lives in 198.18.0.0/15 and 2001:db8::/32, reserved for
// benchmarking and documentation, so nothing real is ever there; the daemon
// is told to treat both as public. Each Internet takes its own /24 and /64
// inside them (198.18.N.0/24, 2001:db8:N::/64), so two test runs, or a run
// and someone's hand-made lab on 198.18.0.0/24, never share a route.
var (
	TestNet4 = netip.MustParsePrefix("198.18.0.0/15")
	TestNet6 = netip.MustParsePrefix("2001:db8::/32")
)

// ServerHosts is how many addresses of each family the internet namespace
// holds: Addr4(2) .. Addr4(ServerHosts+1).
const ServerHosts = 8

// Internet is the test internet: a namespace behind a veth from the host
// namespace, running the canary on all of its addresses.
type Internet struct {
	NS *NetNS
	// HostIf is the veth end in the host namespace, PeerIf the one inside.
	HostIf, PeerIf string
	// Net4 and Net6 are this internet's subnets.
	Net4, Net6 netip.Prefix
	// Host4 and Host6 are the host's end of the veth (.1 and ::1 of the
	// subnets): addresses of the gateway host itself.
	Host4, Host6 netip.Addr
	// Server4 and Server6 are the canary's primary addresses (.2, ::2).
	Server4, Server6 netip.Addr
	// LogPath is the canary's log, CAPath the PEM CA of its TLS
	// certificates, ZonePath the DNS zone it serves.
	LogPath, CAPath, ZonePath string

	canary  *exec.Cmd
	exited  chan struct{}
	waitErr error
	stderr  *bytes.Buffer
}

// Addr4 returns host i (1..9) of the IPv4 subnet: 1 is the host's end,
// 2..9 the canary's addresses.
func (in *Internet) Addr4(i int) netip.Addr { return hostAddr(in.Net4, i) }

// Addr6 returns host i (1..9) of the IPv6 subnet.
func (in *Internet) Addr6(i int) netip.Addr { return hostAddr(in.Net6, i) }

// Addr returns host i of the family (4 or 6).
func (in *Internet) Addr(family, i int) netip.Addr {
	if family == 6 {
		return in.Addr6(i)
	}
	return in.Addr4(i)
}

func hostAddr(p netip.Prefix, i int) netip.Addr {
	if i < 1 || i > ServerHosts+1 {
		panic(fmt.Sprintf("harness: no internet host %d (have 1..%d)", i, ServerHosts+1))
	}
	if p.Addr().Is4() {
		a := p.Addr().As4()
		a[3] = byte(i)
		return netip.AddrFrom4(a)
	}
	a := p.Addr().As16()
	a[15] = byte(i)
	return netip.AddrFrom16(a)
}

func subnets(n int) (netip.Prefix, netip.Prefix) {
	v4 := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(n), 0}), 24)
	a := TestNet6.Addr().As16()
	a[4], a[5] = byte(n>>8), byte(n)
	return v4, netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// lockDir holds the per-subnet flocks shared by every harness run on the
// machine.
func lockDir() string {
	if _, err := os.Stat("/run/lock"); err == nil {
		return "/run/lock"
	}
	return os.TempDir()
}

// allocSubnet picks a subnet number no other run holds (an flock per
// number) and no route of the host namespace overlaps.
func allocSubnet(t testing.TB) (n int, release func()) {
	t.Helper()
	for range 200 {
		n := 1 + mrand.IntN(254) // 198.18.0.0/24 is left to hand-made labs
		f, err := os.OpenFile(filepath.Join(lockDir(), fmt.Sprintf("clawnet-test-net-%d.lock", n)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatalf("open subnet lock: %v", err)
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			continue
		}
		v4, v6 := subnets(n)
		used, err := hostUses(v4, v6)
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		if used {
			f.Close()
			continue
		}
		return n, func() { f.Close() }
	}
	t.Fatal("no free test subnet in 198.18.0.0/15")
	return 0, nil
}

// hostUses reports whether a route of the host namespace (any table, so
// local routes of addresses count too) overlaps one of the prefixes.
func hostUses(ps ...netip.Prefix) (bool, error) {
	for _, fam := range []string{"-4", "-6"} {
		out, err := exec.Command("ip", fam, "-json", "route", "show", "table", "all").Output()
		if err != nil {
			return false, fmt.Errorf("list host routes: %w", err)
		}
		var routes []struct {
			Dst string `json:"dst"`
		}
		if err := json.Unmarshal(out, &routes); err != nil {
			return false, fmt.Errorf("parse host routes: %w", err)
		}
		for _, r := range routes {
			rp, err := netip.ParsePrefix(r.Dst)
			if err != nil {
				a, aerr := netip.ParseAddr(r.Dst)
				if aerr != nil {
					continue // "default" and the like
				}
				rp = netip.PrefixFrom(a, a.BitLen())
			}
			for _, p := range ps {
				if rp.Overlaps(p) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// InternetOptions changes what NewInternetWith builds.
type InternetOptions struct {
	// ExtraZone is appended to the canary's zone file (RFC 1035 master
	// format; start it with an $ORIGIN and an SOA of its own to serve
	// another zone).
	ExtraZone string
	// ExtraZoneFor, if set, is called once the internet's addresses are
	// known and its result appended after ExtraZone: records that point at
	// the canary (in.Server4, in.Addr4(i), ...).
	ExtraZoneFor func(in *Internet) string
}

// NewInternet builds the test internet and starts the canary in it; it is
// torn down when t ends.
func NewInternet(t testing.TB) *Internet { return NewInternetWith(t, InternetOptions{}) }

// NewInternetWith is NewInternet with options.
func NewInternetWith(t testing.TB, opts InternetOptions) *Internet {
	t.Helper()
	RequireRoot(t)
	canaryBin := CanaryBinary(t)
	sweepStaleOnce()
	n, release := allocSubnet(t)
	t.Cleanup(release)

	in := &Internet{NS: NewNetNS(t, "inet"), HostIf: ifName('h'), PeerIf: ifName('i')}
	in.Net4, in.Net6 = subnets(n)
	in.Host4, in.Host6 = in.Addr4(1), in.Addr6(1)
	in.Server4, in.Server6 = in.Addr4(2), in.Addr6(2)
	// Creating the peer directly inside the namespace means deleting the
	// namespace deletes the pair: no veth outlives the test.
	mustRun(t, "ip", "link", "add", in.HostIf, "type", "veth", "peer", "name", in.PeerIf, "netns", in.NS.Name)
	t.Cleanup(func() { run("ip", "link", "del", in.HostIf) })
	// nodad: an address still in duplicate address detection cannot be
	// bound or used as a source, which would race the first test dial.
	mustRun(t, "ip", "addr", "add", netip.PrefixFrom(in.Host4, 24).String(), "dev", in.HostIf)
	mustRun(t, "ip", "-6", "addr", "add", netip.PrefixFrom(in.Host6, 64).String(), "dev", in.HostIf, "nodad")
	mustRun(t, "ip", "link", "set", in.HostIf, "up")
	for i := 2; i <= ServerHosts+1; i++ {
		mustRun(t, "ip", "-n", in.NS.Name, "addr", "add", netip.PrefixFrom(in.Addr4(i), 24).String(), "dev", in.PeerIf)
		mustRun(t, "ip", "-n", in.NS.Name, "-6", "addr", "add", netip.PrefixFrom(in.Addr6(i), 64).String(), "dev", in.PeerIf, "nodad")
	}
	mustRun(t, "ip", "-n", in.NS.Name, "link", "set", in.PeerIf, "up")

	dir := t.TempDir()
	in.LogPath = filepath.Join(dir, "canary.jsonl")
	in.CAPath = filepath.Join(dir, "canary-ca.pem")
	in.ZonePath = filepath.Join(dir, "zone.db")
	zone := in.Zone() + opts.ExtraZone
	if opts.ExtraZoneFor != nil {
		zone += opts.ExtraZoneFor(in)
	}
	if err := os.WriteFile(in.ZonePath, []byte(zone), 0o644); err != nil {
		t.Fatal(err)
	}
	in.start(t, canaryBin, dir)
	var servers []netip.Addr
	for i := 2; i <= ServerHosts+1; i++ {
		servers = append(servers, in.Addr6(i))
	}
	waitLocal6(t, "", in.Host6)
	in.NS.WaitLocal6(t, servers...)
	return in
}

// waitLocal6 waits until the kernel of the named namespace ("" for the
// host's) takes each of addrs, IPv6 addresses, as its own. ip addr add
// returns before that: the kernel puts an IPv6 address's local route in
// afterwards, from a work queue that needs the rtnl lock (busy while other
// namespaces come and go), and drops a packet to the address that comes
// first as one to forward. IPv4 addresses are local once added.
func waitLocal6(t testing.TB, ns string, addrs ...netip.Addr) {
	t.Helper()
	args := []string{"-6", "route", "show", "table", "local", "type", "local"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	var missing []netip.Addr
	ok := Poll(10*time.Second, 5*time.Millisecond, func() bool {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			return false
		}
		local := make(map[netip.Addr]bool)
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "local" {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					local[a] = true
				}
			}
		}
		missing = missing[:0]
		for _, a := range addrs {
			if !local[a] {
				missing = append(missing, a)
			}
		}
		return len(missing) == 0
	})
	if !ok {
		t.Fatalf("addresses %v not local in namespace %q after 10s", missing, ns)
	}
}

// Zone is the canary.test zone the canary serves, with this internet's
// addresses: canary.test (A and AAAA of the server), www.canary.test (CNAME
// to it), txt.canary.test (TXT "clawnet canary"), other.canary.test (host 3).
func (in *Internet) Zone() string {
	return fmt.Sprintf(`$ORIGIN canary.test.
$TTL 60
@      IN SOA   ns.canary.test. hostmaster.canary.test. 1 3600 600 86400 60
@      IN NS    ns
ns     IN A     %[1]s
@      IN A     %[1]s
@      IN AAAA  %[2]s
www    IN CNAME @
txt    IN TXT   "clawnet canary"
other  IN A     %[3]s
other  IN AAAA  %[4]s
`, in.Server4, in.Server6, in.Addr4(3), in.Addr6(3))
}

func (in *Internet) start(t testing.TB, bin, dir string) {
	t.Helper()
	in.stderr = new(bytes.Buffer)
	cmd := exec.Command("nsenter", "--net="+in.NS.Path, "--", bin, "-log", in.LogPath, "-ca-out", in.CAPath, "-zone", in.ZonePath)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = in.stderr, in.stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start canary: %v", err)
	}
	in.canary = cmd
	in.exited = make(chan struct{})
	go func() {
		in.waitErr = cmd.Wait()
		close(in.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-in.exited:
			t.Errorf("canary exited during the test (%v): %s", in.waitErr, in.stderr)
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-in.exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-in.exited
		}
	})
	ready := func() bool {
		return len(in.Matching(func(e canarylog.Entry) bool {
			return e.Service == canarylog.ServiceCanary && e.Event == canarylog.EventReady
		})) > 0
	}
	ok := Poll(10*time.Second, 10*time.Millisecond, func() bool {
		select {
		case <-in.exited:
			return true
		default:
		}
		return ready()
	})
	select {
	case <-in.exited:
		t.Fatalf("canary exited at start (%v): %s", in.waitErr, in.stderr)
	default:
	}
	if !ok {
		t.Fatalf("canary not ready after 10s: %s", in.stderr)
	}
}

// Entries returns every entry the canary has logged so far, including its
// own ready line.
func (in *Internet) Entries() ([]canarylog.Entry, error) {
	f, err := os.Open(in.LogPath)
	if os.IsNotExist(err) {
		return nil, nil // the canary has not opened it yet
	}
	if err != nil {
		return nil, fmt.Errorf("read canary log: %w", err)
	}
	defer f.Close()
	return canarylog.Parse(f)
}

// Matching returns the logged entries pred accepts. A log that cannot be read
// is a harness failure, so it panics rather than pretend nothing arrived.
func (in *Internet) Matching(pred func(canarylog.Entry) bool) []canarylog.Entry {
	es, err := in.Entries()
	if err != nil {
		panic(fmt.Sprintf("harness: %v", err))
	}
	var out []canarylog.Entry
	for _, e := range es {
		if pred(e) {
			out = append(out, e)
		}
	}
	return out
}

// Mark returns how many traffic entries the canary has logged so far; pass
// it to Since to see only what came after.
func (in *Internet) Mark() int { return len(in.Matching(Traffic)) }

// Since returns the traffic entries logged after mark.
func (in *Internet) Since(mark int) []canarylog.Entry {
	all := in.Matching(Traffic)
	if mark > len(all) {
		return nil
	}
	return all[mark:]
}

// Saw reports whether the canary has logged an entry pred accepts.
func (in *Internet) Saw(pred func(canarylog.Entry) bool) bool {
	return len(in.Matching(pred)) > 0
}

// WaitFor waits up to timeout for an entry pred accepts and returns the
// first; it fails t if none comes. The canary writes close lines when a
// connection ends, a moment after the client saw the end.
func (in *Internet) WaitFor(t testing.TB, timeout time.Duration, what string, pred func(canarylog.Entry) bool) canarylog.Entry {
	t.Helper()
	var got []canarylog.Entry
	Poll(timeout, 10*time.Millisecond, func() bool {
		got = in.Matching(pred)
		return len(got) > 0
	})
	if len(got) == 0 {
		t.Fatalf("canary never logged %s within %v; it logged:\n%s", what, timeout, in.Dump())
	}
	return got[0]
}

// NeverSaw waits for grace (time for a late connection to land) and then
// fails t if the canary logged anything pred accepts. It is a timing guess:
// prefer NeverSawBefore, which waits for an ordering barrier instead.
func (in *Internet) NeverSaw(t testing.TB, grace time.Duration, what string, pred func(canarylog.Entry) bool) {
	t.Helper()
	time.Sleep(grace)
	if got := in.Matching(pred); len(got) > 0 {
		t.Errorf("canary logged %s, which must never arrive:\n%s", what, dumpEntries(got))
	}
}

// NeverSawBefore is NeverSaw with an ordering barrier in place of a grace
// period. The test takes a Mark, sends a refused flow, then an allowed
// sentinel it can recognise; once the canary has logged the sentinel,
// whatever the refused flow let through has had its chance to arrive, so a
// log without it since the mark proves nothing arrived. The sentinel's own
// lines (every line of its connection or UDP flow: same service and both
// ends) are never counted as refused, so refused may be as wide as Traffic.
// It fails t at once if the sentinel itself never comes.
func (in *Internet) NeverSawBefore(t testing.TB, mark int, timeout time.Duration, sentinel string, sentinelPred func(canarylog.Entry) bool, what string, refused func(canarylog.Entry) bool) {
	t.Helper()
	s := in.WaitFor(t, timeout, sentinel, sentinelPred)
	var got []canarylog.Entry
	for _, e := range in.Since(mark) {
		if sameFlow(e, s) {
			continue
		}
		if refused(e) {
			got = append(got, e)
		}
	}
	if len(got) > 0 {
		t.Errorf("canary logged %s, which must never arrive:\n%s", what, dumpEntries(got))
	}
}

// sameFlow reports whether two entries are lines of one connection or UDP
// flow.
func sameFlow(a, b canarylog.Entry) bool {
	return a.Service == b.Service && a.Remote == b.Remote && a.Local == b.Local && a.Remote != ""
}

// HostSentinel sends a datagram no other test sends from the host namespace
// to the canary's UDP echo at addr (port 7) and waits for the answer; it
// returns a predicate for the canary's line, for NeverSawBefore. It is the
// barrier for refused traffic that has no allowed flow left to order
// against (a dead gateway), or that was sent from the host itself: the
// host's own packets take the same last hop as the gateway's.
func (in *Internet) HostSentinel(t testing.TB, addr netip.Addr) func(canarylog.Entry) bool {
	t.Helper()
	dst := netip.AddrPortFrom(addr, 7)
	c, err := net.DialTimeout("udp", dst.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("sentinel: dial %s: %v", dst, err)
	}
	defer c.Close()
	marker := []byte("host sentinel " + hex.EncodeToString(RandomBytes(8)))
	if got, err := UDPExchange(c, marker, 5*time.Second); err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("sentinel datagram to %s: %q, %v", dst, got, err)
	}
	sum := canarylog.Digest(marker)
	return func(e canarylog.Entry) bool { return e.Service == canarylog.ServiceUDPEcho && e.SHA256 == sum }
}

// Traffic is a predicate for every entry that records traffic (everything
// but the canary's own lines).
func Traffic(e canarylog.Entry) bool { return e.Service != canarylog.ServiceCanary }

// To returns a predicate for traffic that arrived at addr (any port when
// port is 0).
func To(addr netip.Addr, port uint16) func(canarylog.Entry) bool {
	return func(e canarylog.Entry) bool {
		la := e.LocalAddr()
		return Traffic(e) && la.Addr() == addr.Unmap() && (port == 0 || la.Port() == port)
	}
}

// Dump renders the whole canary log for a failure message.
func (in *Internet) Dump() string {
	es, err := in.Entries()
	if err != nil {
		return err.Error()
	}
	return dumpEntries(es)
}

// DumpEntries renders entries for a failure message.
func DumpEntries(es []canarylog.Entry) string { return dumpEntries(es) }

func dumpEntries(es []canarylog.Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "  %s %s/%s %s -> %s bytes=%d out=%d", e.Time.Format("15:04:05.000"), e.Service, e.Event, e.Remote, e.Local, e.Bytes, e.BytesOut)
		for _, kv := range [][2]string{{"sni", e.SNI}, {"method", e.Method}, {"proto", e.HTTPProto}, {"host", e.Host}, {"path", e.Path}, {"qname", e.Qname}, {"qtype", e.Qtype}, {"error", e.Error}} {
			if kv[1] != "" {
				fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
			}
		}
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		return "  (nothing)\n"
	}
	return b.String()
}
