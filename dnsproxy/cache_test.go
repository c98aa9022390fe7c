package dnsproxy

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
	"github.com/clawnet/clawnet/policy"
)

// newCachingAnswerer answers through up with the gateway's cache bounds,
// failures kept for failTTL, and both caches on the returned clock.
func newCachingAnswerer(up Exchanger, failTTL time.Duration) (*Answerer, *fakeClock) {
	r := NewAnswerer(up, AnswererOptions{CacheSize: DefaultCacheSize, FailureTTL: failTTL})
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	r.answers.now, r.failures.now = clock.now, clock.now
	return r, clock
}

// denyAPI allows what dnstest.Policy allows, but not api.example.com.
const denyAPI = `version: v1
name: denyapi
egress:
  - domains: [example.com, "*.example.com"]
    ports: [443]
deny:
  - domains: [api.example.com]
`

// TestDNSCacheShared: one agent's lookup answers the next agent asking the
// same name and type, each with its own spelling and bindings; an agent
// whose policy denies the name still gets NXDOMAIN, never the cached
// answer.
func TestDNSCacheShared(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone...)
	r, clock := newCachingAnswerer(newTestUpstream(t, 300*time.Millisecond, srv.Addr), DefaultFailureTTL)
	alice, bob, carol := dnstest.Decider(t, dnstest.Policy), dnstest.Decider(t, dnstest.Policy), dnstest.Decider(t, denyAPI)
	want := []netip.Addr{netip.MustParseAddr("93.184.216.34")}

	first := r.Answer(context.Background(), alice, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
	if !slices.Equal(first.Binds, want) || first.TTL != 300*time.Second || strings.Contains(first.Reason, cacheNote) {
		t.Fatalf("first answer = %+v, want %v for 300s from upstream", first, want)
	}
	clock.advance(100 * time.Second)
	res := r.Answer(context.Background(), bob, dnstest.Query("API.example.COM.", dns.TypeA, 0), false)
	m := dnstest.MustUnpack(t, res.Reply)
	if !slices.Equal(res.Binds, want) || res.TTL != 200*time.Second || res.Verdict != policy.Allow || !strings.Contains(res.Reason, cacheNote) {
		t.Fatalf("second agent's answer = %+v, want %v bound for the 200s left, from the cache", res, want)
	}
	if len(m.Answer) != 1 || m.Answer[0].Header().Name != "API.example.COM." || m.Answer[0].Header().Ttl != 200 || m.IsEdns0() != nil {
		t.Fatalf("second agent's reply = %v, want its own spelling, TTL 200 and no OPT", m)
	}

	res = r.Answer(context.Background(), carol, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
	m = dnstest.MustUnpack(t, res.Reply)
	if m.Rcode != dns.RcodeNameError || len(res.Binds) != 0 || res.Verdict != policy.Deny {
		t.Fatalf("answer to an agent whose policy denies the name = %s %+v, want NXDOMAIN, nothing bound", rcodeString(m.Rcode), res)
	}
	if e := dnstest.EDE(m); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked {
		t.Errorf("extended error = %v, want Blocked", e)
	}
	q, _, _ := ParseQuery(dnstest.Query("api.example.com.", dns.TypeA, 0), false)
	q.Decide(carol)
	if res, ok := r.Cached(q); ok {
		t.Fatalf("Cached(a denied query) = %+v, want nothing", res)
	}
	if q := srv.Queries(); len(q) != 1 {
		t.Fatalf("upstream saw %v, want the first lookup only", q)
	}
}

// TestDNSCacheTTL: an answer is kept for its TTL as the bindings clamp it
// ([30 s, 1 h]), the agent told what is left.
func TestDNSCacheTTL(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone...)
	r, clock := newCachingAnswerer(newTestUpstream(t, 300*time.Millisecond, srv.Addr), DefaultFailureTTL)
	pol := dnstest.Decider(t, dnstest.Policy)
	ask := func(name string) Result {
		t.Helper()
		return r.Answer(context.Background(), pol, dnstest.Query(name, dns.TypeA, 0), false)
	}
	asked := func() int { return len(srv.Queries()) }

	tests := []struct {
		name     string
		at       time.Duration // since the first lookup
		wantTTL  time.Duration
		wantSeen int // lookups upstream so far
	}{
		{"zero.example.com.", 0, bindMinTTL, 1},
		{"zero.example.com.", 10 * time.Second, 20 * time.Second, 1},
		{"zero.example.com.", 29*time.Second + 500*time.Millisecond, time.Second, 1},
		{"zero.example.com.", 30 * time.Second, bindMinTTL, 2}, // expired: asked again
		{"week.example.com.", 30 * time.Second, bindMaxTTL, 3},
		{"week.example.com.", 30*time.Second + bindMaxTTL - time.Second, time.Second, 3},
		{"week.example.com.", 30*time.Second + bindMaxTTL, bindMaxTTL, 4},
	}
	start := clock.now()
	for _, tt := range tests {
		clock.advance(start.Add(tt.at).Sub(clock.now()))
		res := ask(tt.name)
		m := dnstest.MustUnpack(t, res.Reply)
		if res.TTL != tt.wantTTL || len(m.Answer) != 1 || time.Duration(m.Answer[0].Header().Ttl)*time.Second != tt.wantTTL || asked() != tt.wantSeen {
			t.Errorf("%s at +%v: TTL %v (record %v), upstream asked %d times; want TTL %v, %d times",
				tt.name, tt.at, res.TTL, m.Answer, asked(), tt.wantTTL, tt.wantSeen)
		}
	}
}

// TestDNSCacheFailure: a lookup the upstream failed is answered SERVFAIL at
// once for FailureTTL, with an extended error saying so, then asked again.
// A query that never reached a server, or whose agent went away, is not
// kept.
func TestDNSCacheFailure(t *testing.T) {
	const try = 100 * time.Millisecond
	var drop atomic.Bool
	drop.Store(true)
	srv := dnstest.NewServer(t, dnstest.Zone...)
	srv.SetHook(silent(&drop))
	r, clock := newCachingAnswerer(newTestUpstream(t, try, srv.Addr), DefaultFailureTTL)
	pol := dnstest.Decider(t, dnstest.Policy)
	ask := func() (Result, *dns.Msg, time.Duration) {
		t.Helper()
		start := time.Now()
		res := r.Answer(context.Background(), pol, dnstest.Query("api.example.com.", dns.TypeA, 1232), false)
		return res, dnstest.MustUnpack(t, res.Reply), time.Since(start)
	}

	res, m, _ := ask()
	if m.Rcode != dns.RcodeServerFailure || res.Err == "" {
		t.Fatalf("answer with the upstream silent = %s (%q), want SERVFAIL", rcodeString(m.Rcode), res.Err)
	}
	asked := len(srv.Queries())
	res, m, took := ask()
	e := dnstest.EDE(m)
	if m.Rcode != dns.RcodeServerFailure || took > 3*try/4 || e == nil || e.InfoCode != dns.ExtendedErrorCodeNetworkError ||
		!strings.Contains(e.ExtraText, "moments ago") || !strings.HasPrefix(res.Err, "upstream failed moments ago") {
		t.Fatalf("answer to a failed lookup again = %s in %v, EDE %v, error %q; want SERVFAIL at once saying it failed moments ago",
			rcodeString(m.Rcode), took, e, res.Err)
	}
	if n := len(srv.Queries()); n != asked {
		t.Fatalf("upstream asked %d more times during the failure TTL, want 0", n-asked)
	}
	drop.Store(false)
	clock.advance(DefaultFailureTTL)
	if res, m, _ := ask(); m.Rcode != dns.RcodeSuccess || len(res.Binds) != 1 {
		t.Fatalf("answer after the failure TTL = %s %+v, want the upstream's", rcodeString(m.Rcode), res)
	}

	for _, tt := range []struct {
		name string
		ctx  func() context.Context
		err  error
	}{
		{"not sent", context.Background, fmt.Errorf("%w (test)", ErrUpstreamDown)},
		{"agent gone", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := &memExchanger{fn: func(*dns.Msg) (*dns.Msg, error) { return nil, tt.err }}
			r, _ := newCachingAnswerer(up, DefaultFailureTTL)
			for range 2 {
				r.Answer(tt.ctx(), pol, dnstest.Query("api.example.com.", dns.TypeA, 0), false)
			}
			if len(up.asked) != 2 || r.failures.len() != 0 {
				t.Fatalf("upstream asked %d times, %d failures kept; want 2 and none", len(up.asked), r.failures.len())
			}
		})
	}
}

// TestDNSCacheNegative: NXDOMAIN and empty answers are kept for their
// SOA's negative TTL (at most negMaxTTL), and not at all without a SOA.
func TestDNSCacheNegative(t *testing.T) {
	pol := dnstest.Decider(t, dnstest.Policy)
	up := &memExchanger{fn: func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := q.Question[0].Name
		if strings.HasPrefix(name, "gone") {
			m.Rcode = dns.RcodeNameError
		}
		if strings.Contains(name, "soa") {
			soa, _ := dns.NewRR("example.com. 3600 IN SOA ns.example.com. host.example.com. 1 7200 900 1209600 300")
			m.Ns = append(m.Ns, soa)
		}
		return m, nil
	}}
	r, clock := newCachingAnswerer(up, DefaultFailureTTL)
	tests := []struct {
		name  string
		rcode int
		kept  time.Duration
	}{
		{"gone-soa.example.com.", dns.RcodeNameError, negMaxTTL},
		{"gone.example.com.", dns.RcodeNameError, 0},
		{"empty-soa.example.com.", dns.RcodeSuccess, negMaxTTL},
		{"empty.example.com.", dns.RcodeSuccess, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(up.asked)
			for i := range 3 {
				if i == 2 {
					clock.advance(negMaxTTL)
				}
				res := r.Answer(context.Background(), pol, dnstest.Query(tt.name, dns.TypeA, 0), false)
				if m := dnstest.MustUnpack(t, res.Reply); m.Rcode != tt.rcode || len(m.Answer) != 0 {
					t.Fatalf("answer %d = %s %v, want %s and nothing", i, rcodeString(m.Rcode), m.Answer, rcodeString(tt.rcode))
				}
			}
			want := 3 // not kept
			if tt.kept > 0 {
				want = 2 // the second from the cache, the third after negMaxTTL
			}
			if n := len(up.asked) - before; n != want {
				t.Errorf("upstream asked %d times, want %d", n, want)
			}
		})
	}
}

// TestDNSCacheFiltered: what is kept has been through the rebinding
// filter, and is filtered again when served.
func TestDNSCacheFiltered(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone...)
	r, _ := newCachingAnswerer(newTestUpstream(t, 300*time.Millisecond, srv.Addr), DefaultFailureTTL)
	pol := dnstest.Decider(t, dnstest.Policy)
	public := netip.MustParseAddr("93.184.216.40")

	r.Answer(context.Background(), pol, dnstest.Query("rebind.example.com.", dns.TypeA, 0), false)
	e, _, ok := r.answers.get(cacheKey{"rebind.example.com", dns.TypeA})
	if !ok || !slices.Equal(e.addrs, []netip.Addr{public}) || !strings.Contains(e.note, "removed 4") {
		t.Fatalf("kept %+v, want only %s and the note of what was removed", e, public)
	}
	// The same address is now the gateway host's own: served from the
	// cache, it is removed too.
	q, _, _ := ParseQuery(dnstest.Query("rebind.example.com.", dns.TypeA, 1232), false)
	q.IsHost = func(a netip.Addr) bool { return a == public }
	q.Decide(pol)
	res := r.Resolve(context.Background(), q)
	m := dnstest.MustUnpack(t, res.Reply)
	if len(m.Answer) != 0 || len(res.Binds) != 0 || res.Rule != ruleRebinding || dnstest.EDE(m) == nil {
		t.Fatalf("cached answer with the address now the host's = %v %+v, want nothing, denied by %s", m.Answer, res, ruleRebinding)
	}
	if n := len(srv.Queries()); n != 1 {
		t.Fatalf("upstream asked %d times, want once", n)
	}
}

// TestDNSCacheBound: past its size the least recently used entry goes.
func TestDNSCacheBound(t *testing.T) {
	c := newAnswerCache(3)
	key := func(n string) cacheKey { return cacheKey{n, dns.TypeA} }
	for _, n := range []string{"a", "b", "c"} {
		c.put(cacheEntry{key: key(n)}, time.Minute)
	}
	c.get(key("a"))
	c.put(cacheEntry{key: key("d")}, time.Minute)
	var kept []string
	for _, n := range []string{"a", "b", "c", "d"} {
		if _, _, ok := c.get(key(n)); ok {
			kept = append(kept, n)
		}
	}
	if !slices.Equal(kept, []string{"a", "c", "d"}) || c.len() != 3 {
		t.Fatalf("kept %v (%d entries), want [a c d]: b least recently used", kept, c.len())
	}
	if newAnswerCache(0) != nil {
		t.Fatal("a cache of size 0 keeps something")
	}
	var none *answerCache
	none.put(cacheEntry{key: key("a")}, time.Minute)
	if _, _, ok := none.get(key("a")); ok {
		t.Fatal("a nil cache kept an entry")
	}
}

// TestDNSFlappingUpstream: the upstream answers, drops everything for 3 s,
// then answers again. An agent asking all along gets its cached names
// answered at once, SERVFAIL at once for the others (one query at a time
// waits on the dead server), and answers again soon after the upstream is
// back.
func TestDNSFlappingUpstream(t *testing.T) {
	dnstest.LeakCheck(t)
	const (
		try     = 200 * time.Millisecond
		failTTL = time.Second
		outage  = 3 * time.Second
		workers = 4
		// waited tells a lookup that waited on the upstream (a try at
		// least) from one slowed by the scheduler.
		waited = 3 * try / 4
	)
	var drop atomic.Bool
	srv := dnstest.NewServer(t, dnstest.Zone...)
	srv.SetHook(silent(&drop))
	r := NewAnswerer(newTestUpstream(t, try, srv.Addr), AnswererOptions{CacheSize: DefaultCacheSize, FailureTTL: failTTL})
	pol := dnstest.Decider(t, dnstest.Policy)
	ask := func(name string) (*dns.Msg, time.Duration) {
		start := time.Now()
		res := r.Answer(context.Background(), pol, dnstest.Query(name, dns.TypeA, 1232), false)
		return dnstest.MustUnpack(t, res.Reply), time.Since(start)
	}
	cached := []string{"api.example.com.", "chain.example.com.", "example.com."}
	for _, name := range cached {
		if m, _ := ask(name); len(m.Answer) == 0 {
			t.Fatalf("%s: no answer before the outage", name)
		}
	}

	type span struct{ start, end time.Time }
	var (
		mu             sync.Mutex
		slow           []span // uncached lookups that waited on the upstream
		fast, hits     int
		slowHits       int
		wg             sync.WaitGroup
		outageStart    = time.Now()
		firstWaveEnded = outageStart.Add(2*try + 50*time.Millisecond)
	)
	drop.Store(true)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(outageStart) < outage; i++ {
				m, took := ask(cached[i%len(cached)])
				mu.Lock()
				if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
					t.Errorf("cached name %s during the outage: %s", cached[i%len(cached)], rcodeString(m.Rcode))
				} else if took >= waited {
					slowHits++
				} else {
					hits++
				}
				mu.Unlock()
				start := time.Now()
				m, took = ask(fmt.Sprintf("w%d-%d.example.com.", w, i))
				mu.Lock()
				switch {
				case m.Rcode != dns.RcodeServerFailure:
					t.Errorf("uncached name during the outage: %s, want SERVFAIL", rcodeString(m.Rcode))
				case took < waited:
					fast++
				case start.After(firstWaveEnded):
					slow = append(slow, span{start, start.Add(took)})
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	drop.Store(false)
	recovered := time.Now()

	if slowHits > 0 || hits < 100 {
		t.Errorf("cached names during the outage: %d answered at once, %d slowly; want every one at once", hits, slowHits)
	}
	// After the first wave, at most one lookup at a time waits on the dead
	// server (two for the moment one hands over to the next).
	sort.Slice(slow, func(i, j int) bool { return slow[i].start.Before(slow[j].start) })
	most := 0
	for i, s := range slow {
		n := 1
		for _, o := range slow[:i] {
			if o.end.After(s.start) {
				n++
			}
		}
		most = max(most, n)
	}
	if most > 2 || fast < 10*len(slow) {
		t.Errorf("uncached names during the outage: %d failed at once, %d waited on the upstream, up to %d at a time; want one at a time, most at once",
			fast, len(slow), most)
	}
	t.Logf("outage of %v: %d cached answers, %d fast SERVFAILs, %d slow, at most %d waiting at once", outage, hits, fast, len(slow), most)

	// Back: a new name is answered as soon as a lookup finds the upstream
	// up; one that failed during the outage once its failure TTL is over.
	for {
		m, _ := ask(fmt.Sprintf("new-%d.example.com.", time.Since(recovered).Milliseconds()))
		if m.Rcode == dns.RcodeNameError {
			break
		}
		if time.Since(recovered) > 2*try+100*time.Millisecond {
			t.Fatalf("upstream back for %v, a new name still gets %s", time.Since(recovered), rcodeString(m.Rcode))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(failTTL)
	if m, _ := ask("w0-0.example.com."); m.Rcode != dns.RcodeNameError {
		t.Fatalf("a name that failed in the outage, after its failure TTL: %s, want the upstream's NXDOMAIN", rcodeString(m.Rcode))
	}
}
