package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

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
	// Relative names have no meaning for the daemon: the label names
	// absolute paths, and the user's own files are not project scope.
	p, err := policygen.Provision(policygen.ProvisionArgs{
		File:     file,
		Files:    files,
		Options:  policygen.Options{ReadFile: os.ReadFile, Dir: "/"},
		Generate: policygen.GenerateOptions{Name: name},
		WriteNew: writeNew,
	})
	var ne *policygen.NameError
	if errors.As(err, &ne) {
		return "", fmt.Errorf("the agent's name %q cannot name a policy: %v", agent, ne.Err)
	}
	if err != nil {
		return "", err
	}
	if p.State == policygen.Differs {
		return "", fmt.Errorf("%s already exists and says something else than %v call for: review it with clawnet policy generate --diff %s, then remove or update it", file, files, file)
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
