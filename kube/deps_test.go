package kube

import (
	"testing"

	"github.com/clawnet/clawnet/internal/deptest"
)

// TestLean: the package, and so clawnetd on every host, pulls in no
// built-in API type and no typed client: those register every API group at
// start, which cost clawnetd 15 MB of binary and 14 MB of idle memory.
func TestLean(t *testing.T) {
	const lean = "the dynamic client reads what kube needs; typed clients bring every built-in API type"
	deptest.DepChecker{
		Pkg: "github.com/clawnet/clawnet/kube",
		BadDeps: map[string]string{
			"k8s.io/api/":                              lean,
			"k8s.io/client-go/kubernetes":              lean,
			"k8s.io/client-go/informers":               lean,
			"k8s.io/client-go/dynamic/dynamicinformer": lean,
		},
		WantDeps: []string{"k8s.io/client-go/dynamic", "github.com/clawnet/clawnet/policy"},
	}.Check(t)
}
