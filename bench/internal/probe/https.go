package probe

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The agent's workloads over HTTPS, each reaching the server by name: the
// client resolves the name through the DNS server it is given (on clawnet,
// the gateway, whose answer binds the address to the name), connects to
// the answer and presents the name as SNI and Host; crypto/tls on both
// sides, with a certificate made for the run.
const (
	// FetchSize is the body of GET /fetch: an API call's small answer.
	FetchSize = 1 << 10
	// ChunkSize is every chunk of GET /stream: a few tokens of a model's
	// streamed answer, with the framing around them.
	ChunkSize = 2048
	// StreamGapMin and StreamGapMax bound the pause before each chunk of
	// GET /stream, drawn uniformly from a seeded source.
	StreamGapMin = 5 * time.Millisecond
	StreamGapMax = 20 * time.Millisecond
	// InstallMin and InstallMax bound the sizes of Install's fetches: the
	// packages of an install, drawn uniformly from a seeded source.
	InstallMin = 20_000
	InstallMax = 200_000
	// maxBlob and maxStream bound what one request may ask the server for.
	maxBlob   = 16 << 20
	maxStream = 10 * time.Minute
)

// SelfSigned makes a certificate for name and its key, PEM-encoded: an
// ECDSA P-256 key (what most public sites serve), valid from an hour ago
// for a day. The client trusts it as its only root.
func SelfSigned(name string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// Roots returns a pool holding the PEM certificates in certPEM.
func Roots(certPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// monoNow is CLOCK_MONOTONIC in nanoseconds. Network namespaces share it
// (only a time namespace would not), so a stamp taken by the server in its
// namespace can be subtracted from the client's in another.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return ts.Nano()
}

// ServeHTTPS serves the HTTPS workloads on ln with cert, over HTTP/1.1:
//
//	GET /fetch                → FetchSize bytes
//	GET /blob?size=N          → N bytes
//	GET /stream?ms=D&seed=S   → ChunkSize-byte chunks for D ms, each after a
//	                            pause in [StreamGapMin, StreamGapMax] drawn
//	                            from S, each starting with its send time
//	                            (CLOCK_MONOTONIC ns) and its sequence number
//
// It returns when ctx ends, after closing ln and every open connection.
func ServeHTTPS(ctx context.Context, ln net.Listener, cert tls.Certificate) error {
	return serveTLS(ctx, ln, cert, workloads())
}

func serveTLS(ctx context.Context, ln net.Listener, cert tls.Certificate, h http.Handler) error {
	return serveHTTP(ctx, ln, h, &tls.Config{Certificates: []tls.Certificate{cert}})
}

// filler is what every body is cut from.
var filler = func() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

func workloads() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /fetch", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(FetchSize))
		w.Write(filler[:FetchSize])
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("size"))
		if err != nil || n < 0 || n > maxBlob {
			http.Error(w, fmt.Sprintf("size %q: want 0 to %d", r.URL.Query().Get("size"), maxBlob), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(filler))
			if _, err := w.Write(filler[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		ms, err1 := strconv.Atoi(r.URL.Query().Get("ms"))
		seed, err2 := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
		d := time.Duration(ms) * time.Millisecond
		if err1 != nil || err2 != nil || d <= 0 || d > maxStream {
			http.Error(w, fmt.Sprintf("ms %q, seed %q: want 1 to %d ms and a number", r.URL.Query().Get("ms"), r.URL.Query().Get("seed"), maxStream.Milliseconds()), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		gaps := newGaps(seed)
		chunk := make([]byte, ChunkSize)
		copy(chunk, filler)
		end := time.Now().Add(d)
		for seq := uint64(0); ; seq++ {
			gap := gaps.next()
			if time.Now().Add(gap).After(end) {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(gap):
			}
			binary.BigEndian.PutUint64(chunk[8:], seq)
			binary.BigEndian.PutUint64(chunk[0:], uint64(monoNow()))
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	})
	return mux
}

// gaps draws the pauses of a stream.
type gaps struct{ r *mrand.Rand }

func newGaps(seed uint64) gaps { return gaps{mrand.New(mrand.NewPCG(seed, seed^0x5eed))} }

func (g gaps) next() time.Duration {
	return StreamGapMin + time.Duration(g.r.Int64N(int64(StreamGapMax-StreamGapMin)+1))
}

// InstallSizes returns the sizes of n fetches drawn from seed, each in
// [InstallMin, InstallMax]: the same seed gives every system the same
// install.
func InstallSizes(seed uint64, n int) []int {
	r := mrand.New(mrand.NewPCG(seed, seed^0x1a57a11))
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = InstallMin + r.IntN(InstallMax-InstallMin+1)
	}
	return sizes
}

// TLSTarget says how a client reaches the HTTPS server: by Name, resolved
// through DNS (host:port) before every connection, on Port, trusting only
// Roots.
type TLSTarget struct {
	Name  string
	Port  int
	DNS   string
	Roots *x509.CertPool
}

// httpsTimeout bounds every step of a workload: a path that stops moving
// fails the test rather than hang it.
const httpsTimeout = 10 * time.Second

// dial resolves the name, connects and completes the TLS handshake, as an
// agent's HTTPS client does for each new connection.
func (t TLSTarget) dial(ctx context.Context) (*tls.Conn, error) {
	c, _, err := t.dialTimed(ctx)
	return c, err
}

// The steps of a connection, and of a fetch, that HTTPSFetch times apart.
const (
	stepDNS = iota
	stepConnect
	stepTLS
	stepGet
	steps
)

var stepNames = [steps]string{"dns", "connect", "tls", "get"}

// dialTimed is dial, with the time each of its steps took.
func (t TLSTarget) dialTimed(ctx context.Context) (*tls.Conn, [steps]time.Duration, error) {
	var took [steps]time.Duration
	t0 := time.Now()
	ip, err := Resolve(ctx, t.DNS, t.Name)
	if err != nil {
		return nil, took, err
	}
	t1 := time.Now()
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(t.Port))
	dl := net.Dialer{Timeout: httpsTimeout}
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, took, fmt.Errorf("dial %s: %w", addr, err)
	}
	t2 := time.Now()
	tc := tls.Client(c, &tls.Config{ServerName: t.Name, RootCAs: t.Roots, NextProtos: []string{"http/1.1"}})
	hctx, cancel := context.WithTimeout(ctx, httpsTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, took, fmt.Errorf("tls handshake with %s (%s): %w", addr, t.Name, err)
	}
	took[stepDNS], took[stepConnect], took[stepTLS] = t1.Sub(t0), t2.Sub(t1), time.Since(t2)
	return tc, took, nil
}

// get sends GET path on c and reads the response, which must be a 200
// with a body of want bytes (-1: any), into buf; close asks the server to
// close the connection after it.
func (t TLSTarget) get(c net.Conn, br *bufio.Reader, path string, want int64, close bool, buf []byte) (int64, error) {
	c.SetDeadline(time.Now().Add(httpsTimeout))
	conn := ""
	if close {
		conn = "Connection: close\r\n"
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + t.Name + "\r\nUser-Agent: clawbench-probe/1\r\nAccept: */*\r\n" + conn + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return 0, fmt.Errorf("GET %s: write: %w", path, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return n, fmt.Errorf("GET %s: status %s", path, resp.Status)
	case err != nil:
		return n, fmt.Errorf("GET %s: body: %w", path, err)
	case want >= 0 && n != want:
		return n, fmt.Errorf("GET %s: %d body bytes, want %d", path, n, want)
	}
	return n, nil
}

// HTTPSFetch measures what an agent calling an API pays per call: one
// after another for d (at least one), a fetch resolves the name, connects,
// completes a TLS handshake (no session resumption) and sends GET /fetch,
// reading its FetchSize-byte answer; the server closes first. It reports fetches
// per second and the percentiles of one whole fetch, and the median of
// each step (Steps: dns, connect, tls, get).
func HTTPSFetch(ctx context.Context, t TLSTarget, d time.Duration) (Result, error) {
	r := Result{Mode: "https"}
	var (
		errs    errorCounter
		lat     []time.Duration
		stepLat [steps][]time.Duration
		buf     = make([]byte, 32<<10)
	)
	start := time.Now()
	end := start.Add(d)
	for i := 0; ctx.Err() == nil && (i == 0 || time.Now().Before(end)); i++ {
		t0 := time.Now()
		var whole time.Duration
		took, err := func() ([steps]time.Duration, error) {
			c, took, err := t.dialTimed(ctx)
			if err != nil {
				return took, err
			}
			defer c.Close()
			t1 := time.Now()
			br := bufio.NewReaderSize(c, 4<<10)
			if _, err = t.get(c, br, "/fetch", FetchSize, true, buf); err != nil {
				return took, err
			}
			took[stepGet] = time.Since(t1)
			whole = time.Since(t0)
			// The server closes first, as asked, so that TIME_WAIT stays
			// in its namespace, not in the host's port space (where
			// slirp4netns, pasta and clawnet dial from): wait for its
			// close before closing, outside the fetch's time.
			_, err = io.CopyBuffer(io.Discard, br, buf)
			return took, err
		}()
		if err != nil {
			errs.add(err)
			continue
		}
		lat = append(lat, whole)
		for i, d := range took {
			stepLat[i] = append(stepLat[i], d)
		}
		r.Ops++
		r.Bytes += FetchSize
	}
	errs.into(&r)
	summarize(&r, time.Since(start), lat)
	if r.Ops > 0 {
		r.Steps = map[string]float64{}
		for i, l := range stepLat {
			slices.Sort(l)
			r.Steps[stepNames[i]] = us(Percentile(l, 50))
		}
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	if r.Ops == 0 {
		return r, fmt.Errorf("no fetch completed (%d errors, first: %s)", r.Errors, r.FirstError)
	}
	return r, nil
}

// Stream measures a streamed answer, a model's tokens: over one HTTPS
// connection it asks GET /stream for d, then times every chunk from the
// server's stamp to the moment the client has read all of it. It reports
// the chunks and the percentiles of that delay; the path's share of it
// is the difference from the kernel's (veth), in the same run.
func Stream(ctx context.Context, t TLSTarget, d time.Duration, seed uint64) (Result, error) {
	r := Result{Mode: "stream"}
	ms := d.Milliseconds()
	if ms < 1 || d > maxStream {
		return r, fmt.Errorf("duration %v: want 1ms to %v", d, maxStream)
	}
	start := time.Now()
	c, err := t.dial(ctx)
	if err != nil {
		return r, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	path := fmt.Sprintf("/stream?ms=%d&seed=%d", ms, seed)
	c.SetDeadline(time.Now().Add(httpsTimeout))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+t.Name+"\r\nUser-Agent: clawbench-probe/1\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		return r, fmt.Errorf("GET %s: write: %w", path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 16<<10), nil)
	if err != nil {
		return r, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("GET %s: status %s", path, resp.Status)
	}
	var lat []time.Duration
	chunk := make([]byte, ChunkSize)
	for seq := uint64(0); ; seq++ {
		// The gaps are at most StreamGapMax: a longer silence is a stall.
		c.SetReadDeadline(time.Now().Add(httpsTimeout))
		_, err := io.ReadFull(resp.Body, chunk)
		now := monoNow()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			return r, fmt.Errorf("chunk %d: %w", seq, err)
		}
		sent := int64(binary.BigEndian.Uint64(chunk[0:]))
		if got := binary.BigEndian.Uint64(chunk[8:]); got != seq {
			return r, fmt.Errorf("chunk %d carries sequence number %d", seq, got)
		}
		if now < sent {
			return r, fmt.Errorf("chunk %d arrived %v before it was sent: client and server do not share CLOCK_MONOTONIC", seq, time.Duration(sent-now))
		}
		lat = append(lat, time.Duration(now-sent))
		r.Ops++
		r.Bytes += ChunkSize
	}
	summarize(&r, time.Since(start), lat)
	if r.Ops == 0 {
		return r, fmt.Errorf("GET %s: no chunk in %v", path, d)
	}
	return r, nil
}

// Install measures a package manager's download phase: len(sizes) fetches
// of GET /blob, each of its size, taken in order from one queue by conns
// workers, each over its own kept-alive HTTPS connection (one lookup and
// handshake each). It reports the whole time, first lookup to last byte,
// and the percentiles of one fetch.
func Install(ctx context.Context, t TLSTarget, sizes []int, conns int) (Result, error) {
	r := Result{Mode: "install"}
	if conns < 1 || len(sizes) == 0 {
		return r, fmt.Errorf("%d fetches over %d connections: want at least one of each", len(sizes), conns)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan int, len(sizes))
	for _, s := range sizes {
		queue <- s
	}
	close(queue)
	type worker struct {
		ops, bytes int64
		lat        []time.Duration
	}
	ws := make([]worker, conns)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range ws {
		w := &ws[i]
		wg.Go(func() {
			c, err := t.dial(ctx)
			if err != nil {
				cancel(fmt.Errorf("connection %d: %w", i+1, err))
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			br := bufio.NewReaderSize(c, 64<<10)
			buf := make([]byte, 64<<10)
			for size := range queue {
				t0 := time.Now()
				n, err := t.get(c, br, "/blob?size="+strconv.Itoa(size), int64(size), false, buf)
				if err != nil {
					cancel(fmt.Errorf("connection %d: %w", i+1, err))
					return
				}
				w.lat = append(w.lat, time.Since(t0))
				w.ops++
				w.bytes += n
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return r, err
	}
	var lat []time.Duration
	for _, w := range ws {
		r.Ops += w.ops
		r.Bytes += w.bytes
		lat = append(lat, w.lat...)
	}
	summarize(&r, elapsed, lat)
	r.Gbps = float64(r.Bytes) * 8 / 1e9 / r.Seconds
	return r, nil
}
