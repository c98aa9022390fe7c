package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ServeHTTP answers every HTTP/1.1 request on ln with 200 and an empty
// body, after reading its body and throwing it away. It is net/http, as a
// real server on the far side of an agent's uploads would be. It returns
// when ctx ends, after closing ln and every open connection.
func ServeHTTP(ctx context.Context, ln net.Listener) error {
	return serveHTTP(ctx, ln, http.HandlerFunc(sink), nil)
}

// serveHTTP serves h on ln, over TLS with HTTP/1.1 only when tlsConfig is
// set, until ctx ends; then it closes ln and every open connection.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler, tlsConfig *tls.Config) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	what, serve := "http server", func() error { return srv.Serve(ln) }
	if tlsConfig != nil {
		srv.TLSConfig = tlsConfig
		// HTTP/1.1 only, as the clients speak it; an empty map turns h2 off.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		what, serve = "https server", func() error { return srv.ServeTLS(ln, "", "") }
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := serve()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// sinkBufs hold the server's body reads: large enough that net/http's
// reader hands each read straight to the socket, with no copy of its own.
var sinkBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func sink(w http.ResponseWriter, r *http.Request) {
	bp := sinkBufs.Get().(*[]byte)
	defer sinkBufs.Put(bp)
	for {
		_, err := r.Body.Read(*bp)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return // the client went away; net/http closes the connection
		}
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// HTTPArgs says what HTTPPost sends.
type HTTPArgs struct {
	Addr string // host:port to dial, an address
	Host string // the Host header
	Size int    // body bytes of every request
	// InFlight is how many requests are sent before their responses are
	// read (pipelined on the one connection); 1 sends one at a time.
	InFlight int
	Duration time.Duration
}

// httpTimeout bounds the wait for one response: a path that stops moving
// fails the test rather than hang it.
const httpTimeout = 30 * time.Second

// bodyChunk is the most of a body written per call.
const bodyChunk = 256 << 10

// HTTPPost measures HTTP/1.1 uploads over one kept-alive connection to
// a.Addr: POST requests with a.Size-byte bodies, a.InFlight at a time, sent
// until a.Duration has passed (at least one), each answered with 200 and
// read before it counts. It reports requests per second and the body
// throughput.
func HTTPPost(ctx context.Context, a HTTPArgs) (Result, error) {
	r := Result{Mode: "http"}
	if a.Size < 0 || a.InFlight < 1 {
		return r, fmt.Errorf("size %d, in flight %d: want a size of at least 0 and at least 1 in flight", a.Size, a.InFlight)
	}
	dl := net.Dialer{Timeout: 5 * time.Second}
	c, err := dl.DialContext(ctx, "tcp", a.Addr)
	if err != nil {
		return r, fmt.Errorf("dial %s: %w", a.Addr, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	first, rest := httpRequest(a.Host, a.Size)
	sem := make(chan struct{}, a.InFlight)     // a slot per request not yet answered
	pending := make(chan struct{}, a.InFlight) // one per request sent, in order
	quit := make(chan struct{})
	var werr error // set before pending is closed
	start := time.Now()
	end := start.Add(a.Duration)
	go func() {
		defer close(pending)
		for i := 0; i == 0 || time.Now().Before(end); i++ {
			select {
			case sem <- struct{}{}:
			case <-quit:
				return
			}
			if err := writeRequest(c, first, rest, a.Size); err != nil {
				werr = fmt.Errorf("request %d: %w", i+1, err)
				return
			}
			pending <- struct{}{}
		}
	}()

	br := bufio.NewReaderSize(c, 64<<10)
	var rerr error
	for range pending {
		c.SetReadDeadline(time.Now().Add(httpTimeout))
		if err := readResponse(br); err != nil {
			rerr = fmt.Errorf("response %d: %w", r.Ops+1, err)
			break
		}
		r.Ops++
		r.Bytes += int64(a.Size)
		<-sem
	}
	elapsed := time.Since(start)
	if rerr != nil {
		close(quit)
		c.Close()
		for range pending {
		}
	}
	if err := errors.Join(rerr, werr); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return r, err
	}
	summarize(&r, elapsed, nil)
	r.Gbps = float64(r.Bytes) * 8 / 1e9 / r.Seconds
	return r, nil
}

// httpRequest builds a request: first is the head with as much of the body
// as one write carries, rest the buffer the remaining body is written from.
// The head has the headers of an agent's API call; what the bytes of the
// body are does not matter to anything on the path.
func httpRequest(host string, size int) (first, rest []byte) {
	body := filler[:min(size, bodyChunk)]
	head := fmt.Sprintf("POST /v1/upload HTTP/1.1\r\nHost: %s\r\nUser-Agent: clawbench-probe/1\r\n"+
		"Accept: application/json\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\n"+
		"Content-Length: %d\r\n\r\n", host, strings.Repeat("t", 48), size)
	return append([]byte(head), body...), body
}

// writeRequest writes first, then the rest of a size-byte body from rest.
func writeRequest(c net.Conn, first, rest []byte, size int) error {
	if _, err := c.Write(first); err != nil {
		return err
	}
	left := size - len(rest)
	for left > 0 {
		n := min(left, len(rest))
		if _, err := c.Write(rest[:n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// readResponse reads one response, which must be a 200, and its body.
func readResponse(br *bufio.Reader) error {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return err
}
