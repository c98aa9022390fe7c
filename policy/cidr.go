package policy

import (
	"net/netip"
	"slices"
)

// prefixTable finds the rules whose prefixes contain an address with one
// map probe per distinct prefix length in use (at most 33 for IPv4, 129
// for IPv6), however many prefixes there are.
type prefixTable struct {
	m      map[netip.Prefix][]int32
	lens4  []int // distinct lengths of IPv4 prefixes, longest first
	lens6  []int
	filled bool
}

func (t *prefixTable) add(p netip.Prefix, rule int32) {
	if t.m == nil {
		t.m = make(map[netip.Prefix][]int32)
	}
	p = p.Masked()
	l := t.m[p]
	if len(l) > 0 && l[len(l)-1] == rule {
		return
	}
	t.m[p] = append(l, rule)
	lens := &t.lens4
	if p.Addr().Is6() {
		lens = &t.lens6
	}
	if !slices.Contains(*lens, p.Bits()) {
		*lens = append(*lens, p.Bits())
		slices.Sort(*lens)
		slices.Reverse(*lens)
	}
	t.filled = true
}

// match calls fn for each rule with a prefix containing a, most specific
// prefix first, until fn returns false. a must not carry a zone.
func (t *prefixTable) match(a netip.Addr, fn func(rule int32, p netip.Prefix) bool) bool {
	if !t.filled {
		return true
	}
	lens := t.lens4
	if a.Is6() {
		lens = t.lens6
	}
	for _, bits := range lens {
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		for _, r := range t.m[p] {
			if !fn(r, p) {
				return false
			}
		}
	}
	return true
}
