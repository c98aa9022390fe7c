#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (default 10s), one
# at a time: `go test -fuzz` takes one target per run. A crash fails the run
# and leaves its input in the package's testdata/fuzz/ for a regression test.
# Minimisation is off: the netstack's coverage varies from run to run (it is
# concurrent), and the fuzzer would spend the time minimising inputs whose
# new coverage it cannot reproduce.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
pkgs=$(go list ./... | grep -v '/test\($\|/\)')
for pkg in $pkgs; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
	for t in $targets; do
		echo "fuzz $pkg $t ($fuzztime)"
		ok=0
		for try in 1 2; do
			if go test -run='^$' -fuzz="^${t}\$" -fuzztime="$fuzztime" -fuzzminimizetime=0 "$pkg" >/tmp/fuzz.$$.log 2>&1; then
				ok=1
				break
			fi
			# The fuzzer itself sometimes reports its own time running
			# out as "context deadline exceeded" with no input found:
			# that is not a crash; anything else is.
			if grep -q 'Failing input written to' /tmp/fuzz.$$.log || ! grep -q 'context deadline exceeded' /tmp/fuzz.$$.log; then
				break
			fi
			echo "fuzz $pkg $t: the fuzzer's deadline error with no failing input; again"
		done
		if [ "$ok" != 1 ]; then
			cat /tmp/fuzz.$$.log
			rm -f /tmp/fuzz.$$.log
			exit 1
		fi
		tail -n 1 /tmp/fuzz.$$.log
	done
done
rm -f /tmp/fuzz.$$.log
