package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

// fakeDaemon is clawnetd's control API as far as the CLI can tell: it
// records each request and answers with what a test sets.
type fakeDaemon struct {
	mu   sync.Mutex
	reqs []string // "METHOD PATH?QUERY BODY"

	agents  []control.Agent
	answer  any    // the body of a 2xx answer; nil: 204
	refusal string // when set, a 409 with this error
}

// startFakeDaemon serves a fakeDaemon on a unix socket and points the CLI
// at it through CLAWNET_SOCKET.
func startFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	d := &fakeDaemon{}
	sock := filepath.Join(t.TempDir(), "clawnet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(d)
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	t.Setenv(control.SocketEnv, sock)
	return d
}

func (d *fakeDaemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	d.mu.Lock()
	defer d.mu.Unlock()
	req := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		req += "?" + r.URL.RawQuery
	}
	d.reqs = append(d.reqs, strings.TrimSpace(req+" "+string(b)))
	w.Header().Set("Content-Type", "application/json")
	switch {
	case d.refusal != "":
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(control.Error{Error: d.refusal})
	case r.Method == "GET" && r.URL.Path == "/v1/agents":
		json.NewEncoder(w).Encode(d.agents)
	case d.answer != nil:
		json.NewEncoder(w).Encode(d.answer)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// requests returns what the daemon was asked, in order.
func (d *fakeDaemon) requests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.reqs...)
}
