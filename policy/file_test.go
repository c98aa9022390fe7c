package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Each file in testdata/bad starts with "# error: <the exact error>".
func TestParseBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad fixtures: %v", err)
	}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(data), "\n")
		want, ok := strings.CutPrefix(first, "# error: ")
		if !ok {
			t.Errorf("%s: first line must be \"# error: <message>\"", path)
			continue
		}
		name := filepath.Base(path)
		f, err := Parse(name, data)
		if err == nil {
			_, err = Compile(f, Options{})
		}
		got := "<nil>"
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("Parse(%s) = %s\n                       want %s", name, got, want)
		}
		var pe *ParseError
		if err != nil && !errors.As(err, &pe) {
			t.Errorf("Parse(%s) error is %T, want *ParseError", name, err)
		}
		if strings.Contains(got, "\n") {
			t.Errorf("Parse(%s) error spans lines: %q", name, got)
		}
	}
}

func TestParseGood(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no good fixtures: %v", err)
	}
	for _, path := range files {
		p := mustLoad(t, path, Options{})
		if p.NumRules() == 0 {
			t.Errorf("Compile(%s) has no rules", path)
		}
	}
}

func TestParseCoder(t *testing.T) {
	data, err := os.ReadFile("testdata/good/coder.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse("/etc/clawnet/policies/coder.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != "v1" || f.Name != "coder" {
		t.Errorf("Parse(coder.yaml) version, name = %q, %q, want v1, coder", f.Version, f.Name)
	}
	if len(f.Presets) != 1 || f.Presets[0] != (PresetRef{"anthropic", 4}) {
		t.Errorf("Parse(coder.yaml).Presets = %v, want [{anthropic 4}]", f.Presets)
	}
	if len(f.Egress) != 2 || len(f.Deny) != 1 {
		t.Fatalf("Parse(coder.yaml) has %d egress, %d deny rules, want 2, 1", len(f.Egress), len(f.Deny))
	}
	e0, e1, d0 := f.Egress[0], f.Egress[1], f.Deny[0]
	if e0.Line != 6 || len(e0.Domains) != 2 || e0.Domains[1] != (Pattern{"githubusercontent.com", true}) {
		t.Errorf("Parse(coder.yaml).Egress[0] = %+v", e0)
	}
	wantPorts := []PortRange{{5432, 5432}, {8000, 8100}}
	if e1.Line != 8 || e1.Protocol != ProtoTCP || len(e1.Ports) != 2 || e1.Ports[0] != wantPorts[0] || e1.Ports[1] != wantPorts[1] ||
		len(e1.CIDRs) != 1 || e1.CIDRs[0] != netip.MustParsePrefix("10.20.0.0/16") {
		t.Errorf("Parse(coder.yaml).Egress[1] = %+v", e1)
	}
	if d0.Line != 12 || d0.Ports != nil || d0.Protocol != 0 {
		t.Errorf("Parse(coder.yaml).Deny[0] = %+v", d0)
	}
	p, err := Compile(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Rules are named by file base name and line, so explain output
	// points at the line whatever directory the file is in.
	d := p.DecideFlow(Flow{Proto: ProtoTCP, Dst: netip.MustParseAddrPort("10.20.1.1:5432")})
	if d.Rule != "coder.yaml:8 egress[1]" {
		t.Errorf("DecideFlow(10.20.1.1:5432).Rule = %q, want %q", d.Rule, "coder.yaml:8 egress[1]")
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in   string
		want PortRange
		err  bool
	}{
		{"443", PortRange{443, 443}, false},
		{"1", PortRange{1, 1}, false},
		{"65535", PortRange{65535, 65535}, false},
		{"8000-8100", PortRange{8000, 8100}, false},
		{"1-65535", PortRange{1, 65535}, false},
		{"80-80", PortRange{80, 80}, false},
		{"0", PortRange{}, true},
		{"65536", PortRange{}, true},
		{"-1", PortRange{}, true},
		{"100-99", PortRange{}, true},
		{"0-10", PortRange{}, true},
		{"http", PortRange{}, true},
		{"1-2-3", PortRange{}, true},
		{"", PortRange{}, true},
		{"+80", PortRange{}, true},
	}
	for _, tc := range tests {
		got, err := ParsePortRange(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParsePortRange(%q) = %v, %v, want %v, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"10.20.0.0/16", "10.20.0.0/16"},
		{"10.20.1.1", "10.20.1.1/32"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"0.0.0.0/0", "0.0.0.0/0"},
		{"10.20.1.0/16", ""},
		{"10.20.0.0/33", ""},
		{"fe80::1%eth0", ""},
		{"::ffff:10.0.0.1", ""},
		{"::ffff:10.0.0.0/104", ""},
		{"example.com", ""},
		{"", ""},
	}
	for _, tc := range tests {
		got, err := ParseCIDR(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseCIDR(%q) = %v, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseCIDR(%q) = %v, %v, want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestPortSet(t *testing.T) {
	s := normalizePorts([]PortRange{{8000, 8100}, {443, 443}, {444, 500}, {8050, 9000}})
	if got, want := s.String(), "ports 443-500,8000-9000"; got != want {
		t.Errorf("normalizePorts(...) = %s, want %s", got, want)
	}
	m := s.minus(portSet{{450, 460}, {8000, 8000}, {9000, 65535}})
	if got, want := m.String(), "ports 443-449,461-500,8001-8999"; got != want {
		t.Errorf("minus(...) = %s, want %s", got, want)
	}
	if got := allPorts.minus(allPorts); len(got) != 0 {
		t.Errorf("allPorts.minus(allPorts) = %v, want empty", got)
	}
	for _, c := range []struct {
		port uint16
		want bool
	}{{442, false}, {443, true}, {500, true}, {501, false}, {8999, true}, {9000, true}, {9001, false}} {
		if got := s.contains(c.port); got != c.want {
			t.Errorf("contains(%d) = %v, want %v", c.port, got, c.want)
		}
	}
}

func mustLoad(t testing.TB, path string, opts Options) *Policy {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(filepath.Base(path), data)
	if err != nil {
		t.Fatalf("Parse(%s) = %v", path, err)
	}
	p, err := Compile(f, opts)
	if err != nil {
		t.Fatalf("Compile(%s) = %v", path, err)
	}
	return p
}

// Unicode and punycode spellings in a file match either spelling at run time.
func TestParseIDNA(t *testing.T) {
	p := mustLoad(t, "testdata/good/idna.yaml", Options{})
	for _, tc := range []struct {
		name string
		want Verdict
	}{
		{"bücher.example", Allow},
		{"xn--bcher-kva.example", Allow},
		{"XN--BCHER-KVA.EXAMPLE.", Allow},
		{"www.école.example", Allow},
		{"a.b.xn--cole-9oa.example", Allow},
		{"école.example", Deny}, // the wildcard is not the apex
		{"münchen.example", Allow},
		{"MÜNCHEN.example", Allow},
		{"munchen.example", Deny},
		{"bucher.example", Deny},
	} {
		if d := p.DecideName(tc.name, ProtoTCP, 443); d.Verdict != tc.want {
			t.Errorf("DecideName(%q, tcp, 443) = %v, want %v", tc.name, d, tc.want)
		}
	}
}
