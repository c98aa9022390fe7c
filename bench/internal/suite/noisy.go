package suite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
	"github.com/clawnet/clawnet/bench/internal/report"
)

// The noisy-neighbour test: two agents on a second clawnetd that runs on
// the default limits (the suite's own daemon lifts the rate limits so that
// its figures measure the gateway, not the limiter; here the limits are
// the point). The victim downloads with iperf3, one stream, through the
// gateway: alone, then beside each flood of the neighbour agent, and beside
// the same flood sent from the host namespace straight to the server, not
// through the gateway. On a shared machine a flood costs the victim CPU
// wherever it comes from; what the gateway adds on top is the victim's
// rate beside the agent's flood ÷ its rate beside the host's.
const (
	noisyVictim    = "victim"
	noisyNeighbour = "neighbour"

	noisyConnectWorkers = 8   // like the connects test
	noisyDNSWorkers     = 4   // each with up to 64 queries unanswered
	noisyUDPWorkers     = 4   // one socket, so one flow, each
	noisyUDPSize        = 512 // bytes per datagram
)

// noisyFlood is one kind of flood and the figures it gives.
type noisyFlood struct {
	kind                   string // a probe flood kind
	label                  string
	key, hostKey, ratioKey string
}

var noisyFloods = []noisyFlood{
	{probe.FloodConnect, "connect", report.NoisyConnectGbps, report.NoisyConnectHostGbps, report.NoisyConnectRatio},
	{probe.FloodDNS, "dns", report.NoisyDNSGbps, report.NoisyDNSHostGbps, report.NoisyDNSRatio},
	{probe.FloodUDP, "udp", report.NoisyUDPGbps, report.NoisyUDPHostGbps, report.NoisyUDPRatio},
}

// noisyNet is the second daemon and its two agents, set up once a run.
type noisyNet struct {
	gw          *clawnetSystem
	victimNS    string
	neighbourNS string
	gateway     string // the neighbour's gateway address: its DNS server
}

func newNoisyNet(ctx context.Context, main *clawnetSystem) (n *noisyNet, err error) {
	gw := &clawnetSystem{t: main.t, bin: main.bin, defaults: true}
	if main.logFile != "" {
		gw.logFile = strings.TrimSuffix(main.logFile, ".log") + "-noisy.log"
		os.Remove(gw.logFile)
	}
	n = &noisyNet{gw: gw, victimNS: main.t.nsName("victim"), neighbourNS: main.t.nsName("neighbour")}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	if err := gw.prepare(); err != nil {
		return nil, err
	}
	if err := gw.startDaemon(ctx); err != nil {
		return nil, err
	}
	if _, err := gw.attachPolicy(ctx, n.victimNS, noisyVictim, noisyVictim); err != nil {
		return nil, err
	}
	out, err := gw.attachPolicy(ctx, n.neighbourNS, noisyNeighbour, noisyNeighbour)
	if err != nil {
		return nil, err
	}
	n.gateway = gatewayFrom(out)
	return n, nil
}

func (n *noisyNet) close() error {
	n.gw.stopDaemon()
	err := errors.Join(delNetns(n.victimNS), delNetns(n.neighbourNS))
	if n.gw.dir != "" {
		os.RemoveAll(n.gw.dir)
	}
	return err
}

// floodArgs are the probe's arguments for a flood of kind from the
// neighbour agent or, fromHost, from the host namespace to the server.
func (n *noisyNet) floodArgs(kind string, fromHost bool, d time.Duration) []string {
	srv := n.gw.t.addr
	var args []string
	switch kind {
	case probe.FloodConnect:
		args = []string{"-addr", netip.AddrPortFrom(srv, probePort).String(), "-workers", fmt.Sprint(noisyConnectWorkers)}
	case probe.FloodDNS:
		server := netip.AddrPortFrom(srv, dnsPort).String()
		if !fromHost {
			server = n.gateway + ":53"
		}
		args = []string{"-addr", server, "-name", dnsName, "-workers", fmt.Sprint(noisyDNSWorkers)}
	case probe.FloodUDP:
		args = []string{"-addr", netip.AddrPortFrom(srv, udpSinkPort).String(), "-size", fmt.Sprint(noisyUDPSize),
			"-workers", fmt.Sprint(noisyUDPWorkers)}
	}
	return append([]string{"flood", "-kind", kind, "-duration", d.String()}, args...)
}

// noisyResult is one download of the victim and what ran beside it.
type noisyResult struct {
	gbps     float64
	gwCores  float64 // the noisy daemon's CPU over the download, in cores
	flood    probe.Result
	floodCPU float64 // the flood's own CPU, in cores over its life
}

// run measures one download of the victim, beside a flood of kind (none
// when kind is "") from the neighbour or, fromHost, from the host. With
// cfg.Profile it saves a CPU profile of the daemon over the download as
// profile, in cfg.OutDir/pprof.
func (n *noisyNet) run(ctx context.Context, cfg Config, kind string, fromHost bool, profile string) (res noisyResult, err error) {
	var (
		fl       *proc
		out      bytes.Buffer
		auditOff = n.gw.auditEnd()
	)
	if kind != "" {
		ns := n.neighbourNS
		if fromHost {
			ns = ""
		}
		// The flood is stopped when the download ends; its own limit only
		// keeps a suite that died from leaving it running.
		limit := time.Duration(cfg.NoisySeconds)*time.Second + cfg.NoisyWarmup + time.Minute
		cmd := nsCommand(ctx, ns, n.gw.t.probe, n.floodArgs(kind, fromHost, limit)...)
		cmd.Stdout = &out
		if fl, err = startProc("flood "+kind, cmd, nil); err != nil {
			return res, err
		}
		defer fl.stop()
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(cfg.NoisyWarmup):
		}
		if gone, err := fl.exited(); gone {
			return res, err
		}
	}
	before, err := readProcStat(n.gw.pid())
	if err != nil {
		return res, err
	}
	var profiled chan error
	if cfg.Profile {
		profiled = make(chan error, 1)
		go func() {
			profiled <- n.gw.cpuProfile(ctx, time.Duration(cfg.NoisySeconds)*time.Second, filepath.Join(cfg.OutDir, "pprof", profile+".pb.gz"))
		}()
	}
	start := time.Now()
	ir, err := runIperf(ctx, n.victimNS, n.gw.t.addr, iperfPort(report.Clawnet), cfg.NoisySeconds, true, 1)
	elapsed := time.Since(start)
	if profiled != nil {
		if perr := <-profiled; perr != nil && err == nil {
			err = fmt.Errorf("profile: %w", perr)
		}
	}
	if err != nil {
		return res, fmt.Errorf("victim's download: %w", err)
	}
	after, err := readProcStat(n.gw.pid())
	if err != nil {
		return res, err
	}
	res.gbps = ir.gbps
	res.gwCores = (after.cpu - before.cpu).Seconds() / elapsed.Seconds()
	if fl != nil {
		if gone, err := fl.exited(); gone {
			return res, fmt.Errorf("the flood ended before the download did: %w", err)
		}
		fl.stop()
		if fl.err != nil {
			return res, fmt.Errorf("flood %s: %v: %s", kind, fl.err, fl.out.String())
		}
		if res.flood, err = probe.ParseResult(bytes.TrimSpace(out.Bytes())); err != nil {
			return res, err
		}
		if st := fl.cmd.ProcessState; st != nil && res.flood.Seconds > 0 {
			res.floodCPU = (st.UserTime() + st.SystemTime()).Seconds() / (res.flood.Seconds)
		}
		if !fromHost {
			if err := n.checkFlood(kind, res.flood, auditOff); err != nil {
				return res, err
			}
		}
	}
	// Let the flood's flows close and the gateway's rate limits refill
	// before the next download.
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(cfg.NoisySettle):
	}
	return res, nil
}

// checkFlood makes sure the neighbour's flood went through the gateway:
// something of it got through, and the audit log shows the neighbour's
// allowed flows (or, for DNS, its queries). A flood that never reached
// the gateway would flatter it.
func (n *noisyNet) checkFlood(kind string, r probe.Result, auditOff int64) error {
	if r.Ops == 0 {
		return fmt.Errorf("the neighbour's %s flood got nothing through (%d sent, first error: %s)", kind, r.Sent, r.FirstError)
	}
	var port uint16
	var proto string
	switch kind {
	case probe.FloodConnect:
		port, proto = probePort, "tcp"
	case probe.FloodUDP:
		port, proto = udpSinkPort, "udp"
	}
	seen, err := n.gw.auditSince(auditOff, func(ev auditEvent) bool {
		if ev.Agent != noisyNeighbour {
			return false
		}
		if kind == probe.FloodDNS {
			return ev.Kind == "dns"
		}
		return ev.allowedOpen(port) && ev.Proto == proto
	})
	if err == nil && seen == 0 {
		err = errors.New("no line of it in the audit log")
	}
	if err != nil {
		return fmt.Errorf("the neighbour's %s flood: %w", kind, err)
	}
	return nil
}

// measureNoisy runs one repetition of the noisy-neighbour test: the
// victim alone, then beside each flood from the neighbour and from the
// host (in turn first, from one repetition to the next).
func (r *runner) measureNoisy(ctx context.Context, c *clawnetSystem, rep int) {
	const system = report.Clawnet
	n := c.noisy
	if err := n.gw.alive(); err != nil {
		r.fail(system, fmt.Errorf("noisy neighbour: %w", err))
		return
	}
	solo, err := n.run(ctx, r.cfg, "", false, fmt.Sprintf("rep%d-alone", rep))
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		r.fail(system, fmt.Errorf("noisy neighbour, victim alone: %w", err))
		return
	}
	r.samples.Add(system, report.NoisySoloGbps, solo.gbps)
	r.samples.Add(system, "noisy_solo_gw_cores", solo.gwCores)
	line := []string{fmt.Sprintf("alone %.2f (gw %.2f cores)", solo.gbps, solo.gwCores)}
	for _, f := range noisyFloods {
		order := []bool{false, true}
		if rep%2 == 0 {
			order = []bool{true, false}
		}
		got := map[bool]noisyResult{}
		for _, fromHost := range order {
			from, file := "the neighbour", "agent"
			if fromHost {
				from, file = "the host", "host"
			}
			res, err := n.run(ctx, r.cfg, f.kind, fromHost, fmt.Sprintf("rep%d-%s-%s", rep, f.label, file))
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				r.fail(system, fmt.Errorf("noisy neighbour, %s flood from %s: %w", f.label, from, err))
				break
			}
			got[fromHost] = res
		}
		if len(got) < 2 {
			continue
		}
		agent, host := got[false], got[true]
		r.samples.Add(system, f.key, agent.gbps)
		r.samples.Add(system, f.hostKey, host.gbps)
		r.samples.Add(system, f.ratioKey, agent.gbps/host.gbps)
		// What ran beside the download, for raw.json: the flood's rate
		// (what got through, what failed), its CPU and the gateway's.
		for prefix, res := range map[string]noisyResult{"noisy_" + f.label: agent, "noisy_" + f.label + "_host": host} {
			r.samples.Add(system, prefix+"_flood_per_s", res.flood.PerSec)
			r.samples.Add(system, prefix+"_flood_failed_per_s", float64(res.flood.Errors)/res.flood.Seconds)
			r.samples.Add(system, prefix+"_flood_cores", res.floodCPU)
			r.samples.Add(system, prefix+"_gw_cores", res.gwCores)
		}
		line = append(line, fmt.Sprintf("%s %.2f vs host %.2f (%.2f×; flood %.0f/s + %.0f/s failed, gw %.2f cores | host flood %.0f/s, gw %.2f)",
			f.label, agent.gbps, host.gbps, agent.gbps/host.gbps, agent.flood.PerSec,
			float64(agent.flood.Errors)/agent.flood.Seconds, agent.gwCores, host.flood.PerSec, host.gwCores))
	}
	r.logf("rep %d/%d clawnet noisy neighbour: %s", rep, r.cfg.Reps, strings.Join(line, "; "))
}

// cpuProfile saves a CPU profile of the daemon over the next d to file,
// from the pprof handler on its control socket.
func (c *clawnetSystem) cpuProfile(ctx context.Context, d time.Duration, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", c.socket())
		},
	}}
	url := fmt.Sprintf("http://clawnetd/debug/pprof/profile?seconds=%d", int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
