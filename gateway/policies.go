package gateway

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

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

	mu   sync.Mutex                // serialises reloads
	good map[string]policy.Decider // last good policy per file; guarded by mu
	base policy.Decider            // the built-in default; guarded by mu
}

func newPolicyStore(cfg *Config, log hclog.Logger) (*policyStore, error) {
	opts := policy.Options{TreatAsPublic: cfg.TreatAsPublic}
	def, err := policy.Default(cfg.LLMProvider, cfg.MCPServers, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: built-in policy from llm_provider and mcp_servers: %w", cfg.path, err)
	}
	s := &policyStore{dir: cfg.PolicyDir, opts: opts, log: log, good: map[string]policy.Decider{}, base: def}
	if errs := s.Reload(); len(errs) > 0 {
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
// any) stays in force.
func (s *policyStore) Reload() []error {
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
	}
	next := map[string]policy.Decider{}
	for _, f := range files {
		p, err := s.load(f)
		if err != nil {
			errs = append(errs, err)
			if old, ok := s.good[f]; ok {
				s.log.Warn("policy file refused, last good version stays in force", "file", f, "error", err)
				next[f] = old
			}
			continue
		}
		next[f] = p
	}
	set := policySet{s.base.Name(): s.base}
	byName := map[string]string{}
	for f, p := range next {
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
	s.cur.Store(&set)
	return errs
}

func (s *policyStore) load(file string) (policy.Decider, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	f, err := policy.Parse(file, data)
	if err != nil {
		return nil, err
	}
	return policy.Compile(f, s.opts)
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
