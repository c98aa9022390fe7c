package sniff

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestSniffHTTP(t *testing.T) {
	tests := []struct {
		in   string
		want Result
		err  error // ErrMalformed, ErrTooLarge, ErrNeedMore or nil
	}{
		{"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", Result{Kind: HTTP, Name: "api.example.com"}, nil},
		{"GET /x?y HTTP/1.1\r\nUser-Agent: t\r\nhOsT:  API.Example.com.:8080 \t\r\nAccept: */*\r\n\r\nbody", Result{Kind: HTTP, Name: "api.example.com"}, nil},
		{"POST /v1 HTTP/1.1\r\nHost: a.example\r\nX-Bin: \x80\xff\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"get / HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"GET http://a.example/p HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"GET HTTP://A.example:80?q HTTP/1.1\r\nHost: a.example:80\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"GET http://a.example/ HTTP/1.0\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"GET / HTTP/1.0\r\n\r\n", Result{Kind: HTTP}, nil},
		{"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", Result{Kind: HTTP}, nil},
		{"GET / HTTP/1.1\r\nHost:\r\n\r\n", Result{Kind: HTTP}, nil},
		{"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"CONNECT a.example:443 HTTP/1.1\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"CONNECT A.Example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding:  Chunked \r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 007\r\n\r\n", Result{Kind: HTTP, Name: "a.example"}, nil},
		{h2Preface, Result{Kind: HTTP2}, nil},
		{h2Preface + "\x00\x00\x12\x04", Result{Kind: HTTP2}, nil},

		// Not HTTP: decided as soon as the bytes say so.
		{"\x00", Result{}, nil},
		{"{\"jsonrpc\"", Result{}, nil},
		{"SSH-2.0-OpenSSH_9.6\r\n", Result{}, nil},
		{"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\r\n", Result{}, nil},
		{"PING\r\n", Result{}, nil},
		{"get foo\r\n", Result{}, nil},
		{"GET /\r\nHost: evil.example\r\n\r\n", Result{}, nil}, // HTTP/0.9: no headers
		{"\x16", Result{Kind: TLS}, ErrNeedMore},

		{"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET http://a.example/ HTTP/1.1\r\nHost:\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET http://a.example/ HTTP/1.1\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET http://[::1]/ HTTP/1.1\r\nHost: [::1]\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example\r\nHost:\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nX: y\r\n Host: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example\nX: y\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\nHost: a.example\n\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example\rX: y\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.ex\x00ample\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example%2eevil\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example:\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a.example:80:80\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nHost: a..example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nX\x01: y\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\n: y\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1\r\nX: \x7f\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"CONNECT a.example HTTP/1.1\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"CONNECT a.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"CONNECT 192.0.2.1:443 HTTP/1.1\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET  / HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET\t/ HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1 \r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / http/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.2\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/2.0\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET / HTTP/1.1 x\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET /\x80 HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"GET\r/ HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"\r\nGET / HTTP/1.1\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"PRI * HTTP/2.0\r\nHost: a.example\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3, 3\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"POST / HTTP/1.0\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"CONNECT a.example:443 HTTP/1.1\r\nContent-Length: 1\r\n\r\n", Result{Kind: HTTP}, ErrMalformed},
		{"PRI * HTTP/2.0\r\n\r\nSX", Result{Kind: HTTP}, ErrMalformed},

		{"", Result{}, ErrNeedMore},
		{"G", Result{}, ErrNeedMore},
		{"\r\n", Result{}, ErrNeedMore},
		{"GET / HTTP/1.1", Result{}, ErrNeedMore},
		{"GET / HTTP/1.1\r", Result{}, ErrNeedMore},
		{"GET / HTTP/1.1\r\nHost: a.example\r\n", Result{Kind: HTTP}, ErrNeedMore},
		{"GET / HTTP/1.1\r\nHost: a.example\r\n\r", Result{Kind: HTTP}, ErrNeedMore},
		{"PRI * HTTP/2.0\r\n\r\nSM", Result{Kind: HTTP}, ErrNeedMore},
		{"PRI * HTTP/2.0\r\n", Result{Kind: HTTP}, ErrNeedMore},
		{"GET / HTTP/1.1\r\nHost: a.example\r\nX: " + strings.Repeat("y", MaxHTTPHead), Result{Kind: HTTP}, ErrTooLarge},
		{"GET /" + strings.Repeat("y", MaxHTTPHead), Result{}, ErrTooLarge},
		{strings.Repeat("y", MaxHTTPHead+1), Result{}, ErrTooLarge},
	}
	for _, tt := range tests {
		got, err := Sniff([]byte(tt.in))
		if !errors.Is(err, tt.err) || err == nil && tt.err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Sniff(%.80q) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// TestSniffHTTPByteByByte feeds real request heads, as net/http writes
// them, one byte at a time: every proper prefix of the head needs more.
func TestSniffHTTPByteByByte(t *testing.T) {
	for _, target := range []string{"http://api.example.com/v1/x?y=1", "http://api.example.com:8443/"} {
		req, err := http.NewRequest("POST", target, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Token", "t")
		var b strings.Builder
		if err := req.Write(&b); err != nil {
			t.Fatal(err)
		}
		wire := b.String()
		head := strings.Index(wire, "\r\n\r\n") + 4
		for n := range head {
			if r, err := Sniff([]byte(wire[:n])); err != ErrNeedMore {
				t.Fatalf("Sniff(%q) = %+v, %v; want ErrNeedMore", wire[:n], r, err)
			}
		}
		want := Result{Kind: HTTP, Name: "api.example.com"}
		for _, n := range []int{head, len(wire)} {
			if got, err := Sniff([]byte(wire[:n])); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("Sniff(%q) = %+v, %v; want %+v, nil", wire[:n], got, err, want)
			}
		}
	}
}

func BenchmarkSniffHTTP(b *testing.B) {
	head := []byte("GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: Go-http-client/1.1\r\nAccept: application/json\r\nAuthorization: Bearer xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nAccept-Encoding: gzip\r\n\r\n")
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sniff(head); err != nil {
			b.Fatal(err)
		}
	}
}
