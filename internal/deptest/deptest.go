// Package deptest keeps the layering between clawnet's packages true by test:
// a package states what it must never import and why, and DepChecker.Check
// fails naming each forbidden package with the import chain that brings it in.
//
// A rule that names a package which no longer exists fails too, so a rename
// cannot leave a check silently blind; WantDeps guards the listing itself.
// The model is tailscale's tstest/deptest. Only tests import this package.
package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// DepChecker states what one package may not import. It lists the package
// with `go list -deps`, so it sees exactly what a build for GOOS/GOARCH/Tags
// links in, test-only imports excluded.
type DepChecker struct {
	Pkg    string // import path of the package under test (required)
	GOOS   string // optional: list the build for this OS, not the host's
	GOARCH string // optional
	Tags   string // optional: comma-separated build tags

	// BadImports are forbidden in the package's own files only, exact paths,
	// each with why. For what its dependencies may still use (e.g. "os").
	BadImports map[string]string

	// BadDeps are forbidden anywhere in the dependency graph, each with why.
	// "a/b" forbids the package a/b and every package under a/b/ (so "net"
	// forbids "net/netip" too: forbid std leaves, or use BadImports), and
	// must name a package that exists; "a/" (trailing slash) forbids every
	// path with that prefix and is not checked for existence.
	BadDeps map[string]string

	// WantDeps must each be in the dependency graph: if one is missing, the
	// listing is not seeing what the test author expected.
	WantDeps []string
}

// listed is what the checker reads of one package from `go list -json`.
type listed struct {
	ImportPath string
	Imports    []string
}

// Check lists c.Pkg and reports every broken rule on t; it stops early only
// when the package cannot be listed at all.
func (c DepChecker) Check(t testing.TB) {
	t.Helper()
	if c.Pkg == "" || strings.HasPrefix(c.Pkg, ".") {
		t.Fatalf("deptest: DepChecker.Pkg = %q; name the package under test by its import path", c.Pkg)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("deptest: the go tool is needed to list imports: %v", err)
	}
	for _, p := range c.missing(t, goTool) {
		t.Errorf("deptest: rule %q names no package for %s (renamed or removed?): the check would be blind; fix the rule", p, c.env())
	}
	pkgs, err := c.list(goTool, "-deps", "-json=ImportPath,Imports", c.Pkg)
	if err != nil {
		t.Fatalf("deptest: %v", err)
	}
	graph, err := decode(pkgs)
	if err != nil {
		t.Fatalf("deptest: go list -deps %s: %v", c.Pkg, err)
	}
	root, ok := graph[c.Pkg]
	if !ok {
		t.Fatalf("deptest: go list -deps %s did not list the package itself: the check is blind", c.Pkg)
	}
	for _, imp := range root.Imports {
		if why, bad := c.BadImports[imp]; bad {
			t.Errorf("%s imports %q (%s): %s", c.Pkg, imp, c.env(), why)
		}
	}
	parent := shortestParents(graph, c.Pkg)
	for _, rule := range sortedKeys(c.BadDeps) {
		if msg := c.violation(rule, graph, parent); msg != "" {
			t.Errorf("%s", msg)
		}
	}
	for _, want := range c.WantDeps {
		if _, ok := graph[want]; !ok {
			t.Errorf("deptest: %s does not depend on %q (%s): the listing is blind, or the dependency went away and WantDeps needs updating", c.Pkg, want, c.env())
		}
	}
	t.Logf("%s: %d packages checked (%s)", c.Pkg, len(graph), c.env())
}

// violation describes how the graph breaks one BadDeps rule, or returns "".
// It names the packages where the chain first enters forbidden ground, since
// everything under them (a whole gVisor, say) is noise.
func (c DepChecker) violation(rule string, graph map[string]listed, parent map[string]string) string {
	var entries []string
	total := 0
	for _, p := range sortedKeys(graph) {
		if p == c.Pkg || !matches(rule, p) {
			continue
		}
		total++
		if parent[p] == c.Pkg || !matches(rule, parent[p]) {
			entries = append(entries, strings.Join(chain(parent, p), " → "))
		}
	}
	if total == 0 {
		return ""
	}
	const shown = 5
	var b strings.Builder
	fmt.Fprintf(&b, "%s must not depend on %q (%s): %s; it does:", c.Pkg, rule, c.env(), c.BadDeps[rule])
	slices.SortStableFunc(entries, func(a, b string) int { return len(a) - len(b) })
	for i, e := range entries {
		if i == shown {
			fmt.Fprintf(&b, "\n\t… and %d more", len(entries)-shown)
			break
		}
		fmt.Fprintf(&b, "\n\t%s", e)
	}
	plural := "s"
	if total == 1 {
		plural = ""
	}
	fmt.Fprintf(&b, "\n\t(%d forbidden package%s in all)", total, plural)
	return b.String()
}

// missing returns the exact rule paths (BadImports, and BadDeps without a
// trailing slash) that name no package: go list finds no directory for them.
func (c DepChecker) missing(t testing.TB, goTool string) []string {
	t.Helper()
	var exact []string
	for _, p := range append(sortedKeys(c.BadImports), sortedKeys(c.BadDeps)...) {
		if strings.Contains(p, "...") || strings.HasPrefix(p, ".") {
			t.Fatalf("deptest: rule %q: rules are import paths, not patterns or relative paths", p)
		}
		if !strings.HasSuffix(p, "/") && !slices.Contains(exact, p) {
			exact = append(exact, p)
		}
	}
	if len(exact) == 0 {
		return nil
	}
	// -e: a missing package is reported in the listing, not as a failure.
	// A package whose files the build constraints exclude still has a Dir.
	out, err := c.list(goTool, append([]string{"-e", "-f", "{{.ImportPath}}\t{{.Dir}}"}, exact...)...)
	if err != nil {
		t.Fatalf("deptest: %v", err)
	}
	var gone []string
	for line := range strings.Lines(string(out)) {
		path, dir, _ := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		if dir == "" {
			gone = append(gone, path)
		}
	}
	return gone
}

// list runs go list for the checker's platform and tags.
func (c DepChecker) list(goTool string, args ...string) ([]byte, error) {
	if c.Tags != "" {
		args = append([]string{"-tags=" + c.Tags}, args...)
	}
	cmd := exec.Command(goTool, append([]string{"list"}, args...)...)
	cmd.Env = os.Environ()
	if c.GOOS != "" {
		cmd.Env = append(cmd.Env, "GOOS="+c.GOOS)
	}
	if c.GOARCH != "" {
		cmd.Env = append(cmd.Env, "GOARCH="+c.GOARCH)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list %s (%s): %w\n%s", strings.Join(args, " "), c.env(), err, stderr.Bytes())
	}
	return out, nil
}

// env names the platform the check ran for, for failure messages.
func (c DepChecker) env() string {
	s := "GOOS=" + or(c.GOOS, "host") + " GOARCH=" + or(c.GOARCH, "host")
	if c.Tags != "" {
		s += " tags=" + c.Tags
	}
	return s
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// decode reads the stream of JSON objects `go list -json` prints.
func decode(out []byte) (map[string]listed, error) {
	graph := make(map[string]listed)
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return graph, nil
		}
		if err != nil {
			return nil, err
		}
		graph[p.ImportPath] = p
	}
}

// shortestParents walks the graph breadth-first from root, so each package's
// recorded parent lies on a shortest import chain from root.
func shortestParents(graph map[string]listed, root string) map[string]string {
	parent := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range graph[p].Imports {
			if _, seen := parent[imp]; !seen {
				parent[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return parent
}

// chain is the import chain from the root to p.
func chain(parent map[string]string, p string) []string {
	var c []string
	for ; p != ""; p = parent[p] {
		c = append(c, p)
	}
	slices.Reverse(c)
	return c
}

// matches reports whether path falls under rule: "a/" is a prefix, "a/b" is
// the package and its subtree (so ".../miekg/dns" does not catch ".../miekg/dnsx",
// but "net" does catch "net/netip").
func matches(rule, path string) bool {
	if path == "" {
		return false
	}
	if strings.HasSuffix(rule, "/") {
		return strings.HasPrefix(path, rule)
	}
	return path == rule || strings.HasPrefix(path, rule+"/")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
