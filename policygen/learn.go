package policygen

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/clawnet/clawnet/policy"
)

// LearnOptions say whose lines Learn reads and how it may generalise.
type LearnOptions struct {
	// Agent is the agent whose lines are read, by its exact name: no other
	// agent's line is ever read into the proposal.
	Agent string
	// Since drops lines before it; zero reads them all.
	Since time.Time
	// WildcardMin is how many distinct names under one registrable domain
	// (by the public suffix list: example.co.uk, not co.uk) a wildcard
	// needs before it replaces them; 0 means 3, and a negative value never
	// writes one.
	WildcardMin int
	// TreatAsPublic are ranges the gateway's treat_as_public declares
	// ordinary public addresses (labs and tests). Other special-purpose
	// addresses, and metadata endpoints always, are never learned.
	TreatAsPublic []netip.Prefix
	// Source names the log in the proposal's header.
	Source string
}

// Proposal is the smallest set of egress rules that would have allowed what
// the agent did and its policy refused for want of a rule.
type Proposal struct {
	Agent string
	Rules []LearnedRule
	// LookedUp are names the agent looked up, was refused, and never
	// connected to: no port was seen, so no rule is proposed.
	LookedUp []LearnedName
	// Read counts the agent's lines read; Skipped counts lines of the
	// agent's that no rule is proposed for, by why.
	Read    int
	Skipped map[string]int
	Source  string
	Since   time.Time
}

// LearnedRule is one proposed egress rule: names on the same ports.
type LearnedRule struct {
	Proto string
	Ports []uint16
	Names []LearnedName
}

// LearnedName is a name (or a wildcard) with how often and when it was
// seen.
type LearnedName struct {
	Name        string
	Count       int
	First, Last time.Time
	// Covers are the names a wildcard stands for.
	Covers []string
}

// Why lines are skipped.
const (
	skipOtherVerdict = "allowed already"
	skipRepeat       = "a flow counted at its open line"
	skipDenyRule     = "refused by a deny rule (stays refused)"
	skipGuard        = "refused by a guard (metadata, special-purpose address, bad name, limit)"
	skipUnnamed      = "to an address no name was bound to (names, not addresses, are learned)"
	skipSpecial      = "to a special-purpose or metadata address (never learned)"
	skipInbound      = "inbound or between agents (only egress to names is learned)"
	skipBadName      = "naming nothing a rule can carry"
	skipUnreadable   = "not a JSON audit line"
)

// auditLine is what Learn reads of one line of the audit log.
type auditLine struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Event     string    `json:"event"`
	Agent     string    `json:"agent"`
	Direction string    `json:"direction"`
	Peer      string    `json:"peer"`
	Proto     string    `json:"proto"`
	Dst       string    `json:"dst"`
	Name      string    `json:"name"`
	SNI       string    `json:"sni"`
	Host      string    `json:"host"`
	QName     string    `json:"qname"`
	Verdict   string    `json:"verdict"`
	Rule      string    `json:"rule"`
}

// seen is what Learn gathers of one name.
type seen struct {
	count       int
	first, last time.Time
	ports       map[string]bool // "tcp/443"
}

func (s *seen) add(t time.Time) {
	s.count++
	if s.first.IsZero() || t.Before(s.first) {
		s.first = t
	}
	if t.After(s.last) {
		s.last = t
	}
}

// Learn reads an audit log and proposes the rules that would have allowed
// what o.Agent did and was refused (or, under enforcement: audit, let
// through as would_deny) for want of a rule: by the names it used (SNI,
// Host, or the name its DNS bound to the address), never by address, on
// the ports and protocols it used. Lines of other agents are skipped
// unread; so are its inbound and agent-to-agent lines, what a deny rule or
// a guard refused, and special-purpose destinations.
func Learn(r io.Reader, o LearnOptions) (*Proposal, error) {
	if o.Agent == "" {
		return nil, fmt.Errorf("learn: no agent named")
	}
	p := &Proposal{Agent: o.Agent, Skipped: map[string]int{}, Source: o.Source, Since: o.Since}
	names := map[string]*seen{}
	queried := map[string]*seen{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		// Cheap first look: most lines of a busy log are other agents'.
		if !strings.Contains(string(line), strconv.Quote(o.Agent)) {
			continue
		}
		var l auditLine
		if err := json.Unmarshal(line, &l); err != nil {
			continue // not this agent's as far as anyone can tell
		}
		if l.Agent != o.Agent || !o.Since.IsZero() && l.Time.Before(o.Since) {
			continue
		}
		p.Read++
		if why := learnable(&l); why != "" {
			p.Skipped[why]++
			continue
		}
		if l.Kind == "dns" {
			n, err := policy.NormalizeName(l.QName)
			if err != nil || classifyHost(n) != hostName {
				p.Skipped[skipBadName]++
				continue
			}
			if queried[n] == nil {
				queried[n] = &seen{}
			}
			queried[n].add(l.Time)
			continue
		}
		dst, err := netip.ParseAddrPort(l.Dst)
		if err != nil || dst.Port() == 0 || l.Proto != "tcp" && l.Proto != "udp" {
			p.Skipped[skipUnreadable]++
			continue
		}
		if special(dst.Addr(), o.TreatAsPublic) {
			p.Skipped[skipSpecial]++
			continue
		}
		name := l.SNI
		if name == "" {
			name = l.Host
		}
		if name == "" {
			name = l.Name
		}
		if name == "" {
			p.Skipped[skipUnnamed]++
			continue
		}
		n, err := policy.NormalizeName(strings.TrimSuffix(hostOnly(name), "."))
		if err != nil || classifyHost(n) != hostName {
			p.Skipped[skipBadName]++
			continue
		}
		s := names[n]
		if s == nil {
			s = &seen{ports: map[string]bool{}}
			names[n] = s
		}
		s.add(l.Time)
		s.ports[l.Proto+"/"+strconv.Itoa(int(dst.Port()))] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("learn: reading the audit log: %w", err)
	}
	p.Rules = group(names, o.WildcardMin)
	for _, n := range sortedNames(queried) {
		if names[n] == nil {
			s := queried[n]
			p.LookedUp = append(p.LookedUp, LearnedName{Name: n, Count: s.count, First: s.first, Last: s.last})
		}
	}
	return p, nil
}

// learnable says why a line of the agent's proposes nothing, or "".
func learnable(l *auditLine) string {
	switch {
	case l.Kind != "flow" && l.Kind != "dns":
		return skipUnreadable
	case l.Direction == "in" || l.Peer != "":
		return skipInbound
	case l.Kind == "flow" && l.Event != "open" && l.Event != "deny" && l.Event != "fail":
		return skipRepeat // close and revoke lines repeat a flow counted at its open
	case l.Verdict != "deny" && l.Verdict != "would_deny":
		return skipOtherVerdict
	case strings.HasPrefix(l.Rule, "builtin:"):
		return skipGuard
	case l.Rule != policy.RuleDefault:
		return skipDenyRule
	}
	return ""
}

// special reports whether a is an address no learned rule may open.
func special(a netip.Addr, public []netip.Prefix) bool {
	return policy.ClassifyPublic(a.Unmap(), public).Class.Special()
}

// hostOnly drops a port from an HTTP Host.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i > 0 && !strings.Contains(h[:i], ":") {
		return h[:i]
	}
	return h
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// group makes the fewest rules: names with the same ports share a rule,
// and enough names under one registrable domain become its wildcard.
func group(names map[string]*seen, min int) []LearnedRule {
	if min == 0 {
		min = 3
	}
	byPorts := map[string][]string{}
	for _, n := range sortedNames(names) {
		keys := sortedNames(names[n].ports)
		k := strings.Join(keys, " ")
		byPorts[k] = append(byPorts[k], n)
	}
	var rules []LearnedRule
	for _, k := range sortedNames(byPorts) {
		// One rule per protocol: a rule has one.
		protos := map[string][]uint16{}
		for _, pp := range strings.Fields(k) {
			proto, port, _ := strings.Cut(pp, "/")
			n, _ := strconv.Atoi(port)
			protos[proto] = append(protos[proto], uint16(n))
		}
		learned := wildcards(byPorts[k], names, min)
		for _, proto := range sortedNames(protos) {
			ports := protos[proto]
			slices.Sort(ports)
			rules = append(rules, LearnedRule{Proto: proto, Ports: ports, Names: learned})
		}
	}
	return rules
}

// wildcards replaces min or more names under one registrable domain by
// "*.domain", when the policy language takes that pattern.
func wildcards(list []string, names map[string]*seen, min int) []LearnedName {
	under := map[string][]string{}
	for _, n := range list {
		if d, err := publicsuffix.EffectiveTLDPlusOne(n); err == nil && d != n {
			under[d] = append(under[d], n)
		}
	}
	var out []LearnedName
	done := map[string]bool{}
	for _, d := range sortedNames(under) {
		covered := under[d]
		if min < 0 || len(covered) < min {
			continue
		}
		w := "*." + d
		if _, err := policy.ParsePattern(w); err != nil {
			continue
		}
		ln := LearnedName{Name: w, Covers: covered}
		for _, n := range covered {
			s := names[n]
			ln.Count += s.count
			if ln.First.IsZero() || s.first.Before(ln.First) {
				ln.First = s.first
			}
			if s.last.After(ln.Last) {
				ln.Last = s.last
			}
			done[n] = true
		}
		out = append(out, ln)
	}
	for _, n := range list {
		if !done[n] {
			s := names[n]
			out = append(out, LearnedName{Name: n, Count: s.count, First: s.first, Last: s.last})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.TrimPrefix(out[i].Name, "*.") < strings.TrimPrefix(out[j].Name, "*.")
	})
	return out
}

// PolicyRules are the proposal as egress rules to add to a policy File.
func (p *Proposal) PolicyRules() ([]policy.Rule, error) {
	var out []policy.Rule
	for _, r := range p.Rules {
		proto, err := policy.ParseProto(r.Proto)
		if err != nil {
			return nil, err
		}
		pr := policy.Rule{Protocol: proto, From: p.from()}
		for _, n := range r.Names {
			pat, err := policy.ParsePattern(n.Name)
			if err != nil {
				return nil, err
			}
			pr.Domains = append(pr.Domains, pat)
		}
		for _, port := range r.Ports {
			pr.Ports = append(pr.Ports, policy.PortRange{Lo: port, Hi: port})
		}
		out = append(out, pr)
	}
	return out, nil
}

func (p *Proposal) from() string { return "clawnet policy learn " + clean(p.Agent) }

// YAML writes the proposal as egress rules to paste under egress: in the
// agent's policy, each name with its count and first and last time seen.
func (p *Proposal) YAML() []byte {
	var b strings.Builder
	since := ""
	if !p.Since.IsZero() {
		since = " since " + p.Since.UTC().Format(time.RFC3339)
	}
	src := ""
	if p.Source != "" {
		src = " in " + clean(p.Source)
	}
	fmt.Fprintf(&b, "# clawnet policy learn %s: %d of its lines%s%s.\n", clean(p.Agent), p.Read, src, since)
	if len(p.Rules) == 0 {
		b.WriteString("# Nothing to add: its policy allowed every named destination it reached.\n")
	} else {
		b.WriteString("# Rules that would have allowed what its policy refused for want of a rule.\n")
		b.WriteString("# Review them, add them under egress: in its policy, then clawnet policy check.\n")
		b.WriteString("egress:\n")
		for _, r := range p.Rules {
			b.WriteString("  - domains:\n")
			for _, n := range r.Names {
				fmt.Fprintf(&b, "      - %s  # %s\n", yamlName(n.Name), n.describe())
			}
			b.WriteString("    ports: " + portsText(r.Ports) + "\n")
			if r.Proto != "tcp" {
				b.WriteString("    protocol: " + r.Proto + "\n")
			}
			b.WriteString("    from: " + strconv.Quote(p.from()) + "\n")
		}
	}
	if len(p.LookedUp) > 0 {
		b.WriteString("# Looked up and refused, never connected to (no port seen, so no rule):\n")
		for _, n := range p.LookedUp {
			fmt.Fprintf(&b, "#   %s  %s\n", n.Name, strings.Replace(n.describe(), "flow", "query", 1))
		}
	}
	var why []string
	for w, n := range p.Skipped {
		if w != skipOtherVerdict && w != skipRepeat {
			why = append(why, fmt.Sprintf("#   %d %s %s\n", n, plural(n, "line", "lines"), w))
		}
	}
	if len(why) > 0 {
		sort.Strings(why)
		b.WriteString("# Not proposed:\n")
		b.WriteString(strings.Join(why, ""))
	}
	return []byte(b.String())
}

func (n LearnedName) describe() string {
	s := fmt.Sprintf("%d %s", n.Count, plural(n.Count, "flow", "flows"))
	if len(n.Covers) > 0 {
		s += " to " + strings.Join(n.Covers, ", ")
	}
	return s + ", first " + n.First.UTC().Format(time.RFC3339) + ", last " + n.Last.UTC().Format(time.RFC3339)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
