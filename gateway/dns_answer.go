package gateway

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

// The answer path: bytes from an agent in, a reply and the addresses to bind
// out. It is pure but for the upstream exchange, so tests and the fuzz
// target drive it directly; handleDNS and handleDNSTCP are thin shells over
// it that add rate limits, audit lines and the transport.
//
// What it answers (docs/dns.md says the same for users):
//   - Not a query (QR set), or under 12 bytes: dropped, never answered, so
//     answers cannot be reflected into a loop.
//   - Unparseable, larger than dnsMaxQuery, more or less than one question,
//     records in the answer or authority section, anything but one OPT in
//     the additional section, a name that is not a hostname: FORMERR.
//   - Opcode other than QUERY: NOTIMP. EDNS version other than 0: BADVERS.
//   - Class other than IN, the root name: REFUSED.
//   - A name the agent's policy does not allow: NXDOMAIN with Extended DNS
//     Error 15 (Blocked) "blocked by clawnet policy". Nothing goes upstream.
//   - An allowed name with a type other than A or AAAA (TXT, MX, SRV, PTR,
//     ANY, AXFR, HTTPS, SVCB, ...): REFUSED with Extended DNS Error 21 (Not
//     Supported). Nothing goes upstream. Refusing HTTPS/SVCB keeps ECH
//     configs and address hints (which would bypass the A/AAAA filter) away
//     from the agent; clients fall back to A/AAAA.
//   - An allowed A or AAAA: asked upstream (only the normalized name and
//     type: none of the agent's flags or EDNS options travel), the CNAME
//     chain followed inside that one answer, special-purpose addresses
//     removed, the rest bound to the queried name and returned as records
//     of the queried name (the chain is flattened). See resolve.

const (
	// dnsMaxQuery is the largest query accepted: a real one is a header,
	// one name of at most 255 bytes and an OPT record with a few options
	// (padding to 468 bytes included).
	dnsMaxQuery = 4096
	// dnsMaxUDPReply bounds UDP replies whatever EDNS size the agent
	// advertises; larger answers are truncated and the agent retries over
	// TCP. (Our answers are far smaller: at most maxBindingsPerName records.)
	dnsMaxUDPReply = 4096
	// dnsOwnUDPSize is the EDNS buffer size the gateway advertises to agents.
	dnsOwnUDPSize = 1232
	// dnsMaxChain bounds the CNAME chain followed inside one answer.
	dnsMaxChain = 8
	// dnsBlockedText is the Extended DNS Error text of a denied name.
	dnsBlockedText = "blocked by clawnet policy"
)

// Rule names of the resolver's own decisions, as they appear in audit lines.
const (
	ruleDNSMalformed = "builtin:dns-malformed"
	ruleDNSUnsupp    = "builtin:dns-unsupported"
	ruleDNSRateLimit = "builtin:dns-rate-limit"
	ruleDNSRebinding = "builtin:dns-rebinding"
	rulePolicyGone   = "builtin:policy-missing"
)

// dnsQuery is one parsed, checked query from an agent.
type dnsQuery struct {
	req   *dns.Msg
	opt   *dns.OPT // the agent's EDNS record, or nil
	name  string   // normalized qname: lower case, no trailing dot
	qtype uint16
	tcp   bool
	limit int // the largest reply the agent's transport takes
	// isHost, when set, names addresses that are the gateway host's own:
	// dropped from answers like special-purpose ones.
	isHost func(netip.Addr) bool
	// decision is the policy's verdict on name (an allowed one when the
	// query goes upstream).
	decision policy.Decision
}

// dnsResult is the outcome of one query: what to send, bind and audit.
type dnsResult struct {
	reply []byte // nil: nothing is sent

	qname, qtype string
	verdict      policy.Verdict
	rcode        string
	rule, reason string
	err          string

	// binds are the accepted addresses, bound to qname for ttl.
	binds []netip.Addr
	ttl   time.Duration
}

// dnsAnswerer is the part of the resolver the answer path needs.
type dnsAnswerer struct {
	up     exchanger
	public []netip.Prefix // the operator's treat_as_public
}

// answer runs the whole path for one query (tests, fuzzing): local checks
// and policy, then the upstream if needed.
func (r *dnsAnswerer) answer(ctx context.Context, pol policy.Decider, raw []byte, tcp bool) dnsResult {
	q, res, done := parseQuery(raw, tcp)
	if done {
		return res
	}
	if res, done := q.decide(pol); done {
		return res
	}
	return r.resolve(ctx, q)
}

// parseQuery parses and checks raw. done means res is the final result
// (dropped or answered locally); otherwise q is ready for decide.
func parseQuery(raw []byte, tcp bool) (q *dnsQuery, res dnsResult, done bool) {
	if len(raw) < 12 {
		return nil, dnsResult{rule: ruleDNSMalformed, reason: "dropped: shorter than a dns header"}, true
	}
	if raw[2]&0x80 != 0 {
		return nil, dnsResult{rule: ruleDNSMalformed, reason: "dropped: a response, not a query"}, true
	}
	if len(raw) > dnsMaxQuery {
		return nil, headerOnly(raw, dns.RcodeFormatError, "query of "+strconv.Itoa(len(raw))+" bytes is too large"), true
	}
	req := new(dns.Msg)
	if err := req.Unpack(raw); err != nil {
		return nil, headerOnly(raw, dns.RcodeFormatError, "unparseable: "+err.Error()), true
	}
	q = &dnsQuery{req: req, tcp: tcp, limit: dns.MinMsgSize}
	if tcp {
		q.limit = dns.MaxMsgSize
	}
	if len(req.Question) == 1 {
		q.qtype = req.Question[0].Qtype
	}
	if req.Opcode != dns.OpcodeQuery {
		return nil, q.local(dns.RcodeNotImplemented, ruleDNSUnsupp, "opcode "+opcodeString(req.Opcode)+" is not served"), true
	}
	if len(req.Question) != 1 {
		q.req.Question = nil // nothing sensible to echo
		return nil, q.local(dns.RcodeFormatError, ruleDNSMalformed, strconv.Itoa(len(req.Question))+" questions, want 1"), true
	}
	if len(req.Answer) != 0 || len(req.Ns) != 0 {
		return nil, q.local(dns.RcodeFormatError, ruleDNSMalformed, "records in the answer or authority section of a query"), true
	}
	for _, rr := range req.Extra {
		opt, ok := rr.(*dns.OPT)
		if !ok || q.opt != nil || opt.Hdr.Name != "." {
			q.opt = nil
			return nil, q.local(dns.RcodeFormatError, ruleDNSMalformed, "additional section holds something besides one OPT record"), true
		}
		q.opt = opt
	}
	if q.opt != nil {
		if v := q.opt.Version(); v != 0 {
			res := q.local(dns.RcodeBadVers, ruleDNSMalformed, "EDNS version "+strconv.Itoa(int(v))+", want 0")
			return nil, res, true
		}
		if !tcp {
			q.limit = min(max(int(q.opt.UDPSize()), dns.MinMsgSize), dnsMaxUDPReply)
		}
	}
	qs := req.Question[0]
	if qs.Qclass != dns.ClassINET {
		return nil, q.local(dns.RcodeRefused, ruleDNSUnsupp, "class "+classString(qs.Qclass)+" is not served, only IN"), true
	}
	if qs.Name == "." {
		return nil, q.local(dns.RcodeRefused, ruleDNSUnsupp, "the root is not served"), true
	}
	name, err := policy.NormalizeName(qs.Name)
	if err != nil {
		return nil, q.local(dns.RcodeFormatError, ruleDNSMalformed, err.Error()), true
	}
	q.name = name
	return q, dnsResult{}, false
}

// decide applies the agent's policy and the type filter. done means res is
// final; otherwise the query goes upstream.
func (q *dnsQuery) decide(pol policy.Decider) (res dnsResult, done bool) {
	if pol == nil {
		res = q.local(dns.RcodeRefused, rulePolicyGone, "the agent's policy is no longer defined")
		return res, true
	}
	d := pol.DecideQuery(q.name)
	q.decision = d
	if !d.Allowed() {
		m := q.reply(dns.RcodeNameError)
		q.ede(m, dns.ExtendedErrorCodeBlocked, dnsBlockedText)
		return q.result(m, d.Verdict, d.Rule, d.Reason), true
	}
	if q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA {
		m := q.reply(dns.RcodeRefused)
		q.ede(m, dns.ExtendedErrorCodeNotSupported, "clawnet resolves only A and AAAA")
		return q.result(m, policy.Deny, ruleDNSUnsupp, "type "+qtypeString(q.qtype)+" is not resolved, only A and AAAA"), true
	}
	return dnsResult{}, false
}

// resolve asks the upstream for an allowed A or AAAA query and builds the
// agent's answer from what comes back.
//
// CNAME semantics: the policy decides the queried name only. The chain in
// the upstream's answer is followed (at most dnsMaxChain links, loops end
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
func (r *dnsAnswerer) resolve(ctx context.Context, q *dnsQuery) dnsResult {
	d := q.decision
	up := new(dns.Msg)
	up.SetQuestion(dns.Fqdn(q.name), q.qtype)
	up.RecursionDesired = true
	up.SetEdns0(upstreamUDPSize, false)
	resp, err := r.up.exchange(ctx, up)
	if err != nil {
		m := q.reply(dns.RcodeServerFailure)
		q.ede(m, dns.ExtendedErrorCodeNetworkError, "upstream did not answer")
		res := q.result(m, d.Verdict, d.Rule, d.Reason)
		res.err = err.Error()
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
		q.ede(m, dns.ExtendedErrorCodeBlocked, "special-purpose address "+dnsBlockedText)
		verdict, rule = policy.Deny, ruleDNSRebinding
	}
	res := q.result(m, verdict, rule, reason)
	res.binds, res.ttl = addrs, ttl
	return res
}

// extract follows the CNAME chain from the queried name and returns the
// acceptable addresses of its end, the TTL to use, how many addresses were
// removed as special-purpose, and a note for the audit line on what was
// left out.
func (r *dnsAnswerer) extract(resp *dns.Msg, q *dnsQuery) (addrs []netip.Addr, ttl time.Duration, removed int, note string) {
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
		if hops == dnsMaxChain {
			return nil, bindMinTTL, 0, "CNAME chain longer than " + strconv.Itoa(dnsMaxChain) + " links (or a loop)"
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
		if w := r.special(ip, q.isHost); w != "" {
			if removed++; len(why) < 4 {
				why = append(why, w)
			}
			continue
		}
		if containsAddr(addrs, ip) {
			continue
		}
		if len(addrs) == maxBindingsPerName {
			notes = append(notes, "kept the first "+strconv.Itoa(maxBindingsPerName)+" addresses")
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
func (r *dnsAnswerer) special(ip netip.Addr, isHost func(netip.Addr) bool) string {
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
func (q *dnsQuery) reply(rcode int) *dns.Msg {
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
		o.SetUDPSize(dnsOwnUDPSize)
		m.Extra = append(m.Extra, o)
	}
	return m
}

// ede adds an RFC 8914 Extended DNS Error, when the agent speaks EDNS.
func (q *dnsQuery) ede(m *dns.Msg, code uint16, text string) {
	if o := m.IsEdns0(); o != nil {
		o.Option = append(o.Option, &dns.EDNS0_EDE{InfoCode: code, ExtraText: text})
	}
}

// local is a reply with rcode and nothing else, decided without the policy.
func (q *dnsQuery) local(rcode int, rule, reason string) dnsResult {
	return q.result(q.reply(rcode), policy.Deny, rule, reason)
}

// result packs m to fit the agent's transport and fills in the audit fields.
func (q *dnsQuery) result(m *dns.Msg, v policy.Verdict, rule, reason string) dnsResult {
	res := dnsResult{verdict: v, rule: rule, reason: reason, rcode: rcodeString(m.Rcode), qtype: qtypeString(q.qtype), qname: q.name}
	if q.name == "" && len(q.req.Question) == 1 {
		res.qname = q.req.Question[0].Name // not a valid name: as received (escaped)
	}
	// Truncate keeps whole records and sets TC when it had to drop some.
	m.Truncate(q.limit)
	b, err := m.Pack()
	if err != nil {
		// Cannot happen with what we build; answer SERVFAIL rather than
		// nothing, so the agent does not wait for a timeout.
		res.reply = minimalHeader(q.req.Id, q.req.Opcode, q.req.RecursionDesired, dns.RcodeServerFailure)
		res.err = fmt.Sprintf("pack reply: %v", err)
		return res
	}
	res.reply = b
	return res
}

// headerOnly answers a query that could not be parsed: its ID and opcode,
// no question, rcode.
func headerOnly(raw []byte, rcode int, reason string) dnsResult {
	res := dnsResult{rule: ruleDNSMalformed, reason: reason, rcode: rcodeString(rcode)}
	if len(raw) < 12 {
		return res
	}
	id := binary.BigEndian.Uint16(raw)
	res.reply = minimalHeader(id, int(raw[2]>>3)&0xF, raw[2]&1 != 0, rcode)
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
