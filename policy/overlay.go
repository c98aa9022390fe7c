package policy

import (
	"fmt"
	"slices"
)

// WithDenies returns a copy of f with the deny and ingress_deny rules of
// each of others added after its own; f itself is not changed. The added
// rules keep the names they have in their own files (file and position
// there), so a decision one of them makes says where it came from. Deny
// rules beat every allow rule, so the copy allows nothing f does not: this
// is how a rule set that may only tighten is laid over every policy.
func (f *File) WithDenies(others ...*File) *File {
	g := *f
	g.Deny = slices.Clone(f.Deny)
	g.IngressDeny = slices.Clone(f.IngressDeny)
	for _, o := range others {
		for i, r := range o.Deny {
			if r.id == "" {
				r.id = ruleID(o.Filename, r.Line, fmt.Sprintf("deny[%d]", i))
			}
			g.Deny = append(g.Deny, r)
		}
		for i, r := range o.IngressDeny {
			if r.id == "" {
				r.id = ruleID(o.Filename, r.Line, fmt.Sprintf("ingress_deny[%d]", i))
			}
			g.IngressDeny = append(g.IngressDeny, r)
		}
	}
	return &g
}
