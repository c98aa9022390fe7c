package main

import "testing"

// TestParseLenientHead checks that the lenient server finds a Host where a
// careless server would: in a head cut short, with bare LFs, with no final
// blank line.
func TestParseLenientHead(t *testing.T) {
	for _, tt := range []struct {
		head                      string
		method, path, proto, host string
	}{
		{"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n", "GET", "/x", "HTTP/1.1", "a.test"},
		{"GET /x HTTP/1.1\r\nHost: a.test\r\n", "GET", "/x", "HTTP/1.1", "a.test"},
		{"GET /x HTTP/1.1\r\nHost: a.test", "GET", "/x", "HTTP/1.1", "a.test"},
		{"GET /x HTTP/1.1\nhost:a.test\nX: y\n", "GET", "/x", "HTTP/1.1", "a.test"},
		{"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\nHost: b.test\r\n", "GET", "/x", "HTTP/1.1", "a.test"},
		{"GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n", "GET", "/x", "HTTP/1.1", "a.test"},
		{"GET", "GET", "", "", ""},
	} {
		e := parseLenientHead([]byte(tt.head))
		if e.Method != tt.method || e.Path != tt.path || e.HTTPProto != tt.proto || e.Host != tt.host {
			t.Errorf("parseLenientHead(%q) = %q %q %q host %q, want %q %q %q host %q",
				tt.head, e.Method, e.Path, e.HTTPProto, e.Host, tt.method, tt.path, tt.proto, tt.host)
		}
	}
}
