package main

import (
	"strings"
	"testing"
)

func TestBoundName(t *testing.T) {
	long := strings.Repeat("x", 63)
	for _, tc := range []struct{ in, want string }{
		{"agent-1", "agent-1"},
		{long, long},
		{long + "y", long[:54] + "-" + hash8(long+"y")},
		{"", "x-" + hash8("")},
		{"-a", "x-a-" + hash8("-a")},
		{"é", "x--" + hash8("é")},
	} {
		if got := boundName(tc.in); got != tc.want {
			t.Errorf("boundName(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzBoundName(f *testing.F) {
	for _, s := range []string{"", "agent", "ns_pod", "_x", "a b", strings.Repeat("z", 80), "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := boundName(s)
		if !validName.MatchString(got) {
			t.Fatalf("boundName(%q) = %q, which clawnetd refuses", s, got)
		}
		if validName.MatchString(s) && got != s {
			t.Fatalf("boundName(%q) = %q; a valid name must be kept", s, got)
		}
	})
}

func FuzzParseConf(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"clawnet","type":"clawnet-cni","socket":"/run/clawnet/clawnet.sock","policy":"p"}`))
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","type":"clawnet-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}}`))
	f.Add([]byte(`{"name":"../x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConf(data)
		if err != nil {
			return
		}
		if strings.ContainsAny(c.Name, "/:") || c.Name == "" || c.Socket[0] != '/' || c.DataDir[0] != '/' {
			t.Fatalf("parseConf(%q) accepted name %q socket %q dataDir %q", data, c.Name, c.Socket, c.DataDir)
		}
	})
}
