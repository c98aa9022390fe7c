package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNSServer answers A queries for one name with one address and NXDOMAIN
// for anything else, over UDP and TCP on the same address. It is the
// authoritative upstream the gateway forwards to in the DNS figure.
type DNSServer struct {
	name   string
	answer netip.Addr
	udp    *dns.Server
	tcp    *dns.Server
}

// NewDNSServer serves name → answer on pc (UDP) and ln (TCP).
func NewDNSServer(name string, answer netip.Addr, pc net.PacketConn, ln net.Listener) (*DNSServer, error) {
	if !answer.Is4() {
		return nil, fmt.Errorf("answer %s: want an IPv4 address", answer)
	}
	s := &DNSServer{name: dns.Fqdn(strings.ToLower(name)), answer: answer}
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}
	return s, nil
}

// Serve runs both servers until ctx ends.
func (s *DNSServer) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- s.udp.ActivateAndServe() }()
	go func() { errc <- s.tcp.ActivateAndServe() }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.udp.Shutdown()
	s.tcp.Shutdown()
	if err != nil {
		return fmt.Errorf("dns server: %w", err)
	}
	return nil
}

// ServeDNS implements dns.Handler.
func (s *DNSServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 || strings.ToLower(req.Question[0].Name) != s.name {
		m.Rcode = dns.RcodeNameError
		w.WriteMsg(m)
		return
	}
	if req.Question[0].Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: s.name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A:   net.IP(s.answer.AsSlice()),
		})
	}
	w.WriteMsg(m)
}

// DNS measures queries per second: workers UDP sockets each send an A
// query for name to server and wait for its answer, for d. An answer counts
// only when it carries an A record.
func DNS(ctx context.Context, server, name string, workers int, d time.Duration) (Result, error) {
	r := Result{Mode: "dns"}
	if workers < 1 {
		return r, fmt.Errorf("workers = %d, want at least 1", workers)
	}
	type workerResult struct {
		ops  int64
		errs errorCounter
		lat  []time.Duration
	}
	results := make([]workerResult, workers)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			wr := &results[w]
			c := &dns.Client{Net: "udp", Timeout: time.Second}
			conn, err := c.DialContext(ctx, server)
			if err != nil {
				wr.errs.add(fmt.Errorf("dial %s: %w", server, err))
				return
			}
			defer conn.Close()
			q := new(dns.Msg)
			q.SetQuestion(dns.Fqdn(name), dns.TypeA)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				q.Id = dns.Id()
				ans, _, err := c.ExchangeWithConnContext(ctx, q, conn)
				if err == nil {
					err = checkAnswer(ans)
				}
				if err != nil {
					wr.errs.add(err)
					continue
				}
				wr.lat = append(wr.lat, time.Since(t0))
				wr.ops++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var lat []time.Duration
	for i := range results {
		r.Ops += results[i].ops
		results[i].errs.into(&r)
		lat = append(lat, results[i].lat...)
	}
	summarize(&r, elapsed, lat)
	if r.Ops == 0 {
		return r, fmt.Errorf("no query answered (%d errors, first: %s)", r.Errors, r.FirstError)
	}
	return r, nil
}

func checkAnswer(m *dns.Msg) error {
	if m.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("answer rcode %s", dns.RcodeToString[m.Rcode])
	}
	for _, rr := range m.Answer {
		if _, ok := rr.(*dns.A); ok {
			return nil
		}
	}
	return errors.New("answer carries no A record")
}

// Resolve asks server for name's A record and returns the first address,
// as an agent's resolver would before it connects: on clawnet the answer
// is what binds the address to the name.
func Resolve(ctx context.Context, server, name string) (netip.Addr, error) {
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var (
		ans *dns.Msg
		err error
	)
	// One retry: a lost datagram is not the path's failure.
	for range 2 {
		if ans, _, err = c.ExchangeContext(ctx, q, server); err == nil {
			break
		}
	}
	if err == nil {
		err = checkAnswer(ans)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s at %s: %w", name, server, err)
	}
	for _, rr := range ans.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("resolve %s at %s: no usable A record", name, server)
}
