package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/internal/version"
)

// maxRequestBody bounds an attach request.
const maxRequestBody = 1 << 20

// Handler returns the control API (the client is gateway/control).
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agents", g.handleAttach)
	mux.HandleFunc("DELETE /v1/agents/{name}", g.handleDetach)
	mux.HandleFunc("POST /v1/agents/{name}/publish", g.handlePublish)
	mux.HandleFunc("DELETE /v1/agents/{name}/publish", g.handleUnpublish)
	mux.HandleFunc("POST /v1/agents/{name}/phase", g.handlePhase) // phase.go
	mux.HandleFunc("GET /v1/agents", g.handleList)
	mux.HandleFunc("GET /v1/status", g.handleStatus)
	mux.HandleFunc("POST /v1/reload", g.handleReload)
	mux.HandleFunc("GET /v1/explain", g.handleExplain)
	mux.HandleFunc("GET /v1/version", handleVersion)
	mux.HandleFunc("GET /v1/pods/{namespace}/{name}/policy", g.handlePodPolicy)
	mux.Handle("GET /metrics", g.MetricsHandler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// handleAttach attaches the target of a control.AttachRequest and answers
// the new agent.
func (g *Gateway) handleAttach(w http.ResponseWriter, r *http.Request) {
	var req control.AttachRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, fmt.Errorf("%w: %v", ErrBadRequest, err))
		return
	}
	// A bad spec is refused before anything is opened.
	if _, err := parsePublish(req.Publish); err != nil {
		writeErr(w, err)
		return
	}
	a, err := g.AttachRequest(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, a)
}

func (g *Gateway) handleDetach(w http.ResponseWriter, r *http.Request) {
	if err := g.DetachRequest(r.PathValue("name")); err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handlePublish publishes ports of a running agent (a
// control.PublishRequest); nothing is published if one cannot be.
func (g *Gateway) handlePublish(w http.ResponseWriter, r *http.Request) {
	ps, err := decodePublish(w, r)
	if err == nil {
		err = g.Publish(r.PathValue("name"), ps)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleUnpublish closes the agent's listeners for the ports named.
func (g *Gateway) handleUnpublish(w http.ResponseWriter, r *http.Request) {
	ps, err := decodePublish(w, r)
	if err == nil {
		err = g.Unpublish(r.PathValue("name"), ps)
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodePublish reads a control.PublishRequest naming at least one port.
func decodePublish(w http.ResponseWriter, r *http.Request) ([]control.Publish, error) {
	var req control.PublishRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if len(req.Publish) == 0 {
		return nil, fmt.Errorf("%w: name one or more ports ([HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp])", ErrBadRequest)
	}
	return parsePublish(req.Publish)
}

// parsePublish reads publish specs as control.ParsePublish does; the first
// bad one is a bad request.
func parsePublish(specs []string) ([]control.Publish, error) {
	ps := make([]control.Publish, 0, len(specs))
	for _, s := range specs {
		p, err := control.ParsePublish(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func (g *Gateway) handleList(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, g.Agents())
}

// handleStatus answers the daemon's own health, which the leak checks of
// the integration tests read.
func (g *Gateway) handleStatus(w http.ResponseWriter, _ *http.Request) {
	as := g.Agents()
	var flows int64
	for _, a := range as {
		flows += a.Flows
	}
	writeJSON(w, http.StatusOK, control.Status{
		Version: version.Version, Agents: len(as), Flows: flows,
		Goroutines: runtime.NumGoroutine(), OpenFDs: openFDs(), Policies: g.policies.Names(),
	})
}

// handleReload re-reads the policy files and answers a
// control.ReloadResult: what changed, and the live flows each agent lost.
// A bad file is the caller's to fix: the answer is then a control.Error
// that still carries the result, since the other files were applied.
func (g *Gateway) handleReload(w http.ResponseWriter, _ *http.Request) {
	res, err := g.Reload()
	if err != nil {
		writeJSON(w, http.StatusBadRequest, struct {
			control.Error
			*control.ReloadResult
		}{control.Error{Error: fmt.Errorf("%w: %v", ErrBadRequest, err).Error()}, res})
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// handleExplain answers what a policy would decide for
// ?policy=P&proto=tcp|udp&host=H&port=N (proto tcp and port 0 by default):
// a connection the agent would open, or, with &from=PEER (agent:NAME, host
// or an address), one PEER would open to the agent's port N.
func (g *Gateway) handleExplain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	port, err := strconv.ParseUint(q.Get("port"), 10, 16)
	if q.Get("port") != "" && err != nil {
		writeErr(w, fmt.Errorf("%w: bad port %q", ErrBadRequest, q.Get("port")))
		return
	}
	proto := q.Get("proto")
	if proto == "" {
		proto = "tcp"
	}
	var e *control.Explanation
	if from := q.Get("from"); from != "" {
		if q.Get("host") != "" {
			writeErr(w, fmt.Errorf("%w: give host or from, not both", ErrBadRequest))
			return
		}
		e, err = g.ExplainInbound(q.Get("policy"), proto, uint16(port), from)
	} else {
		e, err = g.Explain(q.Get("policy"), proto, q.Get("host"), uint16(port))
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// handlePodPolicy answers a control.PodPolicy: the policy Options.PodPolicy
// names for the pod (?uid= may name its UID), "" for a pod that is not an
// agent pod or when the daemon has no pod policy source. clawnet-cni's
// chained mode asks it to tell agent pods from the others, and asks it
// first for a pod whose annotations the runtime passed; an error is answered
// as one (the plugin then fails the pod's ADD: closed) and, as a refused
// attach is, reported to Options.AttachRefused (the pod's event).
func (g *Gateway) handlePodPolicy(w http.ResponseWriter, r *http.Request) {
	pod := control.PodRef{Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), UID: r.URL.Query().Get("uid")}
	if !validPodName(pod.Namespace) || !validPodName(pod.Name) {
		writeErr(w, fmt.Errorf("%w: pod %q/%q: namespace and name must be 1 to 253 characters of a-z, 0-9, '-' and '.'", ErrBadRequest, pod.Namespace, pod.Name))
		return
	}
	ans := control.PodPolicy{Namespace: pod.Namespace, Name: pod.Name}
	if g.podPolicy != nil {
		pol, err := g.podPolicy(r.Context(), pod)
		if err != nil {
			err = fmt.Errorf("policy of pod %s/%s: %w", pod.Namespace, pod.Name, err)
			if g.refused != nil {
				g.refused(pod, err)
			}
			writeErr(w, err)
			return
		}
		ans.Policy = pol
	}
	writeJSON(w, http.StatusOK, ans)
}

// validPodName is what Kubernetes allows in a namespace or pod name (DNS
// subdomain): lower-case letters, digits, '-' and '.', at most 253.
func validPodName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func handleVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": version.Version})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr answers err as a control.Error, with the status its sentinel
// stands for; an error with none is the gateway's own fault (500).
func writeErr(w http.ResponseWriter, err error) {
	writeJSON(w, errStatus(err), control.Error{Error: err.Error()})
}

func errStatus(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrUnreachable):
		return http.StatusBadRequest
	case errors.Is(err, ErrLimit):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrShuttingDown):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}
