package main

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/miekg/dns"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// defaultZone is served when no -zone file is given. Names resolve to the
// test internet's own addresses only.
const defaultZone = `$ORIGIN canary.test.
$TTL 60
@      IN SOA   ns.canary.test. hostmaster.canary.test. 1 3600 600 86400 60
@      IN NS    ns
ns     IN A     198.18.0.2
@      IN A     198.18.0.2
@      IN AAAA  2001:db8::2
www    IN CNAME @
txt    IN TXT   "clawnet canary"
other  IN A     198.18.0.3
other  IN AAAA  2001:db8::3
`

// zone is an authoritative data set: every record by owner name, and the
// apexes (owners of an SOA) that say which names we are authoritative for.
type zone struct {
	byName map[string][]dns.RR
	apexes map[string]*dns.SOA
}

func parseZone(text, file string) (*zone, error) {
	z := &zone{byName: make(map[string][]dns.RR), apexes: make(map[string]*dns.SOA)}
	zp := dns.NewZoneParser(strings.NewReader(text), ".", file)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		z.byName[name] = append(z.byName[name], rr)
		if soa, isSOA := rr.(*dns.SOA); isSOA {
			z.apexes[name] = soa
		}
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("parse zone: %w", err)
	}
	if len(z.apexes) == 0 {
		return nil, fmt.Errorf("parse zone %s: no SOA record, so no name to be authoritative for", file)
	}
	return z, nil
}

// apex returns the closest enclosing zone apex of name, or "".
func (z *zone) apex(name string) string {
	for n := name; ; {
		if _, ok := z.apexes[n]; ok {
			return n
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || n == "." {
			return ""
		}
		n = n[i+1:]
		if n == "" {
			n = "."
		}
	}
}

// hasDescendant reports whether name owns nothing but has names below it
// (an empty non-terminal answers NODATA, not NXDOMAIN).
func (z *zone) hasDescendant(name string) bool {
	for n := range z.byName {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}

// answer fills m for one question, following CNAMEs inside the data.
func (z *zone) answer(m *dns.Msg, q dns.Question) {
	name := strings.ToLower(q.Name)
	ap := z.apex(name)
	if ap == "" {
		m.Rcode = dns.RcodeRefused
		return
	}
	m.Authoritative = true
	for hops := 0; hops < 8; hops++ {
		rrs := z.byName[name]
		if len(rrs) == 0 {
			if !z.hasDescendant(name) {
				m.Rcode = dns.RcodeNameError
			}
			m.Ns = append(m.Ns, dns.Copy(z.apexes[z.apex(name)]))
			return
		}
		var cname *dns.CNAME
		found := false
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found || cname == nil {
			if !found {
				m.Ns = append(m.Ns, dns.Copy(z.apexes[z.apex(name)]))
			}
			return
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = strings.ToLower(cname.Target)
		if z.apex(name) == "" {
			return
		}
	}
}

func (s *server) listenDNS(z *zone) error {
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		e := canarylog.Entry{Service: canarylog.ServiceDNS, Event: canarylog.EventQuery, Remote: w.RemoteAddr().String(), Local: w.LocalAddr().String()}
		if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
			e.Proto = "tcp"
		} else {
			e.Proto = "udp"
		}
		if len(r.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
		} else {
			q := r.Question[0]
			e.Qname, e.Qtype = q.Name, dns.TypeToString[q.Qtype]
			z.answer(m, q)
		}
		e.Rcode = dns.RcodeToString[m.Rcode]
		if err := w.WriteMsg(m); err != nil {
			e.Error = err.Error()
		}
		s.log.Log(e)
	})
	pc, err := net.ListenPacket("udp", s.addr(portDNS))
	if err != nil {
		return fmt.Errorf("listen dns udp: %w", err)
	}
	ln, err := net.Listen("tcp", s.addr(portDNS))
	if err != nil {
		pc.Close()
		return fmt.Errorf("listen dns tcp: %w", err)
	}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: handler},
		{Listener: ln, Handler: handler},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		if !s.own(closerFunc(srv.Shutdown)) {
			return errors.New("server closed")
		}
		s.spawn(func() { errc <- srv.ActivateAndServe() })
		select {
		case <-started:
		case err := <-errc:
			return fmt.Errorf("start dns server: %w", err)
		}
	}
	return nil
}
