package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clawnet/clawnet/gateway/control"
)

// fakeDaemon is clawnetd's control API in memory, served on a unix socket
// as the real one is, so the plugin goes through the real client.
type fakeDaemon struct {
	socket string
	srv    *httptest.Server

	mu sync.Mutex // guards the fields below
	// ignoreInterface answers as a clawnetd that names every TUN clawnet0.
	ignoreInterface bool
	agents          map[string]control.Agent
	next            int
	attaches        []control.AttachRequest
	detaches        []string
	// podPolicies are what the pod policy source names, by NS/NAME;
	// podPolicyErr fails every question.
	podPolicies  map[string]string
	podPolicyErr string
	podAsks      []control.PodRef
	lists        int // GET /v1/agents
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{socket: filepath.Join(t.TempDir(), "clawnet.sock"), agents: map[string]control.Agent{}}
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agents", f.attach)
	mux.HandleFunc("GET /v1/agents", f.list)
	mux.HandleFunc("DELETE /v1/agents/{name}", f.detach)
	mux.HandleFunc("GET /v1/pods/{namespace}/{name}/policy", f.podPolicy)
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Listener.Close()
	f.srv.Listener = l
	f.srv.Start()
	t.Cleanup(f.stop)
	return f
}

// stop makes the socket answer nothing, as when clawnetd is not running.
func (f *fakeDaemon) stop() { f.srv.Close() }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeDaemon) attach(w http.ResponseWriter, r *http.Request) {
	var req control.AttachRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, control.Error{Error: err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attaches = append(f.attaches, req)
	if _, ok := f.agents[req.Name]; ok {
		writeJSON(w, http.StatusConflict, control.Error{Error: fmt.Sprintf("conflict: an agent called %q is already attached", req.Name)})
		return
	}
	for _, a := range f.agents {
		if a.Netns == req.Netns {
			writeJSON(w, http.StatusConflict, control.Error{Error: fmt.Sprintf("conflict: netns:%s is already attached as agent %q", req.Netns, a.Name)})
			return
		}
	}
	f.next++
	ifname := req.Interface
	if ifname == "" || f.ignoreInterface {
		ifname = "clawnet0"
	}
	policy := req.Policy
	if policy == "" {
		policy = "default"
	}
	a := control.Agent{
		Name: req.Name, Target: "netns:" + req.Netns, Netns: req.Netns, Interface: ifname, Policy: policy,
		Addresses: []string{fmt.Sprintf("100.96.0.%d/16", f.next+1), fmt.Sprintf("fd63:6c61:776e:1::%x/64", f.next+1)},
		Gateway:   []string{"100.96.0.1", "fd63:6c61:776e:1::1"},
	}
	f.agents[req.Name] = a
	writeJSON(w, http.StatusCreated, a)
}

func (f *fakeDaemon) list(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	as := make([]control.Agent, 0, len(f.agents))
	for _, a := range f.agents {
		as = append(as, a)
	}
	slices.SortFunc(as, func(a, b control.Agent) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, as)
}

func (f *fakeDaemon) detach(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detaches = append(f.detaches, name)
	if _, ok := f.agents[name]; !ok {
		writeJSON(w, http.StatusNotFound, control.Error{Error: fmt.Sprintf("not found: no agent called %q", name)})
		return
	}
	delete(f.agents, name)
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeDaemon) podPolicy(w http.ResponseWriter, r *http.Request) {
	pod := control.PodRef{Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), UID: r.URL.Query().Get("uid")}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.podAsks = append(f.podAsks, pod)
	if f.podPolicyErr != "" {
		writeJSON(w, http.StatusInternalServerError, control.Error{Error: f.podPolicyErr})
		return
	}
	writeJSON(w, http.StatusOK, control.PodPolicy{Namespace: pod.Namespace, Name: pod.Name, Policy: f.podPolicies[pod.Namespace+"/"+pod.Name]})
}

func (f *fakeDaemon) asks() []control.PodRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.podAsks)
}

func (f *fakeDaemon) attachCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.attaches)
}

// agentList is the names of the attached agents, sorted.
func (f *fakeDaemon) agentList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.agents {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// forget drops an agent as a restarted clawnetd that could not restore it
// would.
func (f *fakeDaemon) forget(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.agents, name)
}

func (f *fakeDaemon) lastAttach() control.AttachRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attaches[len(f.attaches)-1]
}
