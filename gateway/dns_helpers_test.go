package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy"
)

// syncBuffer is a bytes.Buffer safe for the audit log's writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// events parses the audit lines written so far.
func (s *syncBuffer) events(t testing.TB) []AuditEvent {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []AuditEvent
	for _, line := range bytes.Split(bytes.TrimSpace(s.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var ev AuditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

// dnsTestGateway is a gateway with just what the DNS path needs: policies
// from a directory, an audit log in memory, and a resolver on the given
// upstream servers.
func dnsTestGateway(t testing.TB, pol string, public []netip.Prefix, servers ...netip.AddrPort) (*Gateway, *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dnstest.yaml"), []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PolicyDir = dir
	cfg.TreatAsPublic = public
	cfg.DNS.Upstream = Upstream{Servers: servers}
	log := hclog.NewNullLogger()
	ps, err := newPolicyStore(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newResolver(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	withTryTimeout(t, r, cfg, 300*time.Millisecond)
	audit := &syncBuffer{}
	g := &Gateway{cfg: cfg, log: log, audit: NewAudit(audit), policies: ps, dns: r,
		pool: newAddrPool(cfg.Network.IPv4, cfg.Network.IPv6), host: newHostAddrs(time.Minute)}
	g.gw4, g.gw6 = g.pool.gateway()
	t.Cleanup(r.close)
	t.Cleanup(g.host.close)
	return g, audit
}

// withTryTimeout points r at cfg's upstream servers again, with each
// exchange bounded by try, so that silent servers do not slow the tests.
func withTryTimeout(t testing.TB, r *resolver, cfg *Config, try time.Duration) {
	t.Helper()
	up, err := dnsproxy.NewUpstream(dnsproxy.UpstreamOptions{Servers: cfg.DNS.Upstream.Servers, TryTimeout: try}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	r.Answerer = dnsproxy.NewAnswerer(up, answererOptions(cfg))
}

// dnsTestAgent is an agent of g without a link: enough for the TCP path and
// the bindings. The UDP path needs a stack (see dnsTestStack).
func dnsTestAgent(t testing.TB, g *Gateway, name string) *Agent {
	t.Helper()
	a := &Agent{g: g, log: hclog.NewNullLogger(), name: name, policy: "dnstest",
		names: dnsproxy.NewNameTable(), flows: map[*flow]struct{}{}}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		a.cancel()
		a.wg.Wait()
	})
	return a
}

// tcpExchange sends one length-prefixed query on conn and reads the reply.
func tcpExchange(t testing.TB, conn net.Conn, q []byte) *dns.Msg {
	t.Helper()
	co := &dns.Conn{Conn: conn}
	if _, err := co.Write(q); err != nil {
		t.Fatalf("write query: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := co.ReadMsg()
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return m
}

// serveDNSPipe serves a's DNS over one end of a pipe, as handleDNSTCP does
// for a netstack connection, and returns the other end.
func serveDNSPipe(t testing.TB, a *Agent) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	c := &dnsCall{a: a, st: a.g.dns.state(a), proto: dnsAuditProtoTCP,
		src: netip.MustParseAddrPort("100.96.0.2:40000"), dst: netip.MustParseAddrPort("100.96.0.1:53")}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		c.serve(server, func() {})
	}()
	t.Cleanup(func() {
		client.Close()
		<-done
	})
	return client
}
