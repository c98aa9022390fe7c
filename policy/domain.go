package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// idnaProfile maps Unicode names the way browsers and resolvers look them
// up (case folding, full-width dots) and checks punycode labels. Underscores
// stay legal: real names such as _dmarc.example.com use them.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
)

var (
	errEmptyName    = errors.New("empty name")
	errNotUTF8      = errors.New("not valid UTF-8")
	errNonCanonical = errors.New("non-canonical punycode")
)

// NormalizeName returns name as rules match it: lower case, without the
// trailing dot, Unicode labels as punycode A-labels. It fails for anything
// that is not a valid DNS name of letters, digits, '-' and '_'.
func NormalizeName(name string) (string, error) {
	if isCanonicalName(name) {
		return name, nil // the common case: already what DNS carried
	}
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("bad name %q: %w", name, errNotUTF8)
	}
	n := name
	if isASCII(n) {
		n = strings.ToLower(n)
	}
	if !isASCII(n) || strings.Contains(n, "xn--") {
		a, err := idnaProfile.ToASCII(n)
		if err != nil {
			return "", fmt.Errorf("bad name %q: %w", name, err)
		}
		// Match on exactly what DNS will carry: a punycode label that
		// only decodes to some other encoding is refused, not rewritten.
		if isASCII(n) && a != n {
			return "", fmt.Errorf("bad name %q: %w", name, errNonCanonical)
		}
		n = a
	}
	n = strings.TrimSuffix(n, ".")
	if err := checkName(n); err != nil {
		return "", fmt.Errorf("bad name %q: %w", name, err)
	}
	return n, nil
}

// isCanonicalName is a fast check that name needs no work: lower-case
// ASCII labels of [a-z0-9_-], none empty or too long, no xn-- label, no
// trailing dot, and not ending in an all-digit label.
func isCanonicalName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	label, digits := 0, true
	for i := 0; i < len(name); i++ {
		switch nameChar[name[i]] {
		case charDot:
			if label == 0 {
				return false
			}
			label, digits = 0, true
			continue
		case charLetter:
			if label == 0 && name[i] == 'x' && strings.HasPrefix(name[i:], "xn--") {
				return false // a punycode label: the slow path validates it
			}
			digits = false
		case charDigit:
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0 && !digits
}

const (
	charOther = iota
	charLetter
	charDigit
	charDot
)

// nameChar classes the bytes of a canonical name; '-' and '_' count as
// letters, since a label of them is not all digits.
var nameChar = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = charLetter
	}
	t['-'], t['_'] = charLetter, charLetter
	for c := '0'; c <= '9'; c++ {
		t[c] = charDigit
	}
	t['.'] = charDot
	return t
}()

func checkName(n string) error {
	if n == "" {
		return errEmptyName
	}
	if len(n) > 253 {
		return errors.New("longer than 253 bytes")
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return errors.New("label longer than 63 bytes")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed", c)
			}
		}
	}
	if isDigits(labels[len(labels)-1]) {
		return errors.New("last label is all digits, like an IP address")
	}
	return nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Pattern is a compiled domain pattern: an exact name, or "*." and a base
// that matches every name at any depth below base but never base itself.
type Pattern struct {
	Base     string
	Wildcard bool
}

func (p Pattern) String() string {
	if p.Wildcard {
		return "*." + p.Base
	}
	return p.Base
}

// ParsePattern validates and normalizes a domain pattern from a policy.
// It refuses patterns that would open far more than their author meant: a
// bare "*", wildcards anywhere but as the whole first label, and a wildcard
// directly over a public suffix such as "*.com" or "*.co.uk".
func ParsePattern(s string) (Pattern, error) {
	raw := s
	if s == "*" || s == "*." {
		return Pattern{}, fmt.Errorf("domain %q would allow every name", raw)
	}
	var p Pattern
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		p.Wildcard, s = true, rest
	}
	if strings.Contains(s, "*") {
		return Pattern{}, fmt.Errorf("domain %q: a wildcard is allowed only as the whole first label, as in \"*.example.com\"", raw)
	}
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return Pattern{}, fmt.Errorf("domain %q is an IP address; put it under cidrs", raw)
	}
	n, err := NormalizeName(s)
	if err != nil {
		return Pattern{}, fmt.Errorf("domain %q: %w", raw, errors.Unwrap(err))
	}
	p.Base = n
	if p.Wildcard {
		if !strings.Contains(n, ".") {
			return Pattern{}, fmt.Errorf("domain %q: a wildcard directly over a top-level domain is refused", raw)
		}
		if ps, icann := publicsuffix.PublicSuffix(n); icann && ps == n {
			return Pattern{}, fmt.Errorf("domain %q: a wildcard directly over the public suffix %q is refused", raw, ps)
		}
	}
	return p, nil
}

// Match reports whether the normalized name matches p, on label boundaries.
func (p Pattern) Match(name string) bool {
	if !p.Wildcard {
		return name == p.Base
	}
	return len(name) > len(p.Base)+1 && strings.HasSuffix(name, p.Base) && name[len(name)-len(p.Base)-1] == '.'
}

// domainSet finds the rules whose patterns match a name in time linear in
// the name's labels, whatever the number of patterns: exact names in one
// map, wildcard bases in another, probed with every proper suffix.
type domainSet struct {
	exact map[string][]int32
	wild  map[string][]int32
}

func (d *domainSet) add(p Pattern, rule int32) {
	m := &d.exact
	if p.Wildcard {
		m = &d.wild
	}
	if *m == nil {
		*m = make(map[string][]int32)
	}
	if l := (*m)[p.Base]; len(l) == 0 || l[len(l)-1] != rule {
		(*m)[p.Base] = append(l, rule)
	}
}

// match calls fn for each rule with a pattern matching the normalized name,
// until fn returns false. It allocates nothing.
func (d *domainSet) match(name string, fn func(rule int32, p Pattern) bool) bool {
	for _, r := range d.exact[name] {
		if !fn(r, Pattern{Base: name}) {
			return false
		}
	}
	if len(d.wild) == 0 {
		return true
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '.' {
			continue
		}
		base := name[i+1:]
		for _, r := range d.wild[base] {
			if !fn(r, Pattern{Base: base, Wildcard: true}) {
				return false
			}
		}
	}
	return true
}
