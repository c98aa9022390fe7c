package main

import (
	"bytes"
	"context"
	"flag"
	"strings"
	"testing"
)

func TestRunRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-quick", "-smoke"}, "exclude each other"},
		{[]string{"-systems", "veth,vmware"}, `-systems: unknown system "vmware"`},
		{[]string{"-reps", "-1"}, "-reps -1"},
		{[]string{"now"}, `unexpected argument "now"`},
		{[]string{"-metrics", "upload_gbps,speed"}, `-metrics: unknown metric "speed"`},
		{[]string{"-metrics", ","}, "-metrics: no metric named"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		err := run(context.Background(), tt.args, &bytes.Buffer{}, &stderr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestDockerIsOptionalOnlyInTheDefaultSmokeRun(t *testing.T) {
	for _, tt := range []struct {
		mode string
		args []string
		want bool
	}{
		{"smoke", nil, true},
		{"smoke", []string{"-metrics", "inbound_connects_per_s"}, true},
		{"smoke", []string{"-systems", "veth,docker"}, false},
		{"smoke", []string{"-systems", "veth,slirp4netns,pasta,clawnet,docker"}, false},
		{"quick", nil, false},
		{"full", nil, false},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.String("systems", "", "")
		fs.String("metrics", "", "")
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		if got := dockerOptional(tt.mode, fs); got != tt.want {
			t.Errorf("dockerOptional(%s, %q) = %v, want %v", tt.mode, tt.args, got, tt.want)
		}
	}
}
