package dnsproxy

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/policy"
)

// Answerer answers the queries that go upstream: it asks through its
// Exchanger, filters what comes back, and keeps the outcome for the next
// agent that asks the same name and type. It is safe for concurrent use.
type Answerer struct {
	up     Exchanger
	public []netip.Prefix // the operator's treat_as_public

	answers  *answerCache // filtered upstream answers; nil keeps none
	failures *answerCache // upstream failures; nil keeps none
	failTTL  time.Duration
}

// AnswererOptions says what an Answerer keeps in its answers and of them.
type AnswererOptions struct {
	// Public is the operator's treat_as_public: special-purpose addresses
	// kept in answers (metadata endpoints never).
	Public []netip.Prefix
	// CacheSize bounds the upstream answers kept, each within its TTL, for
	// every agent; the least recently used goes first. 0 keeps none.
	CacheSize int
	// FailureTTL is how long a lookup the upstream failed is answered
	// SERVFAIL at once, without asking again. 0 asks every time.
	FailureTTL time.Duration
}

// NewAnswerer returns an Answerer that asks up.
func NewAnswerer(up Exchanger, opts AnswererOptions) *Answerer {
	r := &Answerer{up: up, public: opts.Public, answers: newAnswerCache(opts.CacheSize)}
	if opts.FailureTTL > 0 {
		r.failures, r.failTTL = newAnswerCache(maxFailures), opts.FailureTTL
	}
	return r
}

// Answer runs the whole path for one query: ParseQuery, Decide, then
// Resolve if the query goes upstream. The gateway runs the steps itself,
// with its rate limits in between.
func (r *Answerer) Answer(ctx context.Context, pol policy.Decider, raw []byte, tcp bool) Result {
	q, res, done := ParseQuery(raw, tcp)
	if done {
		return res
	}
	if res, done := q.Decide(pol); done {
		return res
	}
	return r.Resolve(ctx, q)
}

// Resolve answers an allowed A or AAAA query from the cache (Cached) or
// else from the upstream, and keeps what the upstream said.
//
// CNAME semantics: the policy decides the queried name only. The chain in
// the upstream's answer is followed (at most maxChain links, loops end
// it) to the records of its last name, never re-queried: a name in the
// chain the policy does not allow is never asked upstream on its own. The
// records found are returned as records of the queried name (the agent
// sees no CNAME) and bound to it, since that is the name the agent will
// put in its SNI or Host. The TTL is the smallest along the chain, clamped
// to [bindMinTTL, bindMaxTTL].
//
// Addresses that are special-purpose (policy.ClassifyAddr: loopback,
// private, link-local, metadata, ...; the operator's treat_as_public
// ranges excepted, metadata never) or the gateway host's own are removed:
// a public name must not point the agent at an internal service (DNS
// rebinding). When none is left the answer is NOERROR with no records and
// Extended DNS Error 15 (Blocked).
//
// What is kept for the next agent: answers with addresses, filtered, for
// their TTL; NXDOMAIN and empty answers for their SOA's negative TTL (at
// most negMaxTTL; without a SOA, not at all); a failure for FailureTTL,
// unless the query never reached a server (ErrUpstreamDown: asking again
// costs nothing) or the agent went away.
func (r *Answerer) Resolve(ctx context.Context, q *Query) Result {
	if res, ok := r.Cached(q); ok {
		return res
	}
	d := q.decision
	key := cacheKey{q.name, q.qtype}
	up := new(dns.Msg)
	up.SetQuestion(dns.Fqdn(q.name), q.qtype)
	up.RecursionDesired = true
	up.SetEdns0(upstreamUDPSize, false)
	resp, err := r.up.Exchange(ctx, up)
	if err != nil {
		if !errors.Is(err, ErrUpstreamDown) && !errors.Is(err, errNoUpstream) && !errors.Is(ctx.Err(), context.Canceled) {
			r.failures.put(cacheEntry{key: key, err: err.Error()}, r.failTTL)
		}
		return q.servfail("upstream did not answer", err.Error())
	}
	if resp.Rcode == dns.RcodeNameError {
		r.keep(cacheEntry{key: key, rcode: dns.RcodeNameError}, negativeTTL(resp))
		return q.result(q.reply(dns.RcodeNameError), d.Verdict, d.Rule, d.Reason)
	}
	addrs, ttl, removed, note := r.extract(resp, q)
	switch {
	case len(addrs) > 0:
		r.keep(cacheEntry{key: key, addrs: slices.Clone(addrs), note: note}, ttl)
	case removed == 0 && note == "":
		r.keep(cacheEntry{key: key}, negativeTTL(resp))
	}
	return r.answer(q, addrs, ttl, removed, note)
}

// Cached answers q from what the upstream said to an earlier lookup of
// the same name and type, by any agent: an answer within its TTL (the TTL
// left), or SERVFAIL at once for a failure of the last FailureTTL. ok is
// false when nothing is kept, and for a query Decide did not allow: a name
// the agent's policy denies is never answered from the cache. The agent
// binds what it gets, as from the upstream.
func (r *Answerer) Cached(q *Query) (res Result, ok bool) {
	if !q.decision.Allowed() || q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA {
		return Result{}, false
	}
	key := cacheKey{q.name, q.qtype}
	if e, left, ok := r.answers.get(key); ok {
		return r.fromCache(q, e, left), true
	}
	if e, _, ok := r.failures.get(key); ok {
		return q.servfail("upstream failed moments ago, not asked again yet", "upstream failed moments ago: "+e.err), true
	}
	return Result{}, false
}

// keep remembers an answer of the upstream for ttl, in place of a failure.
func (r *Answerer) keep(e cacheEntry, ttl time.Duration) {
	r.answers.put(e, ttl)
	r.failures.drop(e.key)
}

// fromCache is the agent's answer from a kept one with left to live. The
// addresses are filtered again, in case the gateway host's own have
// changed since.
func (r *Answerer) fromCache(q *Query, e cacheEntry, left time.Duration) Result {
	d := q.decision
	if e.rcode == dns.RcodeNameError {
		return q.result(q.reply(dns.RcodeNameError), d.Verdict, d.Rule, d.Reason+"; "+cacheNote)
	}
	addrs := make([]netip.Addr, 0, len(e.addrs))
	var why []string
	for _, ip := range e.addrs {
		if w := r.special(ip, q.IsHost); w != "" {
			why = append(why, w)
			continue
		}
		addrs = append(addrs, ip)
	}
	notes := []string{cacheNote}
	if e.note != "" {
		notes = append(notes, e.note)
	}
	if len(why) > 0 {
		notes = append(notes, removedNote(len(why), why))
	}
	// Whole seconds, rounded up: the agent is never told 0.
	ttl := (left + time.Second - 1).Truncate(time.Second)
	return r.answer(q, addrs, ttl, len(why), strings.Join(notes, "; "))
}

// cacheNote tells the audit line the upstream was not asked.
const cacheNote = "answered from the cache"

// servfail is the agent's answer when the upstream gave none: SERVFAIL,
// Extended DNS Error 23 (Network Error) saying why, err for the audit line.
func (q *Query) servfail(text, err string) Result {
	d := q.decision
	m := q.reply(dns.RcodeServerFailure)
	q.ede(m, dns.ExtendedErrorCodeNetworkError, text)
	res := q.result(m, d.Verdict, d.Rule, d.Reason)
	res.Err = err
	return res
}

// answer is the agent's NOERROR answer: addrs as records of the name it
// asked, with ttl, bound for ttl. removed and note say what the rebinding
// filter left out; nothing left of a non-empty answer is a deny.
func (r *Answerer) answer(q *Query, addrs []netip.Addr, ttl time.Duration, removed int, note string) Result {
	d := q.decision
	m := q.reply(dns.RcodeSuccess)
	owner := q.req.Question[0].Name // as the agent spelled it
	hdr := dns.RR_Header{Name: owner, Rrtype: q.qtype, Class: dns.ClassINET, Ttl: uint32(ttl / time.Second)}
	for _, a := range addrs {
		if q.qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		} else {
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	verdict, rule, reason := d.Verdict, d.Rule, d.Reason
	if note != "" {
		reason += "; " + note
	}
	if len(addrs) == 0 && removed > 0 {
		q.ede(m, dns.ExtendedErrorCodeBlocked, "special-purpose address "+blockedText)
		verdict, rule = policy.Deny, ruleRebinding
	}
	res := q.result(m, verdict, rule, reason)
	res.Binds, res.TTL = addrs, ttl
	return res
}

// extract follows the CNAME chain from the queried name and returns the
// acceptable addresses of its end, the TTL to use, how many addresses were
// removed as special-purpose, and a note for the audit line on what was
// left out.
func (r *Answerer) extract(resp *dns.Msg, q *Query) (addrs []netip.Addr, ttl time.Duration, removed int, note string) {
	var notes []string
	cur, minTTL, broken := chainEnd(resp.Answer, dns.Fqdn(q.name))
	if broken != "" {
		return nil, bindMinTTL, 0, broken
	}
	var why []string
	for _, rr := range resp.Answer {
		ip := addrOf(rr, q.qtype, cur)
		if !ip.IsValid() {
			continue // not the chain's end: never taken, whatever it says
		}
		if w := r.special(ip, q.IsHost); w != "" {
			if removed++; len(why) < 4 {
				why = append(why, w)
			}
			continue
		}
		if containsAddr(addrs, ip) {
			continue
		}
		if len(addrs) == MaxBindingsPerName {
			notes = append(notes, "kept the first "+strconv.Itoa(MaxBindingsPerName)+" addresses")
			break
		}
		minTTL = min(minTTL, rr.Header().Ttl)
		addrs = append(addrs, ip)
	}
	if removed > 0 {
		notes = append(notes, removedNote(removed, why))
	}
	return addrs, clampTTL(time.Duration(minTTL) * time.Second), removed, strings.Join(notes, "; ")
}

// chainEnd follows the CNAME chain from name inside rrs (at most maxChain
// links) and returns the name at its end and the smallest TTL along it,
// in seconds and at most bindMaxTTL. broken, when set, says why the chain
// cannot be followed.
func chainEnd(rrs []dns.RR, name string) (end string, minTTL uint32, broken string) {
	minTTL = uint32(bindMaxTTL / time.Second)
	for hops := 0; ; hops++ {
		target, ttl, n := cnameOf(rrs, name)
		if n == 0 {
			return name, minTTL, ""
		}
		if n > 1 {
			return "", 0, "answer has " + strconv.Itoa(n) + " CNAMEs for " + name
		}
		if hops == maxChain {
			return "", 0, "CNAME chain longer than " + strconv.Itoa(maxChain) + " links (or a loop)"
		}
		minTTL = min(minTTL, ttl)
		name = target
	}
}

// addrOf returns the address of rr if it is an IN record of type qtype
// owned by name, and the zero Addr otherwise.
func addrOf(rr dns.RR, qtype uint16, name string) netip.Addr {
	h := rr.Header()
	if h.Rrtype != qtype || h.Class != dns.ClassINET || !strings.EqualFold(h.Name, name) {
		return netip.Addr{}
	}
	var ip netip.Addr
	switch v := rr.(type) {
	case *dns.A:
		ip, _ = netip.AddrFromSlice(v.A.To4())
	case *dns.AAAA:
		ip, _ = netip.AddrFromSlice(v.AAAA.To16())
	}
	return ip
}

// cnameOf returns the target and TTL of name's CNAME in rrs, and how many
// CNAMEs name has.
func cnameOf(rrs []dns.RR, name string) (target string, ttl uint32, n int) {
	for _, rr := range rrs {
		c, ok := rr.(*dns.CNAME)
		if !ok || c.Hdr.Class != dns.ClassINET || !strings.EqualFold(c.Hdr.Name, name) {
			continue
		}
		if n == 0 {
			target, ttl = c.Target, c.Hdr.Ttl
		}
		n++
	}
	return target, ttl, n
}

// removedNote says for the audit line which addresses the filter removed
// (why: the first few of them).
func removedNote(removed int, why []string) string {
	return "removed " + strconv.Itoa(removed) + " special-purpose: " + strings.Join(why[:min(len(why), 4)], ", ")
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// special says why ip must not be handed to an agent, or "" if it may be.
// The class is the one the policy gives flows (ClassifyPublic:
// treat_as_public applied, metadata never public), so answers and flows
// agree on what is public.
func (r *Answerer) special(ip netip.Addr, isHost func(netip.Addr) bool) string {
	info := policy.ClassifyPublic(ip, r.public)
	if info.Class == policy.ClassMetadata {
		return ip.String() + " (" + info.What + ")"
	}
	if isHost != nil && isHost(ip) {
		return ip.String() + " (the gateway host's own)"
	}
	if !info.Class.Special() {
		return ""
	}
	return ip.String() + " (" + info.What + ")"
}
