package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/policy"
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
	existing, err := existingPolicy(file)
	if err != nil {
		return "", err
	}
	gen, err := generatePolicy(e, o.AgentConfig, policygen.GenerateOptions{Name: name, Existing: existing})
	if err != nil {
		return "", err
	}
	// Generate writes what parses and compiles; a bad name is the one way
	// to fail here, and it is better told before the file is written.
	if f, errs := policy.ParseAll(file, gen); len(errs) > 0 {
		return "", usageError{fmt.Errorf("the policy for --agent-config cannot be named %q: %v", name, errs[0])}
	} else if _, err := policy.Compile(f, policy.Options{}); err != nil {
		return "", err
	}
	old, err := os.ReadFile(file)
	switch {
	case err == nil && policygen.Equivalent(old, gen):
		fmt.Fprintf(e.stderr, "clawnet: %s is up to date with the agent's configuration\n", file)
	case err == nil:
		fmt.Fprint(e.stderr, policygen.Diff(file, old, "generated", gen))
		return "", fmt.Errorf("%s already exists and differs from what the agent's configuration calls for (above): "+
			"review it, then remove it or update it with clawnet policy generate ... --out %s, or pick another --policy", file, file)
	case errors.Is(err, os.ErrNotExist):
		if err := os.WriteFile(file, gen, 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(e.stderr, "clawnet: wrote %s from the agent's configuration\n", file)
	default:
		return "", err
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
