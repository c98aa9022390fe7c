package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/bench/internal/probe"
)

func TestRunRejectsBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"fly"}, `unknown mode "fly"`},
		{[]string{"rr"}, "-addr is required"},
		{[]string{"dns"}, "-server is required"},
		{[]string{"rr", "-addr", "x:1", "extra"}, `unexpected argument "extra"`},
		{[]string{"dns-server", "-answer", "nope"}, `-answer "nope"`},
		{[]string{"http"}, "-addr is required"},
		{[]string{"http", "-addr", "bench.test:80"}, "-dns is required"},
		{[]string{"http", "-addr", "bench.test"}, `-addr "bench.test"`},
		{[]string{"flood", "-kind", "udp"}, "-addr is required"},
		{[]string{"flood", "-kind", "syn", "-addr", "127.0.0.1:9"}, `unknown flood kind "syn"`},
		{[]string{"https-server"}, "-cert and -key are required"},
		{[]string{"https-server", "-cert", "/nonexistent", "-key", "/nonexistent"}, "-cert /nonexistent"},
		{[]string{"https", "-addr", "bench.test:443"}, "-addr, -dns and -ca are required"},
		{[]string{"stream", "-addr", "198.18.0.2:443", "-dns", "127.0.0.1:53", "-ca", "x"}, "want a name"},
		{[]string{"install", "-addr", "bench.test:https", "-dns", "127.0.0.1:53", "-ca", "x"}, "bad port"},
		{[]string{"install", "-addr", "bench.test:443", "-dns", "127.0.0.1:53", "-ca", "/nonexistent"}, "-ca: open /nonexistent"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, strings.NewReader(""), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// dnsServer starts a DNS server on loopback that answers name with
// 127.0.0.1 and returns its address; it is stopped when the test ends.
func dnsServer(t *testing.T, name string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dl, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	ds, err := probe.NewDNSServer(name, netip.MustParseAddr("127.0.0.1"), pc, dl)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ds.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return pc.LocalAddr().String()
}

func TestRunRRPrintsAResult(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- probe.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"rr", "-addr", ln.Addr().String(), "-duration", "100ms"}, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	r, err := probe.ParseResult(out.Bytes())
	if err != nil || r.Mode != "rr" || r.Ops == 0 {
		t.Errorf("probe rr printed %q (%+v, %v), want an rr result with operations", out.String(), r, err)
	}
}

func TestRunHTTPResolvesANameAndSendsIt(t *testing.T) {
	// The DNS server answers the HTTP server's own address for the name:
	// the request must go there, carrying the name as its Host.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hosts := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		select {
		case hosts <- r.Host:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	dns := dnsServer(t, "bench.test")
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var out bytes.Buffer
	args := []string{"http", "-addr", "bench.test:" + port, "-dns", dns, "-size", "1000", "-duration", "10ms"}
	if err := run(context.Background(), args, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	r, err := probe.ParseResult(out.Bytes())
	if err != nil || r.Mode != "http" || r.Ops == 0 || r.Bytes != 1000*r.Ops {
		t.Errorf("probe http printed %q (%+v, %v), want an http result with requests of 1000 bytes", out.String(), r, err)
	}
	if got := <-hosts; got != "bench.test" {
		t.Errorf("the server saw Host %q, want bench.test", got)
	}
}

func TestRunFloodUDPSendsDatagramsOfTheDefaultSize(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	sizes := make(chan int, 1)
	go func() {
		buf := make([]byte, 1<<16)
		n, _, err := pc.ReadFrom(buf)
		if err == nil {
			sizes <- n
		}
	}()
	var out bytes.Buffer
	args := []string{"flood", "-kind", "udp", "-addr", pc.LocalAddr().String(), "-workers", "1", "-duration", "50ms"}
	if err := run(context.Background(), args, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	r, err := probe.ParseResult(out.Bytes())
	if err != nil || r.Mode != "flood-udp" || r.Sent == 0 {
		t.Errorf("probe flood printed %q (%+v, %v), want a flood-udp result", out.String(), r, err)
	}
	if n := <-sizes; n != 512 {
		t.Errorf("datagram of %d bytes, want 512 (not -size's HTTP default)", n)
	}
}

func TestRunInstallFetchesByName(t *testing.T) {
	// An HTTPS server for bench.test on loopback, the DNS server that
	// names it, and its certificate in a file: probe install must fetch
	// -fetches blobs of the seed's sizes from it.
	certPEM, keyPEM, err := probe.SelfSigned("bench.test")
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(ca, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dns := dnsServer(t, "bench.test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- probe.ServeHTTPS(ctx, ln, cert) }()
	defer func() {
		cancel()
		<-done
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	var out bytes.Buffer
	args := []string{"install", "-addr", "bench.test:" + port, "-dns", dns, "-ca", ca, "-fetches", "20", "-workers", "2", "-seed", "5"}
	if err := run(context.Background(), args, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	r, err := probe.ParseResult(out.Bytes())
	want := int64(0)
	for _, n := range probe.InstallSizes(5, 20) {
		want += int64(n)
	}
	if err != nil || r.Mode != "install" || r.Ops != 20 || r.Bytes != want {
		t.Errorf("probe install printed %q (%+v, %v), want 20 fetches, %d bytes", out.String(), r, err, want)
	}
}

func TestRunHTTPSReportsAFailedWorkload(t *testing.T) {
	// The DNS server knows no other.test: no call can complete, and the
	// probe must say so rather than print an empty result.
	certPEM, _, err := probe.SelfSigned("other.test")
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(ca, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	dns := dnsServer(t, "bench.test")
	for _, mode := range []string{"https", "stream", "install"} {
		var out bytes.Buffer
		args := []string{mode, "-addr", "other.test:443", "-dns", dns, "-ca", ca, "-duration", "50ms", "-fetches", "2"}
		if err := run(context.Background(), args, strings.NewReader(""), &out); err == nil {
			t.Errorf("probe %s with a name the DNS server does not know = nil (printed %q), want an error", mode, out.String())
		}
	}
}
