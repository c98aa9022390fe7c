// Package probe is the request/response side of the benchmark suite: a TCP
// echo server and the clients that measure transactions per second with
// latency percentiles over one connection, new connections per second, idle
// connections held open, DNS queries per second, HTTP/1.1 uploads (with
// the server that takes them), and floods of connections, DNS queries or
// UDP datagrams (with a sink for the datagrams). It only ever talks to the
// address it is given; the suite decides which addresses those are.
package probe

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// MsgSize is the size of every request and reply: small enough that one
// segment carries it, so the figures measure the path, not the bandwidth.
const MsgSize = 64

// The first byte of a request tells the server what to do after replying.
const (
	// opKeep: reply and wait for the next request on the same connection.
	opKeep = 'K'
	// opClose: reply, then close first, so TIME_WAIT lands on the server
	// and a connection storm cannot exhaust the client side's ports.
	opClose = 'C'
)

// Result is what every client mode prints, one JSON object on stdout.
type Result struct {
	Mode string `json:"mode"`
	Ops  int64  `json:"ops"`
	// Sent counts what a flood attempted (see Flood); 0 for other modes.
	Sent    int64   `json:"sent,omitempty"`
	Errors  int64   `json:"errors"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_s"`
	// Latency percentiles of one operation, in microseconds (0 when the
	// mode does not time single operations).
	P50us float64 `json:"p50_us,omitempty"`
	P99us float64 `json:"p99_us,omitempty"`
	// Steps holds the median of each step of an operation that has them,
	// in microseconds (the https mode: dns, connect, tls, get).
	Steps map[string]float64 `json:"steps_p50_us,omitempty"`
	// Bytes and Gbps are the payload a throughput mode moved and its rate.
	Bytes int64   `json:"bytes,omitempty"`
	Gbps  float64 `json:"gbps,omitempty"`
	// FirstError is the first error seen, to make a failing run explain itself.
	FirstError string `json:"first_error,omitempty"`
}

// ParseResult reads a Result printed by a client.
func ParseResult(b []byte) (Result, error) {
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return Result{}, fmt.Errorf("parse probe result %q: %w", truncate(b, 200), err)
	}
	return r, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method, or 0 for an empty slice.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// summarize fills the rate and percentile fields of r from its samples.
func summarize(r *Result, elapsed time.Duration, lat []time.Duration) {
	r.Seconds = elapsed.Seconds()
	if r.Seconds > 0 {
		r.PerSec = float64(r.Ops) / r.Seconds
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50us = us(Percentile(lat, 50))
		r.P99us = us(Percentile(lat, 99))
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// errorCounter keeps a count of errors and the first one.
type errorCounter struct {
	n     int64
	first error
}

func (e *errorCounter) add(err error) {
	if e.n == 0 {
		e.first = err
	}
	e.n++
}

func (e *errorCounter) into(r *Result) {
	r.Errors += e.n
	if r.FirstError == "" && e.first != nil {
		r.FirstError = e.first.Error()
	}
}
