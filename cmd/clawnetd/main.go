// Command clawnetd is the clawnet gateway daemon. It is the wiring around
// package gateway: it parses flags and the config file, sets up logging,
// connects to a container engine if one answers, installs the signals
// (SIGINT and SIGTERM stop it, SIGHUP reloads the policy files, as an edit
// in policy_dir does, SIGUSR1 reopens the audit log), with an API server
// (--kubeconfig, or in a pod) watches the policy objects and answers pods'
// policies from it (package kube), attaches again what the last clawnetd
// had attached, and serves the control API, and the metrics on
// metrics.listen if set, until told to stop. Everything the gateway does lives
// in package gateway; nothing here decides a flow.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/internal/version"
)

// Exit codes scripts can rely on (the same as clawnet's).
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError marks errors in how the daemon was called.
type usageError struct{ error }

func main() {
	os.Exit(exitCode(run(context.Background(), os.Args[1:], os.Stderr), os.Stderr))
}

// exitCode prints err, if any, as one line and returns the exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "clawnetd:", err)
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return exitError
}

// run is clawnetd: it serves until ctx ends or SIGINT or SIGTERM arrives.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil || f == nil {
		return err
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name: "clawnetd", Output: stderr, JSONFormat: f.logFormat == "json",
		Level: hclog.LevelFromString(f.logLevel),
	})
	cfg, err := loadConfig(f)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: attaching agents needs CAP_NET_ADMIN and CAP_SYS_ADMIN")
	}
	audit, err := gateway.OpenAudit(cfg.AuditLog, log.Named("audit"))
	if err != nil {
		return err
	}
	defer audit.Close()
	k, err := connectKube(f, log)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, audit, k)
}

// serve builds the gateway and its container engine wiring, and serves the
// control API on cfg.Socket until ctx ends or a stop signal arrives.
func serve(ctx context.Context, cfg *gateway.Config, log hclog.Logger, audit *gateway.Audit, k *kubeWiring) error {
	gw4, _ := cfg.Network.GatewayAddrs()
	eng := connectEngine(log, gw4)
	defer eng.close()
	opts := gateway.Options{Config: cfg, Log: log, Audit: audit, StateDir: cfg.StateDir}
	eng.options(&opts, gw4)
	k.options(&opts)
	g, err := gateway.New(opts)
	if err != nil {
		return err
	}
	defer g.Close()
	l, err := gateway.ListenControl(cfg.Socket)
	if err != nil {
		return err
	}
	defer os.Remove(cfg.Socket)
	// The policies of the API server, then what the last clawnetd had
	// attached (perhaps under them), before anything else attaches.
	defer k.start(ctx, g)()
	g.Restore(ctx)
	defer eng.follow(ctx, g)()

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer reloadOnHUP(ctx, g)()
	if stopWatch, err := g.WatchPolicies(); err != nil {
		log.Warn("policy files are not watched: reload them with clawnet reload or SIGHUP", "error", err)
	} else {
		defer stopWatch()
	}
	defer reopenOnUSR1(ctx, audit)()
	stopMetrics, err := serveMetrics(ctx, cfg.Metrics.Listen, log, g)
	if err != nil {
		return err
	}
	defer stopMetrics()

	log.Info("clawnetd started", "version", version.Version, "socket", cfg.Socket, "policies", g.Policies(),
		"default_policy", cfg.DefaultPolicy, "audit_log", cfg.AuditLog, "metrics_listen", cfg.Metrics.Listen)
	err = g.Serve(ctx, l)
	log.Info("clawnetd stopping")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// reloadOnHUP reloads the policy files on every SIGHUP until ctx ends. The
// function it returns stops listening for the signal.
func reloadOnHUP(ctx context.Context, g *gateway.Gateway) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
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
	return func() { signal.Stop(hup) }
}

// reopenOnUSR1 reopens the audit log on every SIGUSR1 until ctx ends, for
// logrotate's postrotate. The function it returns stops listening for the
// signal.
func reopenOnUSR1(ctx context.Context, audit *gateway.Audit) (stop func()) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				_ = audit.Reopen() // a failure is logged; the old file stays in use
			}
		}
	}()
	return func() { signal.Stop(usr1) }
}

// serveMetrics serves the gateway's metrics on the TCP address addr, if
// one is set, until ctx ends or the function it returns is called (which
// waits for the server to stop).
func serveMetrics(ctx context.Context, addr string, log hclog.Logger, g *gateway.Gateway) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.ServeMetrics(ctx, l); err != nil {
			log.Error("metrics listener stopped", "listen", addr, "error", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

// flags are clawnetd's command line.
type flags struct {
	config, socket, logFormat, logLevel string
	kubeconfig, nodeName                string
}

const usage = "usage: clawnetd [--config FILE] [--socket PATH] [--log-format text|json] [--kubeconfig FILE] [--node-name NAME]"

// parseFlags parses args. It returns nil flags and no error when it has
// already answered (--help, --version).
func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	var f flags
	fs := flag.NewFlagSet("clawnetd", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, by exitCode
	fs.StringVar(&f.config, "config", "", "config file (YAML); embedded defaults when empty")
	fs.StringVar(&f.socket, "socket", "", "control socket path (overrides the config and "+control.SocketEnv+")")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error, off")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "watch policy objects and read pods' policies from this cluster (in a pod: its service account, without this flag)")
	fs.StringVar(&f.nodeName, "node-name", "", "this node's name in the cluster (default $NODE_NAME, else the host name)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stderr, usage)
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return nil, nil
	case err != nil:
		return nil, usageError{err}
	case fs.NArg() > 0:
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	case *showVersion:
		fmt.Fprintln(stderr, "clawnetd", version.Version)
		return nil, nil
	case f.logFormat != "text" && f.logFormat != "json":
		return nil, usageError{fmt.Errorf("--log-format must be text or json, not %q", f.logFormat)}
	case hclog.LevelFromString(f.logLevel) == hclog.NoLevel:
		return nil, usageError{fmt.Errorf("--log-level must be trace, debug, info, warn, error or off, not %q", f.logLevel)}
	}
	return &f, nil
}

// loadConfig applies, in order, the defaults, the config file, $CLAWNET_SOCKET
// and --socket.
func loadConfig(f *flags) (*gateway.Config, error) {
	cfg := gateway.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = gateway.LoadConfig(f.config); err != nil {
			return nil, err
		}
	}
	if env := os.Getenv(control.SocketEnv); env != "" {
		cfg.Socket = env
	}
	if f.socket != "" {
		cfg.Socket = f.socket
	}
	return cfg, nil
}
