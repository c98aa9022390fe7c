package main

import (
	"bytes"
	"context"
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
