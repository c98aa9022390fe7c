package sniff

import "golang.org/x/net/http2/hpack"

// HTTP/2 wire constants (RFC 9113 section 4 and 6).
const (
	frameHeaderLen    = 9
	frameHeaders      = 0x1
	framePushPromise  = 0x5
	frameContinuation = 0x9

	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
	priorityLen    = 5
)

// HPACK bounds.
const (
	// initialTableSize is HPACK's default dynamic table size (RFC 7541 4.2).
	initialTableSize = 4096
	// maxTableSize bounds the dynamic table a client may announce. The
	// client's encoder may use up to the SETTINGS_HEADER_TABLE_SIZE the
	// server advertised, in the direction a Stream does not read, so
	// more than the default is allowed; a client announcing past this
	// is refused rather than followed without bound.
	maxTableSize = 64 << 10
	// maxHeaderList bounds a decoded header block, counted as RFC 9113
	// 6.5.2 does (name, value, 32 per field): dynamic table references
	// can make a few held bytes decode to megabytes.
	maxHeaderList = 64 << 10
)

var (
	errH2StreamID     = malformed("http2: HEADERS on stream 0 or on an even stream")
	errH2Interleaved  = malformed("http2: header block interrupted by another frame")
	errH2Continuation = malformed("http2: CONTINUATION without a header block to continue")
	errH2PushPromise  = malformed("http2: PUSH_PROMISE from a client")
	errH2Padding      = malformed("http2: padding longer than the HEADERS payload")
	errH2Priority     = malformed("http2: HEADERS too short for its priority fields")
	errH2FieldName    = malformed("http2: field name not a lower-case token")
	errH2FieldValue   = malformed("http2: NUL, CR or LF in a field value")
	errH2Pseudo       = malformed("http2: unknown pseudo-header")
	errH2DupPseudo    = malformed("http2: pseudo-header repeated")
	errH2PseudoOrder  = malformed("http2: pseudo-header after a regular field")
	errH2TrailerField = malformed("http2: pseudo-header or host in trailers")
	errH2DupHost      = malformed("http2: two host fields")
	errH2Connection   = malformed("http2: connection-specific field")
	errH2NoMethod     = malformed("http2: request without :method")
	errH2Path         = malformed("http2: :path neither origin-form nor *")
	errH2HostMismatch = malformed("http2: host does not match :authority")
)

// frameHeader is the fixed 9-byte head of an HTTP/2 frame.
type frameHeader struct {
	length int
	typ    uint8
	flags  uint8
	stream uint32 // reserved bit cleared, as receivers must ignore it
}

func readFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length: int(b[0])<<16 | int(b[1])<<8 | int(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: uint32(b[5]&0x7f)<<24 | uint32(b[6])<<16 | uint32(b[7])<<8 | uint32(b[8]),
	}
}

// h2Conn follows the client's side of an HTTP/2 connection after the
// preface: it skips frames other than HEADERS and decodes every header
// block, in order, with one HPACK decoder, as the server does.
type h2Conn struct {
	dec     *hpack.Decoder
	highest uint32 // the highest stream a request opened
	skip    int    // payload bytes left of a frame consumed unheld
	walked  int    // bytes of the held header block whose frames are checked
	block   h2Block
}

func newH2Conn(upgraded bool) *h2Conn {
	c := &h2Conn{}
	if upgraded {
		c.highest = 1
	}
	c.dec = hpack.NewDecoder(initialTableSize, c.field)
	c.dec.SetMaxStringLength(MaxHTTPHead)
	c.dec.SetAllowedMaxDynamicTableSize(maxTableSize)
	return c
}

// scan consumes one frame, or the part of a frame's payload at hand.
func (c *h2Conn) scan(buf []byte) (int, *Request, error) {
	if c.skip > 0 {
		m := min(c.skip, len(buf))
		c.skip -= m
		return m, nil, nil
	}
	if len(buf) < frameHeaderLen {
		return 0, nil, nil
	}
	fh := readFrameHeader(buf)
	switch fh.typ {
	case frameHeaders:
		return c.headers(buf)
	case frameContinuation:
		return 0, nil, errH2Continuation
	case framePushPromise:
		return 0, nil, errH2PushPromise
	}
	c.skip = fh.length
	return frameHeaderLen, nil, nil
}

// headers holds a header block until its last frame has arrived, then
// decodes it.
func (c *h2Conn) headers(buf []byte) (int, *Request, error) {
	end, err := c.blockEnd(buf)
	if end == 0 || err != nil {
		return 0, nil, err
	}
	c.walked = 0
	req, err := c.decode(buf[:end])
	if err != nil {
		return 0, nil, err
	}
	return end, req, nil
}

// blockEnd walks the HEADERS frame at the start of buf and the
// CONTINUATION frames after it, and returns where the frame with
// END_HEADERS ends, or 0 if it has not arrived yet. Frames checked by an
// earlier call are not walked again.
func (c *h2Conn) blockEnd(buf []byte) (int, error) {
	first := readFrameHeader(buf)
	if first.stream == 0 || first.stream%2 == 0 {
		return 0, errH2StreamID
	}
	for off := c.walked; ; {
		if off+frameHeaderLen > MaxHeld {
			return 0, ErrTooLarge
		}
		if off+frameHeaderLen > len(buf) {
			return 0, nil
		}
		fh := readFrameHeader(buf[off:])
		if off > 0 && (fh.typ != frameContinuation || fh.stream != first.stream) {
			return 0, errH2Interleaved
		}
		end := off + frameHeaderLen + fh.length
		if end > MaxHeld {
			return 0, ErrTooLarge
		}
		if end > len(buf) {
			return 0, nil
		}
		if fh.flags&flagEndHeaders != 0 {
			return end, nil
		}
		off, c.walked = end, end
	}
}

// decode feeds the fragments of a complete header block to the HPACK
// decoder and returns the request it opens, if any. A HEADERS frame on a
// stream no higher than the last one opened carries trailers.
func (c *h2Conn) decode(block []byte) (*Request, error) {
	id := readFrameHeader(block).stream
	c.block = h2Block{trailers: id <= c.highest}
	if id > c.highest {
		c.highest = id
	}
	for off := 0; off < len(block); {
		fh := readFrameHeader(block[off:])
		payload := block[off+frameHeaderLen : off+frameHeaderLen+fh.length]
		off += frameHeaderLen + fh.length
		frag, err := fragment(fh, payload)
		if err != nil {
			return nil, err
		}
		_, err = c.dec.Write(frag)
		if c.block.err != nil {
			return nil, c.block.err
		}
		if err != nil {
			return nil, hpackError(err)
		}
	}
	if err := c.dec.Close(); err != nil {
		return nil, hpackError(err)
	}
	return c.block.request()
}

// fragment strips a HEADERS frame's padding and priority fields.
func fragment(fh frameHeader, p []byte) ([]byte, error) {
	if fh.typ != frameHeaders {
		return p, nil
	}
	pad := 0
	if fh.flags&flagPadded != 0 {
		if len(p) == 0 {
			return nil, errH2Padding
		}
		pad, p = int(p[0]), p[1:]
	}
	if fh.flags&flagPriority != 0 {
		if len(p) < priorityLen {
			return nil, errH2Priority
		}
		p = p[priorityLen:]
	}
	if pad > len(p) {
		return nil, errH2Padding
	}
	return p[:len(p)-pad], nil
}

func hpackError(err error) error {
	if err == hpack.ErrStringLength {
		return ErrTooLarge
	}
	return &malformedError{msg: "http2: header block", err: err}
}

// field is the HPACK decoder's callback for each field of a block.
func (c *h2Conn) field(f hpack.HeaderField) {
	if c.block.err == nil {
		c.block.err = c.block.add(f)
	}
}

// h2Block is what a header block said, as its fields are decoded.
type h2Block struct {
	err      error
	trailers bool
	size     int    // as RFC 9113 6.5.2 counts it
	regular  bool   // a regular field was seen: no pseudo-header may follow
	pseudo   uint8  // the pseudo-headers seen, as pseudo* bits
	hosts    int    // host fields
	method   string // :method
	path     string // :path
	auth     string // :authority
	host     string // host
}

const (
	pseudoMethod uint8 = 1 << iota
	pseudoScheme
	pseudoAuthority
	pseudoPath
	pseudoProtocol
)

// add checks one field. Field names must be lower case and values free of
// NUL, CR and LF (RFC 9113 8.2.1); connection-specific fields are refused
// (8.2.2): a server that turns the request into HTTP/1 could otherwise be
// made to read a second request in it.
func (b *h2Block) add(f hpack.HeaderField) error {
	b.size += int(f.Size())
	if b.size > maxHeaderList {
		return ErrTooLarge
	}
	for i := 0; i < len(f.Value); i++ {
		if c := f.Value[i]; c == 0 || c == '\r' || c == '\n' {
			return errH2FieldValue
		}
	}
	if f.IsPseudo() {
		return b.addPseudo(f)
	}
	if !lowerToken(f.Name) {
		return errH2FieldName
	}
	b.regular = true
	switch f.Name {
	case "host":
		b.hosts++
		switch {
		case b.trailers:
			return errH2TrailerField
		case b.hosts > 1:
			return errH2DupHost
		}
		b.host = f.Value
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return errH2Connection
	case "te":
		if f.Value != "trailers" {
			return errH2Connection
		}
	}
	return nil
}

func (b *h2Block) addPseudo(f hpack.HeaderField) error {
	var bit uint8
	switch f.Name {
	case ":method":
		bit, b.method = pseudoMethod, f.Value
	case ":scheme":
		bit = pseudoScheme
	case ":authority":
		bit, b.auth = pseudoAuthority, f.Value
	case ":path":
		bit, b.path = pseudoPath, f.Value
	case ":protocol":
		bit = pseudoProtocol
	}
	switch {
	case b.trailers:
		return errH2TrailerField
	case b.regular:
		return errH2PseudoOrder
	case bit == 0:
		return errH2Pseudo
	case b.pseudo&bit != 0:
		return errH2DupPseudo
	}
	b.pseudo |= bit
	return nil
}

// request returns the request a complete block opens; nil for trailers.
func (b *h2Block) request() (*Request, error) {
	if b.trailers {
		return nil, nil
	}
	if b.pseudo&pseudoMethod == 0 || b.method == "" {
		return nil, errH2NoMethod
	}
	// An absolute :path would give a server that honours it a second
	// authority to route by.
	if b.pseudo&pseudoPath != 0 && b.path != "*" && (b.path == "" || b.path[0] != '/') {
		return nil, errH2Path
	}
	name, err := b.name()
	if err != nil {
		return nil, err
	}
	return &Request{Name: name, Proto: HTTP2, Method: auditString(b.method), Target: auditString(b.path)}, nil
}

// name returns the host of :authority and host, which must agree when both
// are present: servers differ in which one they route by.
func (b *h2Block) name() (string, error) {
	var auth, host string
	if b.pseudo&pseudoAuthority != 0 {
		// A plain CONNECT names host:port; an extended one (RFC 8441),
		// like other requests, may leave the port out.
		needPort := b.method == "CONNECT" && b.pseudo&pseudoProtocol == 0
		n, err := hostPort([]byte(b.auth), needPort)
		if err != nil {
			return "", &malformedError{msg: "http2: bad :authority", err: err}
		}
		auth = n
	}
	if b.hosts > 0 {
		n, err := hostPort([]byte(b.host), false)
		if err != nil {
			return "", &malformedError{msg: "http2: bad host", err: err}
		}
		host = n
	}
	switch {
	case auth != "" && host != "" && auth != host:
		return "", errH2HostMismatch
	case auth != "":
		return auth, nil
	case host != "":
		return host, nil
	}
	return "", errNoName
}

// lowerToken reports whether s is a non-empty token without upper case.
func lowerToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isTchar(c) || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return s != ""
}
