package sniff

import (
	"crypto/tls"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestAllocs: Sniff allocates the Result's strings and nothing else, even
// when it has to join a hello split over records.
func TestAllocs(t *testing.T) {
	hello := captureHello(t, &tls.Config{ServerName: "api.example.com", NextProtos: []string{"h2", "http/1.1"}})
	split := records(hello[recordHeaderLen:], 1, 2, 300)
	head := []byte("GET / HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n")
	for _, tt := range []struct {
		name string
		in   []byte
		max  float64 // name, ALPN backing string, ALPN slice
	}{
		{"one record", hello, 3},
		{"four records", split, 3},
		{"http head", head, 1},
		{"tls prefix", hello[:100], 0},
		{"unknown", []byte("SSH-2.0-x\r\n"), 0},
	} {
		if n := testing.AllocsPerRun(100, func() { Sniff(tt.in) }); n > tt.max {
			t.Errorf("%s: Sniff allocates %v times, want at most %v", tt.name, n, tt.max)
		}
	}
}

// TestImports: the package stays a pure parser, no I/O, no clock, nothing
// of the gateway, so it can be fuzzed and reasoned about alone. hpack is a
// pure codec: HTTP/2 names cannot be read without following its tables.
func TestImports(t *testing.T) {
	allowed := []string{"bytes", "errors", "net/netip", "github.com/clawnet/clawnet/policy", "golang.org/x/net/http2/hpack"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range file.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			seen++
			if !slices.Contains(allowed, p) {
				t.Errorf("%s imports %q; sniff may import only %v", f, p, allowed)
			}
		}
	}
	if seen == 0 {
		t.Fatal("found no imports: the check is blind")
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Unknown: "unknown", TLS: "tls", HTTP: "http", HTTP2: "http2", 9: "unknown"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}
