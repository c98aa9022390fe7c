package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Flood kinds: what a noisy neighbour sends as fast as it can.
const (
	// FloodConnect opens TCP connections to Addr, each carrying one
	// request and its echo, the server closing first (so TIME_WAIT lands
	// on the server, as in Connects); a refused or failed connection is
	// retried at once, never after a pause.
	FloodConnect = "connect"
	// FloodDNS sends A queries for Name to the DNS server at Addr, up to
	// dnsFloodWindow unanswered per worker, without waiting for each.
	FloodDNS = "dns"
	// FloodUDP sends Size-byte datagrams to Addr, one socket per worker,
	// with nothing to answer them.
	FloodUDP = "udp"
)

// dnsFloodWindow is how many queries one DNS flood worker keeps
// unanswered; when no answer frees a place for dnsFloodLost, the worker
// takes the rest for lost and sends again.
const (
	dnsFloodWindow = 64
	dnsFloodLost   = 20 * time.Millisecond
)

// FloodArgs is what to flood, how, and for how long.
type FloodArgs struct {
	Kind     string
	Addr     string // host:port: the server (the DNS server for FloodDNS)
	Name     string // FloodDNS: the name to ask for
	Size     int    // FloodUDP: payload bytes of every datagram
	Workers  int
	Duration time.Duration
}

// Flood sends what a.Kind says to a.Addr as fast as a.Workers can for
// a.Duration, or until ctx ends (the suite stops a flood when the test
// beside it is over), and returns what it did: Sent counts the attempts
// (connections tried, queries or datagrams sent), Ops the ones that got
// through (connections that completed their exchange, DNS answers of any
// kind, datagrams sent), Errors the failures (connections refused or
// reset, DNS answers other than NOERROR, failed sends). PerSec is Ops per
// second.
func Flood(ctx context.Context, a FloodArgs) (Result, error) {
	r := Result{Mode: "flood-" + a.Kind}
	if a.Workers < 1 {
		return r, fmt.Errorf("workers = %d, want at least 1", a.Workers)
	}
	var worker func(ctx context.Context, w *floodWorker)
	switch a.Kind {
	case FloodConnect:
		worker = func(ctx context.Context, w *floodWorker) { floodConnects(ctx, a.Addr, w) }
	case FloodDNS:
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(a.Name), dns.TypeA)
		query, err := q.Pack()
		if err != nil {
			return r, fmt.Errorf("dns query for %q: %w", a.Name, err)
		}
		worker = func(ctx context.Context, w *floodWorker) { floodDNS(ctx, a.Addr, query, w) }
	case FloodUDP:
		if a.Size < 1 || a.Size > 65507 {
			return r, fmt.Errorf("size = %d, want 1 to 65507 bytes", a.Size)
		}
		worker = func(ctx context.Context, w *floodWorker) { floodUDP(ctx, a.Addr, a.Size, w) }
	default:
		return r, fmt.Errorf("unknown flood kind %q (want %s, %s or %s)", a.Kind, FloodConnect, FloodDNS, FloodUDP)
	}
	ctx, cancel := context.WithTimeout(ctx, a.Duration)
	defer cancel()
	workers := make([]floodWorker, a.Workers)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { worker(ctx, &workers[i]) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i := range workers {
		w := &workers[i]
		r.Sent += w.sent.Load()
		r.Ops += w.ops.Load()
		w.errs.into(&r)
	}
	summarize(&r, elapsed, nil)
	if r.Sent == 0 {
		return r, fmt.Errorf("flood %s: nothing sent to %s (%d errors, first: %s)", a.Kind, a.Addr, r.Errors, r.FirstError)
	}
	return r, nil
}

// floodWorker is one worker's counts. The DNS worker's reader counts
// beside its sender, hence the atomics; errs belongs to the sender.
type floodWorker struct {
	sent, ops atomic.Int64
	mu        sync.Mutex
	errs      errorCounter
}

func (w *floodWorker) fail(err error) {
	w.mu.Lock()
	w.errs.add(err)
	w.mu.Unlock()
}

func floodConnects(ctx context.Context, addr string, w *floodWorker) {
	reply := make([]byte, MsgSize)
	var seq uint64
	for ctx.Err() == nil {
		seq++
		err := connectOnce(ctx, addr, request(opClose, seq), reply)
		if err != nil && ctx.Err() != nil {
			return // cut short by the end of the flood: not counted
		}
		w.sent.Add(1)
		if err != nil {
			w.fail(err)
			continue
		}
		w.ops.Add(1)
	}
}

func floodDNS(ctx context.Context, server string, query []byte, w *floodWorker) {
	c, err := net.Dial("udp", server)
	if err != nil {
		w.fail(fmt.Errorf("dial %s: %w", server, err))
		return
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	var outstanding atomic.Int64
	room := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				continue // an ICMP error read back on the socket
			}
			if n < 12 {
				continue
			}
			w.ops.Add(1)
			if rcode := buf[3] & 0x0f; rcode != dns.RcodeSuccess {
				w.fail(fmt.Errorf("answer rcode %s", dns.RcodeToString[int(rcode)]))
			}
			if outstanding.Add(-1) < dnsFloodWindow {
				select {
				case room <- struct{}{}:
				default:
				}
			}
		}
	}()
	q := append([]byte(nil), query...)
	lost := time.NewTimer(dnsFloodLost)
	defer lost.Stop()
	var id uint16
	for ctx.Err() == nil {
		if outstanding.Load() >= dnsFloodWindow {
			lost.Reset(dnsFloodLost)
			select {
			case <-room:
			case <-lost.C:
				outstanding.Store(0) // the rest were dropped somewhere
			case <-ctx.Done():
			}
			continue
		}
		id++
		binary.BigEndian.PutUint16(q, id)
		if _, err := c.Write(q); err != nil {
			if ctx.Err() == nil {
				w.fail(fmt.Errorf("send query: %w", err))
			}
			continue
		}
		w.sent.Add(1)
		outstanding.Add(1)
	}
	c.Close()
	<-done
}

func floodUDP(ctx context.Context, addr string, size int, w *floodWorker) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		w.fail(fmt.Errorf("dial %s: %w", addr, err))
		return
	}
	defer c.Close()
	payload := make([]byte, size)
	for ctx.Err() == nil {
		w.sent.Add(1)
		if _, err := c.Write(payload); err != nil {
			// ENOBUFS from a full queue, or a port unreachable reported
			// back on the socket: the next datagram goes all the same.
			w.fail(fmt.Errorf("send datagram: %w", err))
			continue
		}
		w.ops.Add(1)
	}
}

// ServeUDPSink reads and drops every datagram that arrives on pc until
// ctx ends: the target of the UDP flood, so that the flood's datagrams are
// taken off the socket as they would be by a real service, and no port
// unreachable comes back.
func ServeUDPSink(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("udp sink: %w", err)
		}
	}
}
