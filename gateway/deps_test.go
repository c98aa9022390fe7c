package gateway

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The daemon's wiring lives in cmd/clawnetd: the gateway parses no flags,
// installs no signal handlers and reaches the container engine only through
// its ContainerResolver and ContainerFollower interfaces.
var forbiddenDeps = []string{"flag", "os/signal", "github.com/clawnet/clawnet/container"}

func TestNoDaemonWiring(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to list imports: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/clawnet/clawnet/tun") {
		t.Fatalf("go list -deps = %v, does not list the tun package: the check is blind", deps)
	}
	for _, bad := range forbiddenDeps {
		if slices.Contains(deps, bad) {
			t.Errorf("gateway depends on %q: the daemon's wiring belongs in cmd/clawnetd", bad)
		}
	}
}
