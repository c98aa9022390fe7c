package control

import (
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
	"syscall"
)

// Client talks to clawnetd over its unix socket.
type Client struct {
	Socket string
	hc     *http.Client
}

// SocketPath returns the socket to use: flag, then environment, then the
// default.
func SocketPath(flag string) string {
	if flag != "" {
		return flag
	}
	if s := os.Getenv(SocketEnv); s != "" {
		return s
	}
	return DefaultSocket
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{Socket: socket, hc: &http.Client{Transport: tr}}
}

// ErrNoDaemon is returned when nothing listens on the socket.
var ErrNoDaemon = errors.New("clawnetd is not running")

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://clawnetd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (no socket at %s)", ErrNoDaemon, c.Socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("permission denied on %s: the control socket is root only", c.Socket)
		}
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		if out != nil {
			// A refusal may still say what was done (a reload applies
			// every file it could read).
			_ = json.Unmarshal(data, out)
		}
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("clawnetd answered %s", resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// Attach attaches an agent.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (*Agent, error) {
	var a Agent
	if err := c.do(ctx, http.MethodPost, "/v1/agents", req, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// Detach detaches the agent called name.
func (c *Client) Detach(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/agents/"+url.PathEscape(name), nil, nil)
}

// Publish publishes ports of the running agent called agent; specs are
// read as ParsePublish reads them. Either all are published or none.
func (c *Client) Publish(ctx context.Context, agent string, specs []string) error {
	return c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(agent)+"/publish", PublishRequest{Publish: specs}, nil)
}

// Unpublish closes the agent's published ports named by specs.
func (c *Client) Unpublish(ctx context.Context, agent string, specs []string) error {
	return c.do(ctx, http.MethodDelete, "/v1/agents/"+url.PathEscape(agent)+"/publish", PublishRequest{Publish: specs}, nil)
}

// SetPhase moves the agent called agent to phase (PhaseRun: the only move)
// and answers how many live flows that revoked.
func (c *Client) SetPhase(ctx context.Context, agent, phase string) (*PhaseResult, error) {
	var r PhaseResult
	if err := c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(agent)+"/phase", PhaseRequest{Phase: phase}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Agents lists attached agents.
func (c *Client) Agents(ctx context.Context) ([]Agent, error) {
	var as []Agent
	err := c.do(ctx, http.MethodGet, "/v1/agents", nil, &as)
	return as, err
}

// PodPolicy asks which policy the daemon's pod policy source names for the
// pod; "" means it is not an agent pod.
func (c *Client) PodPolicy(ctx context.Context, pod PodRef) (string, error) {
	path := "/v1/pods/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name) + "/policy"
	if pod.UID != "" {
		path += "?" + url.Values{"uid": {pod.UID}}.Encode()
	}
	var p PodPolicy
	if err := c.do(ctx, http.MethodGet, path, nil, &p); err != nil {
		return "", err
	}
	return p.Policy, nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return &s, err
}

// Reload makes the daemon read its policy files again and answers what that
// changed and revoked. When a file was refused the error comes with the
// result of applying the others.
func (c *Client) Reload(ctx context.Context) (*ReloadResult, error) {
	var r ReloadResult
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, &r)
	return &r, err
}

// ExplainInbound asks what policy would decide for a connection from the
// peer from (agent:NAME, host or an address) to an agent's port (0: any).
func (c *Client) ExplainInbound(ctx context.Context, policy, proto, from string, port uint16) (*Explanation, error) {
	q := url.Values{"policy": {policy}, "proto": {proto}, "from": {from}, "port": {fmt.Sprint(port)}}
	var e Explanation
	err := c.do(ctx, http.MethodGet, "/v1/explain?"+q.Encode(), nil, &e)
	return &e, err
}

// Explain asks what policy would decide for host:port.
func (c *Client) Explain(ctx context.Context, policy, proto, host string, port uint16) (*Explanation, error) {
	q := url.Values{"policy": {policy}, "proto": {proto}, "host": {host}, "port": {fmt.Sprint(port)}}
	var e Explanation
	err := c.do(ctx, http.MethodGet, "/v1/explain?"+q.Encode(), nil, &e)
	return &e, err
}
