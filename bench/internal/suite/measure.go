package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/clawnet/clawnet/bench/internal/probe"
)

// iperfResult is what the suite takes from one iperf3 test.
type iperfResult struct {
	gbps  float64 // receiver's rate
	bytes float64 // bytes the receiver got
}

// parseIperf reads iperf3's -J output.
func parseIperf(out []byte) (iperfResult, error) {
	var v struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return iperfResult{}, fmt.Errorf("parse iperf3 output: %w: %q", err, firstLine(out))
	}
	if v.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", v.Error)
	}
	s := v.End.SumReceived
	if s.BitsPerSecond <= 0 || s.Bytes <= 0 {
		return iperfResult{}, fmt.Errorf("iperf3 reports nothing received (%v bytes)", s.Bytes)
	}
	return iperfResult{gbps: s.BitsPerSecond / 1e9, bytes: s.Bytes}, nil
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	if len(line) > 200 {
		line = line[:200]
	}
	return string(line)
}

// runIperf runs one iperf3 client test from ns to target:port: upload
// (client sends) or, with reverse, download, over streams connections.
func runIperf(ctx context.Context, ns string, target netip.Addr, port, seconds int, reverse bool, streams int) (iperfResult, error) {
	args := []string{"-c", target.String(), "-p", strconv.Itoa(port), "-t", strconv.Itoa(seconds),
		"-J", "--connect-timeout", "5000", "-P", strconv.Itoa(streams)}
	if reverse {
		args = append(args, "-R")
	}
	var lastErr error
	// A server still tearing down the previous test answers "busy"; that
	// is the only error worth a retry.
	for try := range 3 {
		if try > 0 {
			select {
			case <-ctx.Done():
				return iperfResult{}, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
		tctx, cancel := context.WithTimeout(ctx, time.Duration(seconds+20)*time.Second)
		out, err := nsCommand(tctx, ns, "iperf3", args...).Output()
		cancel()
		r, perr := parseIperf(out)
		if perr == nil {
			return r, nil
		}
		if err != nil && len(bytes.TrimSpace(out)) == 0 {
			perr = fmt.Errorf("iperf3 %s: %w", strings.Join(args, " "), err)
		}
		lastErr = perr
		if !strings.Contains(perr.Error(), "busy") {
			break
		}
	}
	return iperfResult{}, lastErr
}

// runProbe runs a probe client mode inside ns and parses its result.
func runProbe(ctx context.Context, ns, probeBin string, d time.Duration, args ...string) (probe.Result, error) {
	tctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := nsCommand(tctx, ns, probeBin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return probe.Result{}, fmt.Errorf("probe %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return probe.ParseResult(lines[len(lines)-1])
}
