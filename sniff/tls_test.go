package sniff

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
)

// captureHello runs a real crypto/tls client against a net.Pipe and returns
// the ClientHello record it wrote, exactly as it reached the wire.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- tls.Client(client, cfg).Handshake()
		client.Close()
	}()
	var out []byte
	for {
		hdr := make([]byte, recordHeaderLen)
		if _, err := io.ReadFull(server, hdr); err != nil {
			t.Fatalf("read record header: %v", err)
		}
		body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
		if _, err := io.ReadFull(server, body); err != nil {
			t.Fatalf("read record body: %v", err)
		}
		out = append(append(out, hdr...), body...)
		if _, err := Sniff(out); err != ErrNeedMore {
			break
		}
	}
	server.Close()
	if err := <-done; err == nil {
		t.Fatal("handshake against a closed pipe succeeded")
	}
	return out
}

// echConfigList builds a one-entry ECHConfigList (RFC 9849 section 4) for
// a fresh X25519 key, so the real client sends a real ECH outer hello.
func echConfigList(t testing.TB, publicName string) []byte {
	t.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var c []byte
	c = append(c, 7)    // config_id
	c = be16(c, 0x0020) // DHKEM(X25519, HKDF-SHA256)
	c = vec16(c, key.PublicKey().Bytes())
	c = vec16(c, []byte{0, 1, 0, 1}) // HKDF-SHA256, AES-128-GCM
	c = append(c, 0)                 // maximum_name_length
	c = vec8(c, []byte(publicName))
	c = be16(c, 0) // no extensions
	cfg := be16(nil, extECH)
	cfg = vec16(cfg, c)
	return vec16(nil, cfg)
}

func be16(b []byte, v int) []byte { return append(b, byte(v>>8), byte(v)) }
func vec8(b, v []byte) []byte     { return append(append(b, byte(len(v))), v...) }
func vec16(b, v []byte) []byte    { return append(be16(b, len(v)), v...) }

func TestSniffRealClientHellos(t *testing.T) {
	tests := []struct {
		name string
		cfg  *tls.Config
		want Result
	}{
		{"tls13 sni", &tls.Config{ServerName: "api.example.com"},
			Result{Kind: TLS, Name: "api.example.com"}},
		{"tls13 upper case and trailing dot", &tls.Config{ServerName: "API.Example.COM."},
			Result{Kind: TLS, Name: "api.example.com"}},
		{"tls12 only with alpn", &tls.Config{ServerName: "git.example.org", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}},
			Result{Kind: TLS, Name: "git.example.org", ALPN: []string{"h2", "http/1.1"}}},
		{"tls13 alpn", &tls.Config{ServerName: "a.b.example", MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}},
			Result{Kind: TLS, Name: "a.b.example", ALPN: []string{"h2"}}},
		{"no sni", &tls.Config{InsecureSkipVerify: true},
			Result{Kind: TLS}},
		{"ip server name sends no sni", &tls.Config{ServerName: "192.0.2.1"},
			Result{Kind: TLS}},
		{"ech outer name", &tls.Config{ServerName: "secret.example", MinVersion: tls.VersionTLS13, EncryptedClientHelloConfigList: echConfigList(t, "public.example")},
			Result{Kind: TLS, Name: "public.example", ECH: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hello := captureHello(t, tt.cfg)
			got, err := Sniff(hello)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Sniff(hello) = %+v, %v; want %+v, nil", got, err, tt.want)
			}
			// Every shorter prefix is incomplete, never a verdict.
			for n := range len(hello) {
				if r, err := Sniff(hello[:n]); err != ErrNeedMore {
					t.Fatalf("Sniff(hello[:%d]) = %+v, %v; want ErrNeedMore", n, r, err)
				}
			}
			// Bytes the client sends after its hello do not change it.
			more := append(append([]byte(nil), hello...), 0x14, 3, 3, 0, 1, 1, 0x17, 3, 3)
			if got2, err := Sniff(more); err != nil || !reflect.DeepEqual(got2, got) {
				t.Fatalf("Sniff(hello+more) = %+v, %v; want %+v, nil", got2, err, got)
			}
			// The same message split over records and read byte by byte.
			msg := hello[recordHeaderLen:]
			for _, sizes := range [][]int{{1}, {2}, {3, 1}, {4}, {5, 100}, {len(msg) / 2}, {len(msg) - 1}, {17, 300, 2}} {
				split := records(msg, sizes...)
				for n := range len(split) {
					if r, err := Sniff(split[:n]); err != ErrNeedMore {
						t.Fatalf("sizes %v: Sniff(split[:%d]) = %+v, %v; want ErrNeedMore", sizes, n, r, err)
					}
				}
				if got2, err := Sniff(split); err != nil || !reflect.DeepEqual(got2, got) {
					t.Fatalf("sizes %v: Sniff(split) = %+v, %v; want %+v, nil", sizes, got2, err, got)
				}
			}
		})
	}
}

// records wraps a handshake message in TLS 1.0 handshake records whose
// payloads have the given sizes; the last record takes what remains.
func records(msg []byte, sizes ...int) []byte {
	var out []byte
	for _, n := range sizes {
		if n >= len(msg) {
			break
		}
		out = append(out, recordTypeHandshake, 3, 1)
		out = vec16(out, msg[:n])
		msg = msg[n:]
	}
	out = append(out, recordTypeHandshake, 3, 1)
	return vec16(out, msg)
}

// ext is one raw extension for hand-built hellos.
type ext struct {
	typ  int
	data []byte
}

func sniExt(names ...string) ext {
	var list []byte
	for _, n := range names {
		list = append(list, sniHostName)
		list = vec16(list, []byte(n))
	}
	return ext{extServerName, vec16(nil, list)}
}

// helloBody builds a minimal TLS 1.2-style ClientHello body.
func helloBody(exts ...ext) []byte {
	b := be16(nil, 0x0303)
	b = append(b, make([]byte, 32)...)        // random
	b = vec8(b, make([]byte, 32))             // session id
	b = vec16(b, []byte{0x13, 0x01, 0, 0xff}) // cipher suites
	b = vec8(b, []byte{0})                    // compression: null
	if exts == nil {
		return b
	}
	var e []byte
	for _, x := range exts {
		e = be16(e, x.typ)
		e = vec16(e, x.data)
	}
	return vec16(b, e)
}

// handshake prefixes a ClientHello body with its handshake header.
func handshake(body []byte) []byte {
	n := len(body)
	return append([]byte{typeClientHello, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

func helloRecord(exts ...ext) []byte { return records(handshake(helloBody(exts...))) }

func TestSniffHandBuiltHellos(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		name string
		in   []byte
		want Result
		err  error // ErrMalformed, ErrTooLarge, ErrNeedMore or nil
	}{
		{"no extensions", records(handshake(helloBody())), Result{Kind: TLS}, nil},
		{"empty extensions", helloRecord([]ext{}...), Result{Kind: TLS}, nil},
		{"sni", helloRecord(sniExt("example.com")), Result{Kind: TLS, Name: "example.com"}, nil},
		{"sni underscore", helloRecord(sniExt("_acme.example.com")), Result{Kind: TLS, Name: "_acme.example.com"}, nil},
		{"sni punycode", helloRecord(sniExt("xn--bcher-kva.example")), Result{Kind: TLS, Name: "xn--bcher-kva.example"}, nil},
		{"sni 63-byte label", helloRecord(sniExt(long63 + ".example")), Result{Kind: TLS, Name: long63 + ".example"}, nil},
		{"unknown extension skipped", helloRecord(ext{0x1234, []byte{1, 2, 3}}, sniExt("a.example")), Result{Kind: TLS, Name: "a.example"}, nil},
		{"ech inner marker", helloRecord(sniExt("a.example"), ext{extECH, []byte{echInner}}), Result{Kind: TLS, Name: "a.example", ECH: true}, nil},
		{"alpn capped", helloRecord(ext{extALPN, vec16(nil, bytes.Repeat([]byte{1, 'x'}, 20))}),
			Result{Kind: TLS, ALPN: []string{"x", "x", "x", "x", "x", "x", "x", "x"}}, nil},

		{"two sni extensions", helloRecord(sniExt("a.example"), sniExt("a.example")), Result{Kind: TLS}, ErrMalformed},
		{"two host_name entries", helloRecord(sniExt("a.example", "b.example")), Result{Kind: TLS}, ErrMalformed},
		{"same host_name twice", helloRecord(sniExt("a.example", "a.example")), Result{Kind: TLS}, ErrMalformed},
		{"other name type", helloRecord(ext{extServerName, vec16(nil, append([]byte{1}, vec16(nil, []byte("a.example"))...))}), Result{Kind: TLS}, ErrMalformed},
		{"empty sni extension", helloRecord(ext{extServerName, nil}), Result{Kind: TLS}, ErrMalformed},
		{"empty sni list", helloRecord(ext{extServerName, []byte{0, 0}}), Result{Kind: TLS}, ErrMalformed},
		{"sni list longer than extension", helloRecord(ext{extServerName, []byte{0, 9, 0, 0, 1, 'a'}}), Result{Kind: TLS}, ErrMalformed},
		{"sni list shorter than extension", helloRecord(ext{extServerName, []byte{0, 4, 0, 0, 1, 'a', 0}}), Result{Kind: TLS}, ErrMalformed},
		{"sni name longer than list", helloRecord(ext{extServerName, []byte{0, 4, 0, 0, 9, 'a'}}), Result{Kind: TLS}, ErrMalformed},
		{"sni empty name", helloRecord(sniExt("")), Result{Kind: TLS}, ErrMalformed},
		{"sni nul", helloRecord(sniExt("a.example\x00.evil")), Result{Kind: TLS}, ErrMalformed},
		{"sni space", helloRecord(sniExt("a example")), Result{Kind: TLS}, ErrMalformed},
		{"sni empty label", helloRecord(sniExt("a..example")), Result{Kind: TLS}, ErrMalformed},
		{"sni leading dot", helloRecord(sniExt(".example")), Result{Kind: TLS}, ErrMalformed},
		{"sni only dot", helloRecord(sniExt(".")), Result{Kind: TLS}, ErrMalformed},
		{"sni ipv4", helloRecord(sniExt("192.0.2.1")), Result{Kind: TLS}, ErrMalformed},
		{"sni ipv4 trailing dot", helloRecord(sniExt("192.0.2.1.")), Result{Kind: TLS}, ErrMalformed},
		{"sni ipv6", helloRecord(sniExt("2001:db8::1")), Result{Kind: TLS}, ErrMalformed},
		{"sni bracketed ipv6", helloRecord(sniExt("[::1]")), Result{Kind: TLS}, ErrMalformed},
		{"sni with port", helloRecord(sniExt("a.example:443")), Result{Kind: TLS}, ErrMalformed},
		{"sni raw utf-8", helloRecord(sniExt("bücher.example")), Result{Kind: TLS}, ErrMalformed},
		{"sni bad punycode", helloRecord(sniExt("xn--a.example")), Result{Kind: TLS}, ErrMalformed},
		{"sni 64-byte label", helloRecord(sniExt(long63 + "a.example")), Result{Kind: TLS}, ErrMalformed},
		{"sni too long", helloRecord(sniExt(strings.Repeat(long63+".", 4) + "example")), Result{Kind: TLS}, ErrMalformed},
		{"two alpn", helloRecord(ext{extALPN, vec16(nil, []byte{2, 'h', '2'})}, ext{extALPN, vec16(nil, []byte{2, 'h', '2'})}), Result{Kind: TLS}, ErrMalformed},
		{"alpn empty name", helloRecord(ext{extALPN, vec16(nil, []byte{0})}), Result{Kind: TLS}, ErrMalformed},
		{"alpn empty list", helloRecord(ext{extALPN, []byte{0, 0}}), Result{Kind: TLS}, ErrMalformed},
		{"alpn name overflows", helloRecord(ext{extALPN, vec16(nil, []byte{5, 'h', '2'})}), Result{Kind: TLS}, ErrMalformed},
		{"two ech", helloRecord(ext{extECH, []byte{echInner}}, ext{extECH, []byte{echInner}}), Result{Kind: TLS}, ErrMalformed},
		{"ech empty", helloRecord(ext{extECH, nil}), Result{Kind: TLS}, ErrMalformed},
		{"ech bad type", helloRecord(ext{extECH, []byte{2}}), Result{Kind: TLS}, ErrMalformed},
		{"ech outer empty payload", helloRecord(ext{extECH, []byte{0, 0, 1, 0, 1, 7, 0, 0, 0, 0}}), Result{Kind: TLS}, ErrMalformed},

		{"extension overflows block", records(handshake(append(helloBody()[:], 0, 4, 0, 0, 0, 9))), Result{Kind: TLS}, ErrMalformed},
		{"extensions length past message", records(handshake(append(helloBody()[:], 0, 9, 0, 0))), Result{Kind: TLS}, ErrMalformed},
		{"bytes after extensions", records(handshake(append(helloBody(sniExt("a.example")), 0))), Result{Kind: TLS}, ErrMalformed},
		{"session id 33 bytes", records(handshake(patch(helloBody(), 34, 33))), Result{Kind: TLS}, ErrMalformed},
		{"session id overflows", records(handshake(helloBody()[:40])), Result{Kind: TLS}, ErrMalformed},
		{"odd cipher suites", records(handshake(patch(helloBody(), 68, 3))), Result{Kind: TLS}, ErrMalformed},
		{"no cipher suites", records(handshake(append(helloBody()[:67], 0, 0, 1, 0))), Result{Kind: TLS}, ErrMalformed},
		{"no compression", records(handshake(append(helloBody()[:73], 0))), Result{Kind: TLS}, ErrMalformed},
		{"short body", records(handshake([]byte{3, 3, 1})), Result{Kind: TLS}, ErrMalformed},
		{"body version 2", records(handshake(patch(helloBody(), 0, 2))), Result{Kind: TLS}, ErrMalformed},

		{"server hello", records(append([]byte{2}, handshake(helloBody())[1:]...)), Result{Kind: TLS}, ErrMalformed},
		{"record version 2", patch(helloRecord(), 1, 2), Result{Kind: TLS}, ErrMalformed},
		{"empty record", append([]byte{22, 3, 1, 0, 0}, helloRecord()...), Result{Kind: TLS}, ErrMalformed},
		{"record over 2^14", []byte{22, 3, 1, 0x40, 0x01, 1}, Result{Kind: TLS}, ErrMalformed},
		{"alert before hello ends", append(records(handshake(helloBody()), 10)[:15], 21, 3, 1, 0, 2, 1, 0), Result{Kind: TLS}, ErrMalformed},
		{"trailing data in hello record", func() []byte {
			r := append(helloRecord(), 1)
			r[4]++
			return r
		}(), Result{Kind: TLS}, ErrMalformed},
		{"handshake length 2^24-1", []byte{22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, Result{Kind: TLS}, ErrTooLarge},
		{"hello just over cap", []byte{22, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc}, Result{Kind: TLS}, ErrTooLarge},
		{"one-byte records past cap", records(handshake(helloBody(ext{0x1234, make([]byte, 3000)})), ones(3100)...), Result{Kind: TLS}, ErrTooLarge},
		{"record header only", []byte{22, 3, 1, 0, 50}, Result{Kind: TLS}, ErrNeedMore},
		{"first byte", []byte{22}, Result{Kind: TLS}, ErrNeedMore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Sniff(tt.in)
			if !errors.Is(err, tt.err) || err == nil && tt.err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Sniff(%x) = %+v, %v; want %+v, %v", tt.in, got, err, tt.want, tt.err)
			}
			if tt.err != nil && tt.err != ErrNeedMore && tt.err != ErrTooLarge && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
		})
	}
}

func patch(b []byte, i int, v byte) []byte {
	b = append([]byte(nil), b...)
	b[i] = v
	return b
}

func ones(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

func BenchmarkSniffTLS(b *testing.B) {
	hello := captureHello(b, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}})
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sniff(hello); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSniffTLSFragmented(b *testing.B) {
	hello := captureHello(b, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}})
	split := records(hello[recordHeaderLen:], 100, 200)
	b.SetBytes(int64(len(split)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sniff(split); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSniffTLSCap: a hello whose records end exactly at MaxTLSHello is
// read; one byte more is too large, decided from the record header alone,
// and prefixes of both are stable.
func TestSniffTLSCap(t *testing.T) {
	const fill = MaxTLSHello - 90 // record, handshake and body headers, one extension
	for _, tt := range []struct {
		name  string
		in    []byte
		err   error
		check bool // whether the whole buffer must be read to decide
	}{
		{"one record at cap", records(handshake(helloBody(ext{0x15, make([]byte, fill)}))), nil, true},
		{"two records at cap", records(handshake(helloBody(ext{0x15, make([]byte, fill-5)})), 1000), nil, true},
		{"one record over cap", records(handshake(helloBody(ext{0x15, make([]byte, fill+1)}))), ErrTooLarge, false},
		{"two records over cap", records(handshake(helloBody(ext{0x15, make([]byte, fill-4)})), 1000), ErrTooLarge, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.check && len(tt.in) != MaxTLSHello {
				t.Fatalf("test hello is %d bytes, want %d", len(tt.in), MaxTLSHello)
			}
			got, err := Sniff(tt.in)
			if err != tt.err || err == nil && got.Kind != TLS {
				t.Fatalf("Sniff(%d bytes) = %+v, %v; want %v", len(tt.in), got, err, tt.err)
			}
			if r, err := Sniff(tt.in[:recordHeaderLen+handshakeHeaderLen]); tt.err == ErrTooLarge && err != ErrTooLarge {
				t.Fatalf("Sniff(headers) = %+v, %v; want ErrTooLarge from the lengths alone", r, err)
			}
			checkPrefixes(t, append(tt.in, 0x17, 3, 3))
		})
	}
}
