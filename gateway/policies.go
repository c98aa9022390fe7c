package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/policy"
)

// policySet is an immutable name → policy map, swapped whole on reload.
type policySet map[string]policy.Decider

// policyStore holds the policies in force. Decisions read it without locks;
// a reload compiles every file, keeps the last good version of any file that
// fails, and swaps the set atomically.
type policyStore struct {
	dir  string
	opts policy.Options
	log  hclog.Logger

	cur atomic.Pointer[policySet]

	mu   sync.Mutex        // serialises reloads and what they apply
	good map[string]loaded // last good policy per file; guarded by mu
	base policy.Decider    // the built-in default; guarded by mu
}

// loaded is a policy file's last good version and the bytes it was
// compiled from. A reload that reads the same bytes keeps the same compiled
// policy, so a touch or an identical rewrite changes nothing for live flows.
type loaded struct {
	p   policy.Decider
	src []byte
}

func newPolicyStore(cfg *Config, log hclog.Logger) (*policyStore, error) {
	opts := policy.Options{TreatAsPublic: cfg.TreatAsPublic}
	def, err := policy.Default(cfg.LLMProvider, cfg.MCPServers, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: built-in policy from llm_provider and mcp_servers: %w", cfg.path, err)
	}
	s := &policyStore{dir: cfg.PolicyDir, opts: opts, log: log, good: map[string]loaded{}, base: def}
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
// any) stays in force. When the set is swapped, and before the next reload
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
	set := policySet{s.base.Name(): s.base}
	byName := map[string]string{}
	// In file order, so that of two files naming the same policy the same
	// one wins at every reload.
	for _, f := range files {
		l, ok := next[f]
		if !ok {
			continue
		}
		p := l.p
		if prev, dup := byName[p.Name()]; dup {
			errs = append(errs, fmt.Errorf("%s: policy %q is already defined in %s", f, p.Name(), prev))
			continue
		}
		if p.Name() == s.base.Name() {
			s.log.Info("policy file overrides the built-in policy", "file", f, "policy", p.Name())
		}
		byName[p.Name()] = f
		set[p.Name()] = p
	}
	s.good = next
	old := s.cur.Swap(&set)
	if apply != nil {
		apply(changedPolicies(old, &set))
	}
	return errs
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

// load compiles file, or returns its last good version when its bytes have
// not changed since.
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
	p, err := policy.Compile(f, s.opts)
	if err != nil {
		return loaded{}, err
	}
	return loaded{p: p, src: data}, nil
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
