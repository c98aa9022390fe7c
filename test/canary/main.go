// Command canary is the far side of clawnet's integration tests. It runs in
// the test "internet" namespace and serves, on every address of that
// namespace: HTTP on :80, TLS on :443 (any SNI, certificates minted at start
// from a throwaway CA), TCP echo on :7 (echo until EOF, then half-close),
// a sink on :9, a source on :19 (sends the byte count asked for in the first
// line), a server-first banner on :22, UDP echo on :7, an authoritative
// DNS server on :53 (UDP and TCP), a lenient HTTP/1 server on :8081 (a head
// ends at a blank line or at EOF) and cleartext HTTP/2 on :8082 (prior
// knowledge and Upgrade: h2c, HTTP/1.1 too) and a tarpit on :8083 (accepts,
// never reads).
//
// Every connection, datagram and query is appended as one JSON line to the
// log file (see package canarylog), so tests can assert on what really
// arrived. It must never be run outside a namespace a test created: it
// answers anyone.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.logPath, "log", "", "append one JSON line per connection, datagram and query to this `file` (required)")
	flag.StringVar(&cfg.zonePath, "zone", "", "serve this RFC 1035 zone `file` (may hold several $ORIGINs); default: the built-in canary.test zone")
	flag.StringVar(&cfg.caOut, "ca-out", "", "write the PEM certificate of the CA that signs the TLS certificates to this `file`")
	flag.IntVar(&cfg.portOffset, "port-offset", 0, "add this to every port (to run unprivileged outside a namespace)")
	flag.Parse()
	if cfg.logPath == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: canary -log FILE [-zone FILE] [-ca-out FILE] [-port-offset N]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "canary: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	logPath    string
	zonePath   string
	caOut      string
	portOffset int
}

// run binds every listener before it reports ready, so a test that waited
// for the ready line never races a listener that is not there yet.
func run(ctx context.Context, cfg config) error {
	w, err := canarylog.Create(cfg.logPath)
	if err != nil {
		return err
	}
	defer w.Close()

	zone := defaultZone
	zoneName := "built-in zone"
	if cfg.zonePath != "" {
		b, err := os.ReadFile(cfg.zonePath)
		if err != nil {
			return fmt.Errorf("read zone: %w", err)
		}
		zone, zoneName = string(b), cfg.zonePath
	}
	z, err := parseZone(zone, zoneName)
	if err != nil {
		return err
	}
	certs, err := newCertMinter()
	if err != nil {
		return err
	}
	if cfg.caOut != "" {
		if err := os.WriteFile(cfg.caOut, certs.caPEM, 0o644); err != nil {
			return fmt.Errorf("write CA certificate: %w", err)
		}
	}

	s := newServer(w, cfg.portOffset)
	defer s.close()
	if err := s.listenAll(z, certs); err != nil {
		return err
	}
	w.Log(canarylog.Entry{Service: canarylog.ServiceCanary, Event: canarylog.EventReady})
	<-ctx.Done()
	return nil
}
