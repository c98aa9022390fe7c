package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// ParsePortRange parses "443" or "8000-8100". Port 0 is refused: no flow
// can use it.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	l, err := parsePort(lo)
	if err != nil {
		return PortRange{}, err
	}
	if !isRange {
		return PortRange{l, l}, nil
	}
	h, err := parsePort(hi)
	if err != nil {
		return PortRange{}, err
	}
	if h < l {
		return PortRange{}, fmt.Errorf("port range %q is backwards", s)
	}
	return PortRange{l, h}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q (want 1-65535)", s)
	}
	return uint16(n), nil
}

// portSet is a sorted list of disjoint, non-adjacent ranges. A nil set
// inside a rule means every port; as a computed value it means none.
type portSet []PortRange

var allPorts = portSet{{0, 65535}}

func (s portSet) contains(p uint16) bool {
	for _, r := range s {
		if p < r.Lo {
			return false
		}
		if p <= r.Hi {
			return true
		}
	}
	return false
}

// normalize sorts and merges ranges.
func normalizePorts(rs []PortRange) portSet {
	if len(rs) == 0 {
		return nil
	}
	s := append(portSet(nil), rs...)
	for i := 1; i < len(s); i++ { // insertion sort: rules list few ranges
		for j := i; j > 0 && s[j].Lo < s[j-1].Lo; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	out := s[:1]
	for _, r := range s[1:] {
		last := &out[len(out)-1]
		if uint32(r.Lo) <= uint32(last.Hi)+1 {
			last.Hi = max(last.Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s portSet) union(t portSet) portSet {
	return normalizePorts(append(append([]PortRange(nil), s...), t...))
}

// minus returns the ports of s that are not in t.
func (s portSet) minus(t portSet) portSet {
	var out portSet
	for _, r := range s {
		lo := uint32(r.Lo)
		for _, d := range t {
			if uint32(d.Hi) < lo || d.Lo > r.Hi {
				continue
			}
			if uint32(d.Lo) > lo {
				out = append(out, PortRange{uint16(lo), d.Lo - 1})
			}
			lo = uint32(d.Hi) + 1
		}
		if lo <= uint32(r.Hi) {
			out = append(out, PortRange{uint16(lo), r.Hi})
		}
	}
	return out
}

// intersect returns the ports in both s and t.
func (s portSet) intersect(t portSet) portSet { return s.minus(s.minus(t)) }

func (s portSet) String() string {
	if len(s) == 1 && s[0].Lo <= 1 && s[0].Hi == 65535 {
		return "any port"
	}
	var b strings.Builder
	if len(s) == 1 && s[0].Lo == s[0].Hi {
		b.WriteString("port ")
	} else {
		b.WriteString("ports ")
	}
	for i, r := range s {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(r.String())
	}
	return b.String()
}
