package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// maxLenientHead caps what the lenient server reads as one request head.
const maxLenientHead = 64 << 10

// handleLenientHTTP serves one request the way a careless server does: the
// head ends at a blank line or wherever the client stopped sending (EOF),
// and the Host is taken from whatever arrived. A gateway that forwards a
// head cut short by a half-close, on the theory that no server would read a
// name from it, is shown wrong by this server logging that name.
func (s *server) handleLenientHTTP(c *countConn, e *canarylog.Entry) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var head []byte
	buf := make([]byte, 4096)
	for len(head) < maxLenientHead && !bytes.Contains(head, []byte("\r\n\r\n")) {
		n, err := c.Read(buf)
		head = append(head, buf[:n]...)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				e.Error = err.Error()
			}
			break
		}
	}
	if len(head) == 0 {
		return
	}
	req := parseLenientHead(head)
	req.Service, req.Event, req.Proto = canarylog.ServiceHTTPLenient, canarylog.EventRequest, "tcp"
	req.Remote, req.Local = c.RemoteAddr().String(), c.LocalAddr().String()
	req.Bytes = int64(len(head))
	s.log.Log(req)
	e.Host = req.Host
	body := fmt.Sprintf("canary %s %s%s\n", canarylog.ServiceHTTPLenient, req.Host, req.Path)
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body); err != nil && e.Error == "" {
		e.Error = err.Error()
	}
}

// parseLenientHead reads a request line and a Host header out of head,
// accepting bare LF, a missing final CRLF and anything else it can make
// sense of.
func parseLenientHead(head []byte) canarylog.Entry {
	var e canarylog.Entry
	head, _, _ = bytes.Cut(head, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\n")
	if f := strings.Fields(lines[0]); len(f) > 0 {
		e.Method = f[0]
		if len(f) > 1 {
			e.Path = f[1]
		}
		if len(f) > 2 {
			e.HTTPProto = f[2]
		}
	}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(strings.TrimRight(l, "\r"), ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "host") && e.Host == "" {
			e.Host = strings.TrimSpace(value)
		}
	}
	return e
}
