package container

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeEngine is a Docker Engine API stand-in on a unix socket: the seam
// under the real Client. It holds containers as inspect JSON and streams
// events pushed by the test.
type fakeEngine struct {
	t      *testing.T
	srv    *httptest.Server
	socket string

	// podman makes it answer as Podman's compatible API does where the
	// engines differ: /version, the import's answer, "remove" events.
	podman bool

	mu         sync.Mutex
	containers map[string]*fakeContainer // by ID
	images     map[string]bool           // by ID and by every repo:tag
	imported   []string                  // IDs
	tagged     []string                  // repo:tag
	removed    []string
	created    []ContainerSpec
	subs       map[chan eventJSON]map[string]bool // each stream's event filter (nil: all)
	eventsErr  int                                // answer the next N /events with 500
	requests   []string
}

type fakeContainer struct {
	ID, Name    string
	Status      string
	Running     bool
	Pid         int
	StartedAt   string
	NetworkMode string
	Networks    []string
	Labels      map[string]string
	ResolvConf  string
	CreatedUnix int64
	Image       string
}

func newFakeEngine(t *testing.T) *fakeEngine {
	t.Helper()
	f := &fakeEngine{
		t:          t,
		containers: map[string]*fakeContainer{},
		images:     map[string]bool{},
		subs:       map[chan eventJSON]map[string]bool{},
	}
	dir, err := os.MkdirTemp("", "fakeengine")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f.socket = filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "OK") })
	mux.HandleFunc("GET /version", f.version)
	mux.HandleFunc("GET /containers/{id}/json", f.inspect)
	mux.HandleFunc("GET /containers/json", f.list)
	mux.HandleFunc("DELETE /containers/{id}", f.remove)
	mux.HandleFunc("POST /containers/create", f.create)
	mux.HandleFunc("POST /containers/{id}/start", f.start)
	mux.HandleFunc("GET /images/{ref}/json", f.imageInspect)
	mux.HandleFunc("POST /images/create", f.imageCreate)
	mux.HandleFunc("POST /images/{ref}/tag", f.imageTag)
	mux.HandleFunc("GET /images/json", f.imageList)
	mux.HandleFunc("DELETE /images/{ref}", f.imageRemove)
	mux.HandleFunc("GET /events", f.events)
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	f.srv.Listener = ln
	f.srv.Start()
	t.Cleanup(f.close)
	return f
}

func (f *fakeEngine) close() {
	f.dropSubscribers()
	f.srv.CloseClientConnections()
	f.srv.Close()
}

func (f *fakeEngine) client() *Client {
	c := NewClient(f.socket)
	f.t.Cleanup(c.Close)
	return c
}

func (f *fakeEngine) add(c *fakeContainer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.Status == "" {
		c.Status = "running"
		c.Running = true
	}
	f.containers[c.ID] = c
}

// set changes a container under the lock.
func (f *fakeEngine) set(id string, fn func(c *fakeContainer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.containers[id])
}

func (f *fakeEngine) del(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
}

func (f *fakeEngine) find(nameOrID string) *fakeContainer {
	if c, ok := f.containers[nameOrID]; ok {
		return c
	}
	for _, c := range f.containers {
		if c.Name == nameOrID || strings.HasPrefix(c.ID, nameOrID) {
			return c
		}
	}
	return nil
}

func (f *fakeEngine) inspect(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(r.PathValue("id"))
	if c == nil {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"message":"No such container: %s"}`, r.PathValue("id"))
		return
	}
	nets := map[string]any{}
	for _, n := range c.Networks {
		nets[n] = map[string]any{"NetworkID": "x"}
	}
	pid := c.Pid
	if !c.Running {
		pid = 0
	}
	json.NewEncoder(w).Encode(map[string]any{
		"Id":   c.ID,
		"Name": "/" + c.Name,
		"Config": map[string]any{
			"Image":  "clawnet-test:latest",
			"Labels": c.Labels,
		},
		"State": map[string]any{
			"Status": c.Status, "Running": c.Running, "Pid": pid, "StartedAt": c.StartedAt,
		},
		"HostConfig":      map[string]any{"NetworkMode": c.NetworkMode},
		"NetworkSettings": map[string]any{"Networks": nets},
		"ResolvConfPath":  c.ResolvConf,
	})
}

func (f *fakeEngine) list(w http.ResponseWriter, r *http.Request) {
	var filters map[string][]string
	json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filters)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []map[string]any{}
	for _, c := range f.containers {
		ok := true
		for _, l := range filters["label"] {
			k, v, hasV := strings.Cut(l, "=")
			got, present := c.Labels[k]
			if !present || (hasV && got != v) {
				ok = false
			}
		}
		if ok {
			out = append(out, map[string]any{"Id": c.ID, "Names": []string{"/" + c.Name},
				"State": c.Status, "Created": c.CreatedUnix, "Labels": c.Labels})
		}
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeEngine) remove(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	c := f.find(r.PathValue("id"))
	if c == nil {
		f.mu.Unlock()
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such container"}`)
		return
	}
	delete(f.containers, c.ID)
	f.removed = append(f.removed, c.ID)
	f.mu.Unlock()
	f.emit("container", f.removeAction(), c.ID, map[string]string{"name": c.Name})
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeEngine) create(w http.ResponseWriter, r *http.Request) {
	var spec ContainerSpec
	if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
		http.Error(w, `{"message":"bad body"}`, http.StatusBadRequest)
		return
	}
	name := r.URL.Query().Get("name")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.find(name) != nil {
		w.WriteHeader(http.StatusConflict)
		fmt.Fprintf(w, `{"message":"Conflict. The container name \"/%s\" is already in use"}`, name)
		return
	}
	if !f.images[spec.Image] {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"message":"No such image: %s"}`, spec.Image)
		return
	}
	f.created = append(f.created, spec)
	id := fmt.Sprintf("%064x", len(f.created)+1000)
	f.containers[id] = &fakeContainer{ID: id, Name: name, Status: "created", Image: spec.Image,
		NetworkMode: spec.HostConfig.NetworkMode, Networks: []string{spec.HostConfig.NetworkMode},
		Labels: spec.Labels, CreatedUnix: time.Now().Unix()}
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"Id":%q,"Warnings":[]}`, id)
}

func (f *fakeEngine) start(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	c := f.find(r.PathValue("id"))
	if c != nil {
		c.Status, c.Running, c.Pid, c.StartedAt = "running", true, os.Getpid(), time.Now().Format(time.RFC3339Nano)
	}
	f.mu.Unlock()
	if c == nil {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such container"}`)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeEngine) imageInspect(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.images[r.PathValue("ref")] {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such image"}`)
		return
	}
	io.WriteString(w, `{"Id":"sha256:1"}`)
}

func (f *fakeEngine) imageCreate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("fromSrc") != "-" {
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"message":"pulls are not possible here"}`)
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	if n == 0 {
		io.WriteString(w, `{"status":"importing"}`+"\n"+`{"errorDetail":{"message":"empty archive"},"error":"empty archive"}`+"\n")
		return
	}
	f.mu.Lock()
	id := fmt.Sprintf("sha256:%064x", len(f.imported)+1)
	f.images[id] = true
	f.imported = append(f.imported, id)
	f.mu.Unlock()
	if f.podman {
		fmt.Fprintf(w, `{"status":%q,"progress":"","progressDetail":{},"id":%q}`+"\n", id, id)
		return
	}
	fmt.Fprintf(w, `{"status":%q}`+"\r\n", id)
}

func (f *fakeEngine) imageTag(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.images[r.PathValue("ref")] {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such image"}`)
		return
	}
	ref := q.Get("repo") + ":" + q.Get("tag")
	f.images[ref] = true
	f.tagged = append(f.tagged, ref)
	w.WriteHeader(http.StatusCreated)
}

func (f *fakeEngine) version(w http.ResponseWriter, r *http.Request) {
	if f.podman {
		io.WriteString(w, `{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1"},{"Name":"Conmon","Version":"2.1.6"}],"Version":"4.3.1","ApiVersion":"1.41"}`)
		return
	}
	io.WriteString(w, `{"Platform":{"Name":""},"Components":[{"Name":"Engine","Version":"20.10.24"},{"Name":"containerd","Version":"1.6.20"}],"Version":"20.10.24","ApiVersion":"1.41"}`)
}

// removeAction is the engine's name for a container's removal event.
func (f *fakeEngine) removeAction() string {
	if f.podman {
		return "remove"
	}
	return "destroy"
}

func (f *fakeEngine) events(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if f.eventsErr > 0 {
		f.eventsErr--
		f.mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"message":"engine restarting"}`)
		return
	}
	ch := make(chan eventJSON, 16)
	var filters map[string][]string
	json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filters)
	var want map[string]bool
	for _, a := range filters["event"] {
		if want == nil {
			want = map[string]bool{}
		}
		want[a] = true
	}
	f.subs[ch] = want
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	enc := json.NewEncoder(w)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			enc.Encode(ev)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
			return
		}
	}
}

// emit sends an event to every subscriber.
func (f *fakeEngine) emit(typ, action, id string, attrs map[string]string) {
	var ev eventJSON
	ev.Type, ev.Action = typ, action
	ev.Actor.ID = id
	ev.Actor.Attributes = attrs
	ev.TimeNano = time.Now().UnixNano()
	// The engine matches the filter against its own name for the event:
	// Podman 4.3 reports "died" as "die" but filters it as "died".
	name := action
	if f.podman && action == "die" {
		name = "died"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch, want := range f.subs {
		if want == nil || want[name] {
			ch <- ev
		}
	}
}

// dropSubscribers ends every event stream, as an engine restart would.
func (f *fakeEngine) dropSubscribers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		close(ch)
		delete(f.subs, ch)
	}
}

// countRequests counts the requests "METHOD /path" served so far.
func (f *fakeEngine) countRequests(req string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if r == req {
			n++
		}
	}
	return n
}

func (f *fakeEngine) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeEngine) imageList(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []map[string]any{}
	for ref := range f.images {
		if !strings.HasPrefix(ref, "sha256:") {
			out = append(out, map[string]any{"RepoTags": []string{ref}})
		}
	}
	json.NewEncoder(w).Encode(out)
}

func (f *fakeEngine) imageRemove(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ref := r.PathValue("ref")
	for _, c := range f.containers {
		if c.Image == ref {
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"message":"image is being used by running container"}`)
			return
		}
	}
	if !f.images[ref] {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No such image"}`)
		return
	}
	delete(f.images, ref)
	io.WriteString(w, `[{"Untagged":"x"}]`)
}
