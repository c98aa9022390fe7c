package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// httpsServer serves h (ServeHTTPS's workloads when nil) with a fresh
// certificate for name on a loopback port, beside a DNS server answering
// name with 127.0.0.1, and returns the target a client reaches it by; both
// are stopped, and must have returned, when the test ends.
func httpsServer(t *testing.T, name string, h http.Handler) TLSTarget {
	t.Helper()
	certPEM, keyPEM, err := SelfSigned(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := Roots(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = workloads()
	}
	addr := loopbackServer(t, "serveTLS", func(ctx context.Context, ln net.Listener) error {
		return serveTLS(ctx, ln, cert, h)
	})
	port := netip.MustParseAddrPort(addr).Port()
	return TLSTarget{Name: name, Port: int(port), DNS: dnsServer(t, name, "127.0.0.1"), Roots: roots}
}

func TestHTTPSFetch(t *testing.T) {
	tg := httpsServer(t, "bench.test", nil)
	r, err := HTTPSFetch(context.Background(), tg, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("HTTPSFetch() error = %v", err)
	}
	if r.Mode != "https" || r.Ops < 5 || r.Bytes != r.Ops*FetchSize || r.PerSec <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.Errors != 0 {
		t.Errorf("HTTPSFetch() = %+v, want >= 5 fetches of %d bytes, 0 < p50 <= p99, no errors", r, FetchSize)
	}
	sum := 0.0
	for _, step := range []string{"dns", "connect", "tls", "get"} {
		if r.Steps[step] <= 0 {
			t.Errorf("HTTPSFetch() step %s p50 = %v, want > 0", step, r.Steps[step])
		}
		sum += r.Steps[step]
	}
	// Medians of parts need not add up to the whole's, but near it.
	if sum > 2*r.P50us || sum < r.P50us/2 {
		t.Errorf("HTTPSFetch() steps %v add up to %.0f µs, the whole fetch's p50 is %.0f µs", r.Steps, sum, r.P50us)
	}
}

func TestHTTPSFetchTrustsOnlyItsRoot(t *testing.T) {
	// A server whose certificate the client was not given must fail every
	// fetch: the handshake is verified, not skipped.
	tg := httpsServer(t, "bench.test", nil)
	other, _, err := SelfSigned("bench.test")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Roots, err = Roots(other); err != nil {
		t.Fatal(err)
	}
	r, err := HTTPSFetch(context.Background(), tg, 50*time.Millisecond)
	if err == nil || r.Ops != 0 || !strings.Contains(r.FirstError, "certificate") {
		t.Errorf("HTTPSFetch() with the wrong root = %+v, %v; want every fetch failing on the certificate", r, err)
	}
}

func TestHTTPSFetchResolvesThroughItsDNSServer(t *testing.T) {
	// The DNS server knows only bench.test: a client asked for another
	// name must fail at the lookup, not connect anywhere by itself.
	tg := httpsServer(t, "bench.test", nil)
	tg.Name = "other.test"
	r, err := HTTPSFetch(context.Background(), tg, 50*time.Millisecond)
	if err == nil || !strings.Contains(r.FirstError, "NXDOMAIN") {
		t.Errorf("HTTPSFetch(other.test) = %+v, %v; want NXDOMAIN", r, err)
	}
}

func TestStream(t *testing.T) {
	tg := httpsServer(t, "bench.test", nil)
	d := 400 * time.Millisecond
	r, err := Stream(context.Background(), tg, d, 1)
	if err != nil {
		t.Fatalf("Stream() error = %v", err)
	}
	// Gaps of 5-20 ms: 20 to 80 chunks in 400 ms.
	if r.Mode != "stream" || r.Ops < 15 || r.Ops > 80 || r.Bytes != r.Ops*ChunkSize || r.P50us <= 0 || r.P99us < r.P50us {
		t.Errorf("Stream(%v) = %+v, want 15-80 chunks of %d bytes, 0 < p50 <= p99", d, r, ChunkSize)
	}
	if r.P50us > 5000 {
		t.Errorf("Stream() p50 = %.0f µs over loopback, want far under 5 ms", r.P50us)
	}
}

// stampedStream is a /stream handler whose stamps it sets itself: late
// stamps them that long before it sends, and seq numbers them from
// first.
func stampedStream(late time.Duration, first uint64, chunks int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		chunk := make([]byte, ChunkSize)
		for i := range chunks {
			time.Sleep(time.Millisecond)
			binary.BigEndian.PutUint64(chunk[8:], first+uint64(i))
			binary.BigEndian.PutUint64(chunk[0:], uint64(monoNow()-int64(late)))
			w.Write(chunk)
			rc.Flush()
		}
	})
}

func TestStreamMeasuresTheDelayFromTheStamp(t *testing.T) {
	// Chunks stamped 30 ms before they are sent must show at least 30 ms.
	tg := httpsServer(t, "bench.test", stampedStream(30*time.Millisecond, 0, 20))
	r, err := Stream(context.Background(), tg, time.Second, 1)
	if err != nil {
		t.Fatalf("Stream() error = %v", err)
	}
	if r.Ops != 20 || r.P50us < 30000 || r.P50us > 60000 {
		t.Errorf("Stream() of chunks stamped 30 ms early = %+v, want 20 chunks, p50 of 30-60 ms", r)
	}
}

func TestStreamRejectsAMissingChunk(t *testing.T) {
	tg := httpsServer(t, "bench.test", stampedStream(0, 1, 3))
	if r, err := Stream(context.Background(), tg, time.Second, 1); err == nil || !strings.Contains(err.Error(), "sequence number 1") {
		t.Errorf("Stream() whose first chunk is missing = %+v, %v; want an error naming the sequence", r, err)
	}
}

func TestStreamGaps(t *testing.T) {
	a, b := newGaps(7), newGaps(7)
	for range 1000 {
		g := a.next()
		if g < StreamGapMin || g > StreamGapMax {
			t.Fatalf("gap %v outside [%v, %v]", g, StreamGapMin, StreamGapMax)
		}
		if h := b.next(); h != g {
			t.Fatalf("two sources of seed 7 gave %v and %v", g, h)
		}
	}
}

func TestInstallSizes(t *testing.T) {
	s := InstallSizes(1, 500)
	if len(s) != 500 || !slices.Equal(s, InstallSizes(1, 500)) || slices.Equal(s, InstallSizes(2, 500)) {
		t.Fatalf("InstallSizes(1, 500): want 500 sizes, the same for the same seed, others for another")
	}
	total := 0
	for _, n := range s {
		if n < InstallMin || n > InstallMax {
			t.Fatalf("size %d outside [%d, %d]", n, InstallMin, InstallMax)
		}
		total += n
	}
	// Uniform: the mean is near the middle.
	if mean := total / len(s); mean < 100_000 || mean > 120_000 {
		t.Errorf("mean size %d, want about 110,000", mean)
	}
}

func TestInstall(t *testing.T) {
	tg := httpsServer(t, "bench.test", nil)
	sizes := InstallSizes(1, 60)
	want := int64(0)
	for _, n := range sizes {
		want += int64(n)
	}
	r, err := Install(context.Background(), tg, sizes, 4)
	if err != nil {
		t.Fatalf("Install() error = %v", err)
	}
	if r.Mode != "install" || r.Ops != 60 || r.Bytes != want || r.Seconds <= 0 || r.Gbps <= 0 || r.P50us <= 0 {
		t.Errorf("Install() = %+v, want 60 fetches, %d bytes, a time and a rate", r, want)
	}
}

func TestInstallUsesItsConnections(t *testing.T) {
	// 40 fetches over 4 kept-alive connections: the server sees exactly 4.
	conns := make(chan string, 100)
	h := workloads()
	tg := httpsServer(t, "bench.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns <- r.RemoteAddr
		h.ServeHTTP(w, r)
	}))
	if _, err := Install(context.Background(), tg, InstallSizes(3, 40), 4); err != nil {
		t.Fatal(err)
	}
	close(conns)
	seen := map[string]int{}
	for c := range conns {
		seen[c]++
	}
	if len(seen) != 4 {
		t.Errorf("Install() over 4 connections: the server saw %d (%v)", len(seen), seen)
	}
}

func TestInstallFailsOnAShortBody(t *testing.T) {
	tg := httpsServer(t, "bench.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("size"))
		w.Write(filler[:n/2])
	}))
	if r, err := Install(context.Background(), tg, []int{30_000}, 1); err == nil || !strings.Contains(err.Error(), "want 30000") {
		t.Errorf("Install() against a server sending half of each body = %+v, %v; want an error", r, err)
	}
}

func TestHTTPSServerRejectsBadRequests(t *testing.T) {
	tg := httpsServer(t, "bench.test", nil)
	c, err := tg.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, path := range []string{"/blob?size=-1", "/blob?size=x", "/stream?ms=0&seed=1", "/stream?ms=10"} {
		if _, err := tg.get(c, br, path, -1, false, nil); err == nil || !strings.Contains(err.Error(), "400") {
			t.Errorf("GET %s = %v, want a 400", path, err)
		}
	}
}

func TestHTTPSFetchHandshakesInFullWithTheName(t *testing.T) {
	// Every fetch is a full TLS 1.3 handshake presenting the name as SNI
	// and Host: what the gateway checks, and what an agent's new
	// connection costs.
	type seen struct {
		resumed       bool
		version       uint16
		curve         tls.CurveID
		sni, host     string
		closeAfterGET bool
	}
	got := make(chan seen, 1000)
	h := workloads()
	tg := httpsServer(t, "bench.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.TLS.DidResume, r.TLS.Version, r.TLS.CurveID, r.TLS.ServerName, r.Host, r.Close}
		h.ServeHTTP(w, r)
	}))
	r, err := HTTPSFetch(context.Background(), tg, 100*time.Millisecond)
	if err != nil || r.Ops < 2 {
		t.Fatalf("HTTPSFetch() = %+v, %v; want at least 2 fetches", r, err)
	}
	close(got)
	for s := range got {
		if s.resumed || s.version != tls.VersionTLS13 || s.curve != tls.X25519MLKEM768 || s.sni != "bench.test" || s.host != "bench.test" || !s.closeAfterGET {
			t.Fatalf("a fetch reached the server as %+v, want a full TLS 1.3 handshake (X25519MLKEM768), SNI and Host bench.test, Connection: close", s)
		}
	}
}

func TestHTTPSFetchLetsTheServerCloseFirst(t *testing.T) {
	// A server that closes 100 ms after its answer: the client waits for
	// that close before its own (so TIME_WAIT stays on the server's side),
	// but outside the fetch's time.
	tg := httpsServer(t, "bench.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(FetchSize) + "\r\n\r\n")
		brw.Write(filler[:FetchSize])
		brw.Flush()
		time.Sleep(100 * time.Millisecond)
	}))
	r, err := HTTPSFetch(context.Background(), tg, 250*time.Millisecond)
	if err != nil {
		t.Fatalf("HTTPSFetch() error = %v", err)
	}
	if r.Ops > 4 || r.P99us > 50000 {
		t.Errorf("HTTPSFetch() = %+v, want at most 4 fetches in 250 ms (each waiting for the server's close) and each under 50 ms", r)
	}
}
