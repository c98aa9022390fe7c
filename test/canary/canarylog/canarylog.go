// Package canarylog is the schema of the canary's log: one JSON object per
// line, appended by the canary servers in the test "internet" namespace and
// read back by the integration harness. It is the far side's testimony of
// what actually arrived, so tests assert on it rather than on what a client
// saw.
package canarylog

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"time"
)

// Services, as written in Entry.Service.
const (
	ServiceCanary  = "canary" // the process itself (ready, errors)
	ServiceHTTP    = "http"
	ServiceHTTPS   = "https"
	ServiceEcho    = "echo"    // TCP echo, port 7
	ServiceDiscard = "discard" // TCP sink, port 9
	ServiceSource  = "source"  // TCP source, port 19
	ServiceBanner  = "banner"  // server-first banner, port 22
	ServiceUDPEcho = "udp-echo"
	ServiceDNS     = "dns"
	// ServiceHTTPLenient is HTTP/1 on port 8081 read the way a careless
	// server reads it: a request head ends at a blank line or wherever the
	// client stopped sending, and the Host is taken from what arrived.
	ServiceHTTPLenient = "http-lenient"
	// ServiceH2C is cleartext HTTP/2 on port 8082, by prior knowledge or
	// Upgrade: h2c, and plain HTTP/1.1 on the same port.
	ServiceH2C = "h2c"
	// ServiceTarpit is TCP on port 8083 that accepts and never reads, and
	// holds the connection until the peer closes it.
	ServiceTarpit = "tarpit"
)

// Events, as written in Entry.Event.
const (
	EventReady    = "ready"    // every listener is bound
	EventOpen     = "open"     // a TCP connection was accepted
	EventClose    = "close"    // a TCP connection ended; byte counts are final
	EventRequest  = "request"  // an HTTP request (plain or inside TLS)
	EventDatagram = "datagram" // one UDP datagram
	EventQuery    = "query"    // one DNS query
	EventError    = "error"    // the canary itself failed at something
)

// Entry is one log line.
type Entry struct {
	Time    time.Time `json:"time"`
	Service string    `json:"service"`
	Event   string    `json:"event"`
	Proto   string    `json:"proto,omitempty"` // tcp or udp
	Remote  string    `json:"remote,omitempty"`
	Local   string    `json:"local,omitempty"`
	// Bytes counts what the canary received from the peer; BytesOut what it
	// sent back. SHA256 and SHA256Out are digests of the same byte streams.
	Bytes     int64  `json:"bytes"`
	BytesOut  int64  `json:"bytes_out"`
	SHA256    string `json:"sha256,omitempty"`
	SHA256Out string `json:"sha256_out,omitempty"`
	// Service-specific fields.
	SNI       string `json:"sni,omitempty"`
	Host      string `json:"host,omitempty"`
	Method    string `json:"method,omitempty"`
	HTTPProto string `json:"http_proto,omitempty"` // HTTP/1.1, HTTP/2.0
	Path      string `json:"path,omitempty"`
	Qname     string `json:"qname,omitempty"`
	Qtype     string `json:"qtype,omitempty"`
	Rcode     string `json:"rcode,omitempty"`
	Requested int64  `json:"requested,omitempty"` // source: bytes asked for
	Line      string `json:"line,omitempty"`      // banner: the client's first line
	Error     string `json:"error,omitempty"`
}

// LocalAddr parses Local; the zero AddrPort if it does not parse.
func (e Entry) LocalAddr() netip.AddrPort { return parseAddrPort(e.Local) }

// RemoteAddr parses Remote; the zero AddrPort if it does not parse.
func (e Entry) RemoteAddr() netip.AddrPort { return parseAddrPort(e.Remote) }

func parseAddrPort(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}
	}
	// A dual-stack listener reports IPv4 peers as v4-mapped; tests compare
	// against plain IPv4 addresses.
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Writer appends entries to a file, one whole line per write, so a reader
// never sees two entries interleaved.
type Writer struct {
	mu sync.Mutex // guards f and serializes lines
	f  *os.File
}

// Create opens path for appending, creating it if needed.
func Create(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open canary log: %w", err)
	}
	return &Writer{f: f}, nil
}

// Log stamps e with the current time if it has none and appends it.
func (w *Writer) Log(e Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	b, err := json.Marshal(e)
	if err != nil {
		// Entry has only plain fields; Marshal cannot fail on it.
		panic(err)
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	// A failed log write cannot be reported anywhere better than stderr,
	// and the harness would then miss the entry and fail the test anyway.
	if _, err := w.f.Write(b); err != nil {
		fmt.Fprintf(os.Stderr, "canary: write log: %v\n", err)
	}
}

// Close closes the file.
func (w *Writer) Close() error { return w.f.Close() }

// Parse reads every complete line of r. A trailing line without a newline is
// still being written and is left out.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	br := bufio.NewReader(r)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read canary log: %w", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return out, fmt.Errorf("canary log line %d: %w", lineNo, err)
		}
		out = append(out, e)
	}
}

// SourceStream returns the n bytes the source service sends when asked for n.
// They are pseudo-random from a fixed seed so that a lost, duplicated or
// reordered segment changes the digest.
func SourceStream(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{'c', 'l', 'a', 'w', 'n', 'e', 't'}), n)
}

// Digest returns the hex sha256 of b, as written in SHA256 fields.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
