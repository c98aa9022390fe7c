package sniff

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// callerBuf is the size of the gateway's per-flow buffer.
const callerBuf = 64 << 10

// scanned is what the gateway's read loop saw of a stream.
type scanned struct {
	reqs     []string // Request values as reqString prints them
	consumed int      // bytes passed on to the server
	held     int      // bytes held back when the input ended
	err      error
	opaque   bool
}

func reqString(r *Request) string {
	return fmt.Sprintf("%v %s %s %s", r.Proto, r.Name, r.Method, r.Target)
}

// feed runs the gateway's read loop over in, arriving in reads of the
// given sizes (cycled): read into buf after the held bytes, Scan until it
// holds or the bytes run out, pass buf[:off] on, move the rest to the
// front. It fails t when Scan breaks its contract.
func feed(t testing.TB, in []byte, sizes ...int) scanned {
	t.Helper()
	s := NewStream()
	buf := make([]byte, callerBuf)
	var r scanned
	end := 0
	for k := 0; ; k++ {
		m := copy(buf[end:min(end+sizes[k%len(sizes)], len(buf))], in)
		in, end = in[m:], end+m
		off, err := scanLoop(t, s, buf[:end], &r)
		r.consumed += off
		if err != nil {
			r.err = err
			if n, req, again := s.Scan(buf[off:end]); n != 0 || req != nil || again != err {
				t.Fatalf("Scan after %v = %d, %v, %v; want 0, nil, the same error", err, n, req, again)
			}
			return r
		}
		end = copy(buf, buf[off:end])
		if len(in) == 0 {
			break
		}
	}
	r.held, r.opaque = end, s.Opaque()
	if r.opaque != (s.OpaqueReason() != "") {
		t.Fatalf("Opaque() = %v with OpaqueReason() %q", r.opaque, s.OpaqueReason())
	}
	return r
}

// scanLoop calls Scan on buf until it holds or consumes everything, and
// returns how much it consumed.
func scanLoop(t testing.TB, s *Stream, buf []byte, r *scanned) (int, error) {
	t.Helper()
	off := 0
	for off < len(buf) {
		n, req, err := s.Scan(buf[off:])
		if err != nil {
			if !errors.Is(err, ErrMalformed) && err != ErrTooLarge {
				t.Fatalf("Scan error %v is neither ErrMalformed nor ErrTooLarge", err)
			}
			return off, err
		}
		if n < 0 || n > len(buf)-off || n == 0 && req != nil {
			t.Fatalf("Scan(%d bytes) = %d, %v", len(buf)-off, n, req)
		}
		if n == 0 && len(buf)-off >= MaxHeld {
			t.Fatalf("Scan holds %d bytes back, MaxHeld is %d", len(buf)-off, MaxHeld)
		}
		if req != nil {
			checkRequest(t, req)
			r.reqs = append(r.reqs, reqString(req))
		}
		if n == 0 {
			break
		}
		off += n
	}
	return off, nil
}

func checkRequest(t testing.TB, req *Request) {
	t.Helper()
	if n, err := normalizeName([]byte(req.Name)); err != nil || n != req.Name {
		t.Fatalf("Request %+v: name normalises to %q, %v", req, n, err)
	}
	if req.Proto != HTTP && req.Proto != HTTP2 || len(req.Method) > maxAuditLen || len(req.Target) > maxAuditLen {
		t.Fatalf("Request %+v", req)
	}
}

// splits are the read patterns every case is fed in: one read, byte by
// byte, small odd reads, and random ones.
func splits(in []byte, seed uint64) [][]int {
	rnd := rand.New(rand.NewPCG(seed, 1))
	random := make([]int, 16)
	for i := range random {
		random[i] = 1 + rnd.IntN(64)
	}
	return [][]int{{max(len(in), 1)}, {1}, {7, 3, 100}, random}
}

// sameScan asserts that every way of splitting in gives want.
func checkSplits(t *testing.T, name string, in []byte, want scanned) {
	t.Helper()
	for _, sizes := range splits(in, uint64(len(in))) {
		got := feed(t, in, sizes...)
		if !slices.Equal(got.reqs, want.reqs) || !errors.Is(got.err, want.err) || (got.err == nil) != (want.err == nil) {
			t.Errorf("%s: Scan in reads of %v = %q, %v; want %q, %v", name, sizes, got.reqs, got.err, want.reqs, want.err)
			continue
		}
		if want.err == nil && (got.consumed != len(in)-want.held || got.held != want.held || got.opaque != want.opaque) {
			t.Errorf("%s: Scan in reads of %v consumed %d, held %d, opaque %v; want %d, %d, %v",
				name, sizes, got.consumed, got.held, got.opaque, len(in)-want.held, want.held, want.opaque)
		}
	}
}

const (
	getA     = "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
	getB     = "GET /b HTTP/1.1\r\nHost: b.example\r\n\r\n"
	evilHead = "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n"
	wsUpA    = "GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	h2cUpA   = "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
	connectA = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
	postA    = "POST /up HTTP/1.1\r\nHost: a.example\r\n"
	chunkedA = postA + "Transfer-Encoding: chunked\r\n\r\n"
)

const (
	reqA    = "http a.example GET /"
	reqB    = "http b.example GET /b"
	reqWS   = "http a.example GET /ws"
	reqPost = "http a.example POST /up"
)

func TestStreamScan(t *testing.T) {
	// A body that is a request, and a WebSocket frame (FIN, binary,
	// masked) whose payload is one too.
	body := evilHead
	ws := "\x82\xa6\x00\x00\x00\x00" + evilHead
	tests := []struct {
		name   string
		in     string
		want   []string
		err    error // ErrMalformed, ErrTooLarge or nil
		held   int
		opaque bool
	}{
		{"one request", getA, []string{reqA}, nil, 0, false},
		{"pipelined", getA + getB + getA, []string{reqA, reqB, reqA}, nil, 0, false},
		{"second head incomplete", getA + getB[:20], []string{reqA}, nil, 20, false},
		{"absolute form", "GET http://b.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n" + getA, []string{"http b.example GET http://b.example/x", reqA}, nil, 0, false},
		{"content-length body", postA + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)) + body + getB, []string{reqPost, reqB}, nil, 0, false},
		{"content-length body incomplete", postA + "Content-Length: 100\r\n\r\n" + body, []string{reqPost}, nil, 0, false},
		{"content-length zero", postA + "Content-Length: 0\r\n\r\n" + getB, []string{reqPost, reqB}, nil, 0, false},
		{"chunked", chunkedA + "5;name=\"v a\"\r\nhello\r\n" + fmt.Sprintf("%x\r\n%s\r\n", len(body), body) + "0\r\nX-Sum: 1\r\nX-Other:\t2\r\n\r\n" + getB,
			[]string{reqPost, reqB}, nil, 0, false},
		{"chunked no trailers", chunkedA + "A\r\n0123456789\r\n0\r\n\r\n" + getB, []string{reqPost, reqB}, nil, 0, false},
		{"chunked held mid trailer", chunkedA + "0\r\nX-Sum: 1\r\n", []string{reqPost}, nil, len("X-Sum: 1\r\n"), false},
		{"HTTP/1.0 with Host", "GET / HTTP/1.0\r\nHost: a.example\r\n\r\n", []string{"http a.example GET /"}, nil, 0, false},

		// Smuggling: framing servers may read differently.
		{"CL and TE", postA + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE and CL", postA + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", nil, ErrMalformed, 0, false},
		{"two CL", postA + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", nil, ErrMalformed, 0, false},
		{"CL list", postA + "Content-Length: 5,5\r\n\r\nhello", nil, ErrMalformed, 0, false},
		{"CL sign", postA + "Content-Length: +5\r\n\r\nhello", nil, ErrMalformed, 0, false},
		{"CL hex", postA + "Content-Length: 0x5\r\n\r\nhello", nil, ErrMalformed, 0, false},
		{"CL empty", postA + "Content-Length: \r\n\r\n", nil, ErrMalformed, 0, false},
		{"CL huge", postA + "Content-Length: 1000000000000000000\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE gzip", postA + "Transfer-Encoding: gzip\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE gzip, chunked", postA + "Transfer-Encoding: gzip, chunked\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE chunked, chunked", postA + "Transfer-Encoding: chunked, chunked\r\n\r\n", nil, ErrMalformed, 0, false},
		{"two TE", postA + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE xchunked", postA + "Transfer-Encoding: xchunked\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE HTTP/1.0", "POST / HTTP/1.0\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n", nil, ErrMalformed, 0, false},
		{"TE folded", postA + "Transfer-Encoding:\r\n chunked\r\n\r\n", nil, ErrMalformed, 0, false},
		{"chunk bare LF", chunkedA + "5\nhello\r\n0\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk bare CR", chunkedA + "5\rhello\r\n0\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk data bare LF", chunkedA + "5\r\nhello\n0\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk data too long", chunkedA + "5\r\nhello!\r\n0\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk size oversized", chunkedA + "1000000000000000\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk size 0-padded past 15 digits", chunkedA + "0000000000000005\r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk size empty", chunkedA + "\r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk size signed", chunkedA + "-5\r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk size prefixed", chunkedA + "0x5\r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk size space", chunkedA + "5 \r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk ext space", chunkedA + "5 ;x\r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk ext CTL", chunkedA + "5;x\x00\r\nhello\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"chunk line too long", chunkedA + "5;" + strings.Repeat("x", maxChunkLine), []string{reqPost}, ErrTooLarge, 0, false},
		{"trailer Host", chunkedA + "0\r\nHost: evil.example\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"trailer Content-Length", chunkedA + "0\r\nContent-Length: 5\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"trailer folded", chunkedA + "0\r\nX: 1\r\n y\r\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"trailer bare LF", chunkedA + "0\r\nX: 1\n\r\n", []string{reqPost}, ErrMalformed, 0, false},
		{"trailers too large", chunkedA + "0\r\nX: " + strings.Repeat("y", MaxHTTPHead), []string{reqPost}, ErrTooLarge, 0, false},
		{"CONNECT with body", "CONNECT a.example:443 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", nil, ErrMalformed, 0, false},

		// Every head is held to the first one's rules, and must name a host.
		{"second Host foreign but well formed", getA + evilHead, []string{reqA, "http evil.example GET /"}, nil, 0, false},
		{"second without Host", getA + "GET / HTTP/1.1\r\n\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"second HTTP/1.0 without Host", getA + "GET / HTTP/1.0\r\n\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"second empty Host", getA + "GET / HTTP/1.1\r\nHost:\r\n\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"second two Hosts", getA + "GET / HTTP/1.1\r\nHost: a.example\r\nHost: evil.example\r\n\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"second Host IP", getA + "GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"second target mismatch", getA + "GET http://evil.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"second leading CRLF", getA + "\r\n" + getB, []string{reqA}, ErrMalformed, 0, false},
		{"second leading LF", getA + "\n" + getB, []string{reqA}, ErrMalformed, 0, false},
		{"second bare LF", getA + "GET / HTTP/1.1\nHost: b.example\n\n", []string{reqA}, ErrMalformed, 0, false},
		{"second head too large", getA + "GET / HTTP/1.1\r\nX: " + strings.Repeat("y", MaxHTTPHead), []string{reqA}, ErrTooLarge, 0, false},
		{"first head too large", "GET / HTTP/1.1\r\nHost: a.example\r\nX: " + strings.Repeat("y", MaxHTTPHead), nil, ErrTooLarge, 0, false},
		{"not HTTP after a request", getA + "\x16\x03\x01\x02\x00", []string{reqA}, ErrMalformed, 0, false},
		{"not HTTP after a request, token first", getA + "hello world\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"HTTP/0.9 after a request", getA + "GET /\r\n", []string{reqA}, ErrMalformed, 0, false},
		{"WebSocket frames without Upgrade", getA + ws, []string{reqA}, ErrMalformed, 0, false},
		{"not HTTP at start", "SSH-2.0-OpenSSH_9.6\r\n", nil, ErrMalformed, 0, false},
		{"binary at start", "\x00\x01\x02", nil, ErrMalformed, 0, false},
		{"empty", "", nil, nil, 0, false},

		// Upgrades: the next bytes say whether the server took it.
		{"WebSocket", wsUpA + ws, []string{reqWS}, nil, 0, true},
		{"WebSocket, compressed fragment", wsUpA + "\x41\x85\x00\x00\x00\x00hello", []string{reqWS}, nil, 0, true},
		{"WebSocket, first byte held", wsUpA + "G", []string{reqWS}, nil, 1, false},
		{"upgrade declined", wsUpA + getB, []string{reqWS, reqB}, nil, 0, false},
		{"upgrade declined, then not HTTP", wsUpA + getB + ws, []string{reqWS, reqB}, ErrMalformed, 0, false},
		{"upgrade declined, leading CRLF", wsUpA + "\r\n" + getB, []string{reqWS}, ErrMalformed, 0, false},
		{"upgrade with a body", "POST /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nGET" + ws,
			[]string{"http a.example POST /ws"}, nil, 0, true},
		{"CONNECT then TLS", connectA + "\x16\x03\x01\x00\x05hello", []string{"http a.example CONNECT a.example:443"}, nil, 0, true},
		{"CONNECT then SSH", connectA + "SSH-2.0-OpenSSH_9.6\r\n", []string{"http a.example CONNECT a.example:443"}, nil, 0, true},
		{"CONNECT then SMTP", connectA + "EHLO a.example\r\n", []string{"http a.example CONNECT a.example:443"}, nil, 0, true},
		{"CONNECT then HTTP/0.9", connectA + "GET /x\r\n", []string{"http a.example CONNECT a.example:443"}, ErrMalformed, 0, false},
		{"upgrade declined, then HTTP/0.9", wsUpA + "GET /secret\r\n", []string{reqWS}, ErrMalformed, 0, false},
		{"upgrade declined, then HTTP/0.9 after CRLF", wsUpA + "\r\nget\t/secret\r\n", []string{reqWS}, ErrMalformed, 0, false},
		{"upgrade, then a word", wsUpA + "GETX /\r\n", []string{reqWS}, nil, 0, true},
		{"CONNECT declined", connectA + getB, []string{"http a.example CONNECT a.example:443", reqB}, nil, 0, false},
		{"prior knowledge after a request", getA + h2Preface, []string{reqA}, ErrMalformed, 0, false},
		{"bad preface", "PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n", nil, ErrMalformed, 0, false},
		{"preface held", h2Preface[:20], nil, nil, 20, false},
	}
	for _, tt := range tests {
		checkSplits(t, tt.name, []byte(tt.in), scanned{reqs: tt.want, err: tt.err, held: tt.held, opaque: tt.opaque})
	}
}

func TestStreamOpaqueReason(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{wsUpA + "\x82\x80\x00\x00\x00\x00", reasonUpgrade},
		{connectA + "\x16\x03\x01", reasonConnect},
		{getA, ""},
	} {
		s := NewStream()
		n, _, err := s.Scan([]byte(tt.in))
		if err == nil && n < len(tt.in) {
			_, _, err = s.Scan([]byte(tt.in[n:]))
		}
		if err != nil || s.OpaqueReason() != tt.want || s.Opaque() != (tt.want != "") {
			t.Errorf("Scan(%q): OpaqueReason() = %q, %v; want %q", tt.in, s.OpaqueReason(), err, tt.want)
		}
	}
}

// TestStreamSplitEverywhere: a kept-alive connection cut into two reads
// at every byte gives the same requests as one read.
func TestStreamSplitEverywhere(t *testing.T) {
	for _, in := range []string{
		getA + getB,
		postA + "Content-Length: 5\r\n\r\nhello" + getB,
		chunkedA + "5;e=1\r\nhello\r\n0\r\nX: y\r\n\r\n" + getB,
		wsUpA + getB + wsUpA + "\x81\x80abcd",
		h2cUpA + h2Preface,
	} {
		want := feed(t, []byte(in), len(in))
		for i := 1; i < len(in); i++ {
			got := feed(t, []byte(in), i, len(in))
			if !slices.Equal(got.reqs, want.reqs) || got.err != want.err || got.consumed != want.consumed || got.opaque != want.opaque {
				t.Fatalf("Scan(%q split at %d) = %+v; one read gives %+v", in, i, got, want)
			}
		}
	}
}

// TestStreamRealRequests: requests as net/http writes them, with bodies of
// both framings and trailers, one after another on one connection.
func TestStreamRealRequests(t *testing.T) {
	var wire bytes.Buffer
	var want []string
	for i, host := range []string{"api.example.com", "b.example", "api.example.com:8443"} {
		body := strings.Repeat(evilHead, i+1)
		req, err := http.NewRequest("POST", "http://"+host+"/v1/x?i=1", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 { // unknown length: chunked, with a trailer
			req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), -1
			req.Trailer = http.Header{"X-Sum": {"1"}}
		}
		if err := req.Write(&wire); err != nil {
			t.Fatal(err)
		}
		want = append(want, "http "+strings.TrimSuffix(host, ":8443")+" POST /v1/x?i=1")
	}
	if !bytes.Contains(wire.Bytes(), []byte("Transfer-Encoding: chunked")) {
		t.Fatal("no chunked request in the test input")
	}
	checkSplits(t, "net/http requests", wire.Bytes(), scanned{reqs: want})
}

// TestStreamDead: after an error every call returns it, whatever the bytes.
func TestStreamDead(t *testing.T) {
	s := NewStream()
	_, _, err := s.Scan([]byte("GET / HTTP/1.1\r\n\r\n"))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("Scan(no Host) = %v, want ErrMalformed", err)
	}
	if n, req, again := s.Scan([]byte(getA)); n != 0 || req != nil || again != err {
		t.Fatalf("Scan after an error = %d, %v, %v; want 0, nil, %v", n, req, again, err)
	}
}

// TestStreamAuditTruncated: Method and Target are cut for audit lines.
func TestStreamAuditTruncated(t *testing.T) {
	long := "/" + strings.Repeat("x", 300)
	_, req, err := NewStream().Scan([]byte("GET " + long + " HTTP/1.1\r\nHost: a.example\r\n\r\n"))
	if err != nil || req == nil || req.Target != long[:maxAuditLen] {
		t.Fatalf("Scan(long target) = %+v, %v; want Target %q", req, err, long[:maxAuditLen])
	}
}

// TestStreamAllocs: body bytes cost no allocation, a head a few.
func TestStreamAllocs(t *testing.T) {
	s := NewStream()
	head := []byte(postA + "Content-Length: 1000000000000\r\n\r\n")
	if _, _, err := s.Scan(head); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, callerBuf)
	if n := testing.AllocsPerRun(100, func() { s.Scan(chunk) }); n != 0 {
		t.Errorf("Scan(body) allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { NewStream().Scan([]byte(getA)) }); n > 5 {
		t.Errorf("Scan(head) allocates %v times, want at most 5", n)
	}
}

// BenchmarkStreamUpload: a large Content-Length body in 64 KiB reads, the
// gateway's buffer size, costs next to nothing per byte.
func BenchmarkStreamUpload(b *testing.B) {
	s := NewStream()
	if _, _, err := s.Scan([]byte(postA + "Content-Length: 100000000000000000\r\n\r\n")); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, callerBuf)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		if n, _, err := s.Scan(chunk); n != len(chunk) || err != nil {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkStreamKeepAlive: small requests one after another.
func BenchmarkStreamKeepAlive(b *testing.B) {
	head := []byte("GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Go-http-client/1.1\r\nAccept: application/json\r\nAuthorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nAccept-Encoding: gzip\r\n\r\n")
	s := NewStream()
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if n, req, err := s.Scan(head); n != len(head) || req == nil || err != nil {
			b.Fatal(n, err)
		}
	}
}
