package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/bench/internal/probe"
)

func TestRunRejectsBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"fly"}, `unknown mode "fly"`},
		{[]string{"rr"}, "-addr is required"},
		{[]string{"dns"}, "-server is required"},
		{[]string{"rr", "-addr", "x:1", "extra"}, `unexpected argument "extra"`},
		{[]string{"dns-server", "-answer", "nope"}, `-answer "nope"`},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, strings.NewReader(""), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestRunRRPrintsAResult(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- probe.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"rr", "-addr", ln.Addr().String(), "-duration", "100ms"}, strings.NewReader(""), &out); err != nil {
		t.Fatal(err)
	}
	r, err := probe.ParseResult(out.Bytes())
	if err != nil || r.Mode != "rr" || r.Ops == 0 {
		t.Errorf("probe rr printed %q (%+v, %v), want an rr result with operations", out.String(), r, err)
	}
}
