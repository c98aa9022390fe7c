package policygen

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/clawnet/clawnet/policy"
)

// GenerateOptions shape the policy Generate writes.
type GenerateOptions struct {
	// Name is the policy's name; empty: from the first file's name.
	Name string
	// Audit writes enforcement: audit (see policy/README.md).
	Audit bool
	// ApproveProject writes the needs of project-scope files as approved
	// rules (with the sha256 of their file): egress rules, or setup rules
	// for start-up needs. Otherwise they go in the pending: part (start-up
	// needs with phase: setup), which clawnet policy approve moves into
	// egress (or setup).
	ApproveProject bool
	// Existing is the policy file this generation replaces, if any. A
	// pending rule it holds approved (in egress, or in setup for a
	// phase: setup rule, with from: and sha256: as generated) stays
	// approved while its file's sha256 is the same; when the file changed,
	// the rule goes back to pending.
	Existing *policy.File
}

// section is where a rule goes in the file. Start-up needs (launcher
// downloads) go in setup:, needs of project-scope files in pending:
// until approved.
type section uint8

const (
	live section = iota
	setupPart
	pendingPart
	approvedPart
)

// outRule is one rule of the generated file and the needs behind it.
type outRule struct {
	sec        section
	ingress    bool
	domains    []string
	cidrs      []string
	ports      []uint16
	proto      string
	unverified bool
	from       []Need
	// src is the project-scope file a pending or approved rule comes
	// from, and sha its content's sha256: one file per such rule.
	src, sha string
	// setup marks a pending or approved rule that is a start-up need: it
	// is written pending with phase: setup, approved in setup:.
	setup bool
}

func (o *outRule) key() string {
	return fmt.Sprint(o.sec, o.ingress, o.domains, o.cidrs, o.ports, o.proto, o.unverified, o.src, o.setup)
}

// sig is what an approval is kept by: the rule as written, its from: and
// the sha256 of its file.
func (o *outRule) sig() string {
	ports := make([]string, len(o.ports))
	for i, p := range o.ports {
		ports[i] = strconv.Itoa(int(p))
	}
	proto := o.proto
	if proto == "" {
		proto = "tcp"
	}
	return listOf(o.setup) + ruleSig(o.domains, o.cidrs, ports, proto, shorten(fromText(o.from)), o.sha)
}

// listOf is where an approved rule is, as a prefix of its sig: an
// approval into egress is not one into setup.
func listOf(setup bool) string {
	if setup {
		return "setup "
	}
	return "egress "
}

func ruleSig(domains, cidrs, ports []string, proto, from, sha string) string {
	return fmt.Sprintf("%q %q %q %s %q %s", domains, cidrs, ports, proto, from, sha)
}

// approvedSigs are the sigs of the egress and setup rules of f that carry
// a sha256: pending rules approved.
func approvedSigs(f *policy.File) map[string]bool {
	if f == nil {
		return nil
	}
	out := map[string]bool{}
	for i, r := range slices.Concat(f.Egress, f.Setup) {
		if r.SHA256 == "" {
			continue
		}
		domains, cidrs, ports, proto := ruleText(r)
		slices.Sort(domains)
		for j, c := range r.CIDRs {
			if c.IsSingleIP() {
				cidrs[j] = c.Addr().String() // as Generate writes it
			}
		}
		out[listOf(i >= len(f.Egress))+ruleSig(domains, cidrs, ports, proto, r.From, r.SHA256)] = true
	}
	return out
}

// Generate writes r as a policy file in clawnet's policy language, every
// rule with a from: saying where it came from. The output always passes
// policy.Parse and policy.Compile.
func Generate(r *Result, o GenerateOptions) []byte {
	name := o.Name
	if name == "" {
		name = DefaultName(r.Files)
	}
	var presets []string
	presetFrom := map[string][]Need{}
	var rules []*outRule
	byKey := map[string]*outRule{}
	add := func(or *outRule, n Need) {
		if old, ok := byKey[or.key()]; ok {
			old.from = append(old.from, n)
			return
		}
		or.from = []Need{n}
		byKey[or.key()] = or
		rules = append(rules, or)
	}
	for _, n := range r.Needs {
		sec := live
		switch {
		case n.Pending && o.ApproveProject:
			sec = approvedPart
		case n.Pending:
			sec = pendingPart
		case n.Phase == Setup:
			sec = setupPart
		}
		if n.Ingress {
			// No catalog entry makes a project-scope or start-up ingress
			// need; one would be written commented out.
			add(&outRule{sec: sec, ingress: true, ports: n.Ports, proto: n.Proto}, n)
			continue
		}
		hosts := n.Hosts
		if n.Preset != "" {
			if sec == live {
				if _, ok := presetFrom[n.Preset]; !ok {
					presets = append(presets, n.Preset)
				}
				presetFrom[n.Preset] = append(presetFrom[n.Preset], n)
				continue
			}
			pr, ok := policy.LookupPreset(n.Preset)
			if !ok {
				continue // a catalog test keeps this from happening
			}
			hosts = pr.Domains
			n.Ports = pr.Ports
		}
		or := &outRule{sec: sec, ports: slices.Clone(n.Ports), proto: n.Proto, unverified: n.Unverified}
		if sec == pendingPart || sec == approvedPart {
			or.src, or.sha = n.File, r.Hashes[n.File]
			or.setup = n.Phase == Setup
		}
		for _, h := range hosts {
			if classifyHost(h) == hostAddr {
				or.cidrs = append(or.cidrs, strings.Trim(h, "[]"))
			} else {
				or.domains = append(or.domains, h)
			}
		}
		slices.Sort(or.domains)
		or.domains = slices.Compact(or.domains)
		slices.Sort(or.ports)
		add(or, n)
	}
	// A rule pending or at setup that a live rule already has adds nothing.
	rules = slices.DeleteFunc(rules, func(or *outRule) bool {
		if or.sec == live {
			return false
		}
		c := *or
		c.sec, c.src, c.setup = live, "", false
		_, dup := byKey[c.key()]
		return dup
	})
	// A pending rule the existing file holds approved, for the same file
	// content, stays approved.
	approved := approvedSigs(o.Existing)
	for _, or := range rules {
		if or.sec == pendingPart && or.sha != "" && approved[or.sig()] {
			or.sec = approvedPart
		}
	}
	slices.Sort(presets)

	var b strings.Builder
	b.WriteString("# Generated by clawnet policy generate from " + strings.Join(r.Files, ", ") + ".\n")
	b.WriteString("# Every rule says where it came from. Review it before an agent runs under it,\n")
	b.WriteString("# and generate it again (clawnet policy generate --check in CI) when the\n")
	b.WriteString("# agent's configuration changes.\n")
	b.WriteString("version: v1\n")
	b.WriteString("name: " + name + "\n")
	if o.Audit {
		b.WriteString("# audit: flows only the default deny refuses are allowed and logged as\n")
		b.WriteString("# would_deny; deny rules, names and the gateway's guards stay enforced.\n")
		b.WriteString("enforcement: audit\n")
	}
	if len(presets) > 0 {
		b.WriteString("presets:\n")
		for _, p := range presets {
			for _, n := range presetFrom[p] {
				b.WriteString("  # " + p + ": " + n.From() + "\n")
			}
			b.WriteString("  - " + p + "\n")
		}
	}
	// in says whether or is in section sec; for approved rules, setup
	// says which: in egress (false) or in setup (true).
	in := func(or *outRule, ingress bool, sec section, setup bool) bool {
		return or.ingress == ingress && or.sec == sec && (sec != approvedPart || or.setup == setup)
	}
	writeRules := func(ingress bool, sec section, setup bool) {
		for _, or := range rules {
			if in(or, ingress, sec, setup) {
				writeRule(&b, or)
			}
		}
	}
	has := func(ingress bool) bool {
		return slices.ContainsFunc(rules, func(or *outRule) bool { return or.ingress == ingress })
	}
	hasEgress := func(sec section, setup bool) bool {
		return slices.ContainsFunc(rules, func(or *outRule) bool { return in(or, false, sec, setup) })
	}
	if hasEgress(live, false) || hasEgress(approvedPart, false) {
		b.WriteString("egress:\n")
		writeRules(false, live, false)
		if hasEgress(approvedPart, false) {
			b.WriteString("\n  # approved: from project-scope files, each with the sha256 of its file as it\n")
			b.WriteString("  # was approved; generate puts a rule back in pending: when its file changes.\n")
			writeRules(false, approvedPart, false)
		}
	}
	if hasEgress(setupPart, false) || hasEgress(approvedPart, true) {
		b.WriteString("\n# setup: needed only while the agent starts (the package downloads of its MCP\n")
		b.WriteString("# launchers): these rules apply until clawnet policy phase AGENT run, or the\n")
		b.WriteString("# --setup-timeout of clawnet attach or clawnet run, ends the agent's setup phase.\n")
		b.WriteString("setup:\n")
		writeRules(false, setupPart, false)
		if hasEgress(approvedPart, true) {
			b.WriteString("\n  # approved: launcher downloads from project-scope files, each with the sha256\n")
			b.WriteString("  # of its file as it was approved; generate puts a rule back in pending: when\n")
			b.WriteString("  # its file changes.\n")
			writeRules(false, approvedPart, true)
		}
	}
	if hasEgress(pendingPart, false) {
		b.WriteString("\n# pending: from project-scope files, which anyone who can commit to the\n")
		b.WriteString("# repository writes (a poisoned .mcp.json is a known way in). They do not apply:\n")
		b.WriteString("# review them, then clawnet policy approve FILE N... moves them into egress\n")
		b.WriteString("# (a rule with phase: setup, a launcher's download, into setup:).\n")
		b.WriteString("pending:\n")
		writeRules(false, pendingPart, false)
	}
	if has(true) {
		if hasEgress(setupPart, false) || hasEgress(approvedPart, true) || hasEgress(pendingPart, false) {
			b.WriteString("\n")
		}
		b.WriteString("ingress:\n")
		writeRules(true, live, false)
		writeRules(true, setupPart, false)
		writeRules(true, pendingPart, false)
	}
	if len(r.Unknown) > 0 {
		b.WriteString("\n# unknown: stdio MCP servers the catalog does not know; what they reach is not\n")
		b.WriteString("# in this policy. Run the agent under enforcement: audit, then\n")
		b.WriteString("# clawnet policy learn AGENT proposes rules from what they did.\n")
		for _, u := range r.Unknown {
			p := ""
			if u.Pending {
				p = " (pending: project scope)"
			}
			b.WriteString("#   " + u.File + ": " + u.Key + ": " + u.What + p + "\n")
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n# notes:\n")
		for _, n := range r.Notes {
			b.WriteString("#   " + n + "\n")
		}
	}
	if len(r.Warnings) > 0 {
		b.WriteString("\n# warnings:\n")
		for _, w := range r.Warnings {
			b.WriteString("#   " + w + "\n")
		}
	}
	return []byte(b.String())
}

func writeRule(b *strings.Builder, or *outRule) {
	pfx := "  "
	if or.ingress && or.sec != live {
		pfx = "  # "
	}
	from := fromText(or.from)
	if or.unverified {
		b.WriteString("  # unverified: check these names against the service's own documentation\n")
	}
	if len(strings.Join(from, " | ")) > maxFromLen {
		for _, f := range from {
			b.WriteString("  # from: " + f + "\n")
		}
	}
	first := true
	line := func(s string) {
		if first {
			b.WriteString(pfx + "- " + s + "\n")
			first = false
			return
		}
		b.WriteString(pfx + "  " + s + "\n")
	}
	if or.ingress {
		line("ports: " + portsText(or.ports))
		line("host: true")
	} else {
		if len(or.domains) > 0 {
			line("domains: [" + strings.Join(mapStrings(or.domains, yamlName), ", ") + "]")
		}
		if len(or.cidrs) > 0 {
			line("cidrs: [" + strings.Join(mapStrings(or.cidrs, strconv.Quote), ", ") + "]")
		}
		line("ports: " + portsText(or.ports))
	}
	if or.proto != "" && or.proto != "tcp" {
		line("protocol: " + or.proto)
	}
	line("from: " + strconv.Quote(shorten(from)))
	if or.sha != "" {
		line("sha256: " + or.sha)
	}
	if or.sec == pendingPart && or.setup && !or.ingress {
		line("phase: setup")
	}
}

// maxFromLen keeps a from: within what the policy language takes.
const maxFromLen = 280

// fromText is the sources of a rule, one string per file: "file: key;
// key".
func fromText(needs []Need) []string {
	var files []string
	keys := map[string][]string{}
	for _, n := range needs {
		if _, ok := keys[n.File]; !ok {
			files = append(files, n.File)
		}
		if !slices.Contains(keys[n.File], n.Key) {
			keys[n.File] = append(keys[n.File], n.Key)
		}
	}
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f + ": " + strings.Join(keys[f], "; ")
	}
	return out
}

// shorten is the from: value: every source if it fits, else the first
// and a count (the comment lines above the rule list them all).
func shorten(from []string) string {
	s := strings.Join(from, " | ")
	if len(s) <= maxFromLen {
		return s
	}
	f := from[0]
	if len(f) > maxFromLen-40 {
		f = f[:maxFromLen-40]
		for !utf8Start(f) {
			f = f[:len(f)-1]
		}
		f += "..."
	}
	return f + " (and more: see the comments above)"
}

func utf8Start(s string) bool {
	return len(s) == 0 || s[len(s)-1] < 0x80
}

func portsText(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// yamlName writes a name in a YAML flow list: wildcards quoted.
func yamlName(s string) string {
	if strings.HasPrefix(s, "*") {
		return strconv.Quote(s)
	}
	return s
}

func mapStrings(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

var nameChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// DefaultName is a policy name made from the first file's name:
// "openclaw" for openclaw.json, "agent" when nothing usable is left.
func DefaultName(files []string) string {
	if len(files) == 0 {
		return "agent"
	}
	base := strings.ToLower(filepath.Base(files[0]))
	base = strings.TrimSuffix(base, filepath.Ext(base))
	base = strings.Trim(nameChars.ReplaceAllString(base, "-"), ".-_")
	if len(base) > 63 {
		base = base[:63]
	}
	if base == "" || base == policy.DefaultName {
		return "agent"
	}
	return base
}
