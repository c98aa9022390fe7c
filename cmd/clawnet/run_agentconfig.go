package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/policygen"
)

// defaultPolicyDir is clawnetd's policy_dir when its config names none.
const defaultPolicyDir = "/etc/clawnet/policies"

// agentConfigPolicy is the first step of clawnet run --agent-config: it
// generates the policy the agent's configuration files call for, named by
// --policy or else --name, writes it to DIR/NAME.yaml (DIR: --policy-dir,
// else clawnetd's default policy_dir), and has the daemon reload, so the
// attach that follows finds it. It never overwrites a policy file that says
// something else: the files may have been edited (a pending rule approved),
// or be another agent's; it shows the difference and stops instead. It
// returns the policy's name.
func agentConfigPolicy(ctx context.Context, e *env, o container.RunOptions) (string, error) {
	name := o.Policy
	if name == "" {
		name = o.Name
	}
	if name == "" {
		return "", usageError{errors.New("--agent-config needs --name or --policy: the generated policy is named after it")}
	}
	dir := o.PolicyDir
	if dir == "" {
		dir = defaultPolicyDir
	}
	file := filepath.Join(dir, name+".yaml")
	p, err := policygen.Provision(policygen.ProvisionArgs{
		File:     file,
		Files:    o.AgentConfig,
		Options:  configOptions(),
		Generate: policygen.GenerateOptions{Name: name},
		WriteNew: func(file string, data []byte) error { return os.WriteFile(file, data, 0o644) },
	})
	for _, w := range p.Warnings {
		fmt.Fprintln(e.stderr, "warning:", w)
	}
	var ne *policygen.NameError
	if errors.As(err, &ne) {
		return "", usageError{fmt.Errorf("the policy for --agent-config cannot be named %q: %v", name, ne.Err)}
	}
	if err != nil {
		return "", err
	}
	switch p.State {
	case policygen.UpToDate:
		fmt.Fprintf(e.stderr, "clawnet: %s is up to date with the agent's configuration\n", file)
	case policygen.Differs:
		fmt.Fprint(e.stderr, policygen.Diff(file, p.Old, "generated", p.Gen))
		return "", fmt.Errorf("%s already exists and differs from what the agent's configuration calls for (above): "+
			"review it, then remove it or update it with clawnet policy generate ... --out %s, or pick another --policy", file, file)
	case policygen.Written:
		fmt.Fprintf(e.stderr, "clawnet: wrote %s from the agent's configuration\n", file)
	}
	res, err := e.client().Reload(ctx)
	if err != nil {
		if !slices.Contains(res.Policies, name) {
			return "", fmt.Errorf("reload after writing %s: %w", file, err)
		}
		// Another file of policy_dir was refused; this one is in force.
		fmt.Fprintf(e.stderr, "warning: reload: %v\n", err)
	}
	if !slices.Contains(res.Policies, name) {
		return "", fmt.Errorf("wrote %s, but clawnetd did not load a policy %q: is %s its policy_dir? (give it with --policy-dir)", file, name, dir)
	}
	return name, nil
}
