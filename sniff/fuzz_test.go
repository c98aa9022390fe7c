package sniff

import (
	"crypto/tls"
	"errors"
	"reflect"
	"testing"

	"github.com/clawnet/clawnet/policy"
)

// Run each target alone, with a short minimisation budget (the seeds are
// real hellos of a few KiB, slow to minimise under the default 60 s):
//
//	go test ./sniff -run '^$' -fuzz '^FuzzSniff$' -fuzztime 30s -fuzzminimizetime 10x
//	go test ./sniff -run '^$' -fuzz '^FuzzSniffRecords$' -fuzztime 30s -fuzzminimizetime 10x

// seedHellos are real and hand-built ClientHellos for the fuzz corpora.
func seedHellos(f *testing.F) [][]byte {
	return [][]byte{
		captureHello(f, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}}),
		captureHello(f, &tls.Config{ServerName: "a.example", MaxVersion: tls.VersionTLS12}),
		captureHello(f, &tls.Config{ServerName: "s.example", MinVersion: tls.VersionTLS13, EncryptedClientHelloConfigList: echConfigList(f, "p.example")}),
		helloRecord(sniExt("a.example"), ext{extALPN, vec16(nil, []byte{2, 'h', '2'})}, ext{extECH, []byte{echInner}}),
		records(handshake(helloBody(sniExt("b.example"))), 1, 3, 7),
	}
}

var seedHeads = []string{
	"GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
	"GET http://a.example:8080/x HTTP/1.1\r\nHost: a.example:8080\r\nAccept: */*\r\n\r\n",
	"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	h2Preface,
	"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\r\n",
}

// FuzzSniff: any bytes give a verdict without panicking; a Name always
// passes policy.NormalizeName unchanged; and the verdict is stable under
// growth: feeding the bytes in growing prefixes gives ErrNeedMore until
// some length, then one and the same answer for every longer prefix.
func FuzzSniff(f *testing.F) {
	for _, h := range seedHellos(f) {
		f.Add(h)
	}
	for _, h := range seedHeads {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPrefixes(t, data)
	})
}

// FuzzSniffRecords: splitting a ClientHello over records, any way, does
// not change what Sniff finds in it.
func FuzzSniffRecords(f *testing.F) {
	for _, h := range seedHellos(f) {
		if h[0] == recordTypeHandshake && int(h[3])<<8|int(h[4]) == len(h)-recordHeaderLen {
			f.Add(h[recordHeaderLen+handshakeHeaderLen:], []byte{1, 2, 200})
		}
	}
	f.Fuzz(func(t *testing.T, body, cuts []byte) {
		msg := handshake(body)
		if len(msg)+recordHeaderLen > MaxTLSHello || len(msg) > maxRecordPayload {
			return
		}
		one, oneErr := Sniff(records(msg))
		checkResult(t, msg, one, oneErr)
		if oneErr == ErrNeedMore || oneErr == ErrTooLarge {
			t.Fatalf("Sniff(one record) = %v, for a whole message under the cap", oneErr)
		}
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c) + 1
		}
		split := records(msg, sizes...)
		got, err := Sniff(split)
		if err == ErrTooLarge && len(split) > MaxTLSHello {
			return // record headers pushed it past the cap
		}
		if !reflect.DeepEqual(got, one) || errString(err) != errString(oneErr) {
			t.Fatalf("Sniff(split %v) = %+v, %v; one record gives %+v, %v", sizes, got, err, one, oneErr)
		}
	})
}

// checkPrefixes asserts that Sniff's answer to data is sound and that the
// answers to its growing prefixes are ErrNeedMore up to some length and
// that same answer from there on.
func checkPrefixes(t *testing.T, data []byte) {
	t.Helper()
	full, fullErr := Sniff(data)
	checkResult(t, data, full, fullErr)
	// Every prefix for small inputs; a sample of them for large ones.
	step := 1
	if len(data) > 512 {
		step = len(data) / 256
	}
	decided := false
	for n := 0; n < len(data); n += step {
		r, err := Sniff(data[:n])
		if err == ErrNeedMore {
			if decided {
				t.Fatalf("Sniff(data[:%d]) needs more after a shorter prefix was decided", n)
			}
			if fullErr == ErrNeedMore && r.Kind != full.Kind && r.Kind != Unknown {
				t.Fatalf("Sniff(data[:%d]) kind %v, full input kind %v", n, r.Kind, full.Kind)
			}
			continue
		}
		decided = true
		if !reflect.DeepEqual(r, full) || errString(err) != errString(fullErr) {
			t.Fatalf("Sniff(data[:%d]) = %+v, %v; full input gives %+v, %v", n, r, err, full, fullErr)
		}
	}
}

// checkResult asserts what every answer must satisfy.
func checkResult(t *testing.T, data []byte, r Result, err error) {
	t.Helper()
	if err != nil && err != ErrNeedMore && err != ErrTooLarge && !errors.Is(err, ErrMalformed) {
		t.Fatalf("Sniff(%q) error %v is none of the documented ones", data, err)
	}
	if err != nil && (r.Name != "" || r.ECH || r.ALPN != nil) {
		t.Fatalf("Sniff(%q) = %+v with error %v", data, r, err)
	}
	if r.Name != "" {
		if n, nerr := policy.NormalizeName(r.Name); nerr != nil || n != r.Name {
			t.Fatalf("Sniff(%q) name %q normalises to %q, %v", data, r.Name, n, nerr)
		}
	}
	if r.Kind != TLS && (r.ECH || r.ALPN != nil) {
		t.Fatalf("Sniff(%q) = %+v: ECH or ALPN outside TLS", data, r)
	}
	if len(r.ALPN) > maxALPN {
		t.Fatalf("Sniff(%q) kept %d ALPN protocols", data, len(r.ALPN))
	}
	if r.Kind == Unknown && err == nil && len(data) > 0 && data[0] == recordTypeHandshake {
		t.Fatalf("Sniff(%q) = Unknown for a handshake record", data)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
