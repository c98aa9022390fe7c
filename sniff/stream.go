package sniff

// Stream follows the bytes a client sends on a plaintext HTTP connection
// (HTTP/1.x, and HTTP/2 after a prior-knowledge preface or an h2c upgrade)
// and finds every request head in them.
//
// It reads request framing the way a strict server would, so the next
// head is found where the server will look for it: a body that looks like
// a request is skipped, and framing two servers could read differently is
// an error. It never copies payload: bodies and DATA frames are consumed
// as they arrive, and only an incomplete head, frame header or framing
// line is held back. A Stream is not safe for concurrent use.
//
// It must see the connection from its first byte, which must start an
// HTTP/1 request or the HTTP/2 preface. After a request with Upgrade or a
// CONNECT, bytes that Sniff would not call HTTP, HTTP/0.9 GET excepted,
// make the stream opaque (the server switched protocols); anywhere else
// they are an error. Opaque
// relies on a server that declined the switch refusing those bytes rather
// than skipping to a request hidden after them, as servers do (400, then
// close).
type Stream struct {
	state  state
	err    error // once set, every Scan returns it
	remain int64 // bytes left of a Content-Length body or a chunk's data
	// after is the state once the current body ends: stHead, or
	// stUpgraded after a request with Upgrade or a CONNECT.
	after   state
	connect bool // the last request was a CONNECT
	head    head // the request head or trailer section being parsed
	h2      *h2Conn
	reason  string // why the stream went opaque
}

// state is what a Stream expects next.
type state uint8

const (
	stStart     state = iota // the first request head or the HTTP/2 preface
	stHead                   // an HTTP/1 request head
	stUpgraded               // after Upgrade or CONNECT: a head, the HTTP/2 preface, or not HTTP
	stBody                   // s.remain bytes of a Content-Length body
	stChunkLine              // a chunk-size line
	stChunkData              // s.remain bytes of chunk data
	stChunkEnd               // the CRLF after chunk data
	stTrailers               // the trailer section after the last chunk
	stHTTP2                  // HTTP/2 frames
	stOpaque                 // not HTTP any more: consumed unchecked
)

// Request is a request head Stream found.
type Request struct {
	// Name is the host the request names, normalised as Result.Name:
	// the Host header or the target's authority (HTTP/1), :authority or
	// host (HTTP/2). It is never "": a request that names no host is an
	// error, since a flow allowed by name must name its server.
	Name string
	// Proto is HTTP for an HTTP/1.x head, HTTP2 for an HTTP/2 header block.
	Proto Kind
	// Method and Target (the request target, or :path) are for audit
	// lines, cut to maxAuditLen bytes.
	Method, Target string
}

// MaxHeld is the largest prefix Scan may hold back: an HTTP/2 header block
// with its frame headers. HTTP/1 heads and trailers are held up to
// MaxHTTPHead, chunk-size lines up to maxChunkLine.
const MaxHeld = 48 << 10

// maxChunkLine bounds a chunk-size line with its extensions and CRLF.
const maxChunkLine = 4 << 10

// maxAuditLen bounds Request.Method and Request.Target.
const maxAuditLen = 128

// maxChunkDigits keeps a chunk size below 2^60.
const maxChunkDigits = 15

// Why a stream went opaque, for audit lines.
const (
	reasonUpgrade = "upgrade: bytes after the checked request with Upgrade are not HTTP (e.g. WebSocket); the rest of the stream is not inspected"
	reasonConnect = "connect: bytes after the checked CONNECT request are not HTTP; the tunnel is not inspected"
)

var (
	errNotHTTP   = malformed("http: stream does not start with an HTTP request")
	errNoName    = malformed("http: request names no host: a flow allowed by name must name its server")
	errChunkSize = malformed("http: chunk size is not 1 to 15 hex digits")
	errChunkExt  = malformed("http: control character in a chunk extension")
	errChunkEnd  = malformed("http: chunk data not followed by CRLF")
)

// NewStream returns a Stream for a connection whose first client byte has
// not been scanned yet.
func NewStream() *Stream { return &Stream{} }

// Scan consumes the front of buf, which holds the client's bytes not yet
// consumed by earlier calls (bytes a previous call left unconsumed come
// first, then newly read ones).
//
// It returns n, how many leading bytes of buf are consumed, and req,
// non-nil when buf[:n] ends with a complete request head (HTTP/1) or
// header block (HTTP/2 HEADERS and CONTINUATION frames) whose name the
// caller must check before forwarding buf[:n]. Scan stops after each
// request, so call it again on buf[n:].
//
// n == 0 && req == nil && err == nil: buf starts with an incomplete head,
// frame header or framing line that must be held back: read more and call
// again with the longer buffer. Body and DATA bytes are consumed without
// being held (n may cover a partial body); Scan never holds back more than
// MaxHeld bytes: past that it returns ErrTooLarge.
//
// err matches ErrMalformed (broken or ambiguous framing, a request naming
// no host or an IP literal) or is ErrTooLarge; the stream is then dead and
// every later call returns the same error.
func (s *Stream) Scan(buf []byte) (n int, req *Request, err error) {
	if s.err != nil {
		return 0, nil, s.err
	}
	for n < len(buf) && req == nil {
		m, r, err := s.step(buf[n:])
		if err != nil {
			s.err = err
			s.h2 = nil // the HPACK tables are no use any more
			return 0, nil, err
		}
		if m == 0 {
			break
		}
		n += m
		req = r
	}
	return n, req, nil
}

// Opaque reports whether the stream stopped being HTTP, after a checked
// request with Upgrade or a CONNECT, so Scan now consumes everything
// unchecked.
func (s *Stream) Opaque() bool { return s.state == stOpaque }

// OpaqueReason says why the stream went opaque, for an audit line; it is
// "" while the stream is HTTP.
func (s *Stream) OpaqueReason() string { return s.reason }

// step consumes one unit from the front of buf: a head, a framing line, a
// run of body bytes, or a frame. It returns 0 to hold buf back.
func (s *Stream) step(buf []byte) (int, *Request, error) {
	switch s.state {
	case stStart, stUpgraded:
		return s.recognise(buf)
	case stHead:
		return s.requestHead(buf)
	case stBody:
		return s.body(buf, s.after), nil, nil
	case stChunkLine:
		return s.chunkLine(buf)
	case stChunkData:
		return s.body(buf, stChunkEnd), nil, nil
	case stChunkEnd:
		return s.chunkEnd(buf)
	case stTrailers:
		return s.trailers(buf)
	case stHTTP2:
		return s.h2.scan(buf)
	}
	return len(buf), nil, nil // stOpaque
}

// recognise decides what follows the start of the stream or an upgrade
// request: an HTTP/1 head, the HTTP/2 preface, or (after an upgrade only)
// bytes that are not HTTP. A server that declined the upgrade reads the
// next request; one that accepted it speaks the new protocol.
func (s *Stream) recognise(buf []byte) (int, *Request, error) {
	k, err := recognise(buf[:min(len(buf), MaxHTTPHead)])
	switch {
	case err == ErrNeedMore:
		return 0, nil, nil
	case err != nil:
		return 0, nil, err
	case k == HTTP:
		s.state = stHead
		return s.requestHead(buf)
	case k == HTTP2:
		// After an h2c upgrade, stream 1 is the upgrade request
		// (RFC 7540 3.2); through a CONNECT tunnel it is still free.
		upgraded := s.state == stUpgraded && !s.connect
		s.state, s.h2 = stHTTP2, newH2Conn(upgraded)
		return len(h2Preface), nil, nil
	case s.state == stStart:
		return 0, nil, errNotHTTP
	case looksHTTP09(buf):
		s.state = stHead
		return s.requestHead(buf) // refused: it names no host
	}
	s.state, s.reason = stOpaque, reasonUpgrade
	if s.connect {
		s.reason = reasonConnect
	}
	return len(buf), nil, nil
}

// looksHTTP09 reports whether a line recognise called Unknown starts like
// an HTTP/0.9 request, "GET" and whitespace. Servers that still take one
// (Apache's default) send it to their default virtual host, as it has no
// Host: after a declined upgrade that would be a request on another name.
func looksHTTP09(buf []byte) bool {
	for len(buf) > 0 && (buf[0] == '\r' || buf[0] == '\n') {
		buf = buf[1:]
	}
	if len(buf) < 4 || !asciiEqualFold(buf[:3], "get") {
		return false
	}
	switch buf[3] {
	case ' ', '\t', '\v', '\f', '\r':
		return true
	}
	return false
}

// requestHead parses an HTTP/1 request head and sets up what follows it.
func (s *Stream) requestHead(buf []byte) (int, *Request, error) {
	end, err := s.head.parse(buf, MaxHTTPHead)
	if err == ErrNeedMore {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	name, err := s.head.finish(buf[:end])
	if err != nil {
		return 0, nil, err
	}
	if name == "" {
		return 0, nil, errNoName
	}
	r := &s.head.req
	req := &Request{Name: name, Proto: HTTP, Method: auditString(r.method), Target: auditString(r.target)}
	s.connect = string(r.method) == "CONNECT"
	s.after = stHead
	if r.upgrade || s.connect {
		s.after = stUpgraded
	}
	switch {
	case r.chunked:
		s.state = stChunkLine
	case r.length > 0:
		s.state, s.remain = stBody, r.length
	default:
		s.state = s.after
	}
	s.head = head{}
	return end, req, nil
}

// body consumes up to s.remain bytes of payload, then moves to next.
func (s *Stream) body(buf []byte, next state) int {
	m := int(min(int64(len(buf)), s.remain))
	s.remain -= int64(m)
	if s.remain == 0 {
		s.state = next
	}
	return m
}

// chunkLine parses a chunk-size line (RFC 9112 7.1): hex digits, then
// nothing or extensions after a ";". Whitespace before the ";" is refused
// with the rest: servers that skip it and servers that stop at it would
// disagree on where the chunk starts.
func (s *Stream) chunkLine(buf []byte) (int, *Request, error) {
	if len(buf) > maxChunkLine {
		buf = buf[:maxChunkLine]
	}
	line, _, err := nextLine(buf)
	if err == ErrNeedMore {
		if len(buf) >= maxChunkLine {
			return 0, nil, ErrTooLarge
		}
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	size, err := parseChunkSize(line)
	if err != nil {
		return 0, nil, err
	}
	if size == 0 {
		s.state, s.head = stTrailers, head{req: request{trailer: true}}
	} else {
		s.state, s.remain = stChunkData, size
	}
	return len(line) + 2, nil, nil
}

func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line) && hexValue(line[i]) >= 0; i++ {
		if i == maxChunkDigits {
			return 0, errChunkSize
		}
		n = n<<4 | int64(hexValue(line[i]))
	}
	if i == 0 || i < len(line) && line[i] != ';' {
		return 0, errChunkSize
	}
	for _, c := range line[i:] {
		if c < ' ' && c != '\t' || c == 0x7f {
			return 0, errChunkExt
		}
	}
	return n, nil
}

func hexValue(c byte) int {
	switch {
	case isDigit(c):
		return int(c - '0')
	case c|0x20 >= 'a' && c|0x20 <= 'f':
		return int(c|0x20-'a') + 10
	}
	return -1
}

// chunkEnd checks the CRLF that ends a chunk's data.
func (s *Stream) chunkEnd(buf []byte) (int, *Request, error) {
	if buf[0] != '\r' || len(buf) > 1 && buf[1] != '\n' {
		return 0, nil, errChunkEnd
	}
	if len(buf) < 2 {
		return 0, nil, nil
	}
	s.state = stChunkLine
	return 2, nil, nil
}

// trailers parses the trailer section, held until its final CRLF like a
// head, with each field checked as a header is.
func (s *Stream) trailers(buf []byte) (int, *Request, error) {
	end, err := s.head.parse(buf, MaxHTTPHead)
	if err == ErrNeedMore {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	s.state, s.head = s.after, head{}
	return end, nil, nil
}

// auditString copies at most maxAuditLen bytes of b for a log line.
func auditString[T string | []byte](b T) string {
	return string(b[:min(len(b), maxAuditLen)])
}
