package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any bytes give either a policy that compiles or one
// *ParseError of one line naming the file; never a panic.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*/*.yaml")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version: v1\nname: x\negress:\n  - cidrs: [10.0.0.0/8]\n    ports: [1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error is %T, want *ParseError: %v", err, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "fuzz.yaml:") || strings.Contains(msg, "\n") || strings.Contains(msg, "%!") {
				t.Fatalf("Parse error %q does not start with the file name on one line", msg)
			}
			return
		}
		p, err := Compile(file, Options{})
		if err != nil {
			t.Fatalf("Parse accepted a file that Compile refuses: %v", err)
		}
		for _, a := range []string{"10.1.2.3:443", "8.8.8.8:53", "[::ffff:10.0.0.1]:80", "[2001:db8::1]:443", "169.254.169.254:80"} {
			for _, proto := range []Proto{ProtoTCP, ProtoUDP} {
				d := p.DecideFlow(Flow{Proto: proto, Dst: netip.MustParseAddrPort(a), Names: []string{"api.example.com", "x.y"}})
				if d.Rule == "" || d.Reason == "" {
					t.Fatalf("DecideFlow(%s) = %v, no rule or reason", a, d)
				}
				if strings.HasPrefix(a, "169.254.169.254") && d.Allowed() {
					t.Fatalf("DecideFlow(%s) = %v, metadata must never be allowed", a, d)
				}
			}
		}
		for _, n := range []string{"api.example.com", "a.b.c", "example.com"} {
			p.DecideQuery(n)
			p.DecideName(n, ProtoTCP, 443)
			Explain(p, ProtoTCP, n, 0)
		}
	})
}
