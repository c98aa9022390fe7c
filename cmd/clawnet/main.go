// Command clawnet is the clawnet CLI: it attaches agents to the gateway and
// inspects policies.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/clawnet/clawnet/gateway/control"
)

// Exit codes scripts can rely on.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// env is what every subcommand gets: its streams and the daemon's client.
type env struct {
	stdout, stderr io.Writer
	socket         string
}

func (e *env) client() *control.Client { return control.NewClient(control.SocketPath(e.socket)) }

// usageError marks errors in how the command was called.
type usageError struct{ error }

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "clawnet",
		Short:         "Attach AI agents to the clawnet gateway and inspect their network policy",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.PersistentFlags().StringVar(&e.socket, "socket", "", "control socket of clawnetd (default $"+control.SocketEnv+" or "+control.DefaultSocket+")")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newAttachCmd(e), newDetachCmd(e), newPublishCmd(e), newUnpublishCmd(e), newLsCmd(e), newVersionCmd(e), newPolicyCmd(e), newStatusCmd(e), newReloadCmd(e), newRunCmd(e), newPauseCmd())
	return root
}

// run executes the CLI and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	root := newRoot(e)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var es exitStatus
		if errors.As(err, &es) {
			return int(es)
		}
		fmt.Fprintln(stderr, "clawnet:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
