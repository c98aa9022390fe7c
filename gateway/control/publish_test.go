package control

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParsePublish(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	tests := []struct {
		spec string
		want Publish
		err  string
	}{
		{"18789:18789", Publish{HostAddr: lo, HostPort: 18789, AgentPort: 18789, Proto: "tcp"}, ""},
		{"8080:80/udp", Publish{HostAddr: lo, HostPort: 8080, AgentPort: 80, Proto: "udp"}, ""},
		{"0.0.0.0:8080:80", Publish{HostAddr: netip.MustParseAddr("0.0.0.0"), HostPort: 8080, AgentPort: 80, Proto: "tcp"}, ""},
		{"[::1]:8080:80/tcp", Publish{HostAddr: netip.MustParseAddr("::1"), HostPort: 8080, AgentPort: 80, Proto: "tcp"}, ""},
		{"80", Publish{}, "no agent port"},
		{"8080:80/sctp", Publish{}, "protocol must be tcp or udp"},
		{"8080:0", Publish{}, "agent port"},
		{"70000:80", Publish{}, "host port"},
		{"localhost:8080:80", Publish{}, "not an IP address"},
	}
	for _, tt := range tests {
		got, err := ParsePublish(tt.spec)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), tt.spec) {
				t.Errorf("ParsePublish(%q) = %v, %v; want an error naming the spec and %q", tt.spec, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePublish(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
		if back, err := ParsePublish(got.String()); err != nil || back != got {
			t.Errorf("ParsePublish(%q.String() = %q) = %+v, %v", tt.spec, got.String(), back, err)
		}
	}
}
