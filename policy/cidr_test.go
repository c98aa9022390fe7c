package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// TestPrefixTable compares the table with a linear scan over many random
// sets of heavily nested prefixes, both families.
func TestPrefixTable(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	randAddr := func(v6 bool) netip.Addr {
		// Few random bits, so that prefixes nest, share starts and repeat.
		if v6 {
			var b [16]byte
			b[0], b[1], b[15] = 0x20, byte(r.IntN(4)), byte(r.IntN(4))
			b[2] = byte(r.IntN(4) << 6)
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{10, byte(r.IntN(4)), byte(r.IntN(3) << 6), byte(r.IntN(4) << 6)})
	}
	for round := 0; round < 300; round++ {
		var tab prefixTable
		type entry struct {
			p    netip.Prefix
			rule int32
		}
		var entries []entry
		n := 1 + r.IntN(40)
		for i := 0; i < n; i++ {
			v6 := r.IntN(2) == 0
			a := randAddr(v6)
			bits := r.IntN(a.BitLen() + 1)
			p := netip.PrefixFrom(a, bits).Masked()
			tab.add(p, int32(i))
			entries = append(entries, entry{p, int32(i)})
		}
		tab.build()
		for q := 0; q < 50; q++ {
			a := randAddr(r.IntN(2) == 0)
			var want []int32
			for _, e := range entries {
				if e.p.Contains(a) {
					want = append(want, e.rule)
				}
			}
			var got []int32
			lastBits := 999
			tab.match(a, func(rule int32, p netip.Prefix) bool {
				if !p.Contains(a) {
					t.Fatalf("match(%s) reported %s, which does not contain it", a, p)
				}
				if p.Bits() > lastBits {
					t.Fatalf("match(%s) reported %s after a broader prefix", a, p)
				}
				lastBits = p.Bits()
				got = append(got, rule)
				return true
			})
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: match(%s) = %v, want %v (prefixes %v)", round, a, got, want, entries)
			}
		}
	}
}
