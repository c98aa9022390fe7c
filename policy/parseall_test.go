package policy

import (
	"strings"
	"testing"
)

// TestParseAll: every problem in a file is reported, in file order, once
// each; Parse still returns the first.
func TestParseAll(t *testing.T) {
	data := []byte(`version: v1
name: Coder
egres: []
egress:
  - domains: ["*.com"]
    ports: [443]
  - domains: [api.example.com]
    ports: [0]
    protcol: tcp
  - domains: [ok.example.com]
    ports: [443]
  - cidrs: [0.0.0.0/4]
    ports: [5432]
deny:
  - {}
ingress:
  - ports: [80]
`)
	f, errs := ParseAll("c.yaml", data)
	if f != nil {
		t.Errorf("ParseAll returned a File despite errors")
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	want := []string{
		`c.yaml:2: bad name "Coder" (want lower-case letters, digits, '.', '_', '-', at most 63)`,
		`c.yaml:3: unknown key "egres" (did you mean "egress"?)`,
		`c.yaml:5: domain "*.com": a wildcard directly over a top-level domain is refused`,
		`c.yaml:8: bad port "0" (want 1-65535)`,
		`c.yaml:9: unknown key "protcol" (did you mean "protocol"?)`,
		`c.yaml:15: deny rule matches nothing: give it domains, cidrs or agents`,
		`c.yaml:17: ingress rule names no peer: give it agents, host: true or cidrs`,
		`c.yaml:12: cidr "0.0.0.0/4" opens nearly every address; narrow it, or set unsafe_allow_any_address: true (special-purpose addresses stay closed)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ParseAll errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := Parse("c.yaml", data); err == nil || err.Error() != want[0] {
		t.Errorf("Parse = %v, want the first: %s", err, want[0])
	}
}

func TestParseAllManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: v1\nname: x\negress:\n")
	for range 500 {
		b.WriteString("  - domains: [\"*.com\"]\n    ports: [443]\n")
	}
	_, errs := ParseAll("x.yaml", []byte(b.String()))
	if len(errs) != maxErrors {
		t.Errorf("ParseAll of 500 bad rules reported %d errors, want the cap %d", len(errs), maxErrors)
	}
}

// TestFrom: a rule's from: note is kept, explained, and never changes a
// decision; a bad one is refused with its line.
func TestFrom(t *testing.T) {
	f, err := Parse("g.yaml", []byte(`version: v1
name: g
egress:
  - domains: [api.telegram.org]
    ports: [443]
    from: "openclaw.json: channels.telegram (long polling)"
ingress:
  - ports: [18789]
    host: true
    from: openclaw.json gateway.port
`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Egress[0].From != "openclaw.json: channels.telegram (long polling)" || f.Ingress[0].From != "openclaw.json gateway.port" {
		t.Errorf("From = %q, %q", f.Egress[0].From, f.Ingress[0].From)
	}
	p, err := Compile(f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := Explain(p, ProtoTCP, "api.telegram.org", 443)
	if d.Verdict != Allow || !strings.HasSuffix(d.Reason, "(from: openclaw.json: channels.telegram (long polling))") {
		t.Errorf("Explain(api.telegram.org:443) = %v, want allow ending with its from note", d)
	}
	in := ExplainInbound(p, Inbound{Proto: ProtoTCP, Port: 18789, Peer: Peer{Kind: PeerHost}})
	if !in.Allowed() || !strings.HasSuffix(in.Reason, "(from: openclaw.json gateway.port)") {
		t.Errorf("ExplainInbound(host :18789) = %v, want allow ending with its from note", in)
	}
	if got := p.RuleFrom("g.yaml:4 egress[0]"); got != f.Egress[0].From {
		t.Errorf("RuleFrom(egress[0]) = %q", got)
	}
	for _, bad := range []string{"from: [a]", "from: \"a\\nb\"", "from: " + strings.Repeat("x", maxFrom+1)} {
		_, err := Parse("b.yaml", []byte("version: v1\nname: b\negress:\n  - domains: [a.example]\n    ports: [443]\n    "+bad+"\n"))
		if err == nil || !strings.HasPrefix(err.Error(), "b.yaml:6: from:") {
			t.Errorf("Parse(%.30s) = %v, want a from: error at line 6", bad, err)
		}
	}
}
