package sniff

import "bytes"

var (
	errLeadingEmptyLine  = malformed("http: empty line before the request line")
	errRequestLine       = malformed("http: request line is not METHOD SP target SP HTTP/1.x CRLF")
	errTarget            = malformed("http: bad request target")
	errVersion           = malformed("http: version is not HTTP/1.0 or HTTP/1.1")
	errBareLF            = malformed("http: line ends in LF without CR")
	errBareCR            = malformed("http: CR not followed by LF")
	errFold              = malformed("http: folded header line")
	errHeaderName        = malformed("http: bad header name")
	errHeaderValue       = malformed("http: bad character in a header value")
	errDupHost           = malformed("http: two Host headers")
	errNoHost            = malformed("http: HTTP/1.1 request without Host")
	errHostMismatch      = malformed("http: Host does not match the request target's authority")
	errUserinfo          = malformed("http: userinfo in the request target's authority")
	errPort              = malformed("http: bad port")
	errH2Preface         = malformed("http: bad HTTP/2 connection preface")
	errDupLength         = malformed("http: two Content-Length headers")
	errLength            = malformed("http: Content-Length is not one decimal number below 10^18")
	errDupEncoding       = malformed("http: two Transfer-Encoding headers")
	errEncoding          = malformed("http: Transfer-Encoding other than chunked")
	errEncoding10        = malformed("http: Transfer-Encoding in an HTTP/1.0 request")
	errLengthAndEncoding = malformed("http: both Content-Length and Transfer-Encoding")
	errConnectBody       = malformed("http: CONNECT request with a body")
	errTrailerField      = malformed("http: Host, Content-Length or Transfer-Encoding in a trailer")
)

// h2Preface is the HTTP/2 prior-knowledge connection preface (RFC 9113 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffHTTP recognises an HTTP/1 request head and returns its host.
func sniffHTTP(buf []byte) (Result, error) {
	if len(buf) > MaxHTTPHead {
		buf = buf[:MaxHTTPHead]
	}
	k, err := recognise(buf)
	if k != HTTP || err != nil {
		return Result{Kind: k}, err
	}
	return parseHead(buf)
}

// recognise decides what the start of buf (at most MaxHTTPHead bytes) is:
// HTTP for a request line to parse strictly, HTTP2 for the whole HTTP/2
// prior-knowledge preface, Unknown for bytes that can be neither, or
// ErrNeedMore (ErrTooLarge at the cap) until it can tell.
//
// Recognition errs toward HTTP: the first line counts as a request line
// when it starts with a method token followed by whitespace and mentions
// "HTTP/" (in any case) after it, which covers what lenient servers accept
// (RFC 9112 section 3 lets them split on any whitespace). Such a line is
// then parsed strictly, and anything off is an error. Lines that cannot be
// an HTTP/1 request with headers (SSH banners, HTTP/0.9, Redis commands)
// are Unknown.
func recognise(buf []byte) (Kind, error) {
	need := func() (Kind, error) {
		if len(buf) >= MaxHTTPHead {
			return Unknown, ErrTooLarge
		}
		return Unknown, ErrNeedMore
	}

	// Servers may skip empty lines before a request (RFC 9112 2.2); look
	// past them to recognise one, then refuse it: real clients send none.
	start := 0
	for start < len(buf) && (buf[start] == '\r' || buf[start] == '\n') {
		start++
	}
	if start == len(buf) {
		return need()
	}
	line := buf[start:]
	i := 0
	for i < len(line) && isTchar(line[i]) {
		i++
	}
	if i == len(line) {
		return need()
	}
	if i == 0 {
		return Unknown, nil // not a method token
	}
	switch c := line[i]; {
	case c == ' ', c == '\t', c == '\v', c == '\f':
	case c == '\r':
		if i+1 == len(line) {
			return need()
		}
		if line[i+1] == '\n' {
			return Unknown, nil // a lone word: no target, no version
		}
		// A bare CR is whitespace to a lenient server.
	default:
		return Unknown, nil
	}
	eol := bytes.IndexByte(line, '\n')
	if eol < 0 {
		return need()
	}
	if !containsFold(line[i:eol], "http/") {
		return Unknown, nil
	}
	if start > 0 {
		return HTTP, errLeadingEmptyLine
	}
	return recognisePreface(buf)
}

// recognisePreface tells the HTTP/2 prior-knowledge preface from an HTTP/1
// request line: a line that starts like the preface must be all of it.
func recognisePreface(buf []byte) (Kind, error) {
	if !bytes.HasPrefix(buf, []byte("PRI * HTTP/2.0\r\n")) {
		return HTTP, nil
	}
	if len(buf) < len(h2Preface) {
		if !bytes.HasPrefix([]byte(h2Preface), buf) {
			return HTTP, errH2Preface
		}
		return HTTP, ErrNeedMore
	}
	if !bytes.HasPrefix(buf, []byte(h2Preface)) {
		return HTTP, errH2Preface
	}
	return HTTP2, nil
}

// request is what a head parser keeps of a request head or a trailer
// section: method and target are slices of the buffer holding the request
// line; the rest is copied out as the field lines go by.
type request struct {
	method, target []byte
	http11         bool
	trailer        bool   // a trailer section: no request line, fewer fields allowed
	host           string // the Host field, normalised; "" if absent or empty
	hosts          int
	length         int64 // the Content-Length field's value
	lengths        int
	chunked        bool // Transfer-Encoding: chunked
	encodings      int
	upgrade        bool // an Upgrade field
}

// head parses a request head, or the trailer section of a chunked body,
// one CRLF-terminated line at a time. It remembers the lines it has done,
// so a head arriving over many reads is parsed once, provided every call's
// buffer starts where the first call's did.
type head struct {
	off int // length of the complete lines parsed so far
	req request
}

// parse continues with buf[h.off:] and returns the length of the head, its
// final empty line included, once it is complete; ErrNeedMore while every
// complete line is well formed; ErrTooLarge when the first limit bytes
// hold no complete head. It never looks past limit, so its answer for a
// prefix never changes when more bytes arrive.
func (h *head) parse(buf []byte, limit int) (int, error) {
	if len(buf) > limit {
		buf = buf[:limit]
	}
	for {
		line, _, err := nextLine(buf[h.off:])
		if err == ErrNeedMore {
			if len(buf) >= limit {
				return 0, ErrTooLarge
			}
			if h.off == 0 && !h.req.trailer {
				return 0, checkMethod(buf)
			}
		}
		if err != nil {
			return 0, err
		}
		first := h.off == 0
		h.off += len(line) + 2
		switch {
		case first && !h.req.trailer && len(line) == 0:
			err = errLeadingEmptyLine
		case first && !h.req.trailer:
			err = parseRequestLine(line, &h.req)
		case len(line) == 0:
			return h.off, nil
		default:
			err = parseHeader(line, &h.req)
		}
		if err != nil {
			return 0, err
		}
	}
}

// checkMethod refuses an incomplete request line that cannot become one,
// so bytes that are not HTTP where a request must start are refused at
// once rather than after MaxHTTPHead of them.
func checkMethod(partial []byte) error {
	for _, c := range partial {
		if c == ' ' {
			break
		}
		if !isTchar(c) {
			return errRequestLine
		}
	}
	return ErrNeedMore
}

// finish checks a complete request head in buf (the bytes h.parse saw)
// as a whole and returns its host. The request line is sliced again from
// buf: the slices of an earlier call may point at bytes since moved.
func (h *head) finish(buf []byte) (string, error) {
	line, _, err := nextLine(buf)
	if err == nil {
		err = parseRequestLine(line, &h.req)
	}
	if err != nil {
		return "", err // cannot happen: parse accepted this line
	}
	if err := h.req.framing(); err != nil {
		return "", err
	}
	return requestHost(&h.req)
}

// parseHead parses a whole request head strictly, returning ErrNeedMore
// only when every complete line so far is well formed.
func parseHead(buf []byte) (Result, error) {
	res := Result{Kind: HTTP}
	var h head
	end, err := h.parse(buf, MaxHTTPHead)
	if err == nil {
		res.Name, err = h.finish(buf[:end])
	}
	return res, err
}

// nextLine splits off one CRLF-terminated line. A bare LF or CR anywhere is
// an error: servers disagree on where such lines end.
func nextLine(b []byte) (line, rest []byte, err error) {
	for i, c := range b {
		switch c {
		case '\n':
			return nil, nil, errBareLF
		case '\r':
			if i+1 == len(b) {
				break
			}
			if b[i+1] != '\n' {
				return nil, nil, errBareCR
			}
			return b[:i], b[i+2:], nil
		}
	}
	return nil, nil, ErrNeedMore
}

func parseRequestLine(line []byte, req *request) error {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return errRequestLine
	}
	req.method = line[:sp]
	for _, c := range req.method {
		if !isTchar(c) {
			return errRequestLine
		}
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return errRequestLine
	}
	req.target = rest[:sp]
	for _, c := range req.target {
		if c <= ' ' || c >= 0x7f {
			return errTarget
		}
	}
	switch string(rest[sp+1:]) {
	case "HTTP/1.1":
		req.http11 = true
	case "HTTP/1.0":
	default:
		return errVersion
	}
	return nil
}

// parseHeader checks one field line and records the fields that matter.
// Obsolete line folding, whitespace before the colon and control
// characters are errors: each is a known way to make a front end and a
// back end see different headers.
func parseHeader(line []byte, req *request) error {
	if line[0] == ' ' || line[0] == '\t' {
		return errFold
	}
	colon := 0
	for colon < len(line) && isTchar(line[colon]) {
		colon++
	}
	if colon == 0 || colon == len(line) || line[colon] != ':' {
		return errHeaderName
	}
	value := line[colon+1:]
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return errHeaderValue
		}
	}
	return req.field(line[:colon], bytes.Trim(value, " \t"))
}

// field records what the gateway's decisions depend on: the host, and
// the body framing the server will follow to find the next request.
// Trailers may carry none of these (RFC 9110 6.5.1).
func (req *request) field(name, value []byte) error {
	var err error
	switch {
	case asciiEqualFold(name, "host"):
		err = req.setHost(value)
	case asciiEqualFold(name, "content-length"):
		err = req.setLength(value)
	case asciiEqualFold(name, "transfer-encoding"):
		err = req.setEncoding(value)
	case asciiEqualFold(name, "upgrade"):
		req.upgrade = true
		return nil
	default:
		return nil
	}
	if req.trailer {
		return errTrailerField
	}
	return err
}

func (req *request) setHost(value []byte) error {
	req.hosts++
	if req.hosts > 1 {
		return errDupHost
	}
	if len(value) == 0 {
		return nil
	}
	n, err := hostPort(value, false)
	if err != nil {
		return &malformedError{msg: "http: bad Host", err: err}
	}
	req.host = n
	return nil
}

// setLength accepts one Content-Length of digits only: a list, even of
// equal values, or a second field is read differently by different
// servers, which is how bodies get smuggled.
func (req *request) setLength(value []byte) error {
	req.lengths++
	if req.lengths > 1 {
		return errDupLength
	}
	if len(value) == 0 || len(value) > maxLengthDigits {
		return errLength
	}
	var n int64
	for _, c := range value {
		if !isDigit(c) {
			return errLength
		}
		n = n*10 + int64(c-'0')
	}
	req.length = n
	return nil
}

// maxLengthDigits bounds Content-Length below 10^18, far from overflow.
const maxLengthDigits = 18

// setEncoding accepts only Transfer-Encoding: chunked, once. Other codings
// leave the body's end to the connection's close, which no client that
// keeps a connection alive needs and which servers treat differently.
func (req *request) setEncoding(value []byte) error {
	req.encodings++
	if req.encodings > 1 {
		return errDupEncoding
	}
	if !asciiEqualFold(value, "chunked") {
		return errEncoding
	}
	req.chunked = true
	return nil
}

// framing refuses heads whose body servers could delimit differently.
func (req *request) framing() error {
	switch {
	case req.encodings > 0 && req.lengths > 0:
		return errLengthAndEncoding
	case req.encodings > 0 && !req.http11:
		return errEncoding10
	case string(req.method) == "CONNECT" && (req.encodings > 0 || req.length > 0):
		// The tunnel starts right after the head: a server would read
		// a body as tunnel bytes, or the reverse.
		return errConnectBody
	}
	return nil
}

// requestHost decides the request's host from its target and Host header:
// the authority of an absolute-form or CONNECT target must agree with Host
// when both are present, since proxies use one and origins the other.
func requestHost(req *request) (string, error) {
	var authority []byte
	hasAuthority := false
	switch {
	case string(req.method) == "CONNECT":
		authority, hasAuthority = req.target, true
	case req.target[0] == '/':
	case len(req.target) == 1 && req.target[0] == '*':
	default:
		a, err := absoluteAuthority(req.target)
		if err != nil {
			return "", err
		}
		authority, hasAuthority = a, true
	}
	if req.hosts == 0 && req.http11 && string(req.method) != "CONNECT" {
		return "", errNoHost
	}
	if !hasAuthority {
		return req.host, nil
	}
	n, err := hostPort(authority, string(req.method) == "CONNECT")
	if err != nil {
		return "", &malformedError{msg: "http: bad request target authority", err: err}
	}
	if req.hosts > 0 && req.host != n {
		return "", errHostMismatch
	}
	return n, nil
}

// absoluteAuthority returns the authority of an absolute-form target,
// scheme "://" authority [path-abempty] ["?" query].
func absoluteAuthority(t []byte) ([]byte, error) {
	i := 0
	for i < len(t) && (isAlpha(t[i]) || i > 0 && (isDigit(t[i]) || t[i] == '+' || t[i] == '-' || t[i] == '.')) {
		i++
	}
	if i == 0 || !bytes.HasPrefix(t[i:], []byte("://")) {
		return nil, errTarget
	}
	a := t[i+3:]
	if end := bytes.IndexAny(a, "/?#"); end >= 0 {
		a = a[:end]
	}
	if bytes.IndexByte(a, '@') >= 0 {
		return nil, errUserinfo
	}
	if len(a) == 0 {
		return nil, errTarget
	}
	return a, nil
}

// hostPort returns the normalised name of host [":" port]. IP literals,
// IPv6 in brackets included, are refused: the gateway needs a name.
func hostPort(b []byte, needPort bool) (string, error) {
	if len(b) > 0 && b[0] == '[' {
		return "", errNameIP
	}
	host := b
	if c := bytes.IndexByte(b, ':'); c >= 0 {
		host = b[:c]
		port := b[c+1:]
		if len(port) == 0 || len(port) > 5 {
			return "", errPort
		}
		v := 0
		for _, d := range port {
			if !isDigit(d) {
				return "", errPort
			}
			v = v*10 + int(d-'0')
		}
		if v > 65535 {
			return "", errPort
		}
	} else if needPort {
		return "", errPort
	}
	return normalizeName(host)
}

// isTchar reports whether c may appear in a token (RFC 9110 5.6.2).
func isTchar(c byte) bool {
	switch {
	case isAlpha(c), isDigit(c):
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// asciiEqualFold compares b to the lower-case ASCII s, ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// containsFold reports whether b contains the lower-case ASCII s in any case.
func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if asciiEqualFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}
