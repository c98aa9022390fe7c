package main

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestZoneAnswer checks the canary's authoritative answers on its built-in
// zone: what tests rely on when they assert what a lookup returned.
func TestZoneAnswer(t *testing.T) {
	z, err := parseZone(defaultZone, "built-in")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		authNS bool // an SOA in the authority section
	}{
		{"canary.test.", dns.TypeA, dns.RcodeSuccess, []string{"A 198.18.0.2"}, false},
		{"CANARY.test.", dns.TypeAAAA, dns.RcodeSuccess, []string{"AAAA 2001:db8::2"}, false},
		{"www.canary.test.", dns.TypeA, dns.RcodeSuccess, []string{"CNAME canary.test.", "A 198.18.0.2"}, false},
		{"www.canary.test.", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME canary.test."}, false},
		{"txt.canary.test.", dns.TypeTXT, dns.RcodeSuccess, []string{`TXT "clawnet canary"`}, false},
		{"txt.canary.test.", dns.TypeA, dns.RcodeSuccess, nil, true},
		{"missing.canary.test.", dns.TypeA, dns.RcodeNameError, nil, true},
		{"example.com.", dns.TypeA, dns.RcodeRefused, nil, false},
	} {
		m := new(dns.Msg)
		z.answer(m, dns.Question{Name: tt.name, Qtype: tt.qtype, Qclass: dns.ClassINET})
		var got []string
		for _, rr := range m.Answer {
			got = append(got, strings.Join(strings.Fields(rr.String())[3:], " "))
		}
		if m.Rcode != tt.rcode || strings.Join(got, "|") != strings.Join(tt.answer, "|") || (len(m.Ns) > 0) != tt.authNS {
			t.Errorf("answer(%s %s) = %s %q ns=%d, want %s %q authority=%v", tt.name, dns.TypeToString[tt.qtype],
				dns.RcodeToString[m.Rcode], got, len(m.Ns), dns.RcodeToString[tt.rcode], tt.answer, tt.authNS)
		}
	}
}

func TestParseZoneErrors(t *testing.T) {
	if _, err := parseZone("$ORIGIN x.test.\n@ IN A 192.0.2.1\n", "nosoa.db"); err == nil || !strings.Contains(err.Error(), "nosoa.db") {
		t.Errorf("zone without SOA: %v, want an error naming the file", err)
	}
	if _, err := parseZone("$ORIGIN x.test.\n@ IN A not-an-address\n", "bad.db"); err == nil || !strings.Contains(err.Error(), "bad.db") {
		t.Errorf("bad record: %v, want an error naming the file", err)
	}
}
