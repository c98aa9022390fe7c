package integration_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// revokeWithin is how soon a tightened policy must have closed the live
// flows it denies, counted from the edit of its file.
const revokeWithin = time.Second

// revocable allows TCP echo and source and UDP echo anywhere on the test
// internet; tightened, it also denies the primary server.
func revocable(tightened bool) policy {
	return func(in *harness.Internet) (string, string) {
		body := fmt.Sprintf(`version: v1
name: revocable
egress:
  - cidrs: [%q, %q]
    ports: [7, 19]
  - cidrs: [%q, %q]
    ports: [7]
    protocol: udp
`, in.Net4, in.Net6, in.Net4, in.Net6)
		if tightened {
			body += fmt.Sprintf("deny:\n  - cidrs: [%q, %q]\n", netip.PrefixFrom(in.Server4, 32), netip.PrefixFrom(in.Server6, 128))
		}
		return "revocable", body
	}
}

// TestRevokeOnPolicyEdit (DESIGN.md invariant 9): editing a policy file in
// policy_dir, with no command, so that it denies a live TCP download and
// a live UDP flow resets the download and closes the UDP flow within a
// second, each with a revoke audit line naming the new rule. The canary
// saw its connection reset mid-stream, and nothing the agent sent on the
// UDP socket afterwards; the daemon logged the count.
func TestRevokeOnPolicyEdit(t *testing.T) {
	e := newEnv(t, revocable(false))
	a := e.attach("revoked", "revocable")
	srv := e.in.Server4

	// A download that is moving when the edit lands.
	dl, ended := a.movingDownload(t, ap(srv, 19), "before the edit")
	udp := a.dial(t, "udp", ap(srv, 7))
	if got, err := harness.UDPExchange(udp, []byte("before the edit"), 5*time.Second); err != nil || string(got) != "before the edit" {
		t.Fatalf("UDP echo before the edit: %q, %v", got, err)
	}

	name, body := revocable(true)(e.in)
	start := time.Now()
	if err := os.WriteFile(filepath.Join(e.d.PolicyDir, name+".yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	waitReset(t, ended, start, "the download", "the edit")
	revoked := func(proto string, src netip.AddrPort) harness.AuditEntry {
		t.Helper()
		l := e.d.WaitAudit(t, time.Until(start.Add(revokeWithin)), "a revoke line for the "+proto+" flow", func(l harness.AuditEntry) bool {
			return l.Event == "revoke" && l.Proto == proto && l.SrcAddr() == src
		})
		if l.Verdict != "deny" || !strings.Contains(l.Rule, "revocable.yaml") || !strings.Contains(l.Rule, "deny[0]") || l.DstAddr() != ap(srv, l.DstAddr().Port()) {
			t.Errorf("revoke line = %s, want a deny by the new rule", l.Line)
		}
		return l
	}
	revoked("tcp", localOf(dl))
	revoked("udp", localOf(udp))

	// The far side: the source's connection was reset in the middle of
	// its gigabyte.
	ce := e.in.WaitFor(t, 5*time.Second, "the source's close line", func(ce canarylog.Entry) bool {
		return ce.Service == canarylog.ServiceSource && ce.Event == canarylog.EventClose && ce.Requested == 1000000000
	})
	if ce.Error == "" || ce.BytesOut >= ce.Requested {
		t.Errorf("canary source closed with error %q after %d of %d bytes, want a reset mid-stream", ce.Error, ce.BytesOut, ce.Requested)
	}

	// The UDP flow is gone: the socket's next datagram is a new flow,
	// refused, and never reaches the canary.
	mark := e.in.Mark()
	after := []byte("after the revocation " + uniq())
	if got, err := harness.UDPExchange(udp, after, 5*time.Second); !harness.IsRefused(err) {
		t.Errorf("a datagram after the revocation: %q, %v; want a port unreachable", got, err)
	}
	sentinel := a.udpSentinel(t, ap(e.in.Addr4(4), 7))
	e.in.NeverSawBefore(t, mark, sentinelWithin, "the UDP sentinel", sentinel, "the datagram sent after the revocation",
		func(ce canarylog.Entry) bool { return ce.SHA256 == canarylog.Digest(after) })

	var line string
	harness.Poll(5*time.Second, 20*time.Millisecond, func() bool {
		for _, l := range strings.Split(e.d.LogTail(200), "\n") {
			if strings.Contains(l, `"live flows revoked"`) {
				line = l
			}
		}
		return line != ""
	})
	if !strings.Contains(line, `"agent":"revoked"`) || !strings.Contains(line, `"flows":2`) {
		t.Errorf("the daemon's revocation line = %q, want agent revoked and its 2 flows", line)
	}
	// Nothing changed since: a reload by command revokes nothing more.
	if out := e.d.MustCLI(t, "reload"); out != "policies reloaded\n" {
		t.Errorf("clawnet reload = %q, want only \"policies reloaded\"", out)
	}
}
