package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/policy"
)

// policySet is an immutable name → policy map, swapped whole on reload.
type policySet map[string]policy.Decider

// policyStore holds the policies in force. Decisions read it without locks;
// a change (a reload of policy_dir, or a source such as the Kubernetes API
// server setting its policies) compiles what changed, keeps the last good
// version of anything that fails, and swaps the set atomically.
//
// Every policy is compiled with the overlay laid over it: the deny and
// ingress_deny rules of every source's tighten-only rule sets
// (PolicySource.Denies). Deny rules beat allow rules, so the overlay can
// close what a policy opens and never open anything.
type policyStore struct {
	dir  string
	opts policy.Options
	log  hclog.Logger

	cur atomic.Pointer[policySet]

	// mu serialises changes and what they apply; it guards the fields below.
	mu      sync.Mutex
	good    map[string]loaded         // last good policy per file
	sources map[string]*sourceState   // last good policies per non-file source
	base    *policy.File              // the built-in default
	overlay []*policy.File            // the tighten-only rule sets in force, in source order
	gen     uint64                    // counts changes of overlay
	built   map[*policy.File]compiled // each policy in force, compiled with the overlay of gen
}

// loaded is a policy file's last good version and the bytes it was
// parsed from. A reload that reads the same bytes keeps the same File, and
// so the same compiled policy: a touch or an identical rewrite changes
// nothing for live flows.
type loaded struct {
	f   *policy.File
	src []byte
}

// compiled is a policy compiled with the overlay of generation gen.
type compiled struct {
	gen uint64
	p   *policy.Policy
}

// sourceState is what a non-file source set last, as far as it was good.
type sourceState struct {
	policies map[string]*policy.File // by policy name
	denies   map[string]*policy.File // by rule set name
}

// PolicySource is the whole of what one source other than policy_dir (the
// Kubernetes API server, for instance) holds: Gateway.SetPolicies replaces
// the source's previous set with it.
type PolicySource struct {
	// Policies become policies in force under their File.Name. A name
	// must not be one that a policy file or another source defines.
	Policies []*policy.File
	// Denies are tighten-only rule sets: their deny and ingress_deny rules
	// are laid over every policy in force (those of files and the built-in
	// default included). A set with any allow rule (egress, ingress,
	// presets) is refused.
	Denies []*policy.File
}

// SourceErrors are the refusals of a SetPolicies, by the File.Name of each
// refused policy or rule set. Each refused one's last good version, if it
// had one, stays in force.
type SourceErrors struct {
	Policies map[string]error
	Denies   map[string]error
}

func (e SourceErrors) empty() bool { return len(e.Policies) == 0 && len(e.Denies) == 0 }

func newPolicyStore(cfg *Config, log hclog.Logger) (*policyStore, error) {
	opts := policy.Options{TreatAsPublic: cfg.TreatAsPublic}
	def, err := policy.DefaultFile(cfg.LLMProvider, cfg.MCPServers)
	if err == nil {
		_, err = policy.Compile(def, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: built-in policy from llm_provider and mcp_servers: %w", cfg.path, err)
	}
	s := &policyStore{dir: cfg.PolicyDir, opts: opts, log: log, good: map[string]loaded{},
		sources: map[string]*sourceState{}, base: def, built: map[*policy.File]compiled{}}
	if errs := s.Reload(nil); len(errs) > 0 {
		// At start there is no last good version to fall back on: a bad
		// file stops the daemon rather than leave agents on less than the
		// operator wrote.
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// Get returns the policy called name, or nil.
func (s *policyStore) Get(name string) policy.Decider {
	return (*s.cur.Load())[name]
}

// Names lists the policies in force.
func (s *policyStore) Names() []string {
	set := *s.cur.Load()
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Reload reads every *.yaml and *.yml in the policy directory. A file that
// fails to read, parse or compile is reported and its last good version (if
// any) stays in force. When the set is swapped, and before the next change
// can start, apply (if not nil) is called with the names of the policies
// that were added, removed or changed: a file whose bytes did not change
// keeps its compiled policy, so an unchanged policy is never among them.
func (s *policyStore) Reload(apply func(changed []string)) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	files, err := policyFiles(s.dir)
	if err != nil {
		errs = append(errs, err)
		files = nil
		// Keep everything as it was when the directory cannot be read.
		for f := range s.good {
			files = append(files, f)
		}
		sort.Strings(files)
	}
	next := map[string]loaded{}
	for _, f := range files {
		l, err := s.load(f)
		if err != nil {
			errs = append(errs, err)
			if old, ok := s.good[f]; ok {
				s.log.Warn("policy file refused, last good version stays in force", "file", f, "error", err)
				next[f] = old
			}
			continue
		}
		next[f] = l
	}
	s.good = next
	for _, c := range s.swap(apply) {
		errs = append(errs, c.err)
	}
	return errs
}

// Set replaces what source holds with src, as Reload does for policy_dir:
// a policy or rule set that does not compile is refused and its last good
// version (by name) stays in force; apply is called as by Reload. An empty
// src removes everything the source had.
func (s *policyStore) Set(source string, src PolicySource, apply func(changed []string)) SourceErrors {
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := SourceErrors{Policies: map[string]error{}, Denies: map[string]error{}}
	old := s.sources[source]
	if old == nil {
		old = &sourceState{}
	}
	next := &sourceState{policies: map[string]*policy.File{}, denies: map[string]*policy.File{}}
	for _, d := range src.Denies {
		if err := s.checkDenies(d); err != nil {
			errs.Denies[d.Name] = err
			if prev, ok := old.denies[d.Name]; ok {
				s.log.Warn("tighten-only rules refused, last good version stays in force", "source", source, "name", d.Name, "error", err)
				next.denies[d.Name] = prev
			}
			continue
		}
		if _, dup := next.denies[d.Name]; dup {
			errs.Denies[d.Name] = fmt.Errorf("%s: tighten-only rule set %q is set twice", source, d.Name)
			continue
		}
		next.denies[d.Name] = d
	}
	s.sources[source] = next
	s.setOverlay()
	for _, f := range src.Policies {
		if _, dup := next.policies[f.Name]; dup {
			errs.Policies[f.Name] = fmt.Errorf("%s: policy %q is set twice", source, f.Name)
			continue
		}
		if _, err := s.compile(f); err != nil {
			errs.Policies[f.Name] = err
			if prev, ok := old.policies[f.Name]; ok {
				s.log.Warn("policy refused, last good version stays in force", "source", source, "policy", f.Name, "error", err)
				next.policies[f.Name] = prev
			}
			continue
		}
		next.policies[f.Name] = f
	}
	for _, c := range s.swap(apply) {
		if c.source == source {
			errs.Policies[c.name] = c.err
		}
	}
	if len(src.Policies) == 0 && len(src.Denies) == 0 {
		delete(s.sources, source)
	}
	return errs
}

// checkDenies refuses a tighten-only rule set that would allow anything,
// or whose rules do not compile.
func (s *policyStore) checkDenies(d *policy.File) error {
	if len(d.Egress) > 0 || len(d.Ingress) > 0 || len(d.Presets) > 0 || d.Enforcement == policy.AuditMode {
		return fmt.Errorf("%s: tighten-only rules may only deny: no egress, ingress, presets or enforcement: audit", d.Filename)
	}
	_, err := policy.Compile(d, s.opts)
	return err
}

// setOverlay gathers the tighten-only rule sets of every source, in the
// order of source and set names, and counts a change of them.
func (s *policyStore) setOverlay() {
	var next []*policy.File
	for _, src := range sortedKeys(s.sources) {
		st := s.sources[src]
		for _, n := range sortedKeys(st.denies) {
			next = append(next, st.denies[n])
		}
	}
	if !slices.Equal(next, s.overlay) {
		s.overlay = next
		s.gen++
	}
}

// compile compiles f with the overlay in force, or returns what it did
// when neither has changed since.
func (s *policyStore) compile(f *policy.File) (*policy.Policy, error) {
	if c, ok := s.built[f]; ok && c.gen == s.gen {
		return c.p, nil
	}
	p, err := policy.Compile(f.WithDenies(s.overlay...), s.opts)
	if err != nil {
		return nil, err
	}
	s.built[f] = compiled{gen: s.gen, p: p}
	return p, nil
}

// conflict is a policy that cannot be put in force.
type conflict struct {
	source, name string
	err          error
}

// swap builds the set in force from the built-in policy, the last good
// files (in file order, so that of two files naming the same policy the
// same one wins at every reload) and the sources (in name order), swaps it
// in and calls apply with what changed.
func (s *policyStore) swap(apply func(changed []string)) []conflict {
	var out []conflict
	set := policySet{}
	origin := map[string]string{}
	used := map[*policy.File]bool{}
	put := func(source string, f *policy.File) {
		name := f.Name
		if prev, dup := origin[name]; dup && !(prev == "built-in" && source == "") {
			where := f.Filename
			if source != "" {
				where = source
			}
			out = append(out, conflict{source, name, fmt.Errorf("%s: policy %q is already defined in %s", where, name, prev)})
			return
		}
		p, err := s.compile(f)
		if err != nil {
			// Only the overlay can make a good policy fail here; without
			// it the policy is not put in force: agents on it are denied.
			out = append(out, conflict{source, name, fmt.Errorf("%s: %w", f.Filename, err)})
			return
		}
		if source == "" && origin[name] == "built-in" {
			s.log.Info("policy file overrides the built-in policy", "file", f.Filename, "policy", name)
		}
		origin[name] = f.Filename
		if source != "" {
			origin[name] = source
		}
		set[name] = p
		used[f] = true
	}
	put("built-in", s.base)
	for _, file := range sortedKeys(s.good) {
		put("", s.good[file].f)
	}
	for _, src := range sortedKeys(s.sources) {
		st := s.sources[src]
		for _, n := range sortedKeys(st.policies) {
			put(src, st.policies[n])
		}
	}
	for f := range s.built {
		if !used[f] {
			delete(s.built, f)
		}
	}
	old := s.cur.Swap(&set)
	if apply != nil {
		apply(changedPolicies(old, &set))
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// changedPolicies names, in order, the policies that old and cur do not
// hold as the same compiled policy.
func changedPolicies(old, cur *policySet) []string {
	if old == nil {
		return nil // the first load: nothing was in force
	}
	var changed []string
	for n, p := range *cur {
		if (*old)[n] != p {
			changed = append(changed, n)
		}
	}
	for n := range *old {
		if _, ok := (*cur)[n]; !ok {
			changed = append(changed, n)
		}
	}
	sort.Strings(changed)
	return changed
}

// load parses and compiles file, or returns its last good version when
// its bytes have not changed since.
func (s *policyStore) load(file string) (loaded, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return loaded{}, fmt.Errorf("read policy: %w", err)
	}
	if old, ok := s.good[file]; ok && bytes.Equal(old.src, data) {
		return old, nil
	}
	f, err := policy.Parse(file, data)
	if err != nil {
		return loaded{}, err
	}
	if _, err := s.compile(f); err != nil {
		return loaded{}, err
	}
	return loaded{f: f, src: data}, nil
}

// SetPolicies replaces the policies and tighten-only rule sets of source
// (a name for a source other than policy_dir, such as "kubernetes") with
// src, and applies the change to live flows as Reload does: the flows of
// every agent whose policy changed are decided again and those now denied
// are closed, each with a revoke audit line. A policy or rule set that is
// refused keeps its last good version in force; the errors say which and
// why. The result says what was applied either way.
func (g *Gateway) SetPolicies(source string, src PolicySource) (*control.ReloadResult, SourceErrors) {
	res := &control.ReloadResult{}
	errs := g.policies.Set(source, src, func(changed []string) {
		res.Changed = changed
		res.Revoked = g.revoke(changed)
	})
	res.Policies = g.policies.Names()
	for n, e := range errs.Policies {
		g.log.Error("policy refused", "source", source, "policy", n, "error", e)
	}
	for n, e := range errs.Denies {
		g.log.Error("tighten-only rules refused", "source", source, "name", n, "error", e)
	}
	if len(res.Changed) > 0 || !errs.empty() {
		g.log.Info("policies set", "source", source, "policies", res.Policies, "changed", res.Changed,
			"errors", len(errs.Policies)+len(errs.Denies))
	}
	for _, a := range sortedKeys(res.Revoked) {
		g.log.Info("live flows revoked", "agent", a, "flows", res.Revoked[a])
	}
	return res, errs
}

func policyFiles(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read policy_dir: %w", err)
	}
	var files []string
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") {
			continue
		}
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			files = append(files, filepath.Join(dir, n))
		}
	}
	sort.Strings(files)
	return files, nil
}

// policyWatchDelay is how long policy_dir must stay quiet after a change
// before it is reloaded, so that an editor's save (write, rename) or a
// deployment of several files is one reload.
const policyWatchDelay = 200 * time.Millisecond

// WatchPolicies reloads the policies, as Reload does (revocations
// included), whenever something in policy_dir is created, written, removed
// or renamed, once the directory has been quiet for policyWatchDelay. A
// touch reloads nothing. The function it returns stops watching and waits
// for the watcher to end.
func (g *Gateway) WatchPolicies() (stop func(), err error) {
	dir := g.cfg.PolicyDir
	if dir == "" {
		return nil, errors.New("watch policy_dir: none is set")
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch policy_dir: %w", err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch policy_dir %s: %w", dir, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.watchPolicies(w)
	}()
	return func() {
		w.Close()
		<-done
	}, nil
}

// watchPolicies reloads after each quiet spell that follows a change, until
// w is closed.
func (g *Gateway) watchPolicies(w *fsnotify.Watcher) {
	log := g.log.Named("policy")
	quiet := time.NewTimer(policyWatchDelay)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue // attributes only: the bytes are the same
			}
			quiet.Reset(policyWatchDelay)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// Events may have been lost (a queue overflow): read
			// everything again rather than miss a change.
			log.Warn("watching policy_dir", "error", err)
			quiet.Reset(policyWatchDelay)
		case <-quiet.C:
			log.Debug("policy_dir changed, reloading")
			_, _ = g.Reload()
		}
	}
}
