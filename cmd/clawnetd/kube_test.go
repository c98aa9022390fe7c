package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestConnectKube: no --kubeconfig and no in-cluster environment: nothing
// Kubernetes runs; a bad kubeconfig is a one-line error naming the flag;
// a good one gives the node name from the flag, else $NODE_NAME.
func TestConnectKube(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	log := hclog.NewNullLogger()
	if k, err := connectKube(&flags{}, log); k != nil || err != nil {
		t.Errorf("no API server configured: %v, %v; want nil, nil", k, err)
	}
	bad := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(bad, []byte("clusters: [oops"), 0o600)
	if _, err := connectKube(&flags{kubeconfig: bad}, log); err == nil || !strings.HasPrefix(err.Error(), "--kubeconfig "+bad+": ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("bad kubeconfig: %v; want one line naming --kubeconfig", err)
	}
	good := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	t.Setenv("NODE_NAME", "from-env")
	k, err := connectKube(&flags{kubeconfig: good}, log)
	if err != nil || k == nil || k.node != "from-env" {
		t.Fatalf("good kubeconfig: %+v, %v; want node from-env", k, err)
	}
	if k, _ := connectKube(&flags{kubeconfig: good, nodeName: "n1"}, log); k.node != "n1" {
		t.Errorf("--node-name n1: node %q", k.node)
	}
}
