package control

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// serveUnix serves h on a unix socket, as clawnetd does, and returns a
// client for it.
func serveUnix(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return NewClient(sock)
}

// TestClientPublish: the publish calls send what the API reads, and an
// error answer comes back as its one line.
func TestClientPublish(t *testing.T) {
	var got []string
	c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+strings.TrimSpace(string(b)))
		if strings.Contains(string(b), "9999") {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(Error{Error: "port 9999 is already taken"})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	ctx := context.Background()
	if err := c.Publish(ctx, "a 1", []string{"8080:80", "[::1]:53:53/udp"}); err != nil {
		t.Errorf("Publish = %v", err)
	}
	if err := c.Unpublish(ctx, "a1", []string{"8080:80"}); err != nil {
		t.Errorf("Unpublish = %v", err)
	}
	if err := c.Publish(ctx, "a1", []string{"9999:80"}); err == nil || err.Error() != "port 9999 is already taken" {
		t.Errorf("Publish of a taken port = %v; want the daemon's line", err)
	}
	want := []string{
		`POST /v1/agents/a 1/publish {"publish":["8080:80","[::1]:53:53/udp"]}`,
		`DELETE /v1/agents/a1/publish {"publish":["8080:80"]}`,
		`POST /v1/agents/a1/publish {"publish":["9999:80"]}`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestClientExplainInbound(t *testing.T) {
	var query string
	c := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query = r.URL.Query().Encode()
		json.NewEncoder(w).Encode(Explanation{Policy: "gw", Proto: "tcp", Port: 18789, From: "agent:cli", Verdict: "allow"})
	}))
	e, err := c.ExplainInbound(context.Background(), "gw", "tcp", "agent:cli", 18789)
	if err != nil || e.From != "agent:cli" || e.Verdict != "allow" {
		t.Errorf("ExplainInbound = %+v, %v", e, err)
	}
	if want := "from=agent%3Acli&policy=gw&port=18789&proto=tcp"; query != want {
		t.Errorf("query = %s; want %s", query, want)
	}
}

func TestClientPodPolicy(t *testing.T) {
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/pods/{namespace}/{name}/policy", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		if r.PathValue("name") == "gone" {
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(Error{Error: "policy of pod ns/gone: api server unreachable"})
			return
		}
		json.NewEncoder(w).Encode(PodPolicy{Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), Policy: "coder"})
	})
	c := serveUnix(t, mux)
	ctx := context.Background()
	if p, err := c.PodPolicy(ctx, PodRef{Namespace: "ns", Name: "p1", UID: "u 1"}); err != nil || p != "coder" {
		t.Errorf("PodPolicy = %q, %v; want coder", p, err)
	}
	if _, err := c.PodPolicy(ctx, PodRef{Namespace: "ns", Name: "gone"}); err == nil || err.Error() != "policy of pod ns/gone: api server unreachable" {
		t.Errorf("PodPolicy of a failing source = %v; want the daemon's line", err)
	}
	want := "GET /v1/pods/ns/p1/policy?uid=u+1\nGET /v1/pods/ns/gone/policy"
	if strings.Join(got, "\n") != want {
		t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
}
