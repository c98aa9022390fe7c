package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// File is a parsed and validated policy file. Parse fills it; Compile turns
// it into a Policy. Lines are 1-based lines of the file, for messages.
type File struct {
	Filename    string
	Version     string
	Name        string
	Description string
	Presets     []PresetRef
	Egress      []Rule
	Deny        []Rule
	// Setup rules allow like egress rules, only while an agent under the
	// policy is in its setup phase (see Policy.SetupPhase): from its attach
	// until `clawnet policy phase AGENT run` or its setup timeout.
	Setup []Rule
	// Pending rules are proposed, never applied: each has a from: and the
	// sha256 of the file it was derived from, and `clawnet policy approve`
	// moves it into Egress, or into Setup when its Phase is PhaseSetup.
	Pending []Rule
	// Ingress and IngressDeny say who may connect to the agent. With no
	// Ingress rule nothing may.
	Ingress     []IngressRule
	IngressDeny []IngressRule
	// UnsafeAllowAnyAddress lets egress cidrs be broader than /8 (IPv4) or
	// /16 (IPv6), up to 0.0.0.0/0 and ::/0. Even then such a rule never opens
	// special-purpose addresses.
	UnsafeAllowAnyAddress bool
	// Enforcement is EnforceMode (the default) or AuditMode: under audit a
	// flow that only the default deny refuses is allowed with the verdict
	// WouldDeny (see README.md, Audit mode).
	Enforcement string
}

// Values of the enforcement key.
const (
	EnforceMode = "enforce"
	AuditMode   = "audit"
)

// PresetRef is one entry of the presets list.
type PresetRef struct {
	Name string
	Line int
}

// Rule is one entry of the egress or deny list. It matches a flow whose
// destination is in one of CIDRs or bears a name matching one of Domains,
// or a connection to one of the attached Agents, on one of Ports, with
// Protocol.
type Rule struct {
	Line    int
	Domains []Pattern
	CIDRs   []netip.Prefix
	// Agents are names of attached agents (as `clawnet attach --name`
	// gives them), matched exactly.
	Agents []string
	// Ports is empty only in deny rules, where it means every port.
	Ports []PortRange
	// Protocol is 0 when the file does not say: tcp for egress rules, tcp
	// and udp for deny rules.
	Protocol Proto
	// From says where the rule came from, for people: "channels.slack
	// (socket mode)". Explanations repeat it; decisions never depend on it.
	From string
	// SHA256 is the hex sha256 of the content of the file the rule was
	// derived from (a project's .mcp.json): required in pending rules, kept
	// by approval, so that a regeneration can tell whether the file changed
	// since. Decisions never depend on it.
	SHA256 string
	// Phase, on a pending rule only, is where approval puts it: "" for
	// egress, PhaseSetup for setup (a launcher's download, needed only
	// while the agent starts). Decisions never depend on it.
	Phase string

	cidrLines  []int
	agentLines []int
	id         string // overrides the name made from file and line
}

// IngressRule is one entry of the ingress or ingress_deny list. It matches
// a connection to the agent on one of Ports, with Protocol, from one of the
// peers it names: one of Agents, the host if Host, or a remote client whose
// address is in one of CIDRs.
type IngressRule struct {
	Line int
	// Ports is empty only in ingress_deny rules, where it means every port.
	Ports []PortRange
	// Protocol is 0 when the file does not say: tcp for ingress rules, tcp
	// and udp for ingress_deny rules.
	Protocol Proto
	Agents   []string
	Host     bool
	CIDRs    []netip.Prefix
	// AllowAny lets CIDRs be broader than /8 (IPv4) or /16 (IPv6), up to
	// 0.0.0.0/0 and ::/0. Ingress rules only.
	AllowAny bool
	// ProxyProtocol (proxy_protocol: v2) asks the gateway to send a PROXY
	// protocol v2 header with the peer's identity. Ingress rules only.
	ProxyProtocol bool
	// From says where the rule came from, as in Rule.
	From string

	cidrLines  []int
	agentLines []int
	id         string // overrides the name made from file and line
}

// AgentRef is one mention of an agent's name in a policy file.
type AgentRef struct {
	Name string
	Line int
	// List is where it appears: egress, setup, deny, ingress or
	// ingress_deny. Pending rules are not applied, so not listed.
	List string
}

// ParseError is a problem in a policy file. It prints as "file:line: msg".
type ParseError struct {
	File string
	Line int // 0 when the YAML parser did not say
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line <= 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Broadest egress prefixes allowed without UnsafeAllowAnyAddress.
const (
	minBits4 = 8
	minBits6 = 16
)

const maxPolicyBytes = 4 << 20

var (
	topKeys     = []string{"version", "name", "description", "enforcement", "presets", "egress", "setup", "pending", "deny", "ingress", "ingress_deny", "unsafe_allow_any_address"}
	ruleKeys    = []string{"domains", "cidrs", "agents", "ports", "protocol", "from", "sha256", "phase"}
	sha256RE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	ingressKeys = []string{"ports", "protocol", "agents", "host", "cidrs", "allow_any", "proxy_protocol", "from"}
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	yamlLine    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

// Parse parses and validates a policy file. filename is used in messages
// and rule names only; Parse does no I/O. Every error names the file and
// line, on one line. It returns the first problem; ParseAll returns them all.
func Parse(filename string, data []byte) (*File, error) {
	f, errs := ParseAll(filename, data)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return f, nil
}

// maxErrors bounds what ParseAll reports of one file.
const maxErrors = 100

// ParseAll is Parse reporting every problem it finds, in the order of the
// file, up to a hundred: one bad key or rule does not hide the next. A
// problem inside a rule skips the checks of that rule as a whole, so one
// mistake is reported once. The File is nil when there is any problem.
func ParseAll(filename string, data []byte) (*File, []*ParseError) {
	p := &parser{file: filename}
	if len(data) > maxPolicyBytes {
		return nil, []*ParseError{p.errAt(0, "policy file larger than %d bytes", maxPolicyBytes).(*ParseError)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.add(p.errAt(1, "empty policy (want at least version: v1 and name)"))
		} else {
			p.add(p.yamlErr(err))
		}
		return nil, p.errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			p.add(p.yamlErr(err))
		} else {
			p.add(p.errAt(extra.Line, "only one YAML document is allowed"))
		}
		return nil, p.errs
	}
	f := &File{Filename: filename, Enforcement: EnforceMode}
	p.top(&doc, f)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return f, nil
}

type parser struct {
	file string
	errs []*ParseError
}

// errReported stands for problems already added to the parser's list.
var errReported = errors.New("reported")

// add records a problem; errReported and nil add nothing.
func (p *parser) add(err error) {
	if err == nil || err == errReported || len(p.errs) >= maxErrors {
		return
	}
	var pe *ParseError
	if !errors.As(err, &pe) {
		pe = &ParseError{File: p.file, Msg: err.Error()}
	}
	p.errs = append(p.errs, pe)
}

func (p *parser) errAt(line int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	// One line, whatever the input echoed back.
	msg = strings.Join(strings.Fields(msg), " ")
	return &ParseError{File: p.file, Line: line, Msg: msg}
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) error {
	return p.errAt(n.Line, format, args...)
}

func (p *parser) yamlErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(strings.SplitN(msg, "\n", 2)[0]); m != nil {
		line, _ := strconv.Atoi(m[1])
		return p.errAt(line, "%s", m[2])
	}
	return p.errAt(0, "%s", msg)
}

func (p *parser) top(doc *yaml.Node, f *File) {
	root := doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			p.add(p.errAt(1, "empty policy (want at least version: v1 and name)"))
			return
		}
		root = doc.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		p.add(p.errf(root, "a policy must be a mapping of keys (version, name, egress, ...)"))
		return
	}
	seen := map[string]bool{}
	err := p.mapping(root, topKeys, func(key string, k, v *yaml.Node) error {
		seen[key] = true
		var err error
		switch key {
		case "version":
			f.Version, err = p.str(v, key)
			if err == nil && f.Version != "v1" {
				err = p.errf(v, "unsupported version %q (want v1)", f.Version)
			}
		case "name":
			f.Name, err = p.str(v, key)
			if err == nil && !nameRE.MatchString(f.Name) {
				err = p.errf(v, "bad name %q (want lower-case letters, digits, '.', '_', '-', at most 63)", f.Name)
			}
			if err == nil && f.Name == DefaultName {
				err = p.errf(v, "name %q is reserved for the built-in policy", f.Name)
			}
		case "description":
			f.Description, err = p.str(v, key)
		case "enforcement":
			f.Enforcement, err = p.str(v, key)
			if err == nil && f.Enforcement != EnforceMode && f.Enforcement != AuditMode {
				err = p.errf(v, "enforcement: want enforce or audit, got %q", f.Enforcement)
			}
		case "presets":
			f.Presets, err = p.presets(v)
		case "egress":
			f.Egress, err = p.rules(v, key, false)
		case "setup":
			f.Setup, err = p.rules(v, key, false)
		case "pending":
			f.Pending, err = p.rules(v, key, false)
		case "deny":
			f.Deny, err = p.rules(v, key, true)
		case "ingress":
			f.Ingress, err = p.ingressRules(v, key, false)
		case "ingress_deny":
			f.IngressDeny, err = p.ingressRules(v, key, true)
		case "unsafe_allow_any_address":
			f.UnsafeAllowAnyAddress, err = p.boolean(v, key)
		}
		return err
	})
	if err != nil {
		p.add(err)
		return
	}
	if !seen["version"] {
		p.add(p.errf(root, "missing required key \"version\" (want version: v1)"))
	}
	if !seen["name"] {
		p.add(p.errf(root, "missing required key \"name\""))
	}
	if !f.UnsafeAllowAnyAddress {
		for _, r := range slices.Concat(f.Egress, f.Setup, f.Pending) {
			for i, c := range r.CIDRs {
				if tooBroad(c) {
					p.add(p.errAt(r.cidrLine(i), "cidr %q opens nearly every address; narrow it, or set unsafe_allow_any_address: true (special-purpose addresses stay closed)", c))
				}
			}
		}
	}
	if c, ok := proxyConflict(f.Ingress); ok {
		p.add(p.errAt(f.Ingress[c.i].Line, "%s", c.msg(f.Ingress)))
	}
}

func tooBroad(c netip.Prefix) bool {
	if c.Addr().Is4() {
		return c.Bits() < minBits4
	}
	return c.Bits() < minBits6
}

// mapping walks a mapping node. An unknown or repeated key, or a value fn
// refuses, is recorded and the walk goes on to the next key; the error
// returned is only for a node that is not a mapping at all.
func (p *parser) mapping(n *yaml.Node, known []string, fn func(key string, k, v *yaml.Node) error) error {
	if err := p.kind(n, yaml.MappingNode, "rule", "a mapping"); err != nil {
		return err
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.add(p.errf(k, "keys must be plain words"))
			continue
		}
		key := k.Value
		if line, dup := seen[key]; dup {
			p.add(p.errf(k, "key %q repeated (first at line %d)", key, line))
			continue
		}
		seen[key] = k.Line
		if !contains(known, key) {
			if s := suggest(key, known); s != "" {
				p.add(p.errf(k, "unknown key %q (did you mean %q?)", key, s))
			} else {
				p.add(p.errf(k, "unknown key %q (want one of %s)", key, strings.Join(known, ", ")))
			}
			continue
		}
		p.add(fn(key, k, v))
	}
	return nil
}

func (p *parser) kind(n *yaml.Node, want yaml.Kind, key, what string) error {
	if n.Kind == yaml.AliasNode {
		return p.errf(n, "YAML aliases are not supported")
	}
	if n.Kind != want {
		return p.errf(n, "%s: want %s", key, what)
	}
	return nil
}

func (p *parser) str(n *yaml.Node, key string) (string, error) {
	if err := p.kind(n, yaml.ScalarNode, key, "a string"); err != nil {
		return "", err
	}
	if n.Tag != "!!str" {
		return "", p.errf(n, "%s: want a string, got %q", key, n.Value)
	}
	return n.Value, nil
}

// scalar is a plain value of any type, as written: "v2", 1234, true.
func (p *parser) scalar(n *yaml.Node, key, what string) (string, error) {
	if err := p.kind(n, yaml.ScalarNode, key, what); err != nil {
		return "", err
	}
	if n.Tag == "!!null" {
		return "", p.errf(n, "%s: want %s", key, what)
	}
	return n.Value, nil
}

func (p *parser) boolean(n *yaml.Node, key string) (bool, error) {
	if err := p.kind(n, yaml.ScalarNode, key, "true or false"); err != nil {
		return false, err
	}
	if n.Tag != "!!bool" {
		return false, p.errf(n, "%s: want true or false, got %q", key, n.Value)
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE", nil
}

// seq returns the items of a list; a null value is an empty list.
func (p *parser) seq(n *yaml.Node, key string) ([]*yaml.Node, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if err := p.kind(n, yaml.SequenceNode, key, "a list"); err != nil {
		return nil, err
	}
	return n.Content, nil
}

func (p *parser) presets(n *yaml.Node) ([]PresetRef, error) {
	items, err := p.seq(n, "presets")
	if err != nil {
		return nil, err
	}
	var out []PresetRef
	for _, it := range items {
		name, err := p.str(it, "presets")
		if err != nil {
			return nil, err
		}
		if _, ok := LookupPreset(name); !ok {
			if s := suggest(name, presetNames()); s != "" {
				return nil, p.errf(it, "unknown preset %q (did you mean %q?)", name, s)
			}
			return nil, p.errf(it, "unknown preset %q (want one of %s)", name, strings.Join(presetNames(), ", "))
		}
		for _, o := range out {
			if o.Name == name {
				return nil, p.errf(it, "preset %q listed twice (first at line %d)", name, o.Line)
			}
		}
		out = append(out, PresetRef{Name: name, Line: it.Line})
	}
	return out, nil
}

func (p *parser) rules(n *yaml.Node, key string, deny bool) ([]Rule, error) {
	return parseList(p, n, key, deny, p.rule)
}

// parseList parses the sequence under key with one, reporting each bad
// item and going on, so every error of a file is seen at once.
func parseList[T any](p *parser, n *yaml.Node, key string, deny bool, one func(*yaml.Node, string, bool) (T, error)) ([]T, error) {
	items, err := p.seq(n, key)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(items))
	for _, it := range items {
		r, err := one(it, key, deny)
		if err != nil {
			p.add(err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (p *parser) rule(n *yaml.Node, list string, deny bool) (Rule, error) {
	r := Rule{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		return r, p.errf(n, "%s: each rule must be a mapping with domains, cidrs or agents", list)
	}
	before := len(p.errs)
	err := p.mapping(n, ruleKeys, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "domains":
			r.Domains, err = p.domains(v, key)
		case "cidrs":
			r.CIDRs, r.cidrLines, err = p.cidrs(v, key)
		case "agents":
			r.Agents, r.agentLines, err = p.agents(v, key)
		case "ports":
			r.Ports, err = p.ports(v, key)
		case "protocol":
			r.Protocol, err = p.protocol(v, key)
		case "from":
			r.From, err = p.from(v)
		case "sha256":
			r.SHA256, err = p.str(v, key)
			if err == nil && !sha256RE.MatchString(r.SHA256) {
				err = p.errf(v, "sha256: want 64 lower-case hex digits, got %q", r.SHA256)
			}
		case "phase":
			if list != "pending" {
				return p.errf(k, "phase belongs on pending rules (where approval puts them), not in %s", list)
			}
			r.Phase, err = p.str(v, key)
			if err == nil && r.Phase != PhaseSetup {
				err = p.errf(v, "phase: want setup (approval moves the rule into setup:), got %q; leave phase out for egress", r.Phase)
			}
		}
		return err
	})
	if err != nil {
		return r, err
	}
	if len(p.errs) > before {
		return r, errReported
	}
	if len(r.Domains) == 0 && len(r.CIDRs) == 0 && len(r.Agents) == 0 {
		return r, p.errf(n, "%s rule matches nothing: give it domains, cidrs or agents", list)
	}
	if list == "pending" && (r.From == "" || r.SHA256 == "") {
		return r, p.errf(n, "pending rule needs from: and sha256: (the file it came from and the hash of its content)")
	}
	if !deny && len(r.Ports) == 0 {
		return r, p.errf(n, "%s rule needs ports (a deny rule without ports covers every port)", list)
	}
	return r, nil
}

func (p *parser) ingressRules(n *yaml.Node, key string, deny bool) ([]IngressRule, error) {
	return parseList(p, n, key, deny, p.ingressRule)
}

func (p *parser) ingressRule(n *yaml.Node, list string, deny bool) (IngressRule, error) {
	r := IngressRule{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		return r, p.errf(n, "%s: each rule must be a mapping with ports and agents, host or cidrs", list)
	}
	before := len(p.errs)
	err := p.mapping(n, ingressKeys, func(key string, k, v *yaml.Node) error {
		var err error
		switch key {
		case "ports":
			r.Ports, err = p.ports(v, key)
		case "protocol":
			r.Protocol, err = p.protocol(v, key)
		case "agents":
			r.Agents, r.agentLines, err = p.agents(v, key)
		case "host":
			r.Host, err = p.boolean(v, key)
		case "cidrs":
			r.CIDRs, r.cidrLines, err = p.cidrs(v, key)
		case "allow_any":
			if deny {
				return p.errf(k, "allow_any belongs on ingress rules; an ingress_deny rule may cover any address")
			}
			r.AllowAny, err = p.boolean(v, key)
		case "proxy_protocol":
			if deny {
				return p.errf(k, "proxy_protocol belongs on ingress rules, not on ingress_deny")
			}
			var s string
			if s, err = p.scalar(v, key, "v2"); err == nil && s != "v2" {
				err = p.errf(v, "proxy_protocol: want v2, got %q", s)
			}
			r.ProxyProtocol = err == nil
		case "from":
			r.From, err = p.from(v)
		}
		return err
	})
	if err != nil {
		return r, err
	}
	if len(p.errs) > before {
		return r, errReported
	}
	if len(r.Agents) == 0 && !r.Host && len(r.CIDRs) == 0 {
		return r, p.errf(n, "%s rule names no peer: give it agents, host: true or cidrs", list)
	}
	if !deny && len(r.Ports) == 0 {
		return r, p.errf(n, "%s rule needs ports (an ingress_deny rule without ports covers every port)", list)
	}
	if !deny && r.AllowAny && len(r.CIDRs) == 0 {
		return r, p.errf(n, "%s rule has allow_any: true but no cidrs for it to apply to", list)
	}
	for i, c := range r.CIDRs {
		if !deny && !r.AllowAny && tooBroad(c) {
			return r, p.errAt(r.cidrLine(i), "cidr %q lets nearly every address connect; narrow it, or set allow_any: true on this rule", c)
		}
	}
	return r, nil
}

func (p *parser) domains(n *yaml.Node, key string) ([]Pattern, error) {
	items, err := p.seq(n, key)
	if err != nil {
		return nil, err
	}
	var out []Pattern
	for _, it := range items {
		s, err := p.str(it, key)
		if err != nil {
			return nil, err
		}
		pat, err := ParsePattern(s)
		if err != nil {
			return nil, p.errf(it, "%v", err)
		}
		out = append(out, pat)
	}
	return out, nil
}

// cidrs parses a list of prefixes and the line of each.
func (p *parser) cidrs(n *yaml.Node, key string) ([]netip.Prefix, []int, error) {
	items, err := p.seq(n, key)
	if err != nil {
		return nil, nil, err
	}
	var out []netip.Prefix
	var lines []int
	for _, it := range items {
		s, err := p.str(it, key)
		if err != nil {
			return nil, nil, err
		}
		c, err := ParseCIDR(s)
		if err != nil {
			return nil, nil, p.errf(it, "%v", err)
		}
		out = append(out, c)
		lines = append(lines, it.Line)
	}
	return out, lines, nil
}

// agents parses a list of agent names and the line of each.
func (p *parser) agents(n *yaml.Node, key string) ([]string, []int, error) {
	items, err := p.seq(n, key)
	if err != nil {
		return nil, nil, err
	}
	var out []string
	var lines []int
	for _, it := range items {
		// An agent may be called 1234 or true; such names are still names.
		s, err := p.scalar(it, key, "an agent name")
		if err != nil {
			return nil, nil, err
		}
		if !ValidAgentName(s) {
			return nil, nil, p.errf(it, "bad agent name %q (want letters, digits, '.', '_', '-', starting with a letter or digit, at most 63)", s)
		}
		out = append(out, s)
		lines = append(lines, it.Line)
	}
	return out, lines, nil
}

func (p *parser) ports(n *yaml.Node, key string) ([]PortRange, error) {
	items, err := p.seq(n, key)
	if err != nil {
		return nil, err
	}
	var out []PortRange
	for _, it := range items {
		if err := p.kind(it, yaml.ScalarNode, key, "a port or a range"); err != nil {
			return nil, err
		}
		if it.Tag != "!!int" && it.Tag != "!!str" {
			return nil, p.errf(it, "bad port %q (want 1-65535 or \"lo-hi\")", it.Value)
		}
		pr, err := ParsePortRange(it.Value)
		if err != nil {
			return nil, p.errf(it, "%v", err)
		}
		out = append(out, pr)
	}
	return out, nil
}

// maxFrom bounds a from: note; it is for people, one line.
const maxFrom = 300

func (p *parser) from(n *yaml.Node) (string, error) {
	s, err := p.str(n, "from")
	if err != nil {
		return "", err
	}
	if len(s) > maxFrom || strings.ContainsAny(s, "\r\n") {
		return "", p.errf(n, "from: want one line of at most %d bytes", maxFrom)
	}
	return s, nil
}

func (p *parser) protocol(n *yaml.Node, key string) (Proto, error) {
	s, err := p.str(n, key)
	if err != nil {
		return 0, err
	}
	proto, err := ParseProto(s)
	if err != nil {
		return 0, p.errf(n, "%v", err)
	}
	return proto, nil
}

// cidrLine is the line of CIDRs[i], for messages after the walk.
func (r Rule) cidrLine(i int) int { return lineOf(r.cidrLines, i, r.Line) }

func (r IngressRule) cidrLine(i int) int { return lineOf(r.cidrLines, i, r.Line) }

func lineOf(lines []int, i, fallback int) int {
	if i < len(lines) {
		return lines[i]
	}
	return fallback
}

// AgentRefs lists every mention of an agent's name in f, in file order:
// the agents it may connect to (egress, deny) and the agents that may
// connect to it (ingress, ingress_deny). A name need not be attached when
// the file is loaded; `clawnet policy check` warns about those that are not.
func (f *File) AgentRefs() []AgentRef {
	var out []AgentRef
	add := func(list string, names []string, lines []int, line int) {
		for i, n := range names {
			out = append(out, AgentRef{Name: n, Line: lineOf(lines, i, line), List: list})
		}
	}
	for _, r := range f.Egress {
		add("egress", r.Agents, r.agentLines, r.Line)
	}
	for _, r := range f.Setup {
		add("setup", r.Agents, r.agentLines, r.Line)
	}
	for _, r := range f.Deny {
		add("deny", r.Agents, r.agentLines, r.Line)
	}
	for _, r := range f.Ingress {
		add("ingress", r.Agents, r.agentLines, r.Line)
	}
	for _, r := range f.IngressDeny {
		add("ingress_deny", r.Agents, r.agentLines, r.Line)
	}
	slices.SortStableFunc(out, func(a, b AgentRef) int { return a.Line - b.Line })
	return out
}

// ValidAgentName reports whether name can be an attached agent's name:
// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$, as the gateway checks at attach. It is
// on the inbound decision path, so it is not a regexp.
func ValidAgentName(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// ParseCIDR parses a prefix such as "10.20.0.0/16", or a bare address as a
// single-address prefix. Host bits and IPv4-mapped IPv6 forms are refused
// because they usually mean the author meant something else.
func ParseCIDR(s string) (netip.Prefix, error) {
	var c netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if c, err = netip.ParsePrefix(s); err != nil {
			return c, fmt.Errorf("bad cidr %q", s)
		}
		if m := c.Masked(); m != c {
			return c, fmt.Errorf("cidr %q has host bits set (did you mean %s?)", s, m)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return c, fmt.Errorf("bad cidr %q", s)
		}
		c = netip.PrefixFrom(a, a.BitLen())
	}
	if c.Addr().Is4In6() {
		return c, fmt.Errorf("cidr %q is IPv4-mapped; write the IPv4 form", s)
	}
	return c, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the known word within edit distance 2 of s, if any.
func suggest(s string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(s, k, bestD); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string, limit int) int {
	if len(a) > 64 || len(b) > 64 {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ruleID names a rule by its file and place, e.g. "coder.yaml:12 egress[1]".
func ruleID(filename string, line int, what string) string {
	if line <= 0 {
		return path.Base(filename) + " " + what
	}
	return fmt.Sprintf("%s:%d %s", path.Base(filename), line, what)
}
