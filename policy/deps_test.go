package policy

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The package must stay pure: decisions in microseconds, no I/O, no clock,
// nothing of the netstack. Its own files may not import these...
var forbiddenImports = []string{
	"crypto/rand", "embed", "io/fs", "io/ioutil", "log", "log/slog",
	"math/rand", "math/rand/v2", "net", "net/http", "os", "os/exec",
	"os/signal", "path/filepath", "plugin", "syscall", "time", "unsafe",
}

// ...and nothing it pulls in, however indirectly, may be one of these.
var forbiddenDeps = []string{
	"gvisor.dev/", "golang.zx2c4.com/", "github.com/vishvananda/",
	"github.com/miekg/dns", "github.com/hashicorp/", "os/exec",
	"github.com/clawnet/clawnet/gateway", "github.com/clawnet/clawnet/netstack",
	"github.com/clawnet/clawnet/tun",
}

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

func TestPure(t *testing.T) {
	direct := goList(t, "-f", `{{join .Imports "\n"}}`, ".")
	if !slices.Contains(direct, "gopkg.in/yaml.v3") {
		t.Fatalf("go list -f {{.Imports}} = %v, does not list gopkg.in/yaml.v3: the check is blind", direct)
	}
	for _, imp := range direct {
		if slices.Contains(forbiddenImports, imp) {
			t.Errorf("policy imports %q: it must do no I/O and read no clock", imp)
		}
	}
	deps := goList(t, "-deps", "-f", "{{.ImportPath}}", ".")
	if !slices.Contains(deps, "golang.org/x/net/idna") {
		t.Fatalf("go list -deps = %v, does not list golang.org/x/net/idna: the check is blind", deps)
	}
	for _, d := range deps {
		for _, bad := range forbiddenDeps {
			if d == bad || strings.HasPrefix(d, bad) && (strings.HasSuffix(bad, "/") || strings.HasPrefix(d, bad+"/")) {
				t.Errorf("policy depends on %q (forbidden: %q)", d, bad)
			}
		}
	}
}
