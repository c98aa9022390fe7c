package resolvconf

import (
	"errors"
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

// chrooted starts a busybox sleep chrooted into root (which gets bin/busybox)
// and returns its PID; it is killed when t ends. It skips t without root
// or busybox.
func chrooted(t *testing.T, root string) int {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("chroot needs root")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox for the chrooted process")
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "busybox")); err != nil {
		data, err := os.ReadFile(bb)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(root, "bin"), 0o755)
		if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/bin/busybox", "sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Skipf("chroot: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// TestFixPIDStaysInRoot runs a process chrooted into a temp dir
// whose etc/resolv.conf is an absolute symlink: the rewrite must land inside
// that root, never on the host path the symlink names.
func TestFixPIDStaysInRoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	hostVictim := "/clawnet-test-victim-" + strconv.Itoa(os.Getpid())
	if _, err := os.Stat(hostVictim); err == nil {
		t.Fatalf("%s exists on the host", hostVictim)
	}
	os.WriteFile(filepath.Join(root, hostVictim), []byte("nameserver 127.0.0.11\n"), 0o644)
	os.Symlink(hostVictim, filepath.Join(root, "etc", "resolv.conf"))
	pid := chrooted(t, root)

	ch, err := FixPID(pid, gatewayDNS)
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

// TestFixPIDCreates: a root without resolv.conf (Podman's --network none, a
// scratch image) gets one naming the gateway, in that root, owned like its
// /etc and readable by all; a root without /etc gets both.
func TestFixPIDCreates(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mkEtc bool
		owner int
	}{
		{name: "no resolv.conf", mkEtc: true, owner: 1234},
		{name: "no /etc", mkEtc: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.mkEtc {
				os.MkdirAll(filepath.Join(root, "etc"), 0o755)
				os.Chown(filepath.Join(root, "etc"), tc.owner, tc.owner)
			}
			pid := chrooted(t, root)
			old := syscall.Umask(0o077) // the daemon's umask must not leak into the container
			ch, err := FixPID(pid, gatewayDNS)
			syscall.Umask(old)
			if err != nil || !ch.Created || !ch.Changed || ch.Missing {
				t.Fatalf("FixPID = %+v, %v; want created", ch, err)
			}
			p := filepath.Join(root, "etc", "resolv.conf")
			b, err := os.ReadFile(p)
			if err != nil || string(b) != "nameserver 100.96.0.1 # clawnet gateway\n" {
				t.Errorf("created file = %q, %v; want the gateway", b, err)
			}
			var st syscall.Stat_t
			syscall.Stat(p, &st)
			if st.Mode&0o777 != 0o644 || int(st.Uid) != tc.owner || int(st.Gid) != tc.owner {
				t.Errorf("created file mode %o owner %d:%d; want 644 %d:%d (like its /etc)", st.Mode&0o777, st.Uid, st.Gid, tc.owner, tc.owner)
			}
			syscall.Stat(filepath.Join(root, "etc"), &st)
			if st.Mode&0o777 != 0o755 {
				t.Errorf("/etc mode %o; want 755", st.Mode&0o777)
			}
			if got := Note(ch, err, gatewayDNS); got != "DNS: the agent had no /etc/resolv.conf; created one naming the gateway 100.96.0.1" {
				t.Errorf("Note = %q", got)
			}
			// Idempotent: the second fix finds a working file.
			if ch, err := FixPID(pid, gatewayDNS); err != nil || ch.Changed {
				t.Errorf("second FixPID = %+v, %v; want no change", ch, err)
			}
		})
	}
}

// TestFixPIDDanglingSymlink: a resolv.conf that is a symlink to nothing is
// not followed to create its target (even inside the root): left alone,
// with an error saying so.
func TestFixPIDDanglingSymlink(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(root, "etc", "resolv.conf"))
	pid := chrooted(t, root)
	ch, err := FixPID(pid, gatewayDNS)
	if err == nil || !ch.Missing || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("FixPID = %+v, %v; want a symlink error", ch, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "run")); err == nil {
		t.Error("the symlink's target directory was created")
	}
}

// TestFixPIDReadOnly: a read-only root is never an error when its file
// works, and otherwise says what to do.
func TestFixPIDReadOnly(t *testing.T) {
	for _, tc := range []struct {
		name, content string // "" content: no file
		wantErr       bool
		note          string
	}{
		{"working file", "nameserver 198.18.0.53\n", false, ""},
		{"loopback only", "nameserver 127.0.0.11\n", true,
			`DNS: the agent's /etc/resolv.conf names no resolver it can reach (127.0.0.11) and is read-only, so name lookups fail: mount a file holding "nameserver 100.96.0.1" there (run the container with -v FILE:/etc/resolv.conf:ro), or use clawnet run`},
		{"no file", "", true,
			`DNS: the agent has no /etc/resolv.conf and its root filesystem is read-only, so name lookups go to 127.0.0.1 and fail: mount a file holding "nameserver 100.96.0.1" there (run the container with -v FILE:/etc/resolv.conf:ro), or use clawnet run`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			os.MkdirAll(filepath.Join(src, "etc"), 0o755)
			if tc.content != "" {
				os.WriteFile(filepath.Join(src, "etc", "resolv.conf"), []byte(tc.content), 0o644)
			}
			chrooted(t, src) // installs busybox before the root turns read-only
			root := t.TempDir()
			if err := syscall.Mount(src, root, "", syscall.MS_BIND, ""); err != nil {
				t.Skipf("bind mount: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(root, syscall.MNT_DETACH) })
			if err := syscall.Mount("", root, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
				t.Fatalf("remount read-only: %v", err)
			}
			pid := chrooted(t, root)
			ch, err := FixPID(pid, gatewayDNS)
			if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, ErrReadOnly)) || ch.Changed {
				t.Fatalf("FixPID = %+v, %v; want error %v (read-only), no change", ch, err, tc.wantErr)
			}
			if got := Note(ch, err, gatewayDNS); got != tc.note {
				t.Errorf("Note = %q\nwant   %q", got, tc.note)
			}
			if b, _ := os.ReadFile(filepath.Join(src, "etc", "resolv.conf")); string(b) != tc.content {
				t.Errorf("file = %q; want it untouched", b)
			}
		})
	}
}

// TestFixPIDRefusesOwnRoot: a process whose root is ours (a host process,
// or a PID reused after its container stopped) names the host's own
// resolv.conf: refused, whatever it contains.
func TestFixPIDRefusesOwnRoot(t *testing.T) {
	_, err := FixPID(os.Getpid(), gatewayDNS)
	if !errors.Is(err, ErrSharedFilesystem) {
		t.Errorf("FixPID(self) = %v; want ErrSharedFilesystem", err)
	}
}

func TestNote(t *testing.T) {
	for _, tc := range []struct {
		ch   Change
		err  error
		want string
	}{
		{Change{}, nil, ""},
		{Change{Path: "/p", Changed: true, Dropped: []string{"127.0.0.11", "::1"}}, nil,
			"DNS: /p named resolvers the agent cannot reach (127.0.0.11, ::1); it now names the gateway 100.96.0.1"},
		{Change{Path: "/p", Changed: true}, nil, "DNS: /p named resolvers the agent cannot reach (none); it now names the gateway 100.96.0.1"},
		{Change{}, errors.New("open /p: permission denied"), "DNS: open /p: permission denied"},
	} {
		if got := Note(tc.ch, tc.err, gatewayDNS); got != tc.want {
			t.Errorf("Note(%+v, %v) = %q; want %q", tc.ch, tc.err, got, tc.want)
		}
	}
}
