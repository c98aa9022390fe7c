package harness_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/test/canary/canarylog"
	"github.com/clawnet/clawnet/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

type family struct {
	name          string
	server, other netip.Addr
}

// families lists, per address family, the canary's primary address and
// another of its addresses.
func families(in *harness.Internet) []family {
	return []family{
		{"ipv4", in.Server4, in.Addr4(3)},
		{"ipv6", in.Server6, in.Addr6(3)},
	}
}

func dialHost(t *testing.T, network string, ap netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(network, ap.String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, ap, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCanaryFromHost checks every canary service from the host namespace,
// over both families, and that each one logs what it received.
func TestCanaryFromHost(t *testing.T) {
	in := harness.NewInternet(t)
	for _, fam := range families(in) {
		t.Run(fam.name, func(t *testing.T) {
			t.Run("echo half-close", func(t *testing.T) {
				c := dialHost(t, "tcp", netip.AddrPortFrom(fam.server, 7))
				payload := harness.RandomBytes(3 << 20)
				got, err := harness.EchoHalfClose(c, payload, 20*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("echo returned %d bytes, not the %d sent", len(got), len(payload))
				}
				local := c.LocalAddr().String()
				e := in.WaitFor(t, 5*time.Second, "the echo close line", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceEcho && e.Event == canarylog.EventClose && e.RemoteAddr().String() == unmapped(local)
				})
				if e.Bytes != int64(len(payload)) || e.BytesOut != int64(len(payload)) || e.SHA256 != canarylog.Digest(payload) {
					t.Errorf("canary echo logged in=%d out=%d sha=%s, want %d both ways, sha %s", e.Bytes, e.BytesOut, e.SHA256, len(payload), canarylog.Digest(payload))
				}
				if e.LocalAddr() != netip.AddrPortFrom(fam.server, 7) {
					t.Errorf("canary logged local %s, want %s", e.Local, netip.AddrPortFrom(fam.server, 7))
				}
				if e.Error != "" {
					t.Errorf("canary echo error: %s", e.Error)
				}
			})
			t.Run("discard", func(t *testing.T) {
				c := dialHost(t, "tcp", netip.AddrPortFrom(fam.other, 9))
				payload := harness.RandomBytes(100_000)
				if _, err := c.Write(payload); err != nil {
					t.Fatal(err)
				}
				local := c.LocalAddr().String()
				c.Close()
				e := in.WaitFor(t, 5*time.Second, "the discard close line", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceDiscard && e.Event == canarylog.EventClose && e.RemoteAddr().String() == unmapped(local)
				})
				if e.Bytes != int64(len(payload)) || e.SHA256 != canarylog.Digest(payload) {
					t.Errorf("canary discard logged %d bytes sha %s, want %d sha %s", e.Bytes, e.SHA256, len(payload), canarylog.Digest(payload))
				}
				if e.LocalAddr().Addr() != fam.other {
					t.Errorf("canary logged local %s, want address %s", e.Local, fam.other)
				}
			})
			t.Run("source", func(t *testing.T) {
				c := dialHost(t, "tcp", netip.AddrPortFrom(fam.server, 19))
				const n = 1_234_567
				fmt.Fprintf(c, "%d\n", n)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				got, err := io.ReadAll(c)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := io.ReadAll(canarylog.SourceStream(n))
				if !bytes.Equal(got, want) {
					t.Fatalf("source sent %d bytes (sha %s), want %d (sha %s)", len(got), canarylog.Digest(got), n, canarylog.Digest(want))
				}
				local := c.LocalAddr().String()
				c.Close()
				e := in.WaitFor(t, 5*time.Second, "the source close line", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceSource && e.Event == canarylog.EventClose && e.RemoteAddr().String() == unmapped(local)
				})
				if e.Requested != n || e.BytesOut != n || e.SHA256Out != canarylog.Digest(want) {
					t.Errorf("canary source logged requested=%d out=%d sha=%s", e.Requested, e.BytesOut, e.SHA256Out)
				}
			})
			t.Run("banner", func(t *testing.T) {
				c := dialHost(t, "tcp", netip.AddrPortFrom(fam.server, 22))
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
					t.Fatalf("banner %q, %v", line, err)
				}
				fmt.Fprintf(c, "SSH-2.0-harness-test\r\n")
				local := c.LocalAddr().String()
				e := in.WaitFor(t, 5*time.Second, "the banner close line", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceBanner && e.Event == canarylog.EventClose && e.RemoteAddr().String() == unmapped(local)
				})
				if e.Line != "SSH-2.0-harness-test" {
					t.Errorf("canary banner logged client line %q", e.Line)
				}
			})
			t.Run("http", func(t *testing.T) {
				client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
				url := "http://" + netip.AddrPortFrom(fam.server, 80).String() + "/probe/" + fam.name
				req, _ := http.NewRequest("POST", url, strings.NewReader("hello"))
				req.Host = "example.test"
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				e := in.WaitFor(t, 5*time.Second, "the HTTP request", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceHTTP && e.Event == canarylog.EventRequest && e.Path == "/probe/"+fam.name
				})
				if e.Host != "example.test" || e.Method != "POST" || e.Bytes != 5 || e.LocalAddr().Addr() != fam.server {
					t.Errorf("canary logged %+v", e)
				}
			})
			t.Run("http lenient", func(t *testing.T) {
				// A head cut short by a half-close is still read for its Host.
				c := dialHost(t, "tcp", netip.AddrPortFrom(fam.server, 8081))
				got, err := harness.EchoHalfClose(c, []byte("GET /cut/"+fam.name+" HTTP/1.1\r\nHost: cut.test\r\n"), 5*time.Second)
				if err != nil || !strings.Contains(string(got), "200 OK") {
					t.Fatalf("lenient answer %q, %v", got, err)
				}
				e := in.WaitFor(t, 5*time.Second, "the lenient request", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceHTTPLenient && e.Event == canarylog.EventRequest && e.Path == "/cut/"+fam.name
				})
				if e.Host != "cut.test" || e.Method != "GET" || e.LocalAddr().Addr() != fam.server {
					t.Errorf("canary logged %+v", e)
				}
			})
			t.Run("h2c prior knowledge", func(t *testing.T) {
				tr := &http.Transport{DisableKeepAlives: true, Protocols: new(http.Protocols)}
				tr.Protocols.SetUnencryptedHTTP2(true)
				client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
				req, _ := http.NewRequest("GET", "http://"+netip.AddrPortFrom(fam.server, 8082).String()+"/h2/"+fam.name, nil)
				req.Host = "h2.test"
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Errorf("answer in %s, want HTTP/2", resp.Proto)
				}
				e := in.WaitFor(t, 5*time.Second, "the h2c request", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceH2C && e.Event == canarylog.EventRequest && e.Path == "/h2/"+fam.name
				})
				if e.Host != "h2.test" || e.HTTPProto != "HTTP/2.0" {
					t.Errorf("canary logged %+v", e)
				}
			})
			t.Run("https", func(t *testing.T) {
				pem, err := os.ReadFile(in.CAPath)
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				sni := fam.name + ".sni.test"
				c := dialHost(t, "tcp", netip.AddrPortFrom(fam.server, 443))
				tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: pool})
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(tc, "GET /secure HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", sni)
				body, err := io.ReadAll(tc)
				if err != nil {
					t.Fatalf("https exchange: %v", err)
				}
				if !strings.Contains(string(body), "200 OK") {
					t.Fatalf("https answer: %s", body)
				}
				e := in.WaitFor(t, 5*time.Second, "the HTTPS request", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceHTTPS && e.Event == canarylog.EventRequest && e.SNI == sni
				})
				if e.Host != sni || e.Path != "/secure" {
					t.Errorf("canary logged %+v", e)
				}
				in.WaitFor(t, 5*time.Second, "the HTTPS close line with the SNI", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceHTTPS && e.Event == canarylog.EventClose && e.SNI == sni && e.Bytes > 0
				})
			})
			t.Run("udp echo", func(t *testing.T) {
				// The second address checks the reply comes from the address
				// the datagram went to: a connected socket drops any other.
				c := dialHost(t, "udp", netip.AddrPortFrom(fam.other, 7))
				payload := []byte("udp probe " + fam.name)
				got, err := harness.UDPExchange(c, payload, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, payload) {
					t.Fatalf("udp echo returned %q", got)
				}
				e := in.WaitFor(t, 5*time.Second, "the datagram", func(e canarylog.Entry) bool {
					return e.Service == canarylog.ServiceUDPEcho && e.SHA256 == canarylog.Digest(payload)
				})
				if e.LocalAddr() != netip.AddrPortFrom(fam.other, 7) || e.Bytes != int64(len(payload)) {
					t.Errorf("canary logged %+v", e)
				}
			})
			for _, network := range []string{"udp", "tcp"} {
				t.Run("dns "+network, func(t *testing.T) {
					c := dialHost(t, network, netip.AddrPortFrom(fam.server, 53))
					check := func(name string, qtype uint16, rcode int, want ...string) {
						t.Helper()
						r, err := harness.DNSExchange(c, name, qtype, 5*time.Second)
						if err != nil {
							t.Fatal(err)
						}
						if r.Rcode != rcode {
							t.Errorf("%s %s: rcode %s, want %s", name, dns.TypeToString[qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])
						}
						var got []string
						for _, rr := range r.Answer {
							got = append(got, strings.Join(strings.Fields(rr.String())[3:], " "))
						}
						if !slices.Equal(got, want) {
							t.Errorf("%s %s: answer %q, want %q", name, dns.TypeToString[qtype], got, want)
						}
					}
					check("canary.test", dns.TypeA, dns.RcodeSuccess, "A "+in.Server4.String())
					check("canary.test", dns.TypeAAAA, dns.RcodeSuccess, "AAAA "+in.Server6.String())
					check("www.canary.test", dns.TypeA, dns.RcodeSuccess, "CNAME canary.test.", "A "+in.Server4.String())
					check("txt.canary.test", dns.TypeTXT, dns.RcodeSuccess, `TXT "clawnet canary"`)
					check("nope.canary.test", dns.TypeA, dns.RcodeNameError)
					check("txt.canary.test", dns.TypeA, dns.RcodeSuccess)
					check("elsewhere.example", dns.TypeA, dns.RcodeRefused)
					in.WaitFor(t, 5*time.Second, "the www query", func(e canarylog.Entry) bool {
						return e.Service == canarylog.ServiceDNS && e.Proto == network && e.Qname == "www.canary.test." && e.Qtype == "A"
					})
				})
			}
		})
	}
	t.Run("nothing to an unused port", func(t *testing.T) {
		// The far side's log must not invent traffic: a refused port
		// leaves no line.
		_, err := net.DialTimeout("tcp", netip.AddrPortFrom(in.Server4, 8).String(), 2*time.Second)
		if !harness.IsRefused(err) {
			t.Fatalf("dial port 8: %v, want refused", err)
		}
		// Barrier: a datagram sent after the refused dial has reached the
		// canary; no line for port 8 may be in the whole log by then.
		in.NeverSawBefore(t, 0, 5*time.Second, "the sentinel datagram", in.HostSentinel(t, in.Server4), "traffic to port 8", harness.To(in.Server4, 8))
	})
}

// unmapped normalizes a host:port from the client's side to the form the
// canary log parses to.
func unmapped(s string) string {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return s
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}

// TestNetNSSockets checks that sockets made through Do live in the
// namespace: a listener there is invisible from the host, reachable from
// inside, and the namespace has nothing but lo.
func TestNetNSSockets(t *testing.T) {
	ns := harness.NewNetNS(t, "agent")
	if got := ns.LinkNames(t); !slices.Equal(got, []string{"lo"}) {
		t.Fatalf("new namespace has links %v, want only lo", got)
	}
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.Close()
		accepted <- string(buf)
	}()
	// From the host the port is closed (or at least not our listener).
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("dialing %s from the host reached something; the listener leaked out of its namespace", addr)
	}
	c, err := ns.Dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("dial inside the namespace: %v", err)
	}
	c.Write([]byte("hello"))
	c.Close()
	select {
	case got := <-accepted:
		if got != "hello" {
			t.Errorf("listener read %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("listener accepted nothing")
	}
	// No route out: an empty namespace reaches nothing (the address is in
	// the test range, so nothing real could answer anyway).
	if _, err := ns.Dial(context.Background(), "tcp", "198.18.0.2:7"); err == nil {
		t.Error("an empty namespace reached 198.18.0.2")
	}
	out := ns.MustRun(t, "cat", "/proc/self/net/dev")
	if strings.Contains(out, "eth0") {
		t.Errorf("command did not run in the namespace: %s", out)
	}
}

// TestCleanup checks that what a test made is gone when it ends.
func TestCleanup(t *testing.T) {
	var nsPaths []string
	var hostIf string
	var host4 netip.Addr
	t.Run("inner", func(t *testing.T) {
		in := harness.NewInternet(t)
		agent := harness.NewNetNS(t, "agent")
		nsPaths = []string{in.NS.Path, agent.Path}
		hostIf, host4 = in.HostIf, in.Host4
	})
	for _, p := range nsPaths {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("namespace %s still exists after its test", p)
		}
	}
	if _, err := net.InterfaceByName(hostIf); err == nil {
		t.Errorf("veth %s still exists after its test", hostIf)
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if strings.HasPrefix(a.String(), host4.String()+"/") {
			t.Errorf("host still has %s", a)
		}
	}
}

// TestDaemonRestart checks the daemon helpers when clawnetd can be built:
// start, status over the socket, restart on the same socket.
func TestDaemonRestart(t *testing.T) {
	d := harness.StartDaemon(t, harness.DaemonConfig{})
	if _, err := d.Status(); err != nil {
		t.Fatal(err)
	}
	pid := d.PID()
	d.Restart(t)
	if d.PID() == pid {
		t.Fatal("restart kept the old process")
	}
	if s, err := d.Status(); err != nil || s.Agents != 0 {
		t.Fatalf("status after restart: %+v, %v", s, err)
	}
	if r := d.CLI("version"); !r.OK() || strings.TrimSpace(r.Stdout) == "" {
		t.Errorf("clawnet version: %v", r)
	}
}
