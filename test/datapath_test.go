package integration_test

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

// closeLine waits for the canary's close line of the connection the
// gateway made for a flow. The gateway dials from the host, so the agent's
// port is not visible at the far side; what identifies the connection is
// the service, the address it reached and a payload digest.
func closeLine(t *testing.T, in *harness.Internet, service string, dst netip.AddrPort, pred func(canarylog.Entry) bool) canarylog.Entry {
	t.Helper()
	return in.WaitFor(t, 10*time.Second, fmt.Sprintf("a %s close line for %v", service, dst), func(e canarylog.Entry) bool {
		return e.Service == service && e.Event == canarylog.EventClose && e.LocalAddr() == dst && pred(e)
	})
}

// TestTCPAllowed sends allowed TCP both ways over both families and checks
// what the canary received: half-close in each direction, and
// multi-megabyte transfers intact by sha256 on the far side.
func TestTCPAllowed(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("tcp-allowed", "echo-only")
	for _, fam := range families {
		srv := server(e.in, fam.n)
		t.Run(fam.name, func(t *testing.T) {
			t.Run("client half-close", func(t *testing.T) {
				// Write, half-close, and only then read: the echo can only
				// finish (and half-close back) once our FIN crossed the
				// gateway, and we only see EOF once its FIN crossed back.
				c := a.dial(t, "tcp", ap(srv, 7))
				c.SetDeadline(time.Now().Add(10 * time.Second))
				msg := []byte("half-close " + fam.name)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatalf("read after half-close: %v", err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("echo after half-close returned %q, want %q", got, msg)
				}
				ce := closeLine(t, e.in, canarylog.ServiceEcho, ap(srv, 7), func(ce canarylog.Entry) bool {
					return ce.SHA256 == canarylog.Digest(msg)
				})
				if ce.Bytes != int64(len(msg)) || ce.BytesOut != int64(len(msg)) || ce.Error != "" {
					t.Errorf("canary echo: in=%d out=%d error=%q, want %d both ways and no error", ce.Bytes, ce.BytesOut, ce.Error, len(msg))
				}
			})
			t.Run("server half-close", func(t *testing.T) {
				// The source half-closes after sending; the agent must still
				// be able to send afterwards, and the canary must get it.
				c := a.dial(t, "tcp", ap(srv, 19))
				c.SetDeadline(time.Now().Add(10 * time.Second))
				const n = 10000
				req := strconv.Itoa(n) + "\n"
				io.WriteString(c, req)
				got, err := io.ReadAll(c)
				if err != nil || len(got) != n {
					t.Fatalf("source sent %d bytes (%v), want %d then EOF", len(got), err, n)
				}
				const after = "sent after the server's FIN\n"
				if _, err := io.WriteString(c, after); err != nil {
					t.Fatalf("write after the server half-closed: %v", err)
				}
				c.Close()
				ce := closeLine(t, e.in, canarylog.ServiceSource, ap(srv, 19), func(ce canarylog.Entry) bool {
					return ce.Requested == n
				})
				if want := int64(len(req) + len(after)); ce.Bytes != want {
					t.Errorf("canary source received %d bytes, want %d (the request and the line sent after its FIN)", ce.Bytes, want)
				}
			})
			t.Run("echo 256KiB both ways", func(t *testing.T) {
				c := a.dial(t, "tcp", ap(srv, 7))
				payload := harness.RandomBytes(256 << 10)
				got, err := harness.EchoHalfClose(c, payload, 20*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("echo returned %d bytes (sha %s), sent %d (sha %s)", len(got), canarylog.Digest(got), len(payload), canarylog.Digest(payload))
				}
				ce := closeLine(t, e.in, canarylog.ServiceEcho, ap(srv, 7), func(ce canarylog.Entry) bool {
					return ce.SHA256 == canarylog.Digest(payload)
				})
				if ce.Bytes != int64(len(payload)) || ce.SHA256Out != canarylog.Digest(payload) {
					t.Errorf("canary echo: in=%d out=%d sha_out=%s", ce.Bytes, ce.BytesOut, ce.SHA256Out)
				}
			})
			t.Run("upload 8MiB", func(t *testing.T) {
				c := a.dial(t, "tcp", ap(srv, 9))
				c.SetDeadline(time.Now().Add(30 * time.Second))
				payload := harness.RandomBytes(8 << 20)
				if _, err := c.Write(payload); err != nil {
					t.Fatal(err)
				}
				c.Close()
				ce := e.in.WaitFor(t, 20*time.Second, "the discard close line", func(ce canarylog.Entry) bool {
					return ce.Service == canarylog.ServiceDiscard && ce.Event == canarylog.EventClose && ce.Local == ap(srv, 9).String()
				})
				if ce.Bytes != int64(len(payload)) || ce.SHA256 != canarylog.Digest(payload) {
					t.Errorf("canary discard received %d bytes sha %s, want %d sha %s", ce.Bytes, ce.SHA256, len(payload), canarylog.Digest(payload))
				}
			})
			t.Run("download 8MiB", func(t *testing.T) {
				c := a.dial(t, "tcp", ap(srv, 19))
				c.SetDeadline(time.Now().Add(30 * time.Second))
				const n = 8 << 20
				fmt.Fprintf(c, "%d\n", n)
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				want, _ := io.ReadAll(canarylog.SourceStream(n))
				if !bytes.Equal(got, want) {
					t.Fatalf("agent received %d bytes sha %s, want %d sha %s", len(got), canarylog.Digest(got), n, canarylog.Digest(want))
				}
				ce := closeLine(t, e.in, canarylog.ServiceSource, ap(srv, 19), func(ce canarylog.Entry) bool {
					return ce.Requested == n
				})
				if ce.BytesOut != n || ce.SHA256Out != canarylog.Digest(want) {
					t.Errorf("canary source sent %d bytes sha %s", ce.BytesOut, ce.SHA256Out)
				}
			})
			t.Run("http", func(t *testing.T) {
				c := a.dial(t, "tcp", ap(srv, 80))
				c.SetDeadline(time.Now().Add(10 * time.Second))
				path := "/tcp-allowed/" + fam.name
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: canary.test\r\nConnection: close\r\n\r\n", path)
				body, err := io.ReadAll(c)
				if err != nil || !bytes.Contains(body, []byte("200 OK")) {
					t.Fatalf("http answer %q: %v", body, err)
				}
				e.in.WaitFor(t, 5*time.Second, "the HTTP request", func(ce canarylog.Entry) bool {
					return ce.Service == canarylog.ServiceHTTP && ce.Event == canarylog.EventRequest && ce.Path == path && ce.Host == "canary.test"
				})
			})
		})
	}
}

// TestTCPDenied checks that denied TCP is refused at once and that nothing
// reaches the far side: a deny rule beating a broader allow, and a port no
// rule allows.
func TestTCPDenied(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("tcp-denied", "echo-only")
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			denied := e.in.Addr(fam.n, 3) // inside the allowed /24, but denied
			srv := server(e.in, fam.n)
			for _, dst := range []struct {
				what string
				to   netip.AddrPort
			}{
				{"deny rule over an allow", ap(denied, 7)},
				{"deny rule, another port", ap(denied, 80)},
				{"port no rule allows", ap(srv, 443)},
			} {
				t.Run(dst.what, func(t *testing.T) {
					to := dst.to
					a.expectRefused(t, to)
					// Barrier: an allowed echo sent after the refusal reached
					// the canary; by then the whole log must hold nothing for to.
					done := a.echoSentinel(t, ap(srv, 7))
					e.in.NeverSawBefore(t, 0, sentinelWithin, "the sentinel echo", done, "traffic to "+to.String(), harness.To(to.Addr(), to.Port()))
				})
			}
			// The agent still works: denial is per flow.
			c := a.dial(t, "tcp", ap(srv, 7))
			if got, err := harness.EchoHalfClose(c, []byte("still up"), 5*time.Second); err != nil || string(got) != "still up" {
				t.Errorf("allowed echo after denials: %q, %v", got, err)
			}
		})
	}
}

// TestUDP checks allowed UDP (echoed, seen by the canary) and denied UDP
// (ICMP port unreachable to the agent, nothing at the canary).
func TestUDP(t *testing.T) {
	e := newEnv(t, echoOnly)
	a := e.attach("udp", "echo-only")
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			srv := server(e.in, fam.n)
			t.Run("allowed", func(t *testing.T) {
				c := a.dial(t, "udp", ap(srv, 7))
				for i := range 3 {
					payload := []byte(fmt.Sprintf("datagram %d over %s", i, fam.name))
					got, err := harness.UDPExchange(c, payload, 5*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, payload) {
						t.Fatalf("udp echo returned %q, want %q", got, payload)
					}
					ce := e.in.WaitFor(t, 5*time.Second, "the datagram", func(ce canarylog.Entry) bool {
						return ce.Service == canarylog.ServiceUDPEcho && ce.SHA256 == canarylog.Digest(payload)
					})
					if ce.LocalAddr() != ap(srv, 7) || ce.Bytes != int64(len(payload)) {
						t.Errorf("canary logged %d bytes at %s, want %d at %s", ce.Bytes, ce.Local, len(payload), ap(srv, 7))
					}
				}
			})
			t.Run("denied", func(t *testing.T) {
				for _, dst := range []struct {
					what string
					to   netip.AddrPort
				}{
					{"deny rule", ap(e.in.Addr(fam.n, 3), 7)},
					{"no UDP rule for the address", ap(e.in.Addr(fam.n, 4), 7)},
				} {
					t.Run(dst.what, func(t *testing.T) {
						to := dst.to
						a.expectUDPRefused(t, to)
						// Barrier: a datagram to the same canary socket, sent
						// after the refusal, reached it; by then the whole log
						// must hold nothing for to.
						done := a.udpSentinel(t, ap(srv, 7))
						e.in.NeverSawBefore(t, 0, sentinelWithin, "the sentinel datagram", done, "a datagram to "+to.String(), harness.To(to.Addr(), to.Port()))
					})
				}
			})
		})
	}
}
