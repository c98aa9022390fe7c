package probe

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestFloodConnects(t *testing.T) {
	addr := server(t)
	r, err := Flood(context.Background(), FloodArgs{Kind: FloodConnect, Addr: addr, Workers: 4, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("Flood(connect) error = %v", err)
	}
	if r.Mode != "flood-connect" || r.Ops < 10 || r.Sent < r.Ops || r.PerSec <= 0 {
		t.Errorf("Flood(connect) = %+v, want >= 10 completed connections, sent >= ops", r)
	}
}

func TestFloodConnectsKeepsGoingWhenRefused(t *testing.T) {
	// A gateway past its new-flow limit refuses at once: the flood must
	// try again at once, not give up or pause.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r, err := Flood(context.Background(), FloodArgs{Kind: FloodConnect, Addr: addr, Workers: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Flood(connect) to a closed port error = %v", err)
	}
	// Connects pauses 10 ms after a refusal: 2 workers would make ~40.
	if r.Ops != 0 || r.Errors < 100 || r.Errors != r.Sent || !strings.Contains(r.FirstError, "refused") {
		t.Errorf("Flood(connect) to a closed port = %+v, want every one of >= 100 attempts refused", r)
	}
}

func TestFloodDNS(t *testing.T) {
	server := dnsServer(t, "bench.test", "198.18.0.2")
	r, err := Flood(context.Background(), FloodArgs{Kind: FloodDNS, Addr: server, Name: "bench.test", Workers: 2, Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("Flood(dns) error = %v", err)
	}
	if r.Ops < 100 || r.Sent < r.Ops || r.Errors != 0 {
		t.Errorf("Flood(dns) = %+v, want >= 100 answers, all NOERROR", r)
	}
	r, err = Flood(context.Background(), FloodArgs{Kind: FloodDNS, Addr: server, Name: "other.test", Workers: 1, Duration: 100 * time.Millisecond})
	if err != nil || r.Ops == 0 || r.Errors != r.Ops || !strings.Contains(r.FirstError, "NXDOMAIN") {
		t.Errorf("Flood(dns) of an unknown name = %+v, %v; want every answer counted as an NXDOMAIN error", r, err)
	}
}

func TestFloodDNSWithNoServerKeepsSending(t *testing.T) {
	// Answers that never come must not stall the flood: after a window
	// of silence the worker takes its queries for lost.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, err := Flood(context.Background(), FloodArgs{Kind: FloodDNS, Addr: pc.LocalAddr().String(), Name: "bench.test", Workers: 1, Duration: 200 * time.Millisecond})
	if err != nil || r.Ops != 0 || r.Sent < 4*dnsFloodWindow {
		t.Errorf("Flood(dns) to a silent server = %+v, %v; want several windows sent, nothing answered", r, err)
	}
}

func TestFloodUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 300 {
				got.Add(1)
			}
		}
	}()
	defer pc.Close()
	r, err := Flood(context.Background(), FloodArgs{Kind: FloodUDP, Addr: pc.LocalAddr().String(), Size: 300, Workers: 2, Duration: 200 * time.Millisecond})
	if err != nil || r.Ops < 100 || r.Sent != r.Ops+r.Errors {
		t.Errorf("Flood(udp) = %+v, %v; want >= 100 datagrams sent", r, err)
	}
	if got.Load() == 0 {
		t.Error("no 300-byte datagram arrived")
	}
}

func TestFloodStopsWithItsContext(t *testing.T) {
	addr := server(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := Flood(ctx, FloodArgs{Kind: FloodConnect, Addr: addr, Workers: 2, Duration: time.Minute})
	if err != nil || r.Ops == 0 {
		t.Errorf("Flood() stopped by its context = %+v, %v; want its result", r, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Flood() returned %v after its context ended", d)
	}
}

func TestFloodRejectsBadArguments(t *testing.T) {
	for _, a := range []FloodArgs{
		{Kind: "syn", Addr: "127.0.0.1:1", Workers: 1, Duration: time.Millisecond},
		{Kind: FloodUDP, Addr: "127.0.0.1:1", Workers: 1, Size: 0, Duration: time.Millisecond},
		{Kind: FloodConnect, Addr: "127.0.0.1:1", Workers: 0, Duration: time.Millisecond},
	} {
		if _, err := Flood(context.Background(), a); err == nil {
			t.Errorf("Flood(%+v) = nil error, want one", a)
		}
	}
}

func TestServeUDPSink(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeUDPSink(ctx, pc) }()
	if _, err := Flood(context.Background(), FloodArgs{Kind: FloodUDP, Addr: pc.LocalAddr().String(), Size: 512, Workers: 1, Duration: 50 * time.Millisecond}); err != nil {
		t.Error(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeUDPSink() = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDPSink did not return after its context ended")
	}
}
