package suite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
	"github.com/clawnet/clawnet/bench/internal/report"
)

// linkMTU is the MTU of every veth the suite makes, matching the 65520
// that slirp4netns, pasta and clawnet use on their side, so that no system
// pays for smaller packets on the shared host↔server leg.
const linkMTU = "65520"

// Ports in the server namespace.
const (
	probePort     = 7000
	dnsPort       = 53
	iperfBasePort = 5201 // + the system's index, one iperf3 server each
	// Both HTTP ports have the probe's HTTP server; clawnet's bench policy
	// allows httpPort only by name and httpAddrPort by address.
	httpPort     = 80
	httpAddrPort = 8080
	// udpSinkPort takes the noisy-neighbour test's UDP flood.
	udpSinkPort = 9000
	// httpsPort has the probe's HTTPS server, for the agent's workloads;
	// clawnet's bench policy allows it only by name.
	httpsPort = 443
)

// Address plan inside the run's /22 (block = third octet offset):
//
//	block 0: host ↔ server veth: host .1, server .2 (what slirp4netns,
//	         pasta and clawnet reach, through the host's route)
//	block 1: veth client ↔ server, direct: server .1, client .2
//	block 2: slirp4netns's virtual network inside its client namespace
//	block 3: pasta's addresses inside its client namespace
const (
	blockHost  = 0
	blockVeth  = 1
	blockSlirp = 2
	blockPasta = 3
)

// topology is the server side of the run: one namespace holding iperf3,
// the probe's echo, DNS and HTTP servers and its UDP sink, reachable from
// the host.
type topology struct {
	id       string // unique per run; prefixes every name
	prefix   netip.Prefix
	serverNS string
	hostIf   string
	hostAddr netip.Addr
	addr     netip.Addr // the server, as the host reaches it
	probe    string     // path of the probe binary
	// certFile is the HTTPS server's certificate, made for the run, which
	// the workloads' clients trust; keyFile its key.
	certFile, keyFile string
	procs             []*proc
}

// nsName names one of the run's namespaces.
func (t *topology) nsName(role string) string { return t.id + "-" + role }

// newTopology builds the server namespace and starts its servers; dir
// takes the HTTPS server's certificate and key.
func newTopology(ctx context.Context, probeBin, dir string, systems []string) (*topology, error) {
	pid := os.Getpid()
	p, err := pickPrefix(ctx, pid)
	if err != nil {
		return nil, err
	}
	t := &topology{
		id:       fmt.Sprintf("clawbench-%d", pid),
		prefix:   p,
		hostIf:   fmt.Sprintf("cbh%d", pid),
		hostAddr: addrIn(p, blockHost, 1),
		addr:     addrIn(p, blockHost, 2),
		probe:    probeBin,
		certFile: filepath.Join(dir, "https-cert.pem"),
		keyFile:  filepath.Join(dir, "https-key.pem"),
	}
	t.serverNS = t.nsName("server")
	if err := t.build(ctx, systems); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *topology) build(ctx context.Context, systems []string) error {
	if err := addNetns(ctx, t.serverNS); err != nil {
		return err
	}
	hostNet := netip.PrefixFrom(t.hostAddr, 24).String()
	srvNet := netip.PrefixFrom(t.addr, 24).String()
	err := ipBatch(ctx,
		[]string{"link", "add", t.hostIf, "mtu", linkMTU, "type", "veth", "peer", "name", "eth0", "mtu", linkMTU, "netns", t.serverNS},
		[]string{"addr", "add", hostNet, "dev", t.hostIf},
		[]string{"link", "set", t.hostIf, "up"},
		[]string{"-n", t.serverNS, "addr", "add", srvNet, "dev", "eth0"},
		[]string{"-n", t.serverNS, "link", "set", "eth0", "up"},
		[]string{"-n", t.serverNS, "route", "add", "default", "via", t.hostAddr.String()},
	)
	if err != nil {
		return fmt.Errorf("server namespace: %w", err)
	}
	if err := t.start(ctx, "probe server", t.probe, "server", "-listen", fmt.Sprintf(":%d", probePort)); err != nil {
		return err
	}
	if err := t.start(ctx, "dns server", t.probe, "dns-server", "-listen", fmt.Sprintf(":%d", dnsPort), "-name", dnsName, "-answer", t.addr.String()); err != nil {
		return err
	}
	if err := t.start(ctx, "udp sink", t.probe, "udp-sink", "-listen", fmt.Sprintf(":%d", udpSinkPort)); err != nil {
		return err
	}
	for _, port := range []int{httpPort, httpAddrPort} {
		if err := t.start(ctx, fmt.Sprintf("http server :%d", port), t.probe, "http-server", "-listen", fmt.Sprintf(":%d", port)); err != nil {
			return err
		}
	}
	certPEM, keyPEM, err := probe.SelfSigned(dnsName)
	if err != nil {
		return fmt.Errorf("https server certificate: %w", err)
	}
	if err := errors.Join(os.WriteFile(t.certFile, certPEM, 0o644), os.WriteFile(t.keyFile, keyPEM, 0o600)); err != nil {
		return err
	}
	if err := t.start(ctx, fmt.Sprintf("https server :%d", httpsPort), t.probe, "https-server", "-listen", fmt.Sprintf(":%d", httpsPort),
		"-cert", t.certFile, "-key", t.keyFile); err != nil {
		return err
	}
	var iperfSystems []string
	for _, sys := range systems {
		if slices.Contains(report.Outbound, sys) {
			iperfSystems = append(iperfSystems, sys)
		}
	}
	for _, sys := range iperfSystems {
		port := strconv.Itoa(iperfPort(sys))
		if err := t.start(ctx, "iperf3 server :"+port, "iperf3", "-s", "-p", port); err != nil {
			return err
		}
	}
	// Waiting for every server to answer from the host keeps the first
	// measurement from paying for start-up and neighbour discovery.
	ports := []int{probePort, dnsPort, httpPort, httpAddrPort, httpsPort}
	for _, sys := range iperfSystems {
		ports = append(ports, iperfPort(sys))
	}
	for _, port := range ports {
		if err := waitTCP(ctx, netip.AddrPortFrom(t.addr, uint16(port))); err != nil {
			return fmt.Errorf("server namespace: %w", err)
		}
	}
	return nil
}

// iperfPort is the port of system's own iperf3 server: one each, so that
// no test waits for another's server to finish tearing down.
func iperfPort(system string) int {
	return iperfBasePort + slices.Index(report.Systems, system)
}

// start runs a server inside the server namespace for the whole run.
func (t *topology) start(ctx context.Context, name, prog string, args ...string) error {
	// Not ctx: the servers live until close, which stops them itself.
	cmd := nsCommand(context.WithoutCancel(ctx), t.serverNS, prog, args...)
	p, err := startProc(name, cmd, nil)
	if err != nil {
		return err
	}
	t.procs = append(t.procs, p)
	return nil
}

// checkServers reports a server that died.
func (t *topology) checkServers() error {
	for _, p := range t.procs {
		if gone, err := p.exited(); gone {
			return fmt.Errorf("server namespace: %w", err)
		}
	}
	return nil
}

func (t *topology) close() error {
	for _, p := range t.procs {
		p.stop()
	}
	return delNetns(t.serverNS)
}

// waitTCP waits until addr accepts a TCP connection from the host.
func waitTCP(ctx context.Context, addr netip.AddrPort) error {
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		var c net.Conn
		d := net.Dialer{Timeout: time.Second}
		if c, err = d.DialContext(ctx, "tcp", addr.String()); err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after 10s: %w", addr, err)
}

// removeStale deletes namespaces left by runs whose process is gone (one
// that was SIGKILLed could not clean up after itself).
func removeStale(log func(string, ...any)) {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "clawbench-")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			continue // that run is still alive
		}
		if err := delNetns(e.Name()); err != nil {
			log("remove stale namespace %s: %v", e.Name(), err)
		} else {
			log("removed stale namespace %s", e.Name())
		}
	}
}
