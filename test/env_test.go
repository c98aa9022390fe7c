// Package integration_test runs clawnet's data-path tests: the real clawnetd
// and clawnet binaries, real namespaces and TUN devices, and the canary as
// the far side. Every test asserts on what reached the far side (the canary's
// log, or a listener the test owns), not only on what the agent saw. They
// run when CLAWNET_INTEGRATION=1 (make integration) and skip otherwise;
// asked for on a host without root, /dev/net/tun, ip or nsenter, they fail.
package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// The TUN side of every agent, by contract.
var (
	agentNet4  = netip.MustParsePrefix("100.96.0.0/16")
	agentNet6  = netip.MustParsePrefix("fd63:6c61:776e:1::/64")
	gatewayV4  = netip.MustParseAddr("100.96.0.1")
	gatewayV6  = netip.MustParseAddr("fd63:6c61:776e:1::1")
	tunName    = "clawnet0"
	tunMTU     = 65520
	denyWithin = 100 * time.Millisecond
	// sentinelWithin bounds the wait for a sentinel: an allowed flow sent
	// after a refused attempt, whose arrival at the far side is the barrier
	// before the test looks there for what must not arrive.
	sentinelWithin = 5 * time.Second
)

// env is one test's world: the test internet and a clawnetd serving it.
type env struct {
	t  *testing.T
	in *harness.Internet
	d  *harness.Daemon
}

// policy makes a policy file body for an internet; it returns the policy's
// name and YAML.
type policy func(in *harness.Internet) (name, yaml string)

func newEnv(t *testing.T, policies ...policy) *env {
	t.Helper()
	harness.RequireRoot(t)
	in := harness.NewInternet(t)
	files := make(map[string]string)
	for _, p := range policies {
		name, body := p(in)
		files[name] = body
	}
	d := harness.StartDaemon(t, harness.DaemonConfig{Internet: in, Policies: files})
	return &env{t: t, in: in, d: d}
}

// echoOnly allows TCP to the internet's /24 and /64 on the canary's
// stream ports, UDP echo to the primary server only, and denies host 3
// outright (a deny rule that beats the broader allow).
func echoOnly(in *harness.Internet) (string, string) {
	return "echo-only", fmt.Sprintf(`version: v1
name: echo-only
egress:
  - cidrs: [%q, %q]
    ports: [7, 9, 19, 22, 80]
  - cidrs: [%q, %q]
    ports: [7]
    protocol: udp
deny:
  - cidrs: [%q, %q]
`, in.Net4, in.Net6,
		netip.PrefixFrom(in.Server4, 32), netip.PrefixFrom(in.Server6, 128),
		netip.PrefixFrom(in.Addr4(3), 32), netip.PrefixFrom(in.Addr6(3), 128))
}

// denyAll allows nothing.
func denyAll(*harness.Internet) (string, string) {
	return "deny-all", "version: v1\nname: deny-all\negress: []\n"
}

// wide allows every address and port a rule can open, both protocols: a
// test with it shows what no rule opens (loopback, the host's own
// addresses). Only used where the test aims at addresses it owns.
func wide(*harness.Internet) (string, string) {
	return "wide", `version: v1
name: wide
unsafe_allow_any_address: true
egress:
  - cidrs: ["0.0.0.0/0", "::/0"]
    ports: ["1-65535"]
  - cidrs: ["0.0.0.0/0", "::/0"]
    ports: ["1-65535"]
    protocol: udp
`
}

// agent is an attached agent namespace.
type agent struct {
	name   string
	ns     *harness.NetNS
	v4, v6 netip.Addr
	info   harness.Agent
}

// addr returns the agent's TUN address of a family (4 or 6).
func (a *agent) addr(family int) netip.Addr {
	if family == 6 {
		return a.v6
	}
	return a.v4
}

// attach makes an agent namespace, attaches it with policy and reads the
// addresses clawnet gave its TUN.
func (e *env) attach(name, policy string) *agent {
	e.t.Helper()
	ns := harness.NewNetNS(e.t, "agent")
	return e.attachedAgent(ns, name, e.d.Attach(e.t, ns, name, policy))
}

// attachedAgent is ns, attached as name (info), with the addresses clawnet
// gave its TUN: a global IPv4 and IPv6 address each, or t fails.
func (e *env) attachedAgent(ns *harness.NetNS, name string, info harness.Agent) *agent {
	e.t.Helper()
	a := &agent{name: name, ns: ns, info: info}
	a.v4, a.v6 = tunAddrs(e.t, ns)
	if !a.v4.IsValid() || !a.v6.IsValid() {
		links, _ := ns.Links()
		e.t.Fatalf("attached %s, but its %s has no global IPv4 and IPv6 address: %+v", name, tunName, links)
	}
	return a
}

// tunAddrs reads the global addresses clawnet gave ns's TUN.
func tunAddrs(t *testing.T, ns *harness.NetNS) (v4, v6 netip.Addr) {
	t.Helper()
	links, err := ns.Links()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Name != tunName {
			continue
		}
		for _, ad := range l.Addrs {
			switch p := ad.Prefix(); {
			case p.Addr().Is4():
				v4 = p.Addr()
			case ad.Scope == "global":
				v6 = p.Addr()
			}
		}
	}
	return v4, v6
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dial connects from the agent; the test fails if it cannot.
// movingDownload starts a download of up to 1 GB from a chargen-style
// server at dst (port 19 of the lab's servers), waits until its first MiB
// has arrived, and keeps reading; ended says how it ended. when names the
// moment for the failure message.
func (a *agent) movingDownload(t *testing.T, dst netip.AddrPort, when string) (net.Conn, <-chan error) {
	t.Helper()
	dl := a.dial(t, "tcp", dst)
	if _, err := io.WriteString(dl, "1000000000\n"); err != nil {
		t.Fatal(err)
	}
	dl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(dl, make([]byte, 1<<20)); err != nil {
		t.Fatalf("download %s: %v", when, err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, dl)
		ended <- err
	}()
	return dl, ended
}

// waitReset waits for a movingDownload to end by a reset within
// revokeWithin of start, when after happened.
func waitReset(t *testing.T, ended <-chan error, start time.Time, what, after string) {
	t.Helper()
	select {
	case err := <-ended:
		took := time.Since(start)
		t.Logf("%s was reset %v after %s", what, took.Round(time.Millisecond), after)
		if took > revokeWithin {
			t.Errorf("%s ended %v after %s, want within %v", what, took, after, revokeWithin)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%s ended with %v, want a reset", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still runs 10s after %s", what, after)
	}
}

func (a *agent) dial(t *testing.T, network string, dst netip.AddrPort) net.Conn {
	t.Helper()
	c, err := a.ns.Dial(ctxTimeout(t, 5*time.Second), network, dst.String())
	if err != nil {
		t.Fatalf("agent %s: dial %s %s: %v", a.name, network, dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectRefused dials from the agent and checks the gateway refused the
// flow at once: ECONNREFUSED (an RST) within denyWithin.
func (a *agent) expectRefused(t *testing.T, dst netip.AddrPort) {
	t.Helper()
	start := time.Now()
	c, err := a.ns.Dial(ctxTimeout(t, 5*time.Second), "tcp", dst.String())
	took := time.Since(start)
	if err == nil {
		c.Close()
		t.Errorf("agent %s reached %s; it must be denied", a.name, dst)
		return
	}
	if !harness.IsRefused(err) {
		t.Errorf("agent %s: dial %s failed with %v after %v, want connection refused (RST)", a.name, dst, err, took)
		return
	}
	if took > denyWithin {
		t.Errorf("agent %s: dial %s refused after %v, want within %v", a.name, dst, took, denyWithin)
	}
}

// expectUDPRefused sends a datagram from the agent on a connected socket
// and checks that the answer is a port unreachable (ECONNREFUSED on read).
func (a *agent) expectUDPRefused(t *testing.T, dst netip.AddrPort) {
	t.Helper()
	c := a.dial(t, "udp", dst)
	got, err := harness.UDPExchange(c, []byte("must not arrive"), 2*time.Second)
	switch {
	case err == nil:
		t.Errorf("agent %s: UDP to %s was answered (%q); it must be denied", a.name, dst, got)
	case !harness.IsRefused(err):
		t.Errorf("agent %s: UDP to %s: %v, want ICMP port unreachable (connection refused)", a.name, dst, err)
	}
}

// echoSentinel sends a marker no other flow carries through the canary's
// TCP echo at dst, which the agent's policy allows, and returns a predicate
// for the canary's close line of it: the barrier NeverSawBefore waits for
// after a refused attempt.
func (a *agent) echoSentinel(t *testing.T, dst netip.AddrPort) func(canarylog.Entry) bool {
	t.Helper()
	marker := []byte("sentinel " + uniq())
	c := a.dial(t, "tcp", dst)
	if got, err := harness.EchoHalfClose(c, marker, sentinelWithin); err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("agent %s: sentinel echo through %s: %q, %v", a.name, dst, got, err)
	}
	c.Close()
	sum := canarylog.Digest(marker)
	return func(ce canarylog.Entry) bool {
		return ce.Service == canarylog.ServiceEcho && ce.Event == canarylog.EventClose && ce.SHA256 == sum
	}
}

// udpSentinel is echoSentinel with one datagram to the canary's UDP echo at
// dst; the echoed answer also shows the gateway has handled the agent's
// packets sent before it.
func (a *agent) udpSentinel(t *testing.T, dst netip.AddrPort) func(canarylog.Entry) bool {
	t.Helper()
	marker := []byte("sentinel " + uniq())
	c := a.dial(t, "udp", dst)
	defer c.Close()
	if got, err := harness.UDPExchange(c, marker, sentinelWithin); err != nil || !bytes.Equal(got, marker) {
		t.Fatalf("agent %s: sentinel datagram to %s: %q, %v", a.name, dst, got, err)
	}
	sum := canarylog.Digest(marker)
	return func(ce canarylog.Entry) bool { return ce.Service == canarylog.ServiceUDPEcho && ce.SHA256 == sum }
}

// families names the two address families the tests run over.
var families = []struct {
	name string
	n    int
}{{"ipv4", 4}, {"ipv6", 6}}

// server returns the canary's primary address of a family.
func server(in *harness.Internet, family int) netip.Addr {
	if family == 6 {
		return in.Server6
	}
	return in.Server4
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// localOf returns the agent-side address of c, unmapped.
func localOf(c net.Conn) netip.AddrPort {
	p, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
}

// onlyLo checks that the namespace holds nothing but lo.
func onlyLo(ns *harness.NetNS) (bool, []string) {
	links, err := ns.Links()
	if err != nil {
		return false, []string{err.Error()}
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Name)
	}
	return slices.Equal(names, []string{"lo"}), names
}

// oneLine checks the contract for CLI errors: non-zero exit and one line
// on stderr.
func oneLine(t *testing.T, what string, r harness.Result) {
	t.Helper()
	if r.Err != nil {
		t.Errorf("%s: %v", what, r.Err)
		return
	}
	if r.Code == 0 {
		t.Errorf("%s: exit 0, want an error\n%v", what, r)
		return
	}
	msg := strings.TrimRight(r.Stderr, "\n")
	if msg == "" || strings.Contains(msg, "\n") {
		t.Errorf("%s: stderr must be one line, got %q", what, r.Stderr)
	}
}
