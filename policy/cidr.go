package policy

import (
	"net/netip"
	"slices"
)

// prefixTable finds the rules whose prefixes contain an address in
// O(log n + nesting depth): prefixes sorted by first address, each linked
// to the nearest prefix that encloses it. Prefixes either nest or are
// disjoint, so the last prefix starting at or before an address is either
// the deepest one containing it or lies inside it; walking up the links
// from there visits exactly the containing prefixes, most specific first.
type prefixTable struct {
	byPrefix map[netip.Prefix][]int32 // filled by add, consumed by build
	v4, v6   []pnode
}

type pnode struct {
	prefix netip.Prefix
	parent int32 // index of the nearest enclosing prefix, or -1
	rules  []int32
}

func (t *prefixTable) add(p netip.Prefix, rule int32) {
	if t.byPrefix == nil {
		t.byPrefix = make(map[netip.Prefix][]int32)
	}
	p = p.Masked()
	if l := t.byPrefix[p]; len(l) == 0 || l[len(l)-1] != rule {
		t.byPrefix[p] = append(l, rule)
	}
}

// build sorts and links the prefixes added so far. It must run once,
// after the last add and before the first match.
func (t *prefixTable) build() {
	var all []pnode
	for p, rules := range t.byPrefix {
		all = append(all, pnode{prefix: p, rules: rules})
	}
	t.byPrefix = nil
	slices.SortFunc(all, func(a, b pnode) int {
		if c := a.prefix.Addr().Compare(b.prefix.Addr()); c != 0 {
			return c
		}
		return a.prefix.Bits() - b.prefix.Bits() // enclosing first
	})
	for _, n := range all {
		if n.prefix.Addr().Is4() {
			t.v4 = append(t.v4, n)
		} else {
			t.v6 = append(t.v6, n)
		}
	}
	link(t.v4)
	link(t.v6)
}

func link(nodes []pnode) {
	var stack []int32
	for i := range nodes {
		start := nodes[i].prefix.Addr()
		for len(stack) > 0 && !nodes[stack[len(stack)-1]].prefix.Contains(start) {
			stack = stack[:len(stack)-1]
		}
		nodes[i].parent = -1
		if len(stack) > 0 {
			nodes[i].parent = stack[len(stack)-1]
		}
		stack = append(stack, int32(i))
	}
}

// match calls fn for each rule with a prefix containing a, most specific
// prefix first, until fn returns false. a must not carry a zone.
func (t *prefixTable) match(a netip.Addr, fn func(rule int32, p netip.Prefix) bool) bool {
	nodes := t.v4
	if a.Is6() {
		nodes = t.v6
	}
	// The last node whose first address is <= a.
	lo, hi := 0, len(nodes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if nodes[m].prefix.Addr().Compare(a) <= 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	i := int32(lo - 1)
	for i >= 0 && !nodes[i].prefix.Contains(a) {
		i = nodes[i].parent
	}
	for ; i >= 0; i = nodes[i].parent {
		for _, r := range nodes[i].rules {
			if !fn(r, nodes[i].prefix) {
				return false
			}
		}
	}
	return true
}
