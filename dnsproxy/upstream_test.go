package dnsproxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// hostileUpstreams answer every query wrongly, or not at all: each must
// end in SERVFAIL with nothing bound.
var hostileUpstreams = []struct {
	name string
	hook func(w dns.ResponseWriter, q *dns.Msg) bool
}{
	{"garbage", func(w dns.ResponseWriter, q *dns.Msg) bool {
		w.Write([]byte{byte(q.Id >> 8), byte(q.Id), 0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xde, 0xad})
		return true
	}},
	{"wrong id", func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Id++
		rr, _ := dns.NewRR("api.example.com. 60 IN A 6.6.6.6")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
		return true
	}},
	{"other question", func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Question[0].Name = "evil.example.net."
		rr, _ := dns.NewRR("evil.example.net. 60 IN A 6.6.6.6")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
		return true
	}},
	{"servfail", func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		w.WriteMsg(m)
		return true
	}},
	{"silent", func(w dns.ResponseWriter, q *dns.Msg) bool { return true }},
	{"truncated over tcp too", func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Truncated = true
		w.WriteMsg(m)
		return true
	}},
}

func TestDNSUpstreamHostile(t *testing.T) {
	pol := dnstest.Decider(t, dnstest.Policy)
	tests := hostileUpstreams
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := dnstest.NewServer(t, dnstest.Zone...)
			up.SetHook(tt.hook)
			r := newTestAnswerer(t, nil, up.Addr)
			res := r.Answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
			m := dnstest.MustUnpack(t, res.Reply)
			if m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 || len(res.Binds) != 0 {
				t.Fatalf("reply = %s %v (binds %v), want SERVFAIL with nothing", rcodeString(m.Rcode), m.Answer, res.Binds)
			}
			if res.Err == "" {
				t.Error("result carries no error for the audit line")
			}
		})
	}

	// Records for names other than the chain's: never taken.
	up := dnstest.NewServer(t)
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, s := range []string{
			"evil.example.net. 60 IN A 6.6.6.6",
			"api.example.com. 60 IN AAAA 2606:2800::6",
			"api.example.com. 60 CH A 6.6.6.7",
		} {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
		return true
	})
	r := newTestAnswerer(t, nil, up.Addr)
	res := r.Answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
	if m := dnstest.MustUnpack(t, res.Reply); len(m.Answer) != 0 || len(res.Binds) != 0 {
		t.Fatalf("answer = %v, binds %v; want records of other names and types ignored", m.Answer, res.Binds)
	}
}

func TestDNSUpstreamFailover(t *testing.T) {
	bad := dnstest.NewServer(t)
	bad.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeRefused)
		w.WriteMsg(m)
		return true
	})
	good := dnstest.NewServer(t, dnstest.Zone...)
	// A port nobody listens on first: the walk goes past it.
	dead := netip.MustParseAddrPort("127.0.0.1:1")
	r := newTestAnswerer(t, nil, dead, bad.Addr, good.Addr)
	res := r.Answer(context.Background(), dnstest.Decider(t, dnstest.Policy), dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	m := dnstest.MustUnpack(t, res.Reply)
	if len(dnstest.Addrs(m)) != 1 {
		t.Fatalf("answer = %s %v (%s), want the third server's", rcodeString(m.Rcode), m.Answer, res.Err)
	}
	if len(bad.Queries()) != 1 || len(good.Queries()) != 1 {
		t.Fatalf("servers asked: bad %v, good %v; want each once", bad.Queries(), good.Queries())
	}

	// NXDOMAIN is an answer: no next server.
	res = r.Answer(context.Background(), dnstest.Decider(t, dnstest.Policy), dnstest.Query("nothere.example.com.", dns.TypeA, 0), false)
	if m := dnstest.MustUnpack(t, res.Reply); m.Rcode != dns.RcodeNameError || res.Verdict != policy.Allow {
		t.Fatalf("reply = %s (%v), want NXDOMAIN from upstream", rcodeString(m.Rcode), res.Verdict)
	}
}

func TestDNSUpstreamCancel(t *testing.T) {
	dnstest.LeakCheck(t)
	up := dnstest.NewServer(t)
	up.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool { return true }) // never answers
	r := newTestAnswerer(t, nil, up.Addr)
	r.up.(*Upstream).tryTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	res := r.Answer(ctx, dnstest.Decider(t, dnstest.Policy), dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("answer took %v after cancel, want it to end with the context", d)
	}
	if m := dnstest.MustUnpack(t, res.Reply); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode = %s, want SERVFAIL", rcodeString(m.Rcode))
	}
}

func TestDNSPolicyMissing(t *testing.T) {
	up := dnstest.NewServer(t, dnstest.Zone...)
	r := newTestAnswerer(t, nil, up.Addr)
	res := r.Answer(context.Background(), nil, dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	if m := dnstest.MustUnpack(t, res.Reply); m.Rcode != dns.RcodeRefused || res.Rule != rulePolicyMissing {
		t.Fatalf("reply = %s by %s, want REFUSED by %s", rcodeString(m.Rcode), res.Rule, rulePolicyMissing)
	}
	if q := up.Queries(); len(q) != 0 {
		t.Fatalf("upstream saw %v without a policy", q)
	}
}

func TestDNSResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte("# host\nsearch lan\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up, err := NewUpstream(UpstreamOptions{System: true, ResolvConf: path}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("[fe80::1%eth0]:53")}
	if got := up.list(); !slices.Equal(got, want) {
		t.Fatalf("servers = %v, want %v", got, want)
	}
	// A change is picked up once the check interval has passed.
	if err := os.WriteFile(path, []byte("nameserver 127.0.0.54\nnameserver 127.0.0.55\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up.checked = time.Time{}
	want = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.54:53"), netip.MustParseAddrPort("127.0.0.55:53")}
	if got := up.list(); !slices.Equal(got, want) {
		t.Fatalf("servers after a change = %v, want %v", got, want)
	}
	// A file that loses its servers keeps the last good ones.
	if err := os.WriteFile(path, []byte("# nothing here yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up.checked = time.Time{}
	if got := up.list(); !slices.Equal(got, want) {
		t.Fatalf("servers after an empty file = %v, want the last good %v", got, want)
	}
	// No file at all: allowed names fail (SERVFAIL), nothing is asked.
	up, err = NewUpstream(UpstreamOptions{System: true, ResolvConf: filepath.Join(dir, "missing")}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Exchange(context.Background(), new(dns.Msg).SetQuestion("a.example.com.", dns.TypeA)); err != errNoUpstream {
		t.Fatalf("exchange without servers = %v, want %v", err, errNoUpstream)
	}
}

// silent makes a test server drop every query while on is set.
func silent(on *atomic.Bool) func(w dns.ResponseWriter, q *dns.Msg) bool {
	return func(w dns.ResponseWriter, q *dns.Msg) bool { return on.Load() }
}

// exchangeA asks up for name's A records, as Resolve does.
func exchangeA(up *Upstream, name string) (*dns.Msg, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	start := time.Now()
	r, err := up.Exchange(context.Background(), m)
	return r, time.Since(start), err
}

func newTestUpstream(t testing.TB, try time.Duration, servers ...netip.AddrPort) *Upstream {
	t.Helper()
	up, err := NewUpstream(UpstreamOptions{Servers: servers, TryTimeout: try}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return up
}

// TestDNSUpstreamSecondServer: when the first server stops answering, a
// query goes on to the second within one try, and the queries after it go
// there at once while the first is in its backoff.
func TestDNSUpstreamSecondServer(t *testing.T) {
	const try = 200 * time.Millisecond
	var drop atomic.Bool
	first := dnstest.NewServer(t, dnstest.Zone...)
	first.SetHook(silent(&drop))
	second := dnstest.NewServer(t, dnstest.Zone...)
	up := newTestUpstream(t, try, first.Addr, second.Addr)

	if _, _, err := exchangeA(up, "api.example.com."); err != nil || len(second.Queries()) != 0 {
		t.Fatalf("exchange = %v, second asked %v; want the first server's answer", err, second.Queries())
	}
	drop.Store(true)
	r, took, err := exchangeA(up, "api.example.com.")
	if err != nil || len(r.Answer) != 1 || took > try+3*try/4 {
		t.Fatalf("exchange with the first server silent = %v, %v in %v; want the second's answer within one try (%v)", r, err, took, try)
	}
	asked := len(first.Queries())
	for i := range 5 {
		if _, took, err := exchangeA(up, "example.com."); err != nil || took > 3*try/4 {
			t.Fatalf("exchange %d after the first server failed = %v in %v; want the second's answer at once", i, err, took)
		}
	}
	if n := len(first.Queries()); n != asked {
		t.Errorf("the first server was asked %d more times during its backoff, want 0", n-asked)
	}
	// Once its backoff is over and it answers again, it is first again.
	drop.Store(false)
	time.Sleep(serverBackoff)
	if _, _, err := exchangeA(up, "example.com."); err != nil || len(first.Queries()) != asked+1 {
		t.Fatalf("exchange after the backoff = %v; first asked %d more times, want once", err, len(first.Queries())-asked)
	}
}

// TestDNSUpstreamRetry: a server that drops one datagram is asked again by
// the same query, which gets its answer.
func TestDNSUpstreamRetry(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone...)
	var n atomic.Int32
	srv.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool { return n.Add(1) == 1 })
	up := newTestUpstream(t, 200*time.Millisecond, srv.Addr)
	if r, _, err := exchangeA(up, "api.example.com."); err != nil || len(r.Answer) != 1 {
		t.Fatalf("exchange = %v, %v; want the answer to the second try", r, err)
	}
	if got := len(srv.Queries()); got != 2 {
		t.Fatalf("server asked %d times, want 2", got)
	}
}

// TestDNSUpstreamDown: while every server is down, one query at a time
// asks again and the others fail at once with ErrUpstreamDown; the first
// answer brings the server back for every query.
func TestDNSUpstreamDown(t *testing.T) {
	dnstest.LeakCheck(t)
	const try = 200 * time.Millisecond
	var drop atomic.Bool
	drop.Store(true)
	srv := dnstest.NewServer(t, dnstest.Zone...)
	srv.SetHook(silent(&drop))
	up := newTestUpstream(t, try, srv.Addr)

	// The first query finds out: a try and a retry.
	if _, took, err := exchangeA(up, "api.example.com."); err == nil || errors.Is(err, ErrUpstreamDown) || took < 2*try {
		t.Fatalf("first exchange = %v in %v, want a timeout after two tries", err, took)
	}
	// One query waits on the dead server; the rest fail at once.
	var wg sync.WaitGroup
	var fast, slow atomic.Int32
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, took, err := exchangeA(up, "example.com.")
			switch {
			case err == nil:
				t.Error("answered by a silent server")
			case errors.Is(err, ErrUpstreamDown) && took < 3*try/4:
				fast.Add(1)
			default:
				slow.Add(1)
			}
		}()
	}
	wg.Wait()
	if slow.Load() > 2 || fast.Load() < 18 {
		t.Fatalf("with the upstream down: %d queries failed at once, %d waited; want all but one or two at once", fast.Load(), slow.Load())
	}
	drop.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, err := exchangeA(up, "example.com.")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream answers again, exchange still = %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, took, err := exchangeA(up, "api.example.com."); err != nil || took > 3*try/4 {
		t.Fatalf("exchange after recovery = %v in %v, want an answer at once", err, took)
	}
}

// TestDNSUpstreamTCPFails: a server that answers over UDP truncated and
// then not over TCP has answered: it stays up, and the query does not ask
// it again.
func TestDNSUpstreamTCPFails(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone...)
	srv.SetHook(func(w dns.ResponseWriter, q *dns.Msg) bool {
		if _, tcp := w.RemoteAddr().(*net.TCPAddr); tcp {
			return true // silent
		}
		m := new(dns.Msg)
		m.SetReply(q)
		m.Truncated = true
		w.WriteMsg(m)
		return true
	})
	up := newTestUpstream(t, 100*time.Millisecond, srv.Addr)
	_, _, err := exchangeA(up, "api.example.com.")
	if err == nil || !strings.Contains(err.Error(), "truncated over udp, then tcp") {
		t.Fatalf("exchange = %v, want the TCP retry's failure", err)
	}
	var nets []string
	for _, q := range srv.Queries() {
		nets = append(nets, q.Net)
	}
	if !slices.Equal(nets, []string{"udp", "tcp"}) {
		t.Errorf("server asked over %v, want udp then tcp, once", nets)
	}
	if h := up.health[srv.Addr]; h == nil || h.fails != 0 {
		t.Errorf("health = %+v, want the server up", h)
	}
}
