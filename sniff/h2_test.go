package sniff

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Wire builds what an HTTP/2 client sends, with a real Framer and one
// HPACK encoder for the connection, as a client has.
type h2Wire struct {
	t   testing.TB
	out bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newH2Wire(t testing.TB, prefix string) *h2Wire {
	w := &h2Wire{t: t}
	w.out.WriteString(prefix)
	w.fr = http2.NewFramer(&w.out, nil)
	w.fr.AllowIllegalWrites = true // to build the frames a Stream must refuse
	w.enc = hpack.NewEncoder(&w.hb)
	return w
}

// block encodes name, value pairs into a header block fragment.
func (w *h2Wire) block(fields ...string) []byte {
	w.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		if err := w.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}); err != nil {
			w.t.Fatal(err)
		}
	}
	return bytes.Clone(w.hb.Bytes())
}

// get returns the fields of a GET request for host.
func get(host string, extra ...string) []string {
	return append([]string{":method", "GET", ":scheme", "http", ":authority", host, ":path", "/"}, extra...)
}

func (w *h2Wire) check(err error) *h2Wire {
	if err != nil {
		w.t.Fatal(err)
	}
	return w
}

func (w *h2Wire) settings() *h2Wire { return w.check(w.fr.WriteSettings()) }

// headers writes one HEADERS frame with END_HEADERS.
func (w *h2Wire) headers(stream uint32, fields ...string) *h2Wire {
	return w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: w.block(fields...), EndHeaders: true}))
}

func (w *h2Wire) data(stream uint32, p string) *h2Wire {
	return w.check(w.fr.WriteData(stream, false, []byte(p)))
}

func (w *h2Wire) raw(typ http2.FrameType, flags http2.Flags, stream uint32, payload []byte) *h2Wire {
	return w.check(w.fr.WriteRawFrame(typ, flags, stream, payload))
}

func (w *h2Wire) String() string { return w.out.String() }

func pk(t testing.TB) *h2Wire { return newH2Wire(t, h2Preface).settings() }

// contWire is a block cut over HEADERS and two CONTINUATION frames.
func contWire(t testing.TB) *h2Wire {
	w := pk(t)
	frag := w.block(get("a.example", "x-long", strings.Repeat("v", 100))...)
	w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: frag[:3]}))
	w.check(w.fr.WriteContinuation(1, false, frag[3:50]))
	return w.check(w.fr.WriteContinuation(1, true, frag[50:]))
}

// paddedWire has padding and priority, and a second request whose
// authority comes from the dynamic table.
func paddedWire(t testing.TB) *h2Wire {
	w := pk(t).headers(1, get("a.example")...)
	second := w.block(get("a.example")...)
	if len(second) > 6 {
		t.Fatalf("second block is %d bytes: the authority was not indexed", len(second))
	}
	w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: second, EndHeaders: true,
		PadLength: 200, Priority: http2.PriorityParam{StreamDep: 1, Weight: 7}}))
	return w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: w.block(get("b.example")...), EndHeaders: true, PadLength: 3}))
}

// bigBlockWire has a header block past MaxHeld.
func bigBlockWire(t testing.TB) *h2Wire {
	w := pk(t)
	w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: w.block(get("a.example")...)}))
	for range MaxHeld/16000 + 1 {
		w.check(w.fr.WriteContinuation(1, false, make([]byte, 16000)))
	}
	return w
}

// bombWire indexes a value once, then refers to it until the block
// decodes past maxHeaderList.
func bombWire(t testing.TB) *h2Wire {
	v := strings.Repeat("v", MaxHTTPHead-100)
	fields := get("a.example")
	for range maxHeaderList/len(v) + 1 {
		fields = append(fields, "x-bomb", v)
	}
	return pk(t).headers(1, fields...)
}

// tableWire announces a dynamic table of size bytes.
func tableWire(t testing.TB, size uint32) *h2Wire {
	w := pk(t)
	w.enc.SetMaxDynamicTableSizeLimit(size)
	w.enc.SetMaxDynamicTableSize(size)
	return w.headers(1, get("a.example")...)
}

func TestStreamScanHTTP2(t *testing.T) {
	const (
		reqA2 = "http2 a.example GET /"
		reqB2 = "http2 b.example GET /"
	)
	tests := []struct {
		name string
		in   string
		want []string
		err  error
		held int
	}{
		{"prior knowledge", pk(t).headers(1, get("a.example")...).data(1, getB).headers(3, get("a.example")...).headers(5, get("b.example")...).String(),
			[]string{reqA2, reqA2, reqB2}, nil, 0},
		{"preface only", h2Preface, nil, nil, 0},
		{"CONTINUATION", contWire(t).String(), []string{reqA2}, nil, 0},
		{"padding, priority, dynamic table", paddedWire(t).String(), []string{reqA2, reqA2, reqB2}, nil, 0},
		{"trailers", pk(t).headers(1, get("a.example")...).data(1, "x").headers(1, "x-sum", "1").headers(3, get("b.example")...).String(),
			[]string{reqA2, reqB2}, nil, 0},
		{"other frames skipped", pk(t).raw(0xff, 0, 0, []byte(evilHead)).raw(http2.FramePing, 0, 0, make([]byte, 8)).
			raw(http2.FrameWindowUpdate, 0, 0, []byte{0, 1, 0, 0}).raw(http2.FramePriority, 0, 3, make([]byte, 5)).headers(1, get("a.example")...).String(),
			[]string{reqA2}, nil, 0},
		{"large DATA", pk(t).headers(1, get("a.example")...).data(1, strings.Repeat("d", 16000)).data(1, strings.Repeat("e", 16000)).headers(3, get("b.example")...).String(),
			[]string{reqA2, reqB2}, nil, 0},
		{"host and :authority agree", pk(t).headers(1, get("a.example", "host", "A.example.:80")...).String(), []string{reqA2}, nil, 0},
		{"host only", pk(t).headers(1, ":method", "GET", ":scheme", "http", ":path", "/", "host", "a.example").String(), []string{reqA2}, nil, 0},
		{"te trailers", pk(t).headers(1, get("a.example", "te", "trailers")...).String(), []string{reqA2}, nil, 0},
		{"CONNECT", pk(t).headers(1, ":method", "CONNECT", ":authority", "a.example:443").String(), []string{"http2 a.example CONNECT "}, nil, 0},
		{"extended CONNECT", pk(t).headers(1, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/ws", ":authority", "a.example").String(),
			[]string{"http2 a.example CONNECT /ws"}, nil, 0},
		{"table size 64 KiB", tableWire(t, maxTableSize).String(), []string{reqA2}, nil, 0},
		{"HEADERS held", pk(t).headers(1, get("a.example")...).String()[:len(h2Preface)+9+9+5], nil, nil, 14},
		{"frame header held", pk(t).String() + "\x00\x00", nil, nil, 2},

		{"host differs from :authority", pk(t).headers(1, get("a.example", "host", "evil.example")...).String(), nil, ErrMalformed, 0},
		{"no authority", pk(t).headers(1, ":method", "GET", ":scheme", "http", ":path", "/").String(), nil, ErrMalformed, 0},
		{"empty authority", pk(t).headers(1, get("")...).String(), nil, ErrMalformed, 0},
		{"two :authority", pk(t).headers(1, get("a.example", ":authority", "a.example")...).String(), nil, ErrMalformed, 0},
		{"two host", pk(t).headers(1, get("a.example", "host", "a.example", "host", "a.example")...).String(), nil, ErrMalformed, 0},
		{"IP :authority", pk(t).headers(1, get("192.0.2.1")...).String(), nil, ErrMalformed, 0},
		{"IPv6 :authority", pk(t).headers(1, get("[::1]:80")...).String(), nil, ErrMalformed, 0},
		{"userinfo :authority", pk(t).headers(1, get("u@a.example")...).String(), nil, ErrMalformed, 0},
		{"CONNECT without port", pk(t).headers(1, ":method", "CONNECT", ":authority", "a.example").String(), nil, ErrMalformed, 0},
		{"no :method", pk(t).headers(1, ":scheme", "http", ":authority", "a.example", ":path", "/").String(), nil, ErrMalformed, 0},
		{"absolute :path", pk(t).headers(1, ":method", "GET", ":scheme", "http", ":authority", "a.example", ":path", "http://evil.example/").String(), nil, ErrMalformed, 0},
		{"unknown pseudo", pk(t).headers(1, get("a.example", ":host", "evil.example")...).String(), nil, ErrMalformed, 0},
		{"pseudo after regular", pk(t).headers(1, ":method", "GET", "x", "y", ":authority", "a.example", ":path", "/").String(), nil, ErrMalformed, 0},
		{"upper-case name", pk(t).headers(1, get("a.example", "Host", "a.example")...).String(), nil, ErrMalformed, 0},
		{"CRLF in value", pk(t).headers(1, get("a.example", "x", "y\r\nhost: evil.example")...).String(), nil, ErrMalformed, 0},
		{"connection field", pk(t).headers(1, get("a.example", "connection", "close")...).String(), nil, ErrMalformed, 0},
		{"transfer-encoding field", pk(t).headers(1, get("a.example", "transfer-encoding", "chunked")...).String(), nil, ErrMalformed, 0},
		{"te gzip", pk(t).headers(1, get("a.example", "te", "gzip")...).String(), nil, ErrMalformed, 0},
		{"trailers with pseudo", pk(t).headers(1, get("a.example")...).headers(1, ":authority", "evil.example").String(), []string{reqA2}, ErrMalformed, 0},
		{"trailers with host", pk(t).headers(3, get("a.example")...).headers(1, "host", "evil.example").String(), []string{reqA2}, ErrMalformed, 0},
		{"stream 0", pk(t).headers(0, get("a.example")...).String(), nil, ErrMalformed, 0},
		{"even stream", pk(t).headers(2, get("a.example")...).String(), nil, ErrMalformed, 0},
		{"CONTINUATION alone", pk(t).raw(http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, nil).String(), nil, ErrMalformed, 0},
		{"CONTINUATION after DATA", pk(t).raw(http2.FrameHeaders, 0, 1, nil).data(1, "x").raw(http2.FrameContinuation, 4, 1, nil).String(), nil, ErrMalformed, 0},
		{"CONTINUATION other stream", pk(t).raw(http2.FrameHeaders, 0, 1, nil).raw(http2.FrameContinuation, 4, 3, nil).String(), nil, ErrMalformed, 0},
		{"HEADERS interrupts HEADERS", pk(t).raw(http2.FrameHeaders, 0, 1, nil).headers(3, get("a.example")...).String(), nil, ErrMalformed, 0},
		{"PUSH_PROMISE", pk(t).raw(http2.FramePushPromise, 4, 1, []byte{0, 0, 0, 2}).String(), nil, ErrMalformed, 0},
		{"pad length past payload", pk(t).raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersPadded, 1, []byte{5, 0x82, 0, 0, 0}).String(), nil, ErrMalformed, 0},
		{"padded empty", pk(t).raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersPadded, 1, nil).String(), nil, ErrMalformed, 0},
		{"priority short", pk(t).raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders|http2.FlagHeadersPriority, 1, []byte{0, 0, 0}).String(), nil, ErrMalformed, 0},
		{"bad HPACK index", pk(t).raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, []byte{0xbf}).String(), // index 63: empty dynamic table
			nil, ErrMalformed, 0},
		{"truncated HPACK", pk(t).raw(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, []byte{0x40, 0x05, 'x'}).String(), nil, ErrMalformed, 0},
		{"table size past 64 KiB", tableWire(t, maxTableSize+1).String(), nil, ErrMalformed, 0},
		{"value past MaxHTTPHead", pk(t).headers(1, get("a.example", "x", strings.Repeat("v", MaxHTTPHead+1))...).String(), nil, ErrTooLarge, 0},
		{"decoded block past maxHeaderList", bombWire(t).String(), nil, ErrTooLarge, 0},
		{"block past MaxHeld", bigBlockWire(t).String(), nil, ErrTooLarge, 0},
	}
	for _, tt := range tests {
		checkSplits(t, tt.name, []byte(tt.in), scanned{reqs: tt.want, err: tt.err, held: tt.held})
	}
}

// TestStreamH2Upgrades: HTTP/2 after an h2c upgrade and through a CONNECT
// tunnel is followed as after a prior-knowledge preface.
func TestStreamH2Upgrades(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		err  error
	}{
		{"h2c", newH2Wire(t, h2cUpA+h2Preface).settings().headers(3, get("a.example")...).headers(5, get("evil.example")...).String(),
			[]string{reqA, "http2 a.example GET /", "http2 evil.example GET /"}, nil},
		{"h2c, trailers on stream 1", newH2Wire(t, h2cUpA+h2Preface).settings().headers(1, "x-sum", "1").headers(3, get("a.example")...).String(),
			[]string{reqA, "http2 a.example GET /"}, nil},
		{"h2c, request on stream 1", newH2Wire(t, h2cUpA+h2Preface).settings().headers(1, get("evil.example")...).String(),
			[]string{reqA}, ErrMalformed},
		{"h2c declined", h2cUpA + getB, []string{reqA, reqB}, nil},
		{"h2c, bad preface", h2cUpA + "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", []string{reqA}, ErrMalformed},
		{"CONNECT, then prior knowledge", newH2Wire(t, connectA+h2Preface).settings().headers(1, get("a.example")...).String(),
			[]string{"http a.example CONNECT a.example:443", "http2 a.example GET /"}, nil},
	}
	for _, tt := range tests {
		checkSplits(t, tt.name, []byte(tt.in), scanned{reqs: tt.want, err: tt.err})
	}
}

// TestStreamH2HeldResume: a header block arriving in many small reads is
// walked once, not from its start on every read.
func TestStreamH2HeldResume(t *testing.T) {
	w := pk(t)
	w.check(w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: w.block(get("a.example")...)}))
	for range 1000 {
		w.check(w.fr.WriteContinuation(1, false, nil))
	}
	w.check(w.fr.WriteContinuation(1, true, nil))
	got := feed(t, w.out.Bytes(), 1)
	if len(got.reqs) != 1 || got.err != nil || got.held != 0 {
		t.Fatalf("Scan(block of 1002 frames, byte by byte) = %+v", got)
	}
}
