package gateway

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/internal/version"
)

// Run is clawnetd: it parses args, builds the gateway and serves until ctx
// ends or a SIGINT/SIGTERM arrives. SIGHUP reloads the policy files.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("clawnetd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (YAML); embedded defaults when empty")
	socket := fs.String("socket", "", "control socket path (overrides the config and "+control.SocketEnv+")")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stderr, "clawnetd", version.Version)
		return nil
	}
	if *logFormat != "text" && *logFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", *logFormat)
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name: "clawnetd", Output: stderr, JSONFormat: *logFormat == "json",
		Level: hclog.LevelFromString(*logLevel),
	})

	cfg := DefaultConfig()
	if *cfgPath != "" {
		var err error
		if cfg, err = LoadConfig(*cfgPath); err != nil {
			return err
		}
	}
	if env := os.Getenv(control.SocketEnv); env != "" {
		cfg.Socket = env
	}
	if *socket != "" {
		cfg.Socket = *socket
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: attaching agents needs CAP_NET_ADMIN and CAP_SYS_ADMIN")
	}

	audit, err := OpenAudit(cfg.AuditLog)
	if err != nil {
		return err
	}
	defer audit.Close()
	g, err := New(cfg, log, audit)
	if err != nil {
		return err
	}
	defer g.Close()
	defer g.followContainers(ctx, log)()
	l, err := ListenControl(cfg.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = g.ReloadPolicies()
			}
		}
	}()

	log.Info("clawnetd started", "version", version.Version, "socket", cfg.Socket, "policies", g.policies.Names(),
		"default_policy", cfg.DefaultPolicy, "audit_log", cfg.AuditLog)
	err = g.serveControl(ctx, l)
	log.Info("clawnetd stopping")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
