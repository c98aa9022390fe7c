package policygen

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clawnet/clawnet/policy"
)

// PendingRule is one rule of a policy file's pending: part, as
// `clawnet policy approve` lists it.
type PendingRule struct {
	// Index is its place in pending:, from 1, as approve takes it.
	Index int
	Line  int
	// What is the rule in one line: its destinations, ports and protocol.
	What   string
	From   string
	SHA256 string
	// Phase is policy.PhaseSetup for a rule approval puts in setup: (a
	// launcher's download), else "".
	Phase string
}

// ListPending lists the pending rules of the policy file data (named
// filename in messages). A file that is not a valid policy is refused
// with its first problem (file:line: reason).
func ListPending(filename string, data []byte) ([]PendingRule, error) {
	f, err := policy.Parse(filename, data)
	if err != nil {
		return nil, err
	}
	out := make([]PendingRule, len(f.Pending))
	for i, r := range f.Pending {
		out[i] = PendingRule{Index: i + 1, Line: r.Line, What: ruleWhat(r), From: r.From, SHA256: r.SHA256, Phase: r.Phase}
	}
	return out, nil
}

func ruleWhat(r policy.Rule) string {
	domains, cidrs, ports, proto := ruleText(r)
	parts := slices.Concat(domains, cidrs)
	for _, a := range r.Agents {
		parts = append(parts, "agent:"+a)
	}
	return strings.Join(parts, ", ") + " " + proto + " " + strings.Join(ports, ",")
}

// ruleText is r's domains, cidrs and ports as a policy file writes them,
// and its protocol (tcp when the file does not say).
func ruleText(r policy.Rule) (domains, cidrs, ports []string, proto string) {
	for _, d := range r.Domains {
		domains = append(domains, d.String())
	}
	for _, c := range r.CIDRs {
		cidrs = append(cidrs, c.String())
	}
	for _, p := range r.Ports {
		ports = append(ports, p.String())
	}
	proto = "tcp"
	if r.Protocol != 0 {
		proto = r.Protocol.String()
	}
	return domains, cidrs, ports, proto
}

// Approve moves the pending rules numbered idx (from 1, as ListPending
// numbers them), or all of them, into the egress: list of the policy file
// data, or into its setup: list for a rule with phase: setup (its phase:
// key dropped), keeping each rule's from: and sha256:, and the file's
// comments. It
// returns the new file and the rules it moved. Bad input (a file that is
// not a valid policy, no pending rules, an index out of range or given
// twice) is one error line naming the file.
func Approve(filename string, data []byte, idx []int, all bool) ([]byte, []PendingRule, error) {
	pending, err := ListPending(filename, data)
	if err != nil {
		return nil, nil, err
	}
	if len(pending) == 0 {
		return nil, nil, fmt.Errorf("%s: no pending rules to approve", filename)
	}
	if all {
		idx = idx[:0]
		for i := range pending {
			idx = append(idx, i+1)
		}
	}
	if len(idx) == 0 {
		return nil, nil, fmt.Errorf("%s: name the pending rules to approve by number (1-%d), or --all", filename, len(pending))
	}
	take := map[int]bool{}
	for _, i := range idx {
		if i < 1 || i > len(pending) {
			return nil, nil, fmt.Errorf("%s: no pending rule %d (it has %d: 1-%d)", filename, i, len(pending), len(pending))
		}
		if take[i] {
			return nil, nil, fmt.Errorf("%s: pending rule %d given twice", filename, i)
		}
		take[i] = true
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", filename, err)
	}
	root := doc.Content[0]
	keyAt := func(key string) int {
		for i := 0; i+1 < len(root.Content); i += 2 {
			if root.Content[i].Value == key {
				return i
			}
		}
		return -1
	}
	// list is the sequence under key, made when there is none (or an
	// empty "key:"): a new one goes where pending is, before it.
	list := func(key string) *yaml.Node {
		i := keyAt(key)
		if i >= 0 && root.Content[i+1].Kind == yaml.SequenceNode {
			return root.Content[i+1]
		}
		seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if i >= 0 {
			root.Content[i+1] = seq
		} else {
			k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
			root.Content = slices.Insert(root.Content, keyAt("pending"), k, seq)
		}
		return seq
	}
	pseq := root.Content[keyAt("pending")+1]
	var moved []PendingRule
	var keep []*yaml.Node
	for i, item := range pseq.Content {
		if !take[i+1] {
			keep = append(keep, item)
			continue
		}
		to := "egress"
		if pending[i].Phase == policy.PhaseSetup {
			// Only pending rules take phase:; in setup it is where the
			// rule is.
			to = "setup"
			for j := 0; j+1 < len(item.Content); j += 2 {
				if item.Content[j].Value == "phase" {
					item.Content = slices.Delete(item.Content, j, j+2)
					break
				}
			}
		}
		seq := list(to)
		seq.Content = append(seq.Content, item)
		moved = append(moved, pending[i])
	}
	pseq.Content = keep
	if len(keep) == 0 {
		pi := keyAt("pending")
		root.Content = slices.Delete(root.Content, pi, pi+2)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", filename, err)
	}
	if err := enc.Close(); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", filename, err)
	}
	out := buf.Bytes()
	// What is written must be a policy clawnet takes, as the input was.
	f, err := policy.Parse(filename, out)
	if err == nil {
		_, err = policy.Compile(f, policy.Options{})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: the file after approval would be refused (%v); it is left as it is", filename, err)
	}
	return out, moved, nil
}

// Equivalent reports whether two policy files say the same: the same
// name, version, enforcement, presets, and rules in each list (in any
// order, each with its from: and sha256:), whatever their comments and
// layout. A file that is not a valid policy is equivalent to none but
// the same bytes. `generate --check` uses it, so that a file edited by
// `clawnet policy approve` (comments kept, layout not) is up to date.
func Equivalent(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	fa, err := policy.Parse("a", a)
	if err != nil {
		return false
	}
	fb, err := policy.Parse("b", b)
	if err != nil {
		return false
	}
	return fileSig(fa) == fileSig(fb)
}

func fileSig(f *policy.File) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q %q %q %v\n", f.Version, f.Name, f.Description, f.Enforcement, f.UnsafeAllowAnyAddress)
	var presets []string
	for _, p := range f.Presets {
		presets = append(presets, p.Name)
	}
	slices.Sort(presets)
	fmt.Fprintf(&b, "presets %q\n", presets)
	list := func(name string, rs []policy.Rule) {
		sigs := make([]string, len(rs))
		for i, r := range rs {
			sigs[i] = policyRuleSig(r)
		}
		slices.Sort(sigs)
		fmt.Fprintf(&b, "%s %q\n", name, sigs)
	}
	list("egress", f.Egress)
	list("setup", f.Setup)
	list("pending", f.Pending)
	list("deny", f.Deny)
	ingress := func(name string, rs []policy.IngressRule) {
		sigs := make([]string, len(rs))
		for i, r := range rs {
			sigs[i] = fmt.Sprintf("%v %d %q %v %v %v %v %q", r.Ports, r.Protocol, r.Agents, r.Host, r.CIDRs, r.AllowAny, r.ProxyProtocol, r.From)
		}
		slices.Sort(sigs)
		fmt.Fprintf(&b, "%s %q\n", name, sigs)
	}
	ingress("ingress", f.Ingress)
	ingress("ingress_deny", f.IngressDeny)
	return b.String()
}

func policyRuleSig(r policy.Rule) string {
	domains, cidrs, ports, proto := ruleText(r)
	slices.Sort(domains)
	slices.Sort(cidrs)
	agents := slices.Sorted(slices.Values(r.Agents))
	return ruleSig(domains, cidrs, ports, proto, r.From, r.SHA256) + " " + strconv.Quote(strings.Join(agents, ",")) + " " + r.Phase
}
