package dnsproxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/policy"
)

const (
	// MaxQuery is the largest query accepted: a real one is a header,
	// one name of at most 255 bytes and an OPT record with a few options
	// (padding to 468 bytes included).
	MaxQuery = 4096
	// maxUDPReply bounds UDP replies whatever EDNS size the agent
	// advertises; larger answers are truncated and the agent retries over
	// TCP. (Our answers are far smaller: at most MaxBindingsPerName records.)
	maxUDPReply = 4096
	// ownUDPSize is the EDNS buffer size the gateway advertises to agents.
	ownUDPSize = 1232
	// maxChain bounds the CNAME chain followed inside one answer.
	maxChain = 8
	// blockedText is the Extended DNS Error text of a denied name.
	blockedText = "blocked by clawnet policy"
)

// Rule names of the answer path's own decisions, as they appear in audit
// lines.
const (
	ruleMalformed     = "builtin:dns-malformed"
	ruleUnsupported   = "builtin:dns-unsupported"
	ruleRebinding     = "builtin:dns-rebinding"
	rulePolicyMissing = "builtin:policy-missing"
)

// Query is one parsed, checked query from an agent, made by ParseQuery.
type Query struct {
	req   *dns.Msg
	opt   *dns.OPT // the agent's EDNS record, or nil
	name  string   // normalized qname: lower case, no trailing dot
	qtype uint16
	tcp   bool
	limit int // the largest reply the agent's transport takes
	// IsHost, when set, names addresses that are the gateway host's own:
	// dropped from answers like special-purpose ones.
	IsHost func(netip.Addr) bool
	// decision is the policy's verdict on name (an allowed one when the
	// query goes upstream).
	decision policy.Decision
}

// Result is the outcome of one query: what to send the agent, what to bind
// in its NameTable and what to write in its audit line.
type Result struct {
	Reply []byte // nil: nothing is sent

	QName, QType string
	Verdict      policy.Verdict
	RCode        string
	Rule, Reason string
	Err          string

	// Binds are the accepted addresses, to be bound to QName for TTL.
	Binds []netip.Addr
	TTL   time.Duration
}

// Answerer answers the queries that go upstream: it asks through its
// Exchanger and filters what comes back. It is safe for concurrent use.
type Answerer struct {
	up     Exchanger
	public []netip.Prefix // the operator's treat_as_public
}

// NewAnswerer returns an Answerer that asks up, and keeps in answers the
// special-purpose addresses inside public (the operator's treat_as_public;
// metadata endpoints never).
func NewAnswerer(up Exchanger, public []netip.Prefix) *Answerer {
	return &Answerer{up: up, public: public}
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

// ParseQuery parses and checks raw, a query from an agent over TCP or UDP.
// done means res is the final result (dropped or answered locally);
// otherwise q is ready for Decide.
func ParseQuery(raw []byte, tcp bool) (q *Query, res Result, done bool) {
	if len(raw) < 12 {
		return nil, Result{Rule: ruleMalformed, Reason: "dropped: shorter than a dns header"}, true
	}
	if raw[2]&0x80 != 0 {
		return nil, Result{Rule: ruleMalformed, Reason: "dropped: a response, not a query"}, true
	}
	if len(raw) > MaxQuery {
		return nil, headerOnly(raw, dns.RcodeFormatError, "query of "+strconv.Itoa(len(raw))+" bytes is too large"), true
	}
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		return nil, headerOnly(raw, dns.RcodeFormatError, "unparseable: "+err.Error()), true
	}
	q = &Query{req: req, tcp: tcp, limit: dns.MinMsgSize}
	if tcp {
		q.limit = dns.MaxMsgSize
	}
	if len(req.Question) == 1 {
		q.qtype = req.Question[0].Qtype
	}
	if req.Opcode != dns.OpcodeQuery {
		return nil, q.local(dns.RcodeNotImplemented, ruleUnsupported, "opcode "+opcodeString(req.Opcode)+" is not served"), true
	}
	if len(req.Question) != 1 {
		q.req.Question = nil // nothing sensible to echo
		return nil, q.local(dns.RcodeFormatError, ruleMalformed, strconv.Itoa(len(req.Question))+" questions, want 1"), true
	}
	if len(req.Answer) != 0 || len(req.Ns) != 0 {
		return nil, q.local(dns.RcodeFormatError, ruleMalformed, "records in the answer or authority section of a query"), true
	}
	for _, rr := range req.Extra {
		opt, ok := rr.(*dns.OPT)
		if !ok || q.opt != nil || opt.Hdr.Name != "." {
			q.opt = nil
			return nil, q.local(dns.RcodeFormatError, ruleMalformed, "additional section holds something besides one OPT record"), true
		}
		q.opt = opt
	}
	if q.opt != nil {
		if v := q.opt.Version(); v != 0 {
			res := q.local(dns.RcodeBadVers, ruleMalformed, "EDNS version "+strconv.Itoa(int(v))+", want 0")
			return nil, res, true
		}
		if !tcp {
			q.limit = min(max(int(q.opt.UDPSize()), dns.MinMsgSize), maxUDPReply)
		}
	}
	qs := req.Question[0]
	if qs.Qclass != dns.ClassINET {
		return nil, q.local(dns.RcodeRefused, ruleUnsupported, "class "+classString(qs.Qclass)+" is not served, only IN"), true
	}
	if qs.Name == "." {
		return nil, q.local(dns.RcodeRefused, ruleUnsupported, "the root is not served"), true
	}
	name, err := policy.NormalizeName(qs.Name)
	if err != nil {
		return nil, q.local(dns.RcodeFormatError, ruleMalformed, err.Error()), true
	}
	q.name = name
	return q, Result{}, false
}

// Decide applies the agent's policy (nil: it has none any more) and the
// type filter. done means res is final; otherwise the query goes upstream
// (Resolve).
func (q *Query) Decide(pol policy.Decider) (res Result, done bool) {
	if pol == nil {
		res = q.local(dns.RcodeRefused, rulePolicyMissing, "the agent's policy is no longer defined")
		return res, true
	}
	d := pol.DecideQuery(q.name)
	q.decision = d
	if !d.Allowed() {
		m := q.reply(dns.RcodeNameError)
		q.ede(m, dns.ExtendedErrorCodeBlocked, blockedText)
		return q.result(m, d.Verdict, d.Rule, d.Reason), true
	}
	if q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA {
		m := q.reply(dns.RcodeRefused)
		q.ede(m, dns.ExtendedErrorCodeNotSupported, "clawnet resolves only A and AAAA")
		return q.result(m, policy.Deny, ruleUnsupported, "type "+qtypeString(q.qtype)+" is not resolved, only A and AAAA"), true
	}
	return Result{}, false
}

// Resolve asks the upstream for an allowed A or AAAA query and builds the
// agent's answer from what comes back.
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
func (r *Answerer) Resolve(ctx context.Context, q *Query) Result {
	d := q.decision
	up := new(dns.Msg)
	up.SetQuestion(dns.Fqdn(q.name), q.qtype)
	up.RecursionDesired = true
	up.SetEdns0(upstreamUDPSize, false)
	resp, err := r.up.Exchange(ctx, up)
	if err != nil {
		m := q.reply(dns.RcodeServerFailure)
		q.ede(m, dns.ExtendedErrorCodeNetworkError, "upstream did not answer")
		res := q.result(m, d.Verdict, d.Rule, d.Reason)
		res.Err = err.Error()
		return res
	}
	if resp.Rcode == dns.RcodeNameError {
		return q.result(q.reply(dns.RcodeNameError), d.Verdict, d.Rule, d.Reason)
	}
	addrs, ttl, removed, note := r.extract(resp, q)
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
	cur := dns.Fqdn(q.name)
	minTTL := uint32(bindMaxTTL / time.Second)
	for hops := 0; ; hops++ {
		target, ttl, n := cnameOf(resp.Answer, cur)
		if n == 0 {
			break
		}
		if n > 1 {
			return nil, bindMinTTL, 0, "answer has " + strconv.Itoa(n) + " CNAMEs for " + cur
		}
		if hops == maxChain {
			return nil, bindMinTTL, 0, "CNAME chain longer than " + strconv.Itoa(maxChain) + " links (or a loop)"
		}
		minTTL = min(minTTL, ttl)
		cur = target
	}
	var why []string
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype != q.qtype || h.Class != dns.ClassINET || !strings.EqualFold(h.Name, cur) {
			continue // not the chain's end: never taken, whatever it says
		}
		var ip netip.Addr
		switch v := rr.(type) {
		case *dns.A:
			ip, _ = netip.AddrFromSlice(v.A.To4())
		case *dns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA.To16())
		}
		if !ip.IsValid() {
			continue
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
		minTTL = min(minTTL, h.Ttl)
		addrs = append(addrs, ip)
	}
	if removed > 0 {
		notes = append(notes, "removed "+strconv.Itoa(removed)+" special-purpose: "+strings.Join(why, ", "))
	}
	return addrs, clampTTL(time.Duration(minTTL) * time.Second), removed, strings.Join(notes, "; ")
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

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// special says why ip must not be handed to an agent, or "" if it may be.
func (r *Answerer) special(ip netip.Addr, isHost func(netip.Addr) bool) string {
	info := policy.ClassifyAddr(ip)
	if info.Class == policy.ClassMetadata {
		return ip.String() + " (" + info.What + ")"
	}
	if isHost != nil && isHost(ip) {
		return ip.String() + " (the gateway host's own)"
	}
	if !info.Class.Special() {
		return ""
	}
	for _, p := range r.public {
		if p.Contains(ip) || info.Inner.IsValid() && p.Contains(info.Inner) {
			return ""
		}
	}
	return ip.String() + " (" + info.What + ")"
}

// reply starts the agent's answer: its ID, opcode, RD and CD bits and its
// question as it sent it, and an OPT record if it sent one.
func (q *Query) reply(rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.Id = q.req.Id
	m.Response = true
	m.Opcode = q.req.Opcode
	m.RecursionDesired = q.req.RecursionDesired
	m.RecursionAvailable = true
	m.CheckingDisabled = q.req.CheckingDisabled
	m.Question = q.req.Question
	m.Rcode = rcode
	if q.opt != nil {
		o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		o.SetUDPSize(ownUDPSize)
		m.Extra = append(m.Extra, o)
	}
	return m
}

// ede adds an RFC 8914 Extended DNS Error, when the agent speaks EDNS.
func (q *Query) ede(m *dns.Msg, code uint16, text string) {
	if o := m.IsEdns0(); o != nil {
		o.Option = append(o.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
	}
}

// local is a reply with rcode and nothing else, decided without the policy.
func (q *Query) local(rcode int, rule, reason string) Result {
	return q.result(q.reply(rcode), policy.Deny, rule, reason)
}

// Refuse answers q REFUSED without asking anything, a deny by rule for
// reason: how the caller turns a query away for reasons of its own (rate
// limits).
func (q *Query) Refuse(rule, reason string) Result {
	return q.local(dns.RcodeRefused, rule, reason)
}

// CapReply bounds the reply to n bytes, but never below the 512 every DNS
// client takes: a UDP reply must fit the agent's link (the caller's UDP
// writes do not fragment).
func (q *Query) CapReply(n int) {
	q.limit = min(q.limit, max(n, dns.MinMsgSize))
}

// result packs m to fit the agent's transport and fills in the audit fields.
func (q *Query) result(m *dns.Msg, v policy.Verdict, rule, reason string) Result {
	res := Result{Verdict: v, Rule: rule, Reason: reason, RCode: rcodeString(m.Rcode), QType: qtypeString(q.qtype), QName: q.name}
	if q.name == "" && len(q.req.Question) == 1 {
		res.QName = q.req.Question[0].Name // not a valid name: as received (escaped)
	}
	// Truncate keeps whole records and sets TC when it had to drop some.
	m.Truncate(q.limit)
	b, err := m.Pack()
	if err != nil {
		// Cannot happen with what we build; answer SERVFAIL rather than
		// nothing, so the agent does not wait for a timeout.
		res.Reply = minimalHeader(q.req.Id, q.req.Opcode, q.req.RecursionDesired, dns.RcodeServerFailure)
		res.Err = fmt.Sprintf("pack reply: %v", err)
		return res
	}
	res.Reply = b
	return res
}

// headerOnly answers a query that could not be parsed: its ID and opcode,
// no question, rcode.
func headerOnly(raw []byte, rcode int, reason string) Result {
	res := Result{Rule: ruleMalformed, Reason: reason, RCode: rcodeString(rcode)}
	if len(raw) < 12 {
		return res
	}
	id := binary.BigEndian.Uint16(raw)
	res.Reply = minimalHeader(id, int(raw[2]>>3)&0xF, raw[2]&1 != 0, rcode)
	return res
}

func minimalHeader(id uint16, opcode int, rd bool, rcode int) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b, id)
	b[2] = 0x80 | byte(opcode&0xF)<<3
	if rd {
		b[2] |= 1
	}
	b[3] = 0x80 | byte(rcode&0xF) // RA, rcode
	return b
}

func opcodeString(op int) string {
	if s, ok := dns.OpcodeToString[op]; ok {
		return s
	}
	return strconv.Itoa(op)
}

func classString(c uint16) string {
	if s, ok := dns.ClassToString[c]; ok {
		return s
	}
	return "CLASS" + strconv.Itoa(int(c))
}
