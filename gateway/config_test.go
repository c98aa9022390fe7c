package gateway

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// The shipped example config documents the defaults: it must say exactly
// what DefaultConfig says.
func TestShippedConfigIsTheDefaults(t *testing.T) {
	got, err := LoadConfig("../dist/clawnetd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	got.path, want.path = "", ""
	// An empty list in the file and none in the defaults mean the same.
	for _, c := range []*Config{got, want} {
		if len(c.MCPServers) == 0 {
			c.MCPServers = nil
		}
		if len(c.TreatAsPublic) == 0 {
			c.TreatAsPublic = nil
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig(dist/clawnetd.yaml) = %+v, want the defaults %+v", got, want)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "version: v1\nsockett: /x\n", `c.yaml:2: unknown key "sockett"`},
		{"nested unknown key", "version: v1\nnetwork:\n  mtuu: 1500\n", `c.yaml:3: unknown key "mtuu"`},
		{"bad version", "version: v2\n", `c.yaml: version must be v1, not "v2"`},
		{"bad cidr", "version: v1\ntreat_as_public: [10.0.0.0/33]\n", `c.yaml:2: bad CIDR "10.0.0.0/33"`},
		{"host bits", "version: v1\ntreat_as_public: [198.18.0.1/15]\n", `c.yaml:2: 198.18.0.1/15 has host bits set (did you mean 198.18.0.0/15?)`},
		{"everything public", "version: v1\ntreat_as_public: [0.0.0.0/0]\n", "treat_as_public must not contain 0.0.0.0/0"},
		{"bad duration", "version: v1\ntimeouts:\n  tcp_idle: forever\n", `c.yaml:3: bad duration "forever"`},
		{"bad upstream", "version: v1\ndns:\n  upstream: google\n", `c.yaml:3: dns.upstream must be "system" or a list of ip:port, not "google"`},
		{"bad server", "version: v1\ndns:\n  upstream: [dns.example:53]\n", `c.yaml:3: bad dns server "dns.example:53"`},
		{"small mtu", "version: v1\nnetwork:\n  mtu: 500\n", "network.mtu must be between 1280 and 65535"},
		{"bad size", "version: v1\nlimits:\n  buffer_per_agent: lots\n", `c.yaml:3: bad size "lots"`},
		{"tiny budget", "version: v1\nlimits:\n  buffer_per_agent: 1MiB\n", "limits.buffer_per_agent must be at least"},
		{"narrow pool", "version: v1\nnetwork:\n  ipv4: 100.96.0.0/31\n", "network.ipv4 must be an IPv4 prefix of /30 or wider"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("ParseConfig(%q) = nil error, want %q", tt.yaml, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig(%q) = %q, want %q", tt.yaml, err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestParseConfigValues(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte(`version: v1
dns:
  upstream: ["198.18.0.2:5353", 198.18.0.3]
treat_as_public: [198.18.0.0/15, "2001:db8::/32"]
timeouts:
  tcp_idle: 90m
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DNS.Upstream.Servers; len(got) != 2 || got[0].String() != "198.18.0.2:5353" || got[1].String() != "198.18.0.3:53" {
		t.Errorf("upstream = %v, want [198.18.0.2:5353 198.18.0.3:53]", got)
	}
	if c.DNS.Upstream.System {
		t.Errorf("upstream.System = true after a list")
	}
	if len(c.TreatAsPublic) != 2 || c.TreatAsPublic[1].String() != "2001:db8::/32" {
		t.Errorf("treat_as_public = %v", c.TreatAsPublic)
	}
	if c.Timeouts.TCPIdle.D().Minutes() != 90 {
		t.Errorf("tcp_idle = %v, want 90m", c.Timeouts.TCPIdle.D())
	}
	if c.Network.MTU != 65520 {
		t.Errorf("mtu = %d, want the default 65520", c.Network.MTU)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig("/nonexistent/clawnetd.yaml")
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("LoadConfig(missing) = %v, want not-exist", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}
