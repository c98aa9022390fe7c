package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// envAsPlugin makes the test binary run as the plugin, so that tests can
// call it as a runtime does: environment, stdin, stdout and exit code.
const envAsPlugin = "CLAWNET_CNI_TEST_AS_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(envAsPlugin) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// exitStatus is what one call of the plugin binary did.
type exitStatus struct {
	code   int
	stdout string
	stderr string
}

// runPlugin calls the plugin as a runtime would: CNI_* from env, the
// configuration on stdin.
func runPlugin(t *testing.T, env map[string]string, stdin []byte) exitStatus {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	// A race-enabled binary sleeps a second at exit unless told not to.
	cmd.Env = []string{envAsPlugin + "=1", "PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	st := exitStatus{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		st.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run the plugin: %v", err)
	}
	return st
}

func cniEnv(cmd, id, netns, args string) map[string]string {
	return map[string]string{"CNI_COMMAND": cmd, "CNI_CONTAINERID": id, "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_ARGS": args, "CNI_PATH": "/opt/cni/bin"}
}

func TestBinaryAsARuntimeCallsIt(t *testing.T) {
	w := newWorld(t)
	// podman: VERSION first, with a dummy namespace and a bare stdin.
	st := runPlugin(t, map[string]string{"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy"}, []byte(`{"cniVersion":"1.0.0"}`))
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if st.code != 0 || json.Unmarshal([]byte(st.stdout), &v) != nil || !strings.Contains(strings.Join(v.Supported, ","), "1.0.0") {
		t.Errorf("VERSION = %+v; want supportedVersions with 1.0.0", st)
	}

	st = runPlugin(t, cniEnv("ADD", "c1", "/run/netns/netns-1", "IgnoreUnknown=1;K8S_POD_NAME=agent-pm"), w.conf(""))
	if st.code != 0 || !strings.Contains(st.stdout, `"name": "eth0"`) || !strings.Contains(st.stdout, `"mac": "00:00:00:00:00:00"`) {
		t.Fatalf("ADD = %+v; want a result with eth0 and the zero MAC", st)
	}
	w.wantAgents("agent-pm")

	// CHECK with the result as prevResult, as cnitool sends it.
	st = runPlugin(t, cniEnv("CHECK", "c1", "/run/netns/netns-1", ""), w.conf(`"prevResult":`+st.stdout))
	if st.code != 0 {
		t.Errorf("CHECK = %+v; want success", st)
	}

	for _, netns := range []string{"/run/netns/netns-1", ""} {
		if st := runPlugin(t, cniEnv("DEL", "c1", netns, ""), w.conf("")); st.code != 0 {
			t.Errorf("DEL with CNI_NETNS=%q = %+v; want success", netns, st)
		}
	}
	w.wantAgents()

	w.d.stop()
	st = runPlugin(t, cniEnv("ADD", "c2", "/run/netns/netns-2", ""), w.conf(""))
	var e struct {
		Code uint   `json:"code"`
		Msg  string `json:"msg"`
	}
	if st.code == 0 || json.Unmarshal([]byte(st.stdout), &e) != nil || e.Code != 11 || !strings.Contains(e.Msg, "clawnetd is not running") {
		t.Errorf("ADD without clawnetd = %+v; want exit 1 and the error JSON with code 11 (try again later)", st)
	}
	if st := runPlugin(t, cniEnv("DEL", "c2", "", ""), w.conf("")); st.code != 0 {
		t.Errorf("DEL without clawnetd = %+v; want success", st)
	}
}
