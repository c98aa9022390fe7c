package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/policy"
	"github.com/clawnet/clawnet/policygen"
)

// exitStale: policy generate --check found the policy on disk out of date.
const exitStale = 3

func newPolicyGenerateCmd(e *env) *cobra.Command {
	var out, diff, check string
	var o policygen.GenerateOptions
	cmd := &cobra.Command{
		Use:   "generate FILE... [--out FILE] [--diff FILE] [--check FILE]",
		Short: "Write a policy from the agent's own configuration files",
		Long: `generate reads an agent's configuration files and writes the policy they
call for: OpenClaw's openclaw.json (with its $include files), Claude Code's
~/.claude.json and a repository's .mcp.json, Claude Desktop's
claude_desktop_config.json, Cursor's .cursor/mcp.json, VS Code's
.vscode/mcp.json, Codex's config.toml and Gemini CLI's settings.json.
Several files merge into one policy. Every rule says where it came from.

Package downloads of MCP launchers (npx, uvx, docker run) are written as
setup: rules, which apply only in the agent's setup phase (until clawnet
policy phase AGENT run, or attach/run --setup-timeout). Rules from a
repository's files (.mcp.json, .cursor/mcp.json, .vscode/mcp.json) are
written as pending: rules, each with the sha256 of its file, which apply
only once clawnet policy approve moves them into egress (or with
--approve-project, after review); a launcher's download among them is
pending with phase: setup, and approval moves it into setup:. Against an existing file (--out, --diff,
--check), an approved rule stays approved while its file's sha256 is the
same, and goes back to pending when the file changed. Secrets in the files
are never copied. --diff FILE shows what would change in FILE; --check FILE
exits 3 when FILE says something else than what would be generated,
whatever its comments and layout (for CI).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("generate takes one or more agent configuration files")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Existing, err = existingPolicy(check + diff + out); err != nil {
				return err
			}
			gen, err := generatePolicy(e, args, o)
			if err != nil {
				return err
			}
			switch {
			case check != "":
				old, err := os.ReadFile(check)
				if err != nil {
					return err
				}
				if !policygen.Equivalent(old, gen) {
					fmt.Fprint(e.stderr, policygen.Diff(check, old, "generated", gen))
					fmt.Fprintf(e.stderr, "clawnet: %s is out of date with its agent's configuration: run clawnet policy generate ... --out %s\n", check, check)
					return exitStatus(exitStale)
				}
				fmt.Fprintf(e.stdout, "%s: up to date\n", check)
			case diff != "":
				old, err := os.ReadFile(diff)
				if err != nil {
					return err
				}
				fmt.Fprint(e.stdout, policygen.Diff(diff, old, "generated", gen))
			case out != "":
				if err := os.WriteFile(out, gen, 0o644); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "wrote %s\n", out)
			default:
				_, err = e.stdout.Write(gen)
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the policy to FILE instead of standard output")
	cmd.Flags().StringVar(&diff, "diff", "", "show what the policy would change in FILE")
	cmd.Flags().StringVar(&check, "check", "", "exit 3 when FILE differs from what would be generated")
	cmd.Flags().StringVar(&o.Name, "name", "", "the policy's name (default: from the first file's name)")
	cmd.Flags().BoolVar(&o.Audit, "audit", false, "write enforcement: audit (allow and log what the policy would deny)")
	cmd.Flags().BoolVar(&o.ApproveProject, "approve-project", false, "write rules from a repository's files as approved egress rules, not pending (review them first)")
	cmd.MarkFlagsMutuallyExclusive("out", "diff", "check")
	return cmd
}

// existingPolicy reads the policy file a generation replaces, for the
// approvals it holds: nil when there is none yet. A file that is there but
// not a valid policy is refused, naming its line.
func existingPolicy(file string) (*policy.File, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return policy.Parse(file, data)
}

// generatePolicy reads the configuration files and writes their policy,
// with each warning on stderr.
func generatePolicy(e *env, files []string, o policygen.GenerateOptions) ([]byte, error) {
	gen, warnings, err := policygen.FromFiles(files, configOptions(), o)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintln(e.stderr, "warning:", w)
	}
	return gen, nil
}

// configOptions read the agent's configuration files from the disk, with
// relative names relative to the working directory.
func configOptions() policygen.Options {
	opts := policygen.Options{ReadFile: os.ReadFile}
	opts.Dir, _ = os.Getwd()
	opts.Home, _ = os.UserHomeDir()
	return opts
}
