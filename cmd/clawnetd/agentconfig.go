package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/clawnet/clawnet/policy"
	"github.com/clawnet/clawnet/policygen"
)

// configPolicy makes the policy of a container whose io.clawnet.agent-config
// label names its agent's configuration files (container.WatcherConfig.
// ConfigPolicy): it generates it as `clawnet policy generate` does, named
// after the agent, writes it to policy_dir/AGENT.yaml and reloads. As
// `clawnet run --agent-config` does, it uses a file of that name that says
// the same (approvals of pending rules kept while their files are
// unchanged) and never overwrites one that says something else.
func (a *attacher) configPolicy(_ context.Context, agent string, files []string) (string, error) {
	if a.policyDir == "" {
		return "", errors.New("clawnetd has no policy_dir to write the generated policy to")
	}
	name := agent
	file := filepath.Join(a.policyDir, name+".yaml")
	old, err := os.ReadFile(file)
	var existing *policy.File
	switch {
	case err == nil:
		if existing, err = policy.Parse(file, old); err != nil {
			return "", err
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	// Relative names have no meaning for the daemon: the label names
	// absolute paths, and the user's own files are not project scope.
	opts := policygen.Options{ReadFile: os.ReadFile, Dir: "/"}
	gen, _, err := policygen.FromFiles(files, opts, policygen.GenerateOptions{Name: name, Existing: existing})
	if err != nil {
		return "", err
	}
	if f, errs := policy.ParseAll(file, gen); len(errs) > 0 {
		return "", fmt.Errorf("the agent's name %q cannot name a policy: %v", agent, errs[0])
	} else if _, err := policy.Compile(f, policy.Options{}); err != nil {
		return "", err
	}
	switch {
	case existing != nil && policygen.Equivalent(old, gen):
	case existing != nil:
		return "", fmt.Errorf("%s already exists and says something else than %v call for: review it with clawnet policy generate --diff %s, then remove or update it", file, files, file)
	default:
		if err := writeNew(file, gen); err != nil {
			return "", err
		}
	}
	res, err := a.g.Reload()
	if res == nil || !slices.Contains(res.Policies, name) {
		if err == nil {
			err = errors.New("not loaded")
		}
		return "", fmt.Errorf("policy %s generated in %s: %w", name, file, err)
	}
	return name, nil
}

// writeNew writes data to file, which must not exist, whole: it is
// written under a dot name (which a policy_dir reload skips) and renamed.
func writeNew(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// A link, unlike a rename, fails when file appeared meanwhile.
		err = os.Link(name, file)
	}
	os.Remove(name)
	return err
}
