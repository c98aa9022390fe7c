package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// Gateway is what the watcher needs of the gateway.
type Gateway interface {
	SetPolicies(source string, src gateway.PolicySource) (*control.ReloadResult, gateway.SourceErrors)
	Agents() []control.Agent
}

var _ Gateway = (*gateway.Gateway)(nil)

// Options configure a Watcher.
type Options struct {
	Client  dynamic.Interface
	Gateway Gateway
	// Node is this node's name: each node writes its own entry under
	// status.nodes.
	Node string
	Log  hclog.Logger // nil: no logs
	// Refresh is how often the agent counts in the objects' status are
	// brought up to date when nothing else changes; 0: 10 seconds.
	Refresh time.Duration
}

// Watcher keeps the gateway's "kubernetes" source equal to the objects in
// the API server and writes their status.
type Watcher struct {
	opts   Options
	log    hclog.Logger
	anp    cache.SharedIndexInformer
	canp   cache.SharedIndexInformer
	runs   sync.WaitGroup // the informers' goroutines
	kick   chan struct{}
	synced chan struct{} // closed after the first apply
	done   chan struct{} // closed when run ends

	mu    sync.Mutex
	state map[objKey]*objState // guarded by mu
}

// objKey names an object: Namespace is "" for a ClusterAgentNetworkPolicy.
type objKey struct {
	Cluster   bool
	Namespace string
	Name      string
}

func (k objKey) String() string {
	if k.Cluster {
		return KindCluster + " " + k.Name
	}
	return Kind + " " + k.Namespace + "/" + k.Name
}

// objState is what the watcher knows of one object.
type objState struct {
	spec     string       // the spec, as JSON, that file and err are of
	file     *policy.File // nil when the spec was refused
	err      string       // why it was refused, at its field path
	good     *policy.File // the last version the gateway accepted
	accepted bool         // the current spec is in force
}

// NewWatcher makes a watcher; Start starts it.
func NewWatcher(opts Options) *Watcher {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 10 * time.Second
	}
	w := &Watcher{opts: opts, log: opts.Log, kick: make(chan struct{}, 1), done: make(chan struct{}), synced: make(chan struct{}),
		state: map[objKey]*objState{}}
	w.anp = informer(opts.Client, PolicyResource)
	w.canp = informer(opts.Client, ClusterPolicyResource)
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.poke() },
		UpdateFunc: func(any, any) { w.poke() },
		DeleteFunc: func(any) { w.poke() },
	}
	_, _ = w.anp.AddEventHandler(h)
	_, _ = w.canp.AddEventHandler(h)
	return w
}

// informer lists and watches r in every namespace, as unstructured
// objects. It is built on the dynamic client directly: client-go's
// dynamicinformer and typed clients pull in every built-in API type, which
// would double clawnetd's size and idle memory on every host, Kubernetes
// or not.
func informer(c dynamic.Interface, r schema.GroupVersionResource) cache.SharedIndexInformer {
	ri := c.Resource(r)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return ri.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ri.Watch(ctx, o)
		},
	}
	// As dynamicinformer does: the client says whether it can stream a
	// list (a real API server can; the fake client of the tests cannot).
	return cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, c),
		&unstructured.Unstructured{}, cache.SharedIndexInformerOptions{ObjectDescription: r.String()})
}

func (w *Watcher) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Start starts watching and waits, at most wait, until both kinds are
// listed and the gateway has their policies (so that agents restored after
// a restart find theirs). It returns an error if that takes longer, but
// the watcher goes on trying, and keeps the gateway in step once it can,
// until ctx ends; Wait waits for that.
func (w *Watcher) Start(ctx context.Context, wait time.Duration) error {
	for _, inf := range []cache.SharedIndexInformer{w.anp, w.canp} {
		w.runs.Add(1)
		go func() {
			defer w.runs.Done()
			inf.Run(ctx.Done())
		}()
	}
	go w.run(ctx)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.synced:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return fmt.Errorf("%s and %s not listed within %v (are the CRDs in deploy/kubernetes/crds applied, and may this node's account list them?); still trying",
			PolicyResource.Resource, ClusterPolicyResource.Resource, wait)
	}
}

// Wait waits for the watcher started by Start to stop.
func (w *Watcher) Wait() { <-w.done }

// debounce is how long the watcher waits after a change before it acts,
// so that a burst of changes (kubectl apply -f of a directory) is one.
const debounce = 100 * time.Millisecond

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	defer w.runs.Wait() // the informers stop with ctx
	if !cache.WaitForCacheSync(ctx.Done(), w.anp.HasSynced, w.canp.HasSynced) {
		return
	}
	w.apply(ctx)
	close(w.synced)
	refresh := time.NewTicker(w.opts.Refresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(debounce):
			}
		case <-refresh.C:
		}
		w.apply(ctx)
	}
}

// apply sets the gateway's kubernetes source from the objects as listed
// now and writes their status. The watcher calls it after every change
// and every Refresh.
func (w *Watcher) apply(ctx context.Context) {
	objs := map[objKey]*unstructured.Unstructured{}
	for _, inf := range []cache.SharedIndexInformer{w.anp, w.canp} {
		for _, o := range inf.GetStore().List() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			objs[objKey{Cluster: inf == w.canp, Namespace: u.GetNamespace(), Name: u.GetName()}] = u
		}
	}
	keys := make([]objKey, 0, len(objs))
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })

	w.mu.Lock()
	var src gateway.PolicySource
	for k := range w.state {
		if _, ok := objs[k]; !ok {
			delete(w.state, k) // deleted: its policy goes with it
		}
	}
	for _, k := range keys {
		st := w.parse(k, objs[k])
		f := st.file
		if f == nil {
			f = st.good // refused: the last good version stays in force
		}
		if f == nil {
			continue
		}
		if k.Cluster {
			src.Denies = append(src.Denies, f)
		} else {
			src.Policies = append(src.Policies, f)
		}
	}
	res, errs := w.opts.Gateway.SetPolicies(Source, src)
	for _, k := range keys {
		st := w.state[k]
		if st.file == nil {
			st.accepted = false
			continue
		}
		var err error
		if k.Cluster {
			err = errs.Denies[st.file.Name]
		} else {
			err = errs.Policies[st.file.Name]
		}
		if err != nil {
			st.err = specError(st.file, err)
			st.accepted = false
			continue
		}
		st.err, st.accepted, st.good = "", true, st.file
	}
	w.mu.Unlock()
	if len(res.Changed) > 0 {
		w.log.Info("policies from the API server applied", "changed", res.Changed, "revoked", res.Revoked)
	}
	w.writeStatus(ctx, keys, objs)
}

// parse returns k's state for obj, parsing its spec if it changed.
// w.mu is held.
func (w *Watcher) parse(k objKey, obj *unstructured.Unstructured) *objState {
	spec, _, _ := unstructured.NestedMap(obj.Object, "spec")
	raw, _ := json.Marshal(spec)
	st := w.state[k]
	if st == nil {
		st = &objState{}
		w.state[k] = st
	}
	if st.spec == string(raw) && (st.file != nil || st.err != "") {
		return st
	}
	st.spec = string(raw)
	ns := k.Namespace
	if k.Cluster {
		ns = ""
	}
	f, err := policyFile(ns, k.Name, spec)
	st.file, st.err = f, ""
	if err != nil {
		st.err = err.Error()
		w.log.Warn("policy object refused", "object", k.String(), "error", st.err, "last_good_in_force", st.good != nil)
	}
	return st
}

// Lookup says whether the AgentNetworkPolicy name exists in namespace ns
// and, if it is not in force, why.
func (w *Watcher) Lookup(ns, name string) (exists bool, refused string) {
	if _, ok, _ := w.anp.GetStore().GetByKey(ns + "/" + name); !ok {
		return false, ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.state[objKey{Namespace: ns, Name: name}]
	switch {
	case st == nil:
		return true, "" // not synced yet: the gateway says whether it knows it
	case st.good == nil && !st.accepted:
		return true, st.err
	}
	return true, ""
}

// NodeStatus is one node's view of an object, under status.nodes.
type NodeStatus struct {
	Name     string `json:"name"`
	Accepted bool   `json:"accepted"`
	Agents   int64  `json:"agents"`
	Message  string `json:"message,omitempty"`
}

// writeStatus brings each object's status up to date with this node's
// view: the Accepted condition and error, this node's entry in nodes, and
// agents, the sum over the nodes.
func (w *Watcher) writeStatus(ctx context.Context, keys []objKey, objs map[objKey]*unstructured.Unstructured) {
	counts := map[string]int64{}
	var all int64
	for _, a := range w.opts.Gateway.Agents() {
		counts[a.Policy]++
		all++
	}
	for _, k := range keys {
		w.mu.Lock()
		st := *w.state[k]
		w.mu.Unlock()
		ns := NodeStatus{Name: w.opts.Node, Accepted: st.accepted}
		if k.Cluster {
			if st.accepted || st.good != nil {
				ns.Agents = all // its denies apply to every agent here
			}
		} else {
			ns.Agents = counts[PolicyName(k.Namespace, k.Name)]
		}
		if !st.accepted {
			ns.Message = st.err
			if st.good != nil {
				ns.Message += "; the last accepted version stays in force"
			}
		}
		if err := w.updateStatus(ctx, k, objs[k], ns); err != nil && ctx.Err() == nil {
			w.log.Warn("writing status", "object", k.String(), "error", err)
		}
	}
}

func (w *Watcher) resource(k objKey) dynamic.ResourceInterface {
	if k.Cluster {
		return w.opts.Client.Resource(ClusterPolicyResource)
	}
	return w.opts.Client.Resource(PolicyResource).Namespace(k.Namespace)
}

// updateStatus writes ns into obj's status if it changes anything,
// reading the object again when someone else (another node) wrote first.
func (w *Watcher) updateStatus(ctx context.Context, k objKey, obj *unstructured.Unstructured, ns NodeStatus) error {
	first := true
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		if !first {
			var err error
			obj, err = w.resource(k).Get(ctx, k.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		first = false
		next, changed := withNodeStatus(obj, ns, time.Now())
		if !changed {
			return nil
		}
		_, err := w.resource(k).UpdateStatus(ctx, next, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// withNodeStatus returns a copy of obj whose status holds ns as its node
// entry, and reports whether that changed anything.
func withNodeStatus(obj *unstructured.Unstructured, ns NodeStatus, now time.Time) (*unstructured.Unstructured, bool) {
	next := obj.DeepCopy()
	status, _, _ := unstructured.NestedMap(next.Object, "status")
	if status == nil {
		status = map[string]any{}
	}
	var nodes []NodeStatus
	if raw, ok := status["nodes"]; ok {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &nodes)
	}
	found := false
	for i := range nodes {
		if nodes[i].Name == ns.Name {
			nodes[i], found = ns, true
		}
	}
	if !found {
		nodes = append(nodes, ns)
		sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	}
	var agents int64
	for _, n := range nodes {
		agents += n.Agents
	}
	cond := map[string]any{"type": "Accepted", "status": "True", "reason": "Accepted",
		"message": "in force", "observedGeneration": obj.GetGeneration()}
	errMsg := ""
	if !ns.Accepted {
		cond["status"], cond["reason"], cond["message"] = "False", "Invalid", ns.Message
		errMsg = ns.Message
	}
	var oldCond map[string]any
	if cs, ok := status["conditions"].([]any); ok {
		for _, c := range cs {
			if m, ok := c.(map[string]any); ok && m["type"] == "Accepted" {
				oldCond = m
			}
		}
	}
	cond["lastTransitionTime"] = now.UTC().Format(time.RFC3339)
	if oldCond != nil && oldCond["status"] == cond["status"] {
		cond["lastTransitionTime"] = oldCond["lastTransitionTime"]
	}
	nodesJSON := make([]any, len(nodes))
	for i, n := range nodes {
		m := map[string]any{"name": n.Name, "accepted": n.Accepted, "agents": n.Agents}
		if n.Message != "" {
			m["message"] = n.Message
		}
		nodesJSON[i] = m
	}
	want := map[string]any{"agents": agents, "conditions": []any{cond}, "nodes": nodesJSON}
	if errMsg != "" {
		want["error"] = errMsg
	}
	if jsonEqual(status, want) {
		return obj, false
	}
	next.Object["status"] = want
	return next, true
}

// jsonEqual compares two JSON-like values as JSON (int64 and float64 of
// the same number are equal).
func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}
