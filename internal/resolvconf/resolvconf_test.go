package resolvconf

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

var gatewayDNS = netip.MustParseAddr("100.96.0.1")

func TestRewrite(t *testing.T) {
	gw := gatewayDNS
	tests := []struct {
		name, in, want string
		dropped        []string
		changed        bool
	}{
		{"reachable kept", "nameserver 198.18.0.53\n", "nameserver 198.18.0.53\n", nil, false},
		{"private kept (the gateway answers any port 53)", "nameserver 10.255.255.53\nnameserver 10.255.255.53\n",
			"nameserver 10.255.255.53\nnameserver 10.255.255.53\n", nil, false},
		{"docker embedded", "nameserver 127.0.0.11\noptions ndots:0\n",
			"# clawnet: nameserver 127.0.0.11 (unreachable through the gateway)\noptions ndots:0\nnameserver 100.96.0.1 # clawnet gateway\n",
			[]string{"127.0.0.11"}, true},
		{"systemd stub, no newline", "search a.test\nnameserver 127.0.0.53",
			"search a.test\n# clawnet: nameserver 127.0.0.53 (unreachable through the gateway)\nnameserver 100.96.0.1 # clawnet gateway\n",
			[]string{"127.0.0.53"}, true},
		{"mixed keeps the reachable one", "nameserver ::1\nnameserver 2001:db8::53\n",
			"# clawnet: nameserver ::1 (unreachable through the gateway)\nnameserver 2001:db8::53\n",
			[]string{"::1"}, true},
		{"mapped loopback", "nameserver ::ffff:127.0.0.1\n",
			"# clawnet: nameserver ::ffff:127.0.0.1 (unreachable through the gateway)\nnameserver 100.96.0.1 # clawnet gateway\n",
			[]string{"::ffff:127.0.0.1"}, true},
		{"zoned link-local", "nameserver fe80::1%eth0\n",
			"# clawnet: nameserver fe80::1%eth0 (unreachable through the gateway)\nnameserver 100.96.0.1 # clawnet gateway\n",
			[]string{"fe80::1%eth0"}, true},
		{"unspecified", "nameserver 0.0.0.0\n",
			"# clawnet: nameserver 0.0.0.0 (unreachable through the gateway)\nnameserver 100.96.0.1 # clawnet gateway\n",
			[]string{"0.0.0.0"}, true},
		{"no nameserver means 127.0.0.1", "search a.test\n", "search a.test\nnameserver 100.96.0.1 # clawnet gateway\n", nil, true},
		{"empty", "", "nameserver 100.96.0.1 # clawnet gateway\n", nil, true},
		{"garbage left alone", "nameserver not-an-ip\n", "nameserver not-an-ip\n", nil, false},
	}
	for _, tt := range tests {
		out, dropped, changed := Rewrite([]byte(tt.in), gw)
		if string(out) != tt.want || !reflect.DeepEqual(dropped, tt.dropped) || changed != tt.changed {
			t.Errorf("Rewrite(%s) = %q, %v, %v; want %q, %v, %v", tt.name, out, dropped, changed, tt.want, tt.dropped, tt.changed)
		}
	}
}

func FuzzRewrite(f *testing.F) {
	f.Add("nameserver 127.0.0.11\noptions ndots:0\n")
	f.Add("search x\nnameserver ::1\nnameserver 8.8.8.8")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		gw := netip.MustParseAddr("100.96.0.1")
		out, _, changed := Rewrite([]byte(in), gw)
		// Idempotent, and what comes out always has a usable nameserver.
		out2, _, changed2 := Rewrite(out, gw)
		if changed2 {
			t.Fatalf("second rewrite changed %q into %q", out, out2)
		}
		if !changed && string(out) != in {
			t.Fatalf("unchanged but different: %q -> %q", in, out)
		}
		usable := false
		for _, ln := range strings.Split(string(out), "\n") {
			f := strings.Fields(ln)
			if len(f) >= 2 && f[0] == "nameserver" && nameserverReachable(f[1]) {
				usable = true
			}
		}
		if !usable {
			t.Fatalf("no usable nameserver in %q", out)
		}
	})
}

// TestFixPIDStaysInRoot runs a process chrooted into a temp dir
// whose etc/resolv.conf is an absolute symlink: the rewrite must land inside
// that root, never on the host path the symlink names.
func TestFixPIDStaysInRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chroot needs root")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox for the chrooted process")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755)
	hostVictim := "/clawnet-test-victim-" + strconv.Itoa(os.Getpid())
	if _, err := os.Stat(hostVictim); err == nil {
		t.Fatalf("%s exists on the host", hostVictim)
	}
	os.WriteFile(filepath.Join(root, hostVictim), []byte("nameserver 127.0.0.11\n"), 0o644)
	os.Symlink(hostVictim, filepath.Join(root, "etc", "resolv.conf"))
	cmd := exec.Command("/bin/busybox", "sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Skipf("chroot: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	ch, err := FixPID(cmd.Process.Pid, gatewayDNS)
	if err != nil || !ch.Changed {
		t.Fatalf("FixPID = %+v, %v; want changed", ch, err)
	}
	b, _ := os.ReadFile(filepath.Join(root, hostVictim))
	if !strings.Contains(string(b), "nameserver 100.96.0.1") {
		t.Errorf("in-root file = %q; want the gateway", b)
	}
	if _, err := os.Stat(hostVictim); err == nil {
		os.Remove(hostVictim)
		t.Errorf("%s was created on the host", hostVictim)
	}
}
