package dnsproxy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
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
	if res, bad := q.checkSections(); bad {
		return nil, res, true
	}
	if res, bad := q.checkOPT(); bad {
		return nil, res, true
	}
	if res, bad := q.checkQuestion(); bad {
		return nil, res, true
	}
	return q, Result{}, false
}

// checkSections wants a QUERY with one question and nothing in the answer
// or authority section. bad means res answers the query.
func (q *Query) checkSections() (res Result, bad bool) {
	req := q.req
	n := len(req.Question)
	if n != 1 {
		// Nothing sensible to echo, and many questions echoed back
		// would not fit a UDP reply: Truncate never drops questions.
		req.Question = nil
	}
	if req.Opcode != dns.OpcodeQuery {
		return q.local(dns.RcodeNotImplemented, ruleUnsupported, "opcode "+opcodeString(req.Opcode)+" is not served"), true
	}
	if n != 1 {
		return q.local(dns.RcodeFormatError, ruleMalformed, strconv.Itoa(n)+" questions, want 1"), true
	}
	if len(req.Answer) != 0 || len(req.Ns) != 0 {
		return q.local(dns.RcodeFormatError, ruleMalformed, "records in the answer or authority section of a query"), true
	}
	return Result{}, false
}

// checkOPT wants nothing in the additional section but one OPT record of
// EDNS version 0, and takes the agent's UDP buffer size from it. bad means
// res answers the query.
func (q *Query) checkOPT() (res Result, bad bool) {
	for _, rr := range q.req.Extra {
		opt, ok := rr.(*dns.OPT)
		if !ok || q.opt != nil || opt.Hdr.Name != "." {
			q.opt = nil
			return q.local(dns.RcodeFormatError, ruleMalformed, "additional section holds something besides one OPT record"), true
		}
		q.opt = opt
	}
	if q.opt == nil {
		return Result{}, false
	}
	if v := q.opt.Version(); v != 0 {
		return q.local(dns.RcodeBadVers, ruleMalformed, "EDNS version "+strconv.Itoa(int(v))+", want 0"), true
	}
	if !q.tcp {
		q.limit = min(max(int(q.opt.UDPSize()), dns.MinMsgSize), maxUDPReply)
	}
	return Result{}, false
}

// checkQuestion wants class IN and a host name other than the root, and
// keeps the name normalized. bad means res answers the query.
func (q *Query) checkQuestion() (res Result, bad bool) {
	qs := q.req.Question[0]
	if qs.Qclass != dns.ClassINET {
		return q.local(dns.RcodeRefused, ruleUnsupported, "class "+classString(qs.Qclass)+" is not served, only IN"), true
	}
	if qs.Name == "." {
		return q.local(dns.RcodeRefused, ruleUnsupported, "the root is not served"), true
	}
	name, err := policy.NormalizeName(qs.Name)
	if err != nil {
		return q.local(dns.RcodeFormatError, ruleMalformed, err.Error()), true
	}
	q.name = name
	return Result{}, false
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

func rcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

func qtypeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// Name is the name asked about, normalised ("" for a query that failed
// its checks).
func (q *Query) Name() string { return q.name }

// Local answers q from what the caller knows itself, never upstream: the
// addresses of q's type among addrs, with ttl; NXDOMAIN when addrs is
// empty; REFUSED for a type other than A and AAAA. The verdict, rule and
// reason are the caller's, for the audit line. Nothing is bound: the
// caller decides what its names open.
func (q *Query) Local(addrs []netip.Addr, ttl time.Duration, d policy.Decision) Result {
	if len(addrs) == 0 {
		return q.result(q.reply(dns.RcodeNameError), d.Verdict, d.Rule, d.Reason)
	}
	if q.qtype != dns.TypeA && q.qtype != dns.TypeAAAA {
		return q.result(q.reply(dns.RcodeRefused), policy.Deny, ruleUnsupported, "type "+qtypeString(q.qtype)+" is not resolved, only A and AAAA")
	}
	m := q.reply(dns.RcodeSuccess)
	hdr := dns.RR_Header{Name: q.req.Question[0].Name, Rrtype: q.qtype, Class: dns.ClassINET, Ttl: uint32(ttl / time.Second)}
	for _, a := range addrs {
		switch {
		case q.qtype == dns.TypeA && a.Is4():
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case q.qtype == dns.TypeAAAA && a.Is6() && !a.Is4In6():
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return q.result(m, d.Verdict, d.Rule, d.Reason)
}
