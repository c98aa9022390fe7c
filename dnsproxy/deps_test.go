package dnsproxy

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The answer path needs the policy decider, miekg/dns and netip. Nothing it
// (or its test helpers) pulls in, however indirectly, may be the packet
// path, the container client or the gateway it serves. Each entry names a
// package that must exist, so that a rename cannot make the check pass
// blind; a trailing slash forbids everything under the prefix.
var forbiddenDeps = []struct{ prefix, exists string }{
	{"gvisor.dev/", "gvisor.dev/gvisor/pkg/tcpip/stack"},
	{"github.com/clawnet/clawnet/netstack", "github.com/clawnet/clawnet/netstack"},
	{"github.com/clawnet/clawnet/tun", "github.com/clawnet/clawnet/tun"},
	{"github.com/clawnet/clawnet/gateway", "github.com/clawnet/clawnet/gateway"},
	{"github.com/clawnet/clawnet/container", "github.com/clawnet/clawnet/container"},
}

// goList runs go list with args and returns its output, split on spaces.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list imports: %v", err)
	}
	out, err := exec.Command(goTool, append([]string{"list"}, args...)...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list %v: %v\n%s", args, err, msg)
	}
	return strings.Fields(string(out))
}

// forbidden reports whether the package dep falls under prefix.
func forbidden(dep, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(dep, prefix)
	}
	return dep == prefix || strings.HasPrefix(dep, prefix+"/")
}

func TestDeps(t *testing.T) {
	for _, f := range forbiddenDeps {
		if !forbidden(f.exists, f.prefix) {
			t.Fatalf("%s is not under %s: the check is blind", f.exists, f.prefix)
		}
		// Without -e, go list fails on a package that does not exist.
		goList(t, "-f", "{{.ImportPath}}", f.exists)
	}
	for _, pkg := range []string{".", "./dnstest"} {
		deps := goList(t, "-deps", "-f", "{{.ImportPath}}", pkg)
		for _, want := range []string{"github.com/miekg/dns", "github.com/clawnet/clawnet/policy"} {
			if !slices.Contains(deps, want) {
				t.Fatalf("go list -deps %s = %v, does not list %s: the check is blind", pkg, deps, want)
			}
		}
		for _, d := range deps {
			for _, f := range forbiddenDeps {
				if forbidden(d, f.prefix) {
					t.Errorf("%s depends on %q (forbidden: %q)", pkg, d, f.prefix)
				}
			}
		}
	}
}
