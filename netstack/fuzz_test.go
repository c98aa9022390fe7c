package netstack

// FuzzStackPackets checks the part of invariant 7 of the design ("nothing
// an agent sends can crash the gateway, make it hold unbounded memory, or
// starve another agent") that one agent's stack can show alone: no sequence
// of packets on the agent's TUN panics the stack or leaves a goroutine
// behind. Each input is a few arbitrary packets written to the TUN, with
// fake flow and DNS handlers behind the stack; after it, Stack.Close must
// return, every handler must return, and no goroutine may be left over.
// Along the way the stack must keep reading its TUN and never send the
// agent a malformed packet or one larger than the link MTU.
//
// CI fuzzes it for a bounded time with minimisation off: the stack is
// concurrent, its coverage varies from run to run, and minimising every
// input that merely looks new would take most of the time.
//
//	go test -run='^$' -fuzz='^FuzzStackPackets$' -fuzztime=30s -fuzzminimizetime=0 ./netstack/

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun/tuntest"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// An input is a mode byte, then up to maxSteps steps, each a flags byte, a
// big-endian 16-bit length and that many bytes of packet (cut short at the
// end of the input).
const (
	maxSteps = 64

	// stepWait: before sending the packet, wait briefly for the stack to
	// send something (a SYN-ACK, an answer) after the previous packet.
	stepWait = 1 << 0
	// stepFixAck: set the TCP acknowledgment number to the next sequence
	// number the stack sent on this flow, so that an input can complete
	// a handshake whose initial sequence number is random.
	stepFixAck = 1 << 1
)

type step struct {
	flags byte
	pkt   []byte
}

// fuzzMode chooses the fakes' behaviour for one input.
type fuzzMode byte

const (
	tcpReject    = 0 // reset the agent at SYN
	tcpServe     = 1 // accept, read a little, answer, close
	tcpAbort     = 2 // accept, then reset
	tcpHalfClose = 3 // accept, close our side, read to EOF, close

	udpRefuse = 0 // return false: ICMP port unreachable
	udpServe  = 1 // accept, read the datagram, answer, close
	udpClose  = 2 // accept and close at once
	udpDrop   = 3 // return true without an endpoint

	dnsIgnore      = 0
	dnsAnswer      = 1 // answer on the packet path
	dnsAnswerLater = 2 // answer from another goroutine, maybe after Close
	dnsAnswerBig   = 3 // answer with more than the link MTU: WriteUDP refuses
)

func (m fuzzMode) tcp() int { return int(m & 3) }
func (m fuzzMode) udp() int { return int(m >> 2 & 3) }
func (m fuzzMode) dns() int { return int(m >> 4 & 3) }

// linger: let the handlers work for a moment before closing the stack;
// otherwise the close races with them.
func (m fuzzMode) linger() bool { return m&0x40 != 0 }

// tight: one handshake in flight and the smallest TCP buffers.
func (m fuzzMode) tight() bool { return m&0x80 != 0 }

func fuzzInput(mode fuzzMode, steps ...step) []byte {
	b := []byte{byte(mode)}
	for _, s := range steps {
		b = append(b, s.flags, byte(len(s.pkt)>>8), byte(len(s.pkt)))
		b = append(b, s.pkt...)
	}
	return b
}

func parseFuzzInput(data []byte) (fuzzMode, []step) {
	if len(data) == 0 {
		return 0, nil
	}
	mode := fuzzMode(data[0])
	data = data[1:]
	var steps []step
	for len(data) >= 3 && len(steps) < maxSteps {
		flags, n := data[0], int(binary.BigEndian.Uint16(data[1:]))
		data = data[3:]
		n = min(n, len(data))
		steps = append(steps, step{flags, data[:n]})
		data = data[n:]
	}
	return mode, steps
}

const (
	fuzzMTU = 1500
	// handlerDeadline only stops a handler that Close failed to wake; a
	// handler still running fuzzCloseWait after Close is reported.
	handlerDeadline = 30 * time.Second
	fuzzCloseWait   = 5 * time.Second
	stepWaitFor     = 5 * time.Millisecond
	waitBudget      = 20 * time.Millisecond
	lingerFor       = 5 * time.Millisecond
	fuzzHang        = time.Minute
)

func FuzzStackPackets(f *testing.F) {
	for _, seed := range stackSeeds() {
		f.Add(seed)
	}
	f.Fuzz(runStackInput)
}

func runStackInput(t *testing.T, data []byte) {
	mode, steps := parseFuzzInput(data)
	// The fuzzer has no per-input timeout: turn a hang into a crash, which
	// it records with its input.
	watchdog := time.AfterFunc(fuzzHang, func() {
		fmt.Fprintf(os.Stderr, "input still running after %v:\n%s", fuzzHang, goroutineDump())
		panic("FuzzStackPackets: input hung")
	})
	defer watchdog.Stop()
	// Goroutines of earlier inputs were checked after those inputs.
	before := goleak.IgnoreCurrent()

	h := newFuzzHarness(t, mode)
	h.feed(steps)
	if mode.linger() {
		time.Sleep(lingerFor)
	}
	h.s.Close()
	close(h.done)
	if !h.waitIdle(fuzzCloseWait) {
		t.Errorf("%d handlers still running %v after Stack.Close\n%s", h.live.Load(), fuzzCloseWait, goroutineDump())
	}
	h.stopDrain()
	h.report()
	verifyNoLeak(t, before)
}

// fuzzHarness is one agent's stack on a channel TUN with fake handlers.
type fuzzHarness struct {
	t    *testing.T
	mode fuzzMode
	s    *Stack
	ch   *tuntest.ChannelTUN
	done chan struct{} // closed after Stack.Close

	live atomic.Int32 // handlers and their goroutines still running

	inbound   atomic.Uint64 // packets the stack sent the agent
	sent      chan struct{} // signalled on each
	drainStop chan struct{}
	drainDone chan struct{}

	mu   sync.Mutex
	nxt  map[flowKey]uint32 // guarded by mu: next sequence number the stack will send
	errs []string           // guarded by mu
}

// flowKey names a TCP flow as the agent sees it.
type flowKey struct{ agent, remote netip.AddrPort }

func newFuzzHarness(t *testing.T, mode fuzzMode) *fuzzHarness {
	h := &fuzzHarness{
		t: t, mode: mode, ch: tuntest.NewChannelTUN(), done: make(chan struct{}),
		sent: make(chan struct{}, 1), drainStop: make(chan struct{}), drainDone: make(chan struct{}),
		nxt: map[flowKey]uint32{},
	}
	cfg := Config{
		Device:  h.ch.TUN(),
		MTU:     fuzzMTU,
		Gateway: []netip.Addr{gwAddr, gwAddr6},
		TCP:     h.tcp,
		UDP:     h.udp,
		DNS:     h.dns,
	}
	if mode.tight() {
		cfg.MaxInFlight = 1
		cfg.TCPBuffer = 4 << 10
	}
	go h.drain()
	s, err := New(cfg)
	if err != nil {
		h.stopDrain()
		t.Fatal(err)
	}
	h.s = s
	return h
}

func (h *fuzzHarness) fail(format string, args ...any) {
	h.mu.Lock()
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

func (h *fuzzHarness) report() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errs {
		h.t.Error(e)
	}
}

// feed writes the steps to the TUN as the agent would.
func (h *fuzzHarness) feed(steps []step) {
	budget := waitBudget
	var mark uint64
	for _, st := range steps {
		if st.flags&stepWait != 0 && budget > 0 {
			start := time.Now()
			h.waitForStack(mark, min(stepWaitFor, budget))
			budget -= time.Since(start)
		}
		pkt := st.pkt
		if st.flags&stepFixAck != 0 {
			pkt = h.fixAck(pkt)
		}
		select {
		case h.ch.Outbound <- pkt:
		case <-time.After(fuzzCloseWait):
			h.t.Errorf("the stack stopped reading the agent's TUN")
			return
		}
		mark = h.inbound.Load()
	}
}

// waitForStack waits until the stack has sent more than mark packets.
func (h *fuzzHarness) waitForStack(mark uint64, d time.Duration) {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for h.inbound.Load() <= mark {
		select {
		case <-h.sent:
		case <-timeout.C:
			return
		}
	}
}

// waitIdle waits up to d for every handler to return.
func (h *fuzzHarness) waitIdle(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for h.live.Load() != 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// drain takes what the stack sends the agent, so its writes never block,
// checks it, and remembers each TCP flow's next sequence number.
func (h *fuzzHarness) drain() {
	defer close(h.drainDone)
	for {
		select {
		case p := <-h.ch.Inbound:
			h.observe(p)
			h.inbound.Add(1)
			select {
			case h.sent <- struct{}{}:
			default:
			}
		case <-h.drainStop:
			return
		}
	}
}

func (h *fuzzHarness) stopDrain() {
	close(h.drainStop)
	<-h.drainDone
}

func (h *fuzzHarness) observe(p []byte) {
	if len(p) > fuzzMTU {
		h.fail("the stack sent a %d-byte packet on a link with MTU %d", len(p), fuzzMTU)
	}
	src, dst, tcp, ok := parseIPTCP(p)
	if !ok {
		if !validIP(p) {
			h.fail("the stack sent a malformed packet: %x", p[:min(len(p), 64)])
		}
		return
	}
	n := header.TCP(tcp).SequenceNumber() + uint32(len(tcp)-int(header.TCP(tcp).DataOffset()))
	if header.TCP(tcp).Flags().Intersects(header.TCPFlagSyn | header.TCPFlagFin) {
		n++
	}
	h.mu.Lock()
	h.nxt[flowKey{agent: dst, remote: src}] = n
	h.mu.Unlock()
}

// fixAck returns a copy of pkt acknowledging what the stack last sent on
// its flow, or pkt itself if it is no TCP segment of a known flow.
func (h *fuzzHarness) fixAck(pkt []byte) []byte {
	src, dst, _, ok := parseIPTCP(pkt)
	if !ok {
		return pkt
	}
	h.mu.Lock()
	n, known := h.nxt[flowKey{agent: src, remote: dst}]
	h.mu.Unlock()
	if !known {
		return pkt
	}
	pkt = bytes.Clone(pkt)
	_, _, tcp, _ := parseIPTCP(pkt)
	header.TCP(tcp).SetAckNumber(n)
	l4Checksum(header.TCPProtocolNumber, src.Addr(), dst.Addr(), tcp)
	return pkt
}

// parseIPTCP finds a well-formed TCP segment right after an IP header.
func parseIPTCP(p []byte) (src, dst netip.AddrPort, tcp []byte, ok bool) {
	var sa, da netip.Addr
	switch header.IPVersion(p) {
	case header.IPv4Version:
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || ip.TransportProtocol() != header.TCPProtocolNumber || ip.More() || ip.FragmentOffset() != 0 {
			return src, dst, nil, false
		}
		sa, da = netip.AddrFrom4(ip.SourceAddress().As4()), netip.AddrFrom4(ip.DestinationAddress().As4())
		tcp = p[ip.HeaderLength():ip.TotalLength()]
	case header.IPv6Version:
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) || ip.TransportProtocol() != header.TCPProtocolNumber {
			return src, dst, nil, false
		}
		sa, da = netip.AddrFrom16(ip.SourceAddress().As16()), netip.AddrFrom16(ip.DestinationAddress().As16())
		tcp = p[header.IPv6MinimumSize : header.IPv6MinimumSize+int(ip.PayloadLength())]
	default:
		return src, dst, nil, false
	}
	t := header.TCP(tcp)
	if len(tcp) < header.TCPMinimumSize || int(t.DataOffset()) < header.TCPMinimumSize || int(t.DataOffset()) > len(tcp) {
		return src, dst, nil, false
	}
	return netip.AddrPortFrom(sa, t.SourcePort()), netip.AddrPortFrom(da, t.DestinationPort()), tcp, true
}

func validIP(p []byte) bool {
	switch header.IPVersion(p) {
	case header.IPv4Version:
		return header.IPv4(p).IsValid(len(p))
	case header.IPv6Version:
		return header.IPv6(p).IsValid(len(p))
	}
	return false
}

func (h *fuzzHarness) checkFlow(kind string, src, dst netip.AddrPort) {
	if !src.Addr().IsValid() || !dst.Addr().IsValid() || src.Addr().Is4() != dst.Addr().Is4() {
		h.fail("%s flow %v → %v: addresses invalid or of mixed families", kind, src, dst)
	}
}

func (h *fuzzHarness) tcp(r *TCPRequest) {
	h.live.Add(1)
	defer h.live.Add(-1)
	h.checkFlow("tcp", r.Src, r.Dst)
	if h.mode.tcp() == tcpReject {
		r.Reject()
		return
	}
	c, err := r.Accept()
	if err != nil {
		return
	}
	_ = c.SetDeadline(time.Now().Add(handlerDeadline))
	switch h.mode.tcp() {
	case tcpServe:
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		_, _ = c.Write(append([]byte("clawnet: "), buf[:n]...))
		c.Close()
	case tcpAbort:
		c.Abort()
	case tcpHalfClose:
		_ = c.CloseWrite()
		c.WaitReadable(h.done)
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
}

func (h *fuzzHarness) udp(r *UDPRequest) bool {
	h.checkFlow("udp", r.Src, r.Dst)
	switch h.mode.udp() {
	case udpRefuse:
		return false
	case udpDrop:
		return true
	}
	c, err := r.Accept()
	if err != nil {
		return true
	}
	if h.mode.udp() == udpClose {
		c.Close()
		return true
	}
	h.live.Add(1)
	go func() {
		defer h.live.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(handlerDeadline))
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		_, _ = c.Write(buf[:n])
	}()
	return true
}

func (h *fuzzHarness) dns(src, dst netip.AddrPort, payload []byte) {
	if dst.Port() != 53 {
		h.fail("DNS hook called for %v → %v", src, dst)
	}
	h.checkFlow("dns", src, dst)
	q := bytes.Clone(payload)
	switch h.mode.dns() {
	case dnsAnswer:
		_ = h.s.WriteUDP(dst, src, q)
	case dnsAnswerLater:
		h.live.Add(1)
		go func() {
			defer h.live.Add(-1)
			_ = h.s.WriteUDP(dst, src, q)
		}()
	case dnsAnswerBig:
		if err := h.s.WriteUDP(dst, src, make([]byte, fuzzMTU)); err == nil {
			h.fail("WriteUDP sent an answer larger than the link MTU")
		}
	}
}

// verifyNoLeak fails t if a goroutine not in before is still running after
// a few seconds: long enough for one that is merely slow to exit.
func verifyNoLeak(t *testing.T, before goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := goleak.Find(before)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines left after Stack.Close: %v", err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutineDump is every goroutine's stack, to show where a handler hangs.
func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}
