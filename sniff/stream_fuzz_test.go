package sniff

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// Minimising a new input can take the whole default budget of 60 s, with
// no execs counted meanwhile; a short one keeps the run fuzzing:
//
//	go test ./sniff -run '^$' -fuzz '^FuzzStream$' -fuzztime 60s -fuzzminimizetime 10x

// streamSeeds are connections of every shape Stream follows.
func streamSeeds(f *testing.F) []string {
	ws := "\x82\xa6\x00\x00\x00\x00" + evilHead
	seeds := []string{
		getA + getB,
		postA + "Content-Length: 38\r\n\r\n" + evilHead + getB,
		chunkedA + "5;e=\"v\"\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n" + getB,
		postA + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		wsUpA + ws,
		wsUpA + getB,
		connectA + "\x16\x03\x01\x00\x05hello",
		newH2Wire(f, h2cUpA+h2Preface).settings().headers(3, get("a.example")...).String(),
		pk(f).headers(1, get("a.example")...).data(1, getB).headers(3, get("a.example")...).String(),
		pk(f).headers(1, get("a.example", "host", "evil.example")...).String(),
		contWire(f).data(1, getA).headers(1, "x-sum", "1").headers(3, get("a.example", "host", "a.example")...).String(),
		paddedWire(f).String(),
		getA + "GET / HTTP/1.1\r\nX: " + strings.Repeat("y", 100) + "\r\n\r\n",
	}
	return append(seeds, seedHeads...)
}

// FuzzStream: any bytes, in any reads, give requests or an error without
// a panic; Scan keeps its contract on every call (feed checks n, holds
// below MaxHeld, error kinds, a dead stream stays dead, request names are
// normalised); and how the bytes are split into reads changes nothing:
// one read, byte by byte and the cuts given find the same requests and
// consume the same bytes, or all fail. Stream also agrees with Sniff on
// the first request: the same name, or an error for bytes Sniff refuses.
func FuzzStream(f *testing.F) {
	for _, s := range streamSeeds(f) {
		f.Add([]byte(s), []byte{3, 1, 40})
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		sizes := []int{2}
		for i, c := range cuts {
			if i == 0 {
				sizes = sizes[:0]
			}
			sizes = append(sizes, int(c)+1)
		}
		one := feed(t, data, callerBuf)
		for _, split := range [][]int{{1}, sizes} {
			got := feed(t, data, split...)
			if !slices.Equal(got.reqs, one.reqs) || (got.err == nil) != (one.err == nil) ||
				one.err == nil && (got.consumed != one.consumed || got.held != one.held || got.opaque != one.opaque) {
				t.Fatalf("Scan(%q) in reads of %v = %+v; in one read %+v", data, split, got, one)
			}
		}
		checkAgainstSniff(t, data, one)
	})
}

func checkAgainstSniff(t *testing.T, data []byte, got scanned) {
	r, err := Sniff(data)
	switch {
	case errors.Is(err, ErrMalformed) || err == ErrTooLarge:
		if got.err == nil || len(got.reqs) > 0 {
			t.Fatalf("Sniff(%q) = %v, but Stream found %q, %v", data, err, got.reqs, got.err)
		}
	case err == nil && r.Kind == HTTP && r.Name != "":
		if len(got.reqs) == 0 || !strings.HasPrefix(got.reqs[0], "http "+r.Name+" ") {
			t.Fatalf("Sniff(%q) = %+v, but Stream found %q, %v", data, r, got.reqs, got.err)
		}
	}
}
