package policy

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"api.github.com", "api.github.com"},
		{"API.GitHub.COM", "api.github.com"},
		{"api.github.com.", "api.github.com"},
		{"Api.GitHub.Com.", "api.github.com"},
		{"_dmarc.example.com", "_dmarc.example.com"},
		{"r3---sn-abc.googlevideo.com", "r3---sn-abc.googlevideo.com"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"BÜCHER.example.", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"XN--BCHER-KVA.EXAMPLE", "xn--bcher-kva.example"},
		{"münchen\u3002example", "xn--mnchen-3ya.example"}, // ideographic full stop
		{"ｅｘａｍｐｌｅ.com", "example.com"},                     // full-width letters map to ASCII
		{"localhost", "localhost"},
		{"a", "a"},
		{strings.Repeat("a", 63) + ".com", strings.Repeat("a", 63) + ".com"},
		{"", ""},
		{".", ""},
		{"..", ""},
		{".example.com", ""},
		{"example..com", ""},
		{"example.com..", ""},
		{strings.Repeat("a", 64) + ".com", ""},
		{strings.Repeat("abcdefghi.", 26) + "com", ""}, // 263 bytes
		{"exa mple.com", ""},
		{"exa*mple.com", ""},
		{"*.example.com", ""},
		{"example.com/path", ""},
		{"1.2.3.4", ""},
		{"example.123", ""},
		{"xn--abc-.example", ""},
		{"xn--.example", ""},
		{"exam\x00ple.com", ""},
		{"\xff.com", ""},
	}
	for _, tc := range tests {
		got, err := NormalizeName(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("NormalizeName(%q) = %q, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeName(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePattern(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"api.github.com", "api.github.com"},
		{"*.githubusercontent.com", "*.githubusercontent.com"},
		{"*.GitHubUserContent.com.", "*.githubusercontent.com"},
		{"*.bücher.example", "*.xn--bcher-kva.example"},
		{"*.github.io", "*.github.io"}, // a private-section suffix: allowed
		{"*.example.co.uk", "*.example.co.uk"},
		{"*.s3.amazonaws.com", "*.s3.amazonaws.com"},
		{"com", "com"}, // an exact TLD names only itself
		{"*", ""},
		{"*.", ""},
		{"*.com", ""},
		{"*.co.uk", ""},
		{"*.CO.UK.", ""},
		{"*.internal", ""},
		{"*.*.example.com", ""},
		{"api.*.example.com", ""},
		{"api*.example.com", ""},
		{"*api.example.com", ""},
		{"example.*", ""},
		{"**.example.com", ""},
		{"10.0.0.1", ""},
		{"::1", ""},
		{"[::1]", ""},
		{"", ""},
		{"exa mple.com", ""},
		{"xn--.example", ""},
		{"*.\xff.example", ""},
	}
	for _, tc := range tests {
		got, err := ParsePattern(tc.in)
		if err != nil && strings.Contains(err.Error(), "%!") {
			t.Errorf("ParsePattern(%q) error %q is badly formatted", tc.in, err)
		}
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParsePattern(%q) = %q, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParsePattern(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"api.github.com", "api.github.com", true},
		{"api.github.com", "API.GITHUB.COM.", true},
		{"api.github.com", "github.com", false},
		{"api.github.com", "x.api.github.com", false},
		{"api.github.com", "api.github.com.evil.com", false},
		{"api.github.com", "evilapi.github.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.c.example.com", true},
		{"*.example.com", "A.Example.Com.", true},
		{"*.example.com", "example.com", false}, // never the apex
		{"*.example.com", "example.com.", false},
		{"*.example.com", "badexample.com", false}, // label boundary
		{"*.example.com", "a.badexample.com", false},
		{"*.example.com", "example.com.evil.net", false},
		{"*.example.com", "a.example.com.evil.net", false},
		{"*.example.com", "com", false},
		{"*.bücher.example", "www.xn--bcher-kva.example", true},
		{"*.xn--bcher-kva.example", "www.BÜCHER.example", true},
		{"bücher.example", "xn--bcher-kva.example", true},
		{"bücher.example", "bucher.example", false},
		{"*.github.io", "me.github.io", true},
	}
	for _, tc := range tests {
		pat, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q) = %v", tc.pattern, err)
		}
		name, err := NormalizeName(tc.name)
		if err != nil {
			t.Fatalf("NormalizeName(%q) = %v", tc.name, err)
		}
		if got := pat.Match(name); got != tc.want {
			t.Errorf("Pattern(%q).Match(%q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
		var set domainSet
		set.add(pat, 7)
		got := false
		set.match(name, func(r int32, p Pattern) bool {
			got = r == 7 && p == pat
			return true
		})
		if got != tc.want {
			t.Errorf("domainSet{%q}.match(%q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// refMatch is the matcher written the slow, obvious way: compare labels
// from the right.
func refMatch(pattern, name string) bool {
	pl := strings.Split(pattern, ".")
	nl := strings.Split(name, ".")
	wild := pl[0] == "*"
	if wild {
		pl = pl[1:]
		if len(nl) <= len(pl) {
			return false
		}
	} else if len(nl) != len(pl) {
		return false
	}
	for i := 1; i <= len(pl); i++ {
		if pl[len(pl)-i] != nl[len(nl)-i] {
			return false
		}
	}
	return true
}

// FuzzDomainMatch checks the real matcher (normalization, pattern parsing
// and the suffix-map set) against refMatch on ASCII-lowered inputs.
func FuzzDomainMatch(f *testing.F) {
	seeds := [][4]string{
		{"*.example.com", "api.example.com", "example.com", "a.b.example.com"},
		{"api.github.com", "API.github.com.", "*.githubusercontent.com", "raw.githubusercontent.com"},
		{"*.a.b", "a.b", "x.a.b", "xa.b"},
		{"*.bücher.example", "www.xn--bcher-kva.example", "b.c", "c"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, p1, p2, p3, name string) {
		var set domainSet
		pats := map[int32]Pattern{}
		for i, raw := range []string{p1, p2, p3} {
			if p, err := ParsePattern(raw); err == nil {
				set.add(p, int32(i))
				pats[int32(i)] = p
			}
		}
		// The fast path may only accept what the slow checks accept.
		if isCanonicalName(name) {
			if err := checkName(name); err != nil || strings.Contains("."+name, ".xn--") {
				t.Fatalf("isCanonicalName(%q) = true, but checkName says %v", name, err)
			}
		}
		n, err := NormalizeName(name)
		if err != nil {
			return
		}
		if !utf8.ValidString(n) || strings.ToLower(n) != n || strings.HasSuffix(n, ".") {
			t.Fatalf("NormalizeName(%q) = %q, not canonical", name, n)
		}
		if again, err := NormalizeName(n); err != nil || again != n {
			t.Fatalf("NormalizeName(NormalizeName(%q)) = %q, %v, want %q", name, again, err, n)
		}
		// Patterns made from the name's own suffixes, and near misses, so
		// that matches are common and not left to chance.
		for i := 0; i < len(n); i++ {
			if n[i] != '.' {
				continue
			}
			for j, raw := range []string{"*." + n[i+1:], n[i+1:], "*." + n[i:], "*.x" + n[i:], "*." + n[:i]} {
				if p, err := ParsePattern(raw); err == nil {
					idx := int32(10 + 5*i + j)
					set.add(p, idx)
					pats[idx] = p
				}
			}
		}
		want := map[int32]bool{}
		for i, p := range pats {
			ref := refMatch(p.String(), n)
			if ref {
				want[i] = true
			}
			if got := p.Match(n); got != ref {
				t.Fatalf("Pattern(%q).Match(%q) = %v, reference says %v", p, n, got, ref)
			}
		}
		got := map[int32]bool{}
		set.match(n, func(r int32, p Pattern) bool {
			if p != pats[r] {
				t.Fatalf("domainSet.match(%q) reported pattern %q for rule %d, want %q", n, p, r, pats[r])
			}
			got[r] = true
			return true
		})
		if len(got) != len(want) {
			t.Fatalf("domainSet%v.match(%q) = %v, reference says %v", pats, n, got, want)
		}
		for r := range got {
			if !want[r] {
				t.Fatalf("domainSet%v.match(%q) = %v, reference says %v", pats, n, got, want)
			}
		}
	})
}
