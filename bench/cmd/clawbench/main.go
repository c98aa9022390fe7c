// Command clawbench measures clawnet side by side with kernel veth,
// slirp4netns and pasta, in namespaces it makes itself, and, inbound
// through a published port, with `docker run -p`; it writes results.json,
// results.md, raw.json and chart.svg. Run it as root from the repository
// after `make build`:
//
//	clawbench [-quick | -smoke] [-out DIR] [-systems veth,slirp4netns,pasta,clawnet,docker] [-reps N]
//	          [-metrics KEY,...] [-bin DIR] [-pprof]
//
// -metrics runs only the tests that give those figures (the keys of
// results.json); -bin takes clawnetd and clawnet from another build, to
// compare two builds of the gateway run after run; -pprof saves CPU
// profiles of clawnetd over its tests (OUT/pprof).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/clawnet/clawnet/bench/internal/suite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "clawbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("clawbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		quick   = fs.Bool("quick", false, "shorter run (about 5 minutes)")
		smoke   = fs.Bool("smoke", false, "CI check that every system still runs; its figures mean little")
		out     = fs.String("out", "bench/out", "directory for the results")
		systems = fs.String("systems", "veth,slirp4netns,pasta,clawnet,docker", "systems to measure, comma-separated")
		reps    = fs.Int("reps", 0, "repetitions of every system (default: the mode's)")
		root    = fs.String("root", "", "repository root holding bin/ and bench/probe (default: found from the working directory)")
		redraw  = fs.String("chart", "", "measure nothing: redraw chart.svg beside this results.json")
		metrics = fs.String("metrics", "", "measure only the tests giving these figures, comma-separated keys of results.json (default: all)")
		bin     = fs.String("bin", "", "directory holding clawnetd and clawnet (default: ROOT/bin)")
		pprof   = fs.Bool("pprof", false, "save CPU profiles of clawnetd over each of its throughput, request/response and connect tests and the noisy-neighbour downloads, in OUT/pprof")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *redraw != "" {
		return suite.Redraw(*redraw, stdout)
	}
	mode := "full"
	switch {
	case *quick && *smoke:
		return errors.New("-quick and -smoke exclude each other")
	case *quick:
		mode = "quick"
	case *smoke:
		mode = "smoke"
	}
	cfg, err := suite.Preset(mode)
	if err != nil {
		return err
	}
	if cfg.Systems, err = suite.ParseSystems(*systems); err != nil {
		return fmt.Errorf("-systems: %w", err)
	}
	cfg.DockerOptional = dockerOptional(mode, fs)
	if *reps < 0 {
		return fmt.Errorf("-reps %d: want a positive count", *reps)
	}
	if *reps > 0 {
		cfg.Reps = *reps
	}
	if *metrics != "" {
		if err := cfg.SelectMetrics(*metrics); err != nil {
			return fmt.Errorf("-metrics: %w", err)
		}
	}
	if cfg.Root = *root; cfg.Root == "" {
		if cfg.Root, err = findRoot(); err != nil {
			return err
		}
	}
	if cfg.OutDir, err = filepath.Abs(*out); err != nil {
		return err
	}
	if cfg.Bin = *bin; cfg.Bin == "" {
		cfg.Bin = filepath.Join(cfg.Root, "bin")
	}
	if cfg.Bin, err = filepath.Abs(cfg.Bin); err != nil {
		return err
	}
	cfg.Profile = *pprof
	cfg.Log = stderr
	return suite.Run(ctx, cfg, stdout)
}

// dockerOptional reports whether the run may go on without docker when no
// engine answers: the smoke run of the default systems only. Named with
// -systems, or in any other run, docker fails instead.
func dockerOptional(mode string, fs *flag.FlagSet) bool {
	named := false
	fs.Visit(func(f *flag.Flag) { named = named || f.Name == "systems" })
	return mode == "smoke" && !named
}

// findRoot walks up from the working directory to the module's go.mod.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the repository or pass -root")
		}
		dir = parent
	}
}
