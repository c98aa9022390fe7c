package gateway

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/clawnet/clawnet/sniff"
)

// TestReadHelloCut: a request head or ClientHello the client ends early
// (half-close) is an error, never bytes to pass on as an unknown protocol.
func TestReadHelloCut(t *testing.T) {
	tests := []struct {
		name, sent string
		want       error
	}{
		{"head without its blank line", "GET /x HTTP/1.1\r\nHost: forbidden.example\r\n", errHelloCut},
		{"request line only", "GET /x HTTP/1.1\r\n", errHelloCut},
		{"tls record header", "\x16\x03\x01\x02\x00\x01", errHelloCut},
		{"complete head", "GET /x HTTP/1.1\r\nHost: ok.example\r\n\r\n", nil},
		{"unknown protocol", "SSH-2.0-x\r\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() {
				client.Write([]byte(tt.sent))
				client.Close()
			}()
			defer server.Close()
			_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, sniff.MaxBytes)
			n, _, err := readHello(server, buf)
			if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
				t.Fatalf("readHello(%q) = %d, %v; want %v", tt.sent, n, err, tt.want)
			}
		})
	}
}
