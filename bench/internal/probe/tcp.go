package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Serve answers every connection accepted on ln: it reads requests of
// MsgSize bytes and echoes each one, closing after the reply when the
// request asks for it. It returns when ctx ends, after closing ln and every
// open connection.
func Serve(ctx context.Context, ln net.Listener) error {
	var (
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			echo(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
	}
}

func echo(c net.Conn) {
	buf := make([]byte, MsgSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
		if buf[0] == opClose {
			return
		}
	}
}

// request fills a request buffer whose bytes the reply must echo.
func request(op byte, seq uint64) []byte {
	b := make([]byte, MsgSize)
	b[0] = op
	for i := 1; i < MsgSize; i++ {
		b[i] = byte(seq >> (8 * (i % 8)))
	}
	return b
}

// exchange sends req on c and reads the echoed reply into reply.
func exchange(c net.Conn, req, reply []byte) error {
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	if _, err := io.ReadFull(c, reply); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if !bytes.Equal(req, reply) {
		return errors.New("reply does not echo the request")
	}
	return nil
}

// Ping opens one connection to addr and proves it end to end with one
// exchange. A forwarder (a published port) accepts before the server
// behind it is up, so a connection alone proves nothing; an echo does.
func Ping(ctx context.Context, addr string) error {
	dl := net.Dialer{Timeout: 2 * time.Second}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	return exchange(c, request(opKeep, 1), make([]byte, MsgSize))
}

// RR measures transactions per second and their latency over one
// connection to addr, one request in flight at a time, for d.
func RR(ctx context.Context, addr string, d time.Duration) (Result, error) {
	r := Result{Mode: "rr"}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return r, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	lat := make([]time.Duration, 0, 1<<16)
	reply := make([]byte, MsgSize)
	start := time.Now()
	end := start.Add(d)
	var seq uint64
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		seq++
		// A path that stops answering must fail the test, not hang it.
		c.SetDeadline(t0.Add(2 * time.Second))
		if err := exchange(c, request(opKeep, seq), reply); err != nil {
			return r, fmt.Errorf("transaction %d: %w", seq, err)
		}
		lat = append(lat, time.Since(t0))
		r.Ops++
	}
	summarize(&r, time.Since(start), lat)
	return r, nil
}

// Connects measures connections per second to addr: each one is a new TCP
// connection carrying one request and its reply, closed by the server
// first. workers connections are in flight at once, for d.
func Connects(ctx context.Context, addr string, workers int, d time.Duration) (Result, error) {
	r := Result{Mode: "connects"}
	if workers < 1 {
		return r, fmt.Errorf("workers = %d, want at least 1", workers)
	}
	ctx, cancel := context.WithTimeout(ctx, d+5*time.Second)
	defer cancel()
	type workerResult struct {
		ops  int64
		errs errorCounter
		lat  []time.Duration
	}
	results := make([]workerResult, workers)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			wr := &results[w]
			reply := make([]byte, MsgSize)
			var seq uint64
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				seq++
				if err := connectOnce(ctx, addr, request(opClose, seq), reply); err != nil {
					wr.errs.add(err)
					// A refused or reset connection returns at once; do not
					// spin the CPU the path under test needs.
					time.Sleep(10 * time.Millisecond)
					continue
				}
				wr.lat = append(wr.lat, time.Since(t0))
				wr.ops++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var lat []time.Duration
	for i := range results {
		r.Ops += results[i].ops
		results[i].errs.into(&r)
		lat = append(lat, results[i].lat...)
	}
	summarize(&r, elapsed, lat)
	if r.Ops == 0 {
		return r, fmt.Errorf("no connection completed (%d errors, first: %s)", r.Errors, r.FirstError)
	}
	return r, nil
}

func connectOnce(ctx context.Context, addr string, req, reply []byte) error {
	dl := net.Dialer{Timeout: 2 * time.Second}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := exchange(c, req, reply); err != nil {
		return err
	}
	// Wait for the server's FIN so that it, not this side, holds TIME_WAIT.
	var one [1]byte
	if n, err := c.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("want EOF after the reply, got %d bytes, %v", n, err)
	}
	return nil
}

// Hold opens n connections to addr (workers at a time), proves each one
// end to end with one exchange, calls ready, then keeps them all open and
// idle until release is closed or ctx ends.
func Hold(ctx context.Context, addr string, n, workers int, ready func(Result), release <-chan struct{}) (Result, error) {
	r := Result{Mode: "hold"}
	if n < 1 || workers < 1 {
		return r, fmt.Errorf("hold %d connections with %d workers: both must be at least 1", n, workers)
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	start := time.Now()
	next := make(chan int)
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			reply := make([]byte, MsgSize)
			for i := range next {
				dl := net.Dialer{Timeout: 5 * time.Second}
				c, err := dl.DialContext(ctx, "tcp", addr)
				if err != nil {
					errc <- fmt.Errorf("connection %d: dial %s: %w", i, addr, err)
					return
				}
				conns[i] = c
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := exchange(c, request(opKeep, uint64(i)), reply); err != nil {
					errc <- fmt.Errorf("connection %d: %w", i, err)
					return
				}
				c.SetDeadline(time.Time{})
			}
		})
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errc:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errc:
		default:
		}
	}
	if err != nil {
		return r, fmt.Errorf("open %d connections: %w", n, err)
	}
	r.Ops = int64(n)
	summarize(&r, time.Since(start), nil)
	ready(r)
	select {
	case <-release:
	case <-ctx.Done():
	}
	return r, nil
}
