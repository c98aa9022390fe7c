// Package sniff reads the names a client puts in a TCP stream: the SNI of
// a TLS ClientHello, and on a plaintext HTTP connection the Host of every
// HTTP/1 request and the :authority of every HTTP/2 request.
//
// The gateway uses it to refuse SNI spoofing toward an attacker's address
// and domain fronting across names: for a flow allowed only because the
// agent's own DNS bound the destination IP to an allowed name, the name the
// client presents must be allowed and bound to that IP too. Sniff reads the
// first message. A Stream then follows a plaintext HTTP connection and
// finds every request head in it, so that a kept-alive, pipelined or
// HTTP/2 request cannot name another server (virtual-host fronting).
//
// The input is hostile. The parsers are strict wherever servers might read
// the same bytes differently (two SNI extensions, two Host headers, bare LF,
// folded headers, whitespace before a colon, Content-Length beside
// Transfer-Encoding): they return an error, which the gateway treats as
// deny, rather than guessing which name or which request boundary a server
// would pick. They do no I/O and never copy payload. Sniff keeps no state
// and allocates nothing beyond the strings of the Result it returns; a
// Stream keeps one connection's framing state (and HPACK tables once it is
// HTTP/2) and allocates per request head, never per body byte.
//
// What the caller must do around them: hold the client's bytes back from
// the server until Sniff decides, and each request head until Scan returns
// it checked (server-to-client bytes may flow, so protocols where the server
// speaks first still work); deny when a hello or head is still incomplete at
// a byte or time cap or at EOF; and remember what stays unseen: anything
// inside TLS, a STARTTLS upgrade, and whatever follows an Upgrade or CONNECT
// once a Stream has gone opaque.
package sniff

import (
	"errors"
	"net/netip"

	"github.com/clawnet/clawnet/policy"
)

// Kind is a protocol: what Sniff recognised the first bytes of a stream as,
// or what a Stream found a request in.
type Kind uint8

const (
	// Unknown bytes are neither a TLS ClientHello nor an HTTP request that
	// could carry a Host header or :authority, SSLv2-format hellos
	// included.
	Unknown Kind = iota
	TLS
	HTTP
	// HTTP2 is the HTTP/2 prior-knowledge connection preface. Sniff finds
	// no name in it: the requests follow in HPACK-compressed frames, which
	// a Stream decodes.
	HTTP2
)

func (k Kind) String() string {
	switch k {
	case TLS:
		return "tls"
	case HTTP:
		return "http"
	case HTTP2:
		return "http2"
	}
	return "unknown"
}

// Result is what Sniff found.
type Result struct {
	Kind Kind
	// Name is the SNI host_name or the request's host, normalised as by
	// policy.NormalizeName (lower case, no trailing dot, no port). It is
	// "" when the client sent none: a ClientHello without server_name, an
	// HTTP/1.0 request without Host, an empty Host. A non-empty Name
	// always passes policy.NormalizeName unchanged.
	Name string
	// ECH reports an encrypted_client_hello extension in a ClientHello.
	// Name is then the outer (public) name, the only one visible here.
	ECH bool
	// ALPN lists the first protocols (at most 8) of a ClientHello's ALPN
	// extension, for logs.
	ALPN []string
}

// Caps on the bytes Sniff examines. A caller can allocate MaxBytes once
// per flow and read into it until Sniff stops returning ErrNeedMore.
const (
	// MaxTLSHello bounds the TLS records carrying a ClientHello, record
	// headers included. Real hellos, post-quantum key shares and ECH
	// included, are a few KiB.
	MaxTLSHello = 16 << 10
	// MaxHTTPHead bounds an HTTP request head, its final CRLFCRLF included.
	MaxHTTPHead = 8 << 10
	// MaxBytes is the largest prefix Sniff may need to decide.
	MaxBytes = MaxTLSHello
)

// maxALPN is how many ALPN protocols Result keeps; the rest are validated
// and dropped, so a hostile list cannot make Sniff allocate thousands.
const maxALPN = 8

var (
	// ErrNeedMore means the bytes are an incomplete prefix of a ClientHello
	// or request head: read more and call Sniff again with the longer
	// buffer. A caller that gives up (byte or time cap) must deny.
	ErrNeedMore = errors.New("sniff: need more bytes")
	// ErrTooLarge means the ClientHello or request head does not fit in
	// MaxTLSHello or MaxHTTPHead, or, in a Stream, a chunk-size line,
	// trailer section or HTTP/2 header block does not fit its cap.
	ErrTooLarge = errors.New("sniff: client hello or request head too large")
	// ErrMalformed is matched (errors.Is) by every error about bytes that
	// claim to be TLS or HTTP but break the protocol or are ambiguous.
	ErrMalformed = errors.New("sniff: malformed")
)

// Sniff examines the first bytes a client sent on a stream.
//
// It returns ErrNeedMore while buf is a prefix of a ClientHello or an HTTP
// request head that is not complete yet, ErrTooLarge past the caps, an
// error matching ErrMalformed for broken or ambiguous input, and a Result
// with Kind Unknown as soon as the bytes can be neither. The decision only
// depends on the bytes seen: once Sniff returns anything but ErrNeedMore
// for a prefix, it returns the same for every longer buffer. Bytes after
// the ClientHello or the request head are ignored.
//
// With an error, Result.Kind still says which protocol the bytes claimed
// to be (for logs); the other fields are empty.
//
// TLS: a first byte of 22 commits to TLS. The ClientHello may be split over
// records; its server_name must hold exactly one host_name, a DNS name in
// ASCII (IP literals, NULs, empty labels refused).
//
// HTTP: a first line of a method token, whitespace and "HTTP/" somewhere
// after commits to HTTP, and must then be exactly METHOD SP target SP
// HTTP/1.0|1.1 CRLF. Host may appear once; an HTTP/1.1 request needs it
// (CONNECT excepted). The name comes from the authority of an
// absolute-form or CONNECT target when there is one, and Host must then
// name the same host. A Host or authority that is an IP literal is an
// error: the gateway needs a name to check. The body's framing must be
// one a server cannot read differently: Content-Length once, as digits,
// or Transfer-Encoding: chunked alone (HTTP/1.1). Lines that cannot start a
// request with headers (SSH banners, HTTP/0.9, Redis) are Unknown.
//
// HTTP/2: the whole prior-knowledge preface is Kind HTTP2 with no Name; a
// Stream must read the requests that follow it.
func Sniff(buf []byte) (Result, error) {
	if len(buf) == 0 {
		return Result{}, ErrNeedMore
	}
	if buf[0] == recordTypeHandshake {
		return sniffTLS(buf)
	}
	return sniffHTTP(buf)
}

// malformedError is an ErrMalformed with the step that failed.
type malformedError struct {
	msg string
	err error
}

func (e *malformedError) Error() string {
	if e.err != nil {
		return "sniff: " + e.msg + ": " + e.err.Error()
	}
	return "sniff: " + e.msg
}

func (e *malformedError) Is(target error) bool { return target == ErrMalformed }
func (e *malformedError) Unwrap() error        { return e.err }

func malformed(msg string) error { return &malformedError{msg: msg} }

var (
	errNameEmpty = errors.New("empty name")
	errNameChar  = errors.New("character not allowed in a host name")
	errNameIP    = errors.New("an IP literal, not a name")
)

// normalizeName checks a host name taken from the wire and returns it as
// policy rules match it. Only the ASCII a DNS name is made of is accepted
// (punycode for IDNs, as RFC 6066 requires of SNI): raw UTF-8, NULs,
// percent escapes, spaces and IP literals are refused.
func normalizeName(b []byte) (string, error) {
	if len(b) == 0 {
		return "", errNameEmpty
	}
	digitsAndDots := true
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c == '.':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
			digitsAndDots = false
		default:
			return "", errNameChar
		}
	}
	s := string(b)
	if digitsAndDots {
		if _, err := netip.ParseAddr(trimDot(s)); err == nil {
			return "", errNameIP
		}
	}
	n, err := policy.NormalizeName(s)
	if err != nil {
		return "", err
	}
	return n, nil
}

func trimDot(s string) string {
	if len(s) > 0 && s[len(s)-1] == '.' {
		return s[:len(s)-1]
	}
	return s
}
