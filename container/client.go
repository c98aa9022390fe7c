// Package container finds, attaches and follows agent containers through a
// container engine's HTTP API (Docker, or Podman's Docker-compatible socket).
//
// It speaks the few Engine API calls clawnet needs over a unix socket with
// net/http, follows the engine's events so that stopped, restarted and removed
// containers are detached or attached again, and implements `clawnet run`: an
// agent container whose network namespace is attached before its first
// instruction. It never configures networking itself: attaching a namespace
// is the daemon's job, reached through the small Attacher interface. It must
// never attach a container that has any other network than clawnet's TUN.
package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Default engine sockets, tried in this order when DOCKER_HOST is unset.
const (
	DockerSocket = "/var/run/docker.sock"
	PodmanSocket = "/run/podman/podman.sock"
)

// ErrNotFound is returned (wrapped) when the engine does not know a container
// or image.
var ErrNotFound = errors.New("not found")

// ErrNoEngine is returned (wrapped) when no engine socket can be found.
var ErrNoEngine = errors.New("no container engine socket")

// Client is a minimal Docker Engine API client over a unix socket. The
// official SDK drags in a large dependency tree for the dozen calls clawnet
// makes; these calls have been stable across API versions and Podman's
// compatibility layer, so a thin client is easier to audit and to fake.
type Client struct {
	socket string
	http   *http.Client
	// stream has no overall timeout: the events stream and image imports
	// run for as long as their context allows.
	stream *http.Client
}

// NewClient returns a client for the engine listening on the unix socket path.
func NewClient(socket string) *Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}
	tr := &http.Transport{
		DialContext:         dial,
		MaxIdleConns:        4,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 0,
	}
	return &Client{
		socket: socket,
		http:   &http.Client{Transport: tr, Timeout: 30 * time.Second},
		stream: &http.Client{Transport: tr},
	}
}

// SocketFromEnv finds the engine socket: DOCKER_HOST (unix:// only), else the
// Docker socket, else Podman's rootful socket, else Podman's rootless one
// under XDG_RUNTIME_DIR.
func SocketFromEnv() (string, error) {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		p, ok := strings.CutPrefix(h, "unix://")
		if !ok || p == "" {
			return "", fmt.Errorf("DOCKER_HOST=%q: only unix:// sockets are supported", h)
		}
		return p, nil
	}
	cands := []string{DockerSocket, PodmanSocket}
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
		cands = append(cands, xdg+"/podman/podman.sock")
	}
	for _, p := range cands {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: set DOCKER_HOST=unix:///path (tried %s)", ErrNoEngine, strings.Join(cands, ", "))
}

// NewClientFromEnv returns a client for the socket SocketFromEnv finds.
func NewClientFromEnv() (*Client, error) {
	s, err := SocketFromEnv()
	if err != nil {
		return nil, err
	}
	return NewClient(s), nil
}

// Socket is the unix socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// apiError is the engine's error body: {"message": "..."}.
type apiError struct {
	Message string `json:"message"`
}

// do sends a request and returns the response when its status is 2xx. Paths
// are unversioned: the engine then uses its own current API version, and the
// fields clawnet reads exist in every version since 1.24 and in Podman.
func (c *Client) do(ctx context.Context, hc *http.Client, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := "http://engine" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("engine request %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("engine at %s: %s %s: %w", c.socket, method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ae apiError
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &ae) == nil && ae.Message != "" {
		msg = ae.Message
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("engine: %s: %w", msg, ErrNotFound)
	}
	return nil, fmt.Errorf("engine: %s %s: %s (HTTP %d)", method, path, msg, resp.StatusCode)
}

// getJSON decodes a GET response into v.
func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) error {
	resp, err := c.do(ctx, c.http, http.MethodGet, path, q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("engine: decode %s: %w", path, err)
	}
	return nil
}

// postJSON sends in as JSON (nil for an empty body) and decodes the answer
// into out when out is not nil.
func (c *Client) postJSON(ctx context.Context, path string, q url.Values, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("engine: encode %s: %w", path, err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, c.http, http.MethodPost, path, q, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("engine: decode %s: %w", path, err)
	}
	return nil
}

// Ping checks that the engine answers.
func (c *Client) Ping(ctx context.Context) error {
	resp, err := c.do(ctx, c.http, http.MethodGet, "/_ping", nil, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// Engines Engine tells apart.
const (
	EngineDocker = "docker"
	EnginePodman = "podman"
)

// EngineInfo is which engine answers on the socket.
type EngineInfo struct {
	Name    string // EngineDocker or EnginePodman
	Version string
}

// Engine asks the engine's /version which engine it is. Podman's compatible
// API lists itself among its components ("Podman Engine"); any other
// engine is taken for Docker, whose API it speaks.
func (c *Client) Engine(ctx context.Context) (EngineInfo, error) {
	var v struct {
		Version    string `json:"Version"`
		Components []struct {
			Name    string `json:"Name"`
			Version string `json:"Version"`
		} `json:"Components"`
	}
	if err := c.getJSON(ctx, "/version", nil, &v); err != nil {
		return EngineInfo{}, fmt.Errorf("engine version: %w", err)
	}
	for _, comp := range v.Components {
		if strings.HasPrefix(comp.Name, "Podman") {
			return EngineInfo{Name: EnginePodman, Version: comp.Version}, nil
		}
	}
	return EngineInfo{Name: EngineDocker, Version: v.Version}, nil
}

// jsonMessages reads a stream of JSON progress messages (image import) and
// returns the first error one carries, or else the image ID the stream
// named: Docker's import says it as its status, Podman's as its id.
func jsonMessages(r io.Reader) (id string, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Status      string `json:"status"`
			ID          string `json:"id"`
			Error       string `json:"error"`
			ErrorDetail struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if m.Error != "" {
			return "", errors.New(m.Error)
		}
		if m.ErrorDetail.Message != "" {
			return "", errors.New(m.ErrorDetail.Message)
		}
		for _, s := range []string{m.ID, m.Status} {
			if strings.HasPrefix(s, "sha256:") {
				id = s
			}
		}
	}
	return id, sc.Err()
}
