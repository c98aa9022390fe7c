// Command demo-dns is the name server of make demo's stand-in internet (see
// scripts/demo.sh), not a part of clawnet. It answers A queries for the names
// it is given, NOERROR with no address for their other types, NXDOMAIN for
// every other name, and prints one line per query, so the demo can show what
// the gateway asked upstream. It must only run inside the demo's namespace:
// it answers anyone.
//
//	demo-dns -listen ADDR:53 NAME=IPv4...
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "", "UDP `address` to answer on (required)")
	flag.Parse()
	names := map[string]netip.Addr{}
	for _, arg := range flag.Args() {
		name, ip, ok := strings.Cut(arg, "=")
		a, err := netip.ParseAddr(ip)
		if !ok || err != nil || !a.Is4() {
			fmt.Fprintf(os.Stderr, "demo-dns: want NAME=IPv4, got %q\n", arg)
			os.Exit(2)
		}
		names[dns.CanonicalName(name)] = a
	}
	if *listen == "" || len(names) == 0 {
		fmt.Fprintln(os.Stderr, "usage: demo-dns -listen ADDR:53 NAME=IPv4...")
		os.Exit(2)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		q := r.Question[0]
		a, known := names[dns.CanonicalName(q.Name)]
		switch {
		case !known:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   a.AsSlice(),
			})
		}
		answer := dns.RcodeToString[m.Rcode]
		if len(m.Answer) > 0 {
			answer = a.String()
		}
		fmt.Printf("demo-dns: %s asked %s %s: %s\n", w.RemoteAddr(), dns.TypeToString[q.Qtype], q.Name, answer)
		w.WriteMsg(m)
	})
	srv := &dns.Server{Addr: *listen, Net: "udp", Handler: handler}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "demo-dns: %v\n", err)
		os.Exit(1)
	}
}
