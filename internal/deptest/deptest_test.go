package deptest

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// The fixtures in testdata: top → mid → leaf/inner → errors, top → strings;
// leaf exists but nothing imports it; osdep imports os/exec on Linux only.
const (
	fix   = "github.com/clawnet/clawnet/internal/deptest/testdata/"
	top   = fix + "top"
	mid   = fix + "mid"
	leaf  = fix + "leaf"
	inner = fix + "leaf/inner"
	osdep = fix + "osdep"
)

// fakeTB records what Check reports. Fatalf ends the goroutine as the real
// one does, so run calls Check on a goroutine of its own.
type fakeTB struct {
	testing.TB // nil: any method Check should not call panics
	errs       []string
	fatal      string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Logf(string, ...any)            {}
func (f *fakeTB) Errorf(format string, a ...any) { f.errs = append(f.errs, fmt.Sprintf(format, a...)) }
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.fatal = fmt.Sprintf(format, a...)
	runtime.Goexit()
}

func run(c DepChecker) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Check(f)
	}()
	<-done
	return f
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name  string
		c     DepChecker
		want  []string // substrings of the one error reported, in order; none: clean
		fatal string   // substring of the fatal message
	}{
		{
			name: "clean",
			c: DepChecker{Pkg: top,
				BadImports: map[string]string{"errors": "only transitive, so allowed", "os": "no I/O"},
				BadDeps:    map[string]string{"os/exec": "no processes", "example.invalid/": "prefix"},
				WantDeps:   []string{inner, "errors"}},
		},
		{
			name: "own import",
			c:    DepChecker{Pkg: top, BadImports: map[string]string{"strings": "why-strings"}},
			want: []string{top + ` imports "strings"`, "why-strings"},
		},
		{
			name: "subtree rule names the chain",
			c:    DepChecker{Pkg: top, BadDeps: map[string]string{leaf: "why-leaf"}},
			want: []string{`must not depend on "` + leaf + `"`, "why-leaf", top + " → " + mid + " → " + inner, "(1 forbidden package in all)"},
		},
		{
			name: "prefix rule names where the chain enters it",
			c:    DepChecker{Pkg: top, BadDeps: map[string]string{fix: "why-prefix"}},
			want: []string{"why-prefix", "\n\t" + top + " → " + mid + "\n", "(2 forbidden packages in all)"},
		},
		{
			name: "exact rule naming no package",
			c:    DepChecker{Pkg: top, BadDeps: map[string]string{fix + "gone": "renamed"}},
			want: []string{`rule "` + fix + `gone" names no package`, "blind"},
		},
		{
			name: "import rule naming no package",
			c:    DepChecker{Pkg: top, BadImports: map[string]string{"os/nosuch": ""}},
			want: []string{`rule "os/nosuch" names no package`},
		},
		{
			name: "wanted dependency missing",
			c:    DepChecker{Pkg: top, WantDeps: []string{leaf}},
			want: []string{`does not depend on "` + leaf + `"`, "blind"},
		},
		{
			name: "linux build",
			c:    DepChecker{Pkg: osdep, GOOS: "linux", BadDeps: map[string]string{"os/exec": "why-exec"}},
			want: []string{"GOOS=linux", osdep + " → os/exec"},
		},
		{
			name: "windows build",
			c:    DepChecker{Pkg: osdep, GOOS: "windows", GOARCH: "amd64", BadDeps: map[string]string{"os/exec": "why-exec"}},
		},
		{name: "no such package", c: DepChecker{Pkg: fix + "gone"}, fatal: "go list"},
		{name: "no package named", c: DepChecker{}, fatal: "name the package under test"},
		{name: "relative package", c: DepChecker{Pkg: "."}, fatal: "name the package under test"},
		{name: "pattern rule", c: DepChecker{Pkg: top, BadDeps: map[string]string{fix + "...": ""}}, fatal: "not patterns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := run(tt.c)
			if tt.fatal != "" || f.fatal != "" {
				if !strings.Contains(f.fatal, tt.fatal) || tt.fatal == "" {
					t.Fatalf("fatal = %q, want one containing %q", f.fatal, tt.fatal)
				}
				return
			}
			if len(tt.want) == 0 {
				if len(f.errs) != 0 {
					t.Fatalf("errors = %q, want none", f.errs)
				}
				return
			}
			if len(f.errs) != 1 {
				t.Fatalf("errors = %q, want exactly one", f.errs)
			}
			rest := f.errs[0]
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error = %q, want %q (after the earlier parts)", f.errs[0], w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestMatches(t *testing.T) {
	tests := []struct {
		rule, path string
		want       bool
	}{
		{"github.com/miekg/dns", "github.com/miekg/dns", true},
		{"github.com/miekg/dns", "github.com/miekg/dns/internal", true},
		{"github.com/miekg/dns", "github.com/miekg/dnsx", false},
		{"gvisor.dev/", "gvisor.dev/gvisor/pkg/tcpip", true},
		{"gvisor.dev/", "gvisor.devx/a", false},
		{"net", "net/netip", true},
		{"net", "netip", false},
		{"net", "", false},
	}
	for _, tt := range tests {
		if got := matches(tt.rule, tt.path); got != tt.want {
			t.Errorf("matches(%q, %q) = %v, want %v", tt.rule, tt.path, got, tt.want)
		}
	}
}
