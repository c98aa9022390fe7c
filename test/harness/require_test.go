package harness

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestCheckHost checks RequireRoot's decision on hosts made up for the
// test: the tier skips only when nobody asked for it, and once asked for it
// fails (never skips) when anything it needs is missing, naming what.
func TestCheckHost(t *testing.T) {
	type state struct {
		env               map[string]string
		euid              int
		noTUN, noIP, noNS bool
	}
	hostOf := func(s state) host {
		return host{
			getenv:  func(k string) string { return s.env[k] },
			geteuid: func() int { return s.euid },
			stat: func(p string) (os.FileInfo, error) {
				if p != "/dev/net/tun" {
					t.Errorf("checkHost looked at %s", p)
				}
				if s.noTUN {
					return nil, os.ErrNotExist
				}
				return nil, nil
			},
			lookPath: func(cmd string) (string, error) {
				if (cmd == "ip" && s.noIP) || (cmd == "nsenter" && s.noNS) {
					return "", errors.New("executable file not found in $PATH")
				}
				return "/usr/bin/" + cmd, nil
			},
		}
	}
	asked := map[string]string{EnvIntegration: "1"}
	for _, tc := range []struct {
		name string
		s    state
		want hostVerdict
		// mention must all be in the reason; absent must not be.
		mention, absent []string
	}{
		{"not asked, all there", state{}, hostSkip, []string{EnvIntegration + "=1"}, nil},
		{"not asked, nothing there", state{euid: 1000, noTUN: true, noIP: true, noNS: true}, hostSkip, []string{EnvIntegration + "=1"}, nil},
		{"asked with 0", state{env: map[string]string{EnvIntegration: "0"}}, hostSkip, nil, nil},
		{"asked, all there", state{env: asked}, hostRun, nil, nil},
		{"asked, not root", state{env: asked, euid: 1000}, hostFail, []string{"missing: root (euid 0)"}, []string{"/dev/net/tun", "the ip", "nsenter command"}},
		{"asked, no TUN device", state{env: asked, noTUN: true}, hostFail, []string{"missing: /dev/net/tun"}, []string{"root (", "the ip", "the nsenter"}},
		{"asked, no ip", state{env: asked, noIP: true}, hostFail, []string{"the ip command"}, []string{"root (", "the nsenter"}},
		{"asked, no nsenter", state{env: asked, noNS: true}, hostFail, []string{"the nsenter command"}, []string{"root (", "the ip"}},
		{"asked, nothing there", state{env: asked, euid: 1000, noTUN: true, noIP: true, noNS: true}, hostFail,
			[]string{"root (euid 0)", "/dev/net/tun", "the ip command", "the nsenter command"}, nil},
		{"Docker tier asked, no ip", state{env: map[string]string{envDockerTests: "1"}, noIP: true}, hostFail, []string{envDockerTests + "=1", "the ip command"}, nil},
		{"Podman tier asked, no ip", state{env: map[string]string{envPodmanTests: "1"}, noIP: true}, hostFail, []string{envPodmanTests + "=1", "the ip command"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := checkHost(hostOf(tc.s))
			if got != tc.want {
				t.Fatalf("verdict %d (%q), want %d", got, why, tc.want)
			}
			if got != hostRun && (why == "" || strings.Contains(why, "\n")) {
				t.Errorf("reason %q, want one line", why)
			}
			for _, m := range tc.mention {
				if !strings.Contains(why, m) {
					t.Errorf("reason %q does not mention %q", why, m)
				}
			}
			for _, m := range tc.absent {
				if strings.Contains(why, m) {
					t.Errorf("reason %q mentions %q, which is there", why, m)
				}
			}
		})
	}
}

// verdictTB records how a test ended: Skip and Fatal stop the goroutine,
// as testing's own do.
type verdictTB struct {
	testing.TB
	skipped, failed string
}

func (v *verdictTB) Helper() {}
func (v *verdictTB) Skip(args ...any) {
	v.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (v *verdictTB) Fatal(args ...any) {
	v.failed = fmt.Sprint(args...)
	runtime.Goexit()
}

// TestRequireHostFails checks that the verdict reaches the test: asked for
// on a host without ip, a root-only test fails with the reason instead of
// skipping; not asked for, it skips.
func TestRequireHostFails(t *testing.T) {
	noIP := func(env string) host {
		return host{
			getenv:   func(k string) string { return map[string]string{EnvIntegration: env}[k] },
			geteuid:  func() int { return 0 },
			stat:     func(string) (os.FileInfo, error) { return nil, nil },
			lookPath: func(cmd string) (string, error) { return "", errors.New("not found") },
		}
	}
	run := func(h host) *verdictTB {
		v := &verdictTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			requireHost(v, h)
		}()
		<-done
		return v
	}
	if v := run(noIP("1")); v.failed == "" || v.skipped != "" {
		t.Errorf("asked for without ip: failed %q, skipped %q; want a failure", v.failed, v.skipped)
	} else if !strings.Contains(v.failed, "the ip command") {
		t.Errorf("failure %q does not name the ip command", v.failed)
	}
	if v := run(noIP("")); v.skipped == "" || v.failed != "" {
		t.Errorf("not asked for: failed %q, skipped %q; want a skip", v.failed, v.skipped)
	}
}
