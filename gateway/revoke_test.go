package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// The revocation tests run live flows on the flow and agent harnesses
// (flow_test.go, inbound_test.go), rewrite a policy file and reload.

// writePolicy replaces file in g's policy_dir with body.
func writePolicy(t *testing.T, g *Gateway, file, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.cfg.PolicyDir, file), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload reloads g's policies; a refused file fails t.
func reload(t *testing.T, g *Gateway) *control.ReloadResult {
	t.Helper()
	res, err := g.Reload()
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	return res
}

// register makes a one of g's attached agents, so that a reload finds it.
func register(g *Gateway, a *Agent) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.agents == nil {
		g.agents = map[string]*Agent{}
	}
	g.agents[a.name] = a
}

// upstreamEnd is a TCP upstream that echoes and reports how its
// connection ended.
type upstreamEnd chan error

func (u upstreamEnd) serve(c net.Conn) {
	_, err := io.Copy(c, c)
	if err == nil {
		err = io.EOF
	}
	u <- err
}

// wait returns how the upstream's connection ended, failing t if it is
// still open after a second.
func (u upstreamEnd) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-u:
		return err
	case <-time.After(time.Second):
		t.Fatal("the upstream connection is still open a second after the reload")
		return nil
	}
}

// exchange writes msg on c and reads it back.
func exchange(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("read back %q, %v; want %q", buf, err, msg)
	}
}

// expectReset checks that c, an agent's connection, was reset: a read
// fails with a reset within a second, having received nothing more.
func expectReset(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("agent's read after the revocation = %d, %v; want a reset", n, err)
	}
}

// onlyRevoked checks a reload's answer.
func onlyRevoked(t *testing.T, res *control.ReloadResult, want map[string]int) {
	t.Helper()
	if len(res.Revoked) != len(want) {
		t.Fatalf("reload revoked %v, want %v", res.Revoked, want)
	}
	for a, n := range want {
		if res.Revoked[a] != n {
			t.Fatalf("reload revoked %v, want %v", res.Revoked, want)
		}
	}
}

// flowsTo returns a's live flows to dst.
func flowsTo(a *Agent, dst netip.AddrPort) []*flow {
	a.mu.Lock()
	defer a.mu.Unlock()
	var fs []*flow
	for f := range a.flows {
		if f.dst == dst {
			fs = append(fs, f)
		}
	}
	return fs
}

// newRevokeTest is newFlowTest with its agent attached (a reload finds
// it) and every TCP upstream serving serve.
func newRevokeTest(t *testing.T, serve func(net.Conn)) *flowTest {
	t.Helper()
	ft := newFlowTest(t, 0, serve, nil)
	register(ft.a.g, ft.a)
	return ft
}

// live opens a TCP flow from ft's agent to dst and exchanges msg on it,
// so that it is connected both ways; it is closed when t ends.
func (ft *flowTest) live(t *testing.T, dst netip.AddrPort, msg string) net.Conn {
	t.Helper()
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatalf("flow to %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	exchange(t, c, msg)
	return c
}

// TestRevokeTightened: a deny rule added for a live TCP flow's address
// resets it on the agent's side, closes its upstream and audits a revoke
// line with the new rule; the agent's other flow is left alone.
func TestRevokeTightened(t *testing.T) {
	dnstest.LeakCheck(t)
	up := make(upstreamEnd, 2)
	ft := newRevokeTest(t, up.serve)
	g := ft.a.g
	denied := netip.AddrPortFrom(flowTestServer, 7)
	kept := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.3"), 7)
	c := ft.live(t, denied, "before")
	other := ft.live(t, kept, "before")

	writePolicy(t, g, "dnstest.yaml", flowTestPolicy+"deny:\n  - cidrs: [198.18.0.2/32]\n")
	res := reload(t, g)
	if !slices.Equal(res.Changed, []string{"dnstest"}) {
		t.Errorf("reload changed %v, want [dnstest]", res.Changed)
	}
	onlyRevoked(t, res, map[string]int{"flowtest": 1})
	expectReset(t, c)
	if err := up.wait(t); errors.Is(err, io.EOF) {
		t.Errorf("the upstream saw an orderly close (%v), want a reset", err)
	}
	e := ft.waitEvent(t, EventRevoke, denied)
	if e.Verdict != "deny" || !strings.Contains(e.Rule, "dnstest.yaml") || !strings.Contains(e.Rule, "deny[0]") ||
		!strings.Contains(e.Reason, "198.18.0.2 in denied 198.18.0.2/32") || e.Proto != "tcp" || e.Src != localOf(c).String() {
		t.Errorf("revoke line = %+v, want the new deny rule and its reason", e)
	}
	ft.waitEvent(t, EventClose, denied)
	exchange(t, other, "after")
	for _, e := range ft.audit.events(t) {
		if e.Event == EventRevoke && e.Dst != denied.String() {
			t.Errorf("revoke line for a flow the new policy allows: %+v", e)
		}
	}
	// A new flow to the address is denied as usual.
	if c, err := ft.dial(t, denied); err == nil {
		c.Close()
		t.Fatal("a new flow to the denied address connected")
	}
}

func localOf(c net.Conn) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return ap
}

// TestRevokeLoosenedOrUnchanged: a reload that only adds rules revokes
// nothing but moves live flows to the new policy; one that rewrites a file
// with the same bytes, or only touches it, changes nothing at all.
func TestRevokeLoosenedOrUnchanged(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, dst, "before")
	before := g.policies.Get("dnstest")

	writePolicy(t, g, "dnstest.yaml", flowTestPolicy)
	now := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(g.cfg.PolicyDir, "dnstest.yaml"), now, now)
	res := reload(t, g)
	if len(res.Changed) != 0 || len(res.Revoked) != 0 || g.policies.Get("dnstest") != before {
		t.Fatalf("an identical rewrite: changed %v, revoked %v, same policy %v; want nothing changed",
			res.Changed, res.Revoked, g.policies.Get("dnstest") == before)
	}

	writePolicy(t, g, "dnstest.yaml", strings.Replace(flowTestPolicy, "ports: [80, 7]", "ports: [80, 7, 9]", 1))
	res = reload(t, g)
	if !slices.Equal(res.Changed, []string{"dnstest"}) || len(res.Revoked) != 0 {
		t.Fatalf("loosening: changed %v, revoked %v; want dnstest changed and nothing revoked", res.Changed, res.Revoked)
	}
	exchange(t, c, "after")
	fs := flowsTo(ft.a, dst)
	if len(fs) != 1 || fs[0].snapshot() != g.policies.Get("dnstest") || fs[0].snapshot() == before {
		t.Errorf("the live flow is not on the new policy")
	}
	for _, e := range ft.audit.events(t) {
		if e.Event == EventRevoke {
			t.Errorf("revoke line after loosening: %+v", e)
		}
	}
}

// TestRevokeUDP: a live UDP flow whose rule is removed is closed, with a
// revoke line; the agent's next datagram is a new flow, denied, and never
// reaches the upstream.
func TestRevokeUDP(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c, err := gonet.DialUDP(ft.cs, nil, ptrTo(fullAddr(dst)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, "first datagram")

	writePolicy(t, g, "dnstest.yaml", strings.Replace(flowTestPolicy, "    protocol: udp\n", "    protocol: tcp\n", 1))
	onlyRevoked(t, reload(t, g), map[string]int{"flowtest": 1})
	e := ft.waitEvent(t, EventRevoke, dst)
	if e.Proto != "udp" || e.Rule != policy.RuleDefault || !strings.Contains(e.Reason, "no rule allows udp") {
		t.Errorf("revoke line = %+v", e)
	}
	ft.waitEvent(t, EventClose, dst)
	if fs := flowsTo(ft.a, dst); len(fs) != 0 {
		t.Fatalf("the revoked UDP flow is still tracked")
	}
	c.Write([]byte("after the revocation"))
	ft.waitEvent(t, EventDeny, dst)
	if got := ft.log.received(); strings.Contains(got, "after the revocation") {
		t.Fatalf("the upstream received a datagram sent after the revocation: %q", got)
	}
}

// TestRevokeByName: a name-bound flow is decided again on the name its
// client presented: when that name's rule goes it is revoked, while a flow
// of another allowed name to the same address and a flow allowed by its
// address stay. The flow that stays is checked on the new policy from then
// on: a request naming the removed name is refused.
func TestRevokeByName(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, httpServer)
	g := ft.a.g
	twoNames := strings.Replace(flowTestPolicy, "domains: [allowed.test]", "domains: [allowed.test, other.test]", 1)
	writePolicy(t, g, "dnstest.yaml", twoNames)
	reload(t, g)

	named := netip.AddrPortFrom(flowTestNamed, 8080)
	byAddr := netip.AddrPortFrom(flowTestServer, 80)
	get := func(c net.Conn, host string) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("answered %s, %v", resp.Status, err)
		}
		return nil
	}
	dial := func(dst netip.AddrPort, host string) net.Conn {
		t.Helper()
		c, err := ft.dial(t, dst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := get(c, host); err != nil {
			t.Fatalf("GET %s from %s: %v", host, dst, err)
		}
		return c
	}
	other := dial(named, "other.test")
	allowed := dial(named, "allowed.test")
	plain := dial(byAddr, "anything.test")

	writePolicy(t, g, "dnstest.yaml", flowTestPolicy) // other.test is gone
	onlyRevoked(t, reload(t, g), map[string]int{"flowtest": 1})
	expectReset(t, other)
	e := ft.waitEvent(t, EventRevoke, named)
	if e.Host != "other.test" || e.Src != localOf(other).String() || e.Rule != policy.RuleDefault ||
		!strings.Contains(e.Reason, "other.test:8080") {
		t.Errorf("revoke line = %+v, want other.test's flow refused by default", e)
	}
	if err := get(plain, "anything.test"); err != nil {
		t.Errorf("the flow allowed by its address: %v", err)
	}
	if err := get(allowed, "allowed.test"); err != nil {
		t.Errorf("the flow of the name still allowed: %v", err)
	}
	// The old policy allowed other.test on this flow; the new one does not.
	if err := get(allowed, "other.test"); err == nil {
		t.Fatal("a request for other.test passed on a flow moved to the new policy")
	}
	deny := ft.waitEvent(t, EventDeny, named)
	if deny.Host != "other.test" || deny.Rule != policy.RuleDefault {
		t.Errorf("deny line = %+v", deny)
	}
}

// echoIn runs a TCP echo server inside an agent's kernel; each
// connection's end (its read error, io.EOF for an orderly close) is sent
// on the channel it returns.
func echoIn(t *testing.T, k *stack.Stack, addr netip.AddrPort) upstreamEnd {
	t.Helper()
	ln, err := gonet.ListenTCP(k, tcpip.FullAddress{Addr: tcpip.AddrFrom4(addr.Addr().As4()), Port: addr.Port()}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	ends := make(upstreamEnd, 8)
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ends.serve(c)
			}()
		}
	}()
	return ends
}

// TestRevokeBetweenAgents: a flow from alice to bob is revoked when bob's
// ingress drops alice (audited on bob's side), and another when alice's
// egress drops bob (on alice's); both ends are reset.
func TestRevokeBetweenAgents(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	bobAddr := at.bob.addrs[0].Addr()
	dst := netip.AddrPortFrom(bobAddr, 8080)
	ends := echoIn(t, at.bobK, dst)
	open := func() net.Conn {
		t.Helper()
		c, err := dialFrom(t, at.aliceK, dst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		exchange(t, c, "from alice")
		return c
	}

	c := open()
	writePolicy(t, at.g, "bob.yaml", strings.Replace(bobPolicy, "  - agents: [alice]\n    ports: [8080]\n", "", 1))
	onlyRevoked(t, reload(t, at.g), map[string]int{"bob": 1})
	expectReset(t, c)
	if err := ends.wait(t); errors.Is(err, io.EOF) {
		t.Errorf("bob's server saw an orderly close (%v), want a reset", err)
	}
	if e := at.waitLine(t, "bob", EventRevoke, dst); e.Direction != "in" || e.Peer != "agent:alice" || e.Rule == "" {
		t.Errorf("bob's revoke line = %+v", e)
	}

	writePolicy(t, at.g, "bob.yaml", bobPolicy)
	onlyRevoked(t, reload(t, at.g), nil)
	c = open()
	writePolicy(t, at.g, "dnstest.yaml", strings.Replace(alicePolicy, "[8080, 8081, 9090]", "[8081, 9090]", 1))
	onlyRevoked(t, reload(t, at.g), map[string]int{"alice": 1})
	expectReset(t, c)
	if err := ends.wait(t); errors.Is(err, io.EOF) {
		t.Errorf("bob's server saw an orderly close (%v), want a reset", err)
	}
	if e := at.waitLine(t, "alice", EventRevoke, dst); e.Direction != "" || e.Peer != "agent:bob" || e.Rule != policy.RuleDefault {
		t.Errorf("alice's revoke line = %+v", e)
	}
	revokes := 0
	for _, e := range at.audit.events(t) {
		if e.Event == EventRevoke {
			revokes++
		}
	}
	if revokes != 2 {
		t.Errorf("%d revoke lines, want one per revocation", revokes)
	}
}

// TestRevokePublished: a connection through a published port is revoked
// when the agent's ingress no longer allows the host; the client gets a
// reset.
func TestRevokePublished(t *testing.T) {
	dnstest.LeakCheck(t)
	at := newAgentsTest(t)
	t.Cleanup(at.bob.closeListeners)
	bobAddr := at.bob.addrs[0].Addr()
	ends := echoIn(t, at.bobK, netip.AddrPortFrom(bobAddr, 8080))
	lo := netip.MustParseAddr("127.0.0.1")
	p := control.Publish{HostAddr: lo, HostPort: freePort(t), AgentPort: 8080, Proto: "tcp"}
	if err := at.g.Publish("bob", []control.Publish{p}); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(lo, p.HostPort).String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange(t, c, "from the host")

	writePolicy(t, at.g, "bob.yaml", strings.Replace(bobPolicy, "  - host: true\n    ports: [8080]\n", "", 1))
	onlyRevoked(t, reload(t, at.g), map[string]int{"bob": 1})
	expectReset(t, c)
	ends.wait(t)
	if e := at.waitLine(t, "bob", EventRevoke, netip.AddrPortFrom(bobAddr, 8080)); e.Peer != "host" || e.Direction != "in" {
		t.Errorf("revoke line = %+v", e)
	}
}

// TestRevokeDuringSetup: a flow still being dialled when a reload tightens
// its policy is decided again once connected, and revoked.
func TestRevokeDuringSetup(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	dialing, release := make(chan struct{}), make(chan struct{})
	dial := g.dialFunc
	g.dialFunc = func(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
		close(dialing)
		<-release
		return dial(ctx, network, dst)
	}
	dst := netip.AddrPortFrom(flowTestServer, 7)
	type result struct {
		c   net.Conn
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ft.dial(t, dst)
		got <- result{c, err}
	}()
	<-dialing
	writePolicy(t, g, "dnstest.yaml", flowTestPolicy+"deny:\n  - cidrs: [198.18.0.2/32]\n")
	onlyRevoked(t, reload(t, g), nil) // not connected yet: not counted here
	close(release)
	r := <-got
	if r.err == nil {
		defer r.c.Close()
		expectReset(t, r.c)
	}
	if e := ft.waitEvent(t, EventRevoke, dst); !strings.Contains(e.Rule, "deny[0]") {
		t.Errorf("revoke line = %+v", e)
	}
}

// TestWatchPolicies: an edit in policy_dir applies without a reload
// command; live flows it denies are revoked.
func TestWatchPolicies(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	stop, err := g.WatchPolicies()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, dst, "before")
	writePolicy(t, g, "dnstest.yaml", flowTestPolicy+"deny:\n  - cidrs: [198.18.0.2/32]\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("agent's read after the edit = %d, %v; want a reset", n, err)
	}
	ft.waitEvent(t, EventRevoke, dst)
}

// TestReloadAnswer: POST /v1/reload answers what each agent lost; when a
// file is refused, the error answer still carries what the other files
// revoked.
func TestReloadAnswer(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, dst, "before")
	writePolicy(t, g, "dnstest.yaml", flowTestPolicy+"deny:\n  - cidrs: [198.18.0.2/32]\n")
	writePolicy(t, g, "bad.yaml", "version: v1\nname: bad\negres: []\n")
	code, body := call(t, g, "POST", "/v1/reload", "")
	var got struct {
		control.Error
		control.ReloadResult
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("reload answer %q: %v", body, err)
	}
	if code != http.StatusBadRequest || !strings.Contains(got.Error.Error, "bad.yaml:3") ||
		got.Revoked["flowtest"] != 1 || !slices.Equal(got.Changed, []string{"dnstest"}) {
		t.Fatalf("reload = %d %s, want 400 naming bad.yaml:3 and the flow revoked", code, body)
	}
	expectReset(t, c)

	os.Remove(filepath.Join(g.cfg.PolicyDir, "bad.yaml"))
	code, body = call(t, g, "POST", "/v1/reload", "")
	if code != http.StatusOK || body != `{"policies":["default","dnstest"]}`+"\n" {
		t.Fatalf("reload with nothing changed = %d %s", code, body)
	}
}

// TestRevokePolicyRemoved: a reload that finds an agent's policy gone
// (its file deleted) revokes the agent's live flows: no policy allows
// nothing.
func TestRevokePolicyRemoved(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newRevokeTest(t, echo)
	g := ft.a.g
	dst := netip.AddrPortFrom(flowTestServer, 7)
	c := ft.live(t, dst, "before")
	if err := os.Remove(filepath.Join(g.cfg.PolicyDir, "dnstest.yaml")); err != nil {
		t.Fatal(err)
	}
	res := reload(t, g)
	if !slices.Equal(res.Changed, []string{"dnstest"}) {
		t.Errorf("reload changed %v, want [dnstest]", res.Changed)
	}
	onlyRevoked(t, res, map[string]int{"flowtest": 1})
	expectReset(t, c)
	if e := ft.waitEvent(t, EventRevoke, dst); e.Verdict != "deny" || e.Rule != "builtin:policy-missing" {
		t.Errorf("revoke line = %+v, want a deny for the missing policy", e)
	}
}
