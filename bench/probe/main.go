// Command probe is the benchmark suite's request/response tool. It runs on
// both ends of the path under test: `probe server` (and `probe dns-server`)
// in the server namespace, and a client mode in the agent's namespace:
//
//	probe server     -listen :7000
//	probe rr         -addr HOST:7000 -duration 5s
//	probe connects   -addr HOST:7000 -workers 8 -duration 5s
//	probe hold       -addr HOST:7000 -n 5000    (prints when ready, holds until stdin closes)
//	probe dns-server -listen :53 -name bench.test -answer 198.18.0.2
//	probe dns        -server 100.96.0.1:53 -name bench.test -workers 4 -duration 3s
//	probe http-server -listen :80
//	probe http       -addr bench.test:80 -dns 100.96.0.1:53 -size 67108864 -inflight 1 -duration 3s
//	probe http       -addr HOST:80 -host bench.test -size 1024 -inflight 16 -duration 1s
//	probe https-server -listen :443 -cert cert.pem -key key.pem
//	probe https      -addr bench.test:443 -dns 100.96.0.1:53 -ca cert.pem -duration 3s
//	probe stream     -addr bench.test:443 -dns 100.96.0.1:53 -ca cert.pem -duration 30s -seed 1
//	probe install    -addr bench.test:443 -dns 100.96.0.1:53 -ca cert.pem -fetches 500 -workers 8 -seed 1
//	probe udp-sink   -listen :9000
//	probe flood      -kind connect -addr HOST:7000 -workers 8 -duration 10s
//	probe flood      -kind dns -addr 100.96.0.1:53 -name bench.test -workers 4 -duration 10s
//	probe flood      -kind udp -addr HOST:9000 -size 512 -workers 4 -duration 10s
//
// flood sends as fast as it can until -duration passes or it gets SIGTERM,
// then prints its result: what it sent, what got through, what failed.
// http POSTs bodies of -size bytes over one kept-alive connection. When
// -addr names a host rather than an address, the name is resolved through
// the -dns server (never the namespace's resolver) and sent as the Host;
// otherwise -host is.
//
// https, stream and install are the agent's workloads over HTTPS by name
// (see package probe): -addr must name a host, which is resolved through
// the -dns server before every connection and sent as SNI and Host, and
// the server's certificate must be the one in -ca.
//
// Client modes print one JSON result on stdout (hold prints one when its
// connections are up and one when it lets them go).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

const usage = "usage: probe server|rr|connects|hold|dns-server|dns|http-server|http|https-server|https|stream|install|udp-sink|flood [flags]"

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) < 1 {
		return errors.New(usage)
	}
	mode, args := args[0], args[1:]
	fs := flag.NewFlagSet("probe "+mode, flag.ContinueOnError)
	var (
		listen   = fs.String("listen", ":7000", "server: address to listen on")
		addr     = fs.String("addr", "", "client: server address host:port")
		duration = fs.Duration("duration", 5*time.Second, "client: how long to measure")
		workers  = fs.Int("workers", 8, "connects, hold, dns, flood: concurrent workers; install: kept-alive connections")
		n        = fs.Int("n", 1000, "hold: connections to hold open")
		maxHold  = fs.Duration("max-hold", 5*time.Minute, "hold: let go after this long even if stdin stays open")
		name     = fs.String("name", "bench.test", "dns, dns-server, flood -kind dns: the name to query or answer")
		answer   = fs.String("answer", "", "dns-server: the IPv4 address to answer with")
		server   = fs.String("server", "", "dns: the DNS server host:port")
		dnsAddr  = fs.String("dns", "", "http: the DNS server host:port that resolves a name in -addr")
		host     = fs.String("host", "bench.test", "http: the Host header when -addr is an address")
		size     = fs.Int("size", 64<<20, "http: body bytes of every request; flood -kind udp: bytes of every datagram (default 512)")
		inflight = fs.Int("inflight", 1, "http: requests sent before their responses are read")
		kind     = fs.String("kind", "", "flood: connect, dns or udp")
		certFile = fs.String("cert", "", "https-server: PEM certificate file")
		keyFile  = fs.String("key", "", "https-server: PEM key file")
		caFile   = fs.String("ca", "", "https, stream, install: PEM file of the only certificate to trust")
		seed     = fs.Uint64("seed", 1, "stream: the seed of the gaps between chunks; install: of the sizes")
		fetches  = fs.Int("fetches", 500, "install: how many fetches")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	needAddr := func(flagName, v string) error {
		if v == "" {
			return fmt.Errorf("probe %s: -%s is required", mode, flagName)
		}
		return nil
	}

	var (
		res probe.Result
		err error
	)
	switch mode {
	case "server":
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
		return probe.Serve(ctx, ln)
	case "http-server":
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
		return probe.ServeHTTP(ctx, ln)
	case "https-server":
		if *certFile == "" || *keyFile == "" {
			return errors.New("probe https-server: -cert and -key are required")
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("-cert %s, -key %s: %w", *certFile, *keyFile, err)
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", *listen, err)
		}
		return probe.ServeHTTPS(ctx, ln, cert)
	case "https", "stream", "install":
		// terr, not err: a new err here would hide the workload's error
		// from the check after the switch.
		t, terr := tlsTarget(mode, *addr, *dnsAddr, *caFile)
		if terr != nil {
			return terr
		}
		switch mode {
		case "https":
			res, err = probe.HTTPSFetch(ctx, t, *duration)
		case "stream":
			res, err = probe.Stream(ctx, t, *duration, *seed)
		default:
			if *fetches < 1 {
				return fmt.Errorf("-fetches %d: want at least 1", *fetches)
			}
			res, err = probe.Install(ctx, t, probe.InstallSizes(*seed, *fetches), *workers)
		}
	case "udp-sink":
		pc, err := net.ListenPacket("udp", *listen)
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", *listen, err)
		}
		return probe.ServeUDPSink(ctx, pc)
	case "dns-server":
		ip, err := netip.ParseAddr(*answer)
		if err != nil {
			return fmt.Errorf("-answer %q: %w", *answer, err)
		}
		pc, err := net.ListenPacket("udp", *listen)
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", *listen, err)
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			pc.Close()
			return fmt.Errorf("listen tcp %s: %w", *listen, err)
		}
		s, err := probe.NewDNSServer(*name, ip, pc, ln)
		if err != nil {
			return err
		}
		return s.Serve(ctx)
	case "rr":
		if err := needAddr("addr", *addr); err != nil {
			return err
		}
		res, err = probe.RR(ctx, *addr, *duration)
	case "connects":
		if err := needAddr("addr", *addr); err != nil {
			return err
		}
		res, err = probe.Connects(ctx, *addr, *workers, *duration)
	case "dns":
		if err := needAddr("server", *server); err != nil {
			return err
		}
		res, err = probe.DNS(ctx, *server, *name, *workers, *duration)
	case "http":
		if err := needAddr("addr", *addr); err != nil {
			return err
		}
		a := probe.HTTPArgs{Addr: *addr, Host: *host, Size: *size, InFlight: *inflight, Duration: *duration}
		if a.Addr, a.Host, err = dialTarget(ctx, *addr, *host, *dnsAddr); err != nil {
			return err
		}
		res, err = probe.HTTPPost(ctx, a)
	case "flood":
		if err := needAddr("addr", *addr); err != nil {
			return err
		}
		a := probe.FloodArgs{Kind: *kind, Addr: *addr, Name: *name, Size: *size, Workers: *workers, Duration: *duration}
		sizeSet := false
		fs.Visit(func(f *flag.Flag) { sizeSet = sizeSet || f.Name == "size" })
		if !sizeSet {
			a.Size = 512 // -size's default is the HTTP body's
		}
		res, err = probe.Flood(ctx, a)
	case "hold":
		if err := needAddr("addr", *addr); err != nil {
			return err
		}
		release := make(chan struct{})
		go func() {
			io.Copy(io.Discard, stdin)
			close(release)
		}()
		ctx, cancel := context.WithTimeout(ctx, *maxHold)
		defer cancel()
		enc := json.NewEncoder(stdout)
		res, err = probe.Hold(ctx, *addr, *n, *workers, func(r probe.Result) { enc.Encode(r) }, release)
	default:
		return fmt.Errorf("unknown mode %q (%s)", mode, usage)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// tlsTarget reads the flags of the HTTPS workloads: addr must be
// name:port, dnsServer resolves the name, caFile holds the certificate
// to trust.
func tlsTarget(mode, addr, dnsServer, caFile string) (probe.TLSTarget, error) {
	var t probe.TLSTarget
	if addr == "" || dnsServer == "" || caFile == "" {
		return t, fmt.Errorf("probe %s: -addr, -dns and -ca are required", mode)
	}
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return t, fmt.Errorf("-addr %q: %w", addr, err)
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return t, fmt.Errorf("-addr %q: want a name, not an address: the workload goes by name", addr)
	}
	if t.Port, err = strconv.Atoi(port); err != nil || t.Port < 1 || t.Port > 65535 {
		return t, fmt.Errorf("-addr %q: bad port", addr)
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return t, fmt.Errorf("-ca: %w", err)
	}
	if t.Roots, err = probe.Roots(pemBytes); err != nil {
		return t, fmt.Errorf("-ca %s: %w", caFile, err)
	}
	t.Name, t.DNS = h, dnsServer
	return t, nil
}

// dialTarget returns the address to dial for addr and the Host to send:
// a name in addr is resolved through dnsServer and is the Host itself.
func dialTarget(ctx context.Context, addr, host, dnsServer string) (string, string, error) {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("-addr %q: %w", addr, err)
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return addr, host, nil
	}
	if dnsServer == "" {
		return "", "", fmt.Errorf("-addr %q names a host: -dns is required to resolve it", addr)
	}
	ip, err := probe.Resolve(ctx, dnsServer, h)
	if err != nil {
		return "", "", err
	}
	return net.JoinHostPort(ip.String(), port), h, nil
}
