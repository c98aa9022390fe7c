package dnstest

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Asked is one query a Server received.
type Asked struct {
	Name, Type, Net string
}

// Server is an authoritative-looking DNS server on 127.0.0.1 (UDP and TCP
// on one port) that logs every query it receives, so tests assert on what
// reached the far side.
type Server struct {
	// Addr is where the server listens, UDP and TCP.
	Addr netip.AddrPort
	udp  *dns.Server
	tcp  *dns.Server

	mu      sync.Mutex
	log     []Asked // guarded by mu
	records map[string][]dns.RR
	// hook, when set, answers instead of the records (a hostile server).
	// It returns whether it wrote an answer. Guarded by mu.
	hook func(w dns.ResponseWriter, q *dns.Msg) bool
}

// NewServer starts a server answering from zone (records in zone file
// syntax), shut down when t ends.
func NewServer(t testing.TB, zone ...string) *Server {
	t.Helper()
	f := &Server{records: map[string][]dns.RR{}}
	for _, s := range zone {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("zone record %q: %v", s, err)
		}
		k := strings.ToLower(rr.Header().Name)
		f.records[k] = append(f.records[k], rr)
	}
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)).String())
		if err == nil {
			f.Addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
			break
		}
		pc.Close()
		if i == 20 {
			t.Fatalf("no port free for udp and tcp: %v", err)
		}
	}
	h := dns.HandlerFunc(f.serve)
	f.udp = &dns.Server{PacketConn: pc, Handler: h}
	f.tcp = &dns.Server{Listener: ln, Handler: h}
	var started sync.WaitGroup
	started.Add(2)
	f.udp.NotifyStartedFunc = started.Done
	f.tcp.NotifyStartedFunc = started.Done
	go f.udp.ActivateAndServe()
	go f.tcp.ActivateAndServe()
	started.Wait()
	t.Cleanup(func() {
		f.udp.Shutdown()
		f.tcp.Shutdown()
	})
	return f
}

func (f *Server) serve(w dns.ResponseWriter, q *dns.Msg) {
	netw := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		netw = "tcp"
	}
	f.mu.Lock()
	for _, qs := range q.Question {
		f.log = append(f.log, Asked{Name: qs.Name, Type: dns.Type(qs.Qtype).String(), Net: netw})
	}
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, q) {
		return
	}
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	if !f.lookup(m, q.Question[0]) {
		m.Rcode = dns.RcodeNameError
	}
	if netw == "udp" {
		size := dns.MinMsgSize
		if o := q.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// lookup adds qs's records to m, following CNAMEs within the zone as a
// recursive resolver would, but stopping at a loop's second turn. It
// reports whether the name exists.
func (f *Server) lookup(m *dns.Msg, qs dns.Question) (found bool) {
	seen := map[string]int{}
	for cur := strings.ToLower(qs.Name); seen[cur] < 2; {
		seen[cur]++
		rrs, ok := f.records[cur]
		if !ok {
			break
		}
		found = true
		next := ""
		for _, rr := range rrs {
			if rr.Header().Rrtype == qs.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			} else if c, ok := rr.(*dns.CNAME); ok {
				m.Answer = append(m.Answer, dns.Copy(rr))
				next = strings.ToLower(c.Target)
			}
		}
		if next == "" {
			break
		}
		cur = next
	}
	return found
}

// Queries returns what the server received so far.
func (f *Server) Queries() []Asked {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Asked(nil), f.log...)
}

// SetHook makes h answer instead of the zone (a hostile or silent server):
// h returns whether it wrote an answer.
func (f *Server) SetHook(h func(w dns.ResponseWriter, q *dns.Msg) bool) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}
