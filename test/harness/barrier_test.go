package harness

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// errorTB records Errorf and stops on Fatalf, so a self-test can see what
// NeverSawBefore reports.
type errorTB struct {
	verdictTB
	errors []string
}

func (e *errorTB) Errorf(format string, args ...any) {
	e.errors = append(e.errors, fmt.Sprintf(format, args...))
}

func (e *errorTB) Fatalf(format string, args ...any) { e.Fatal(fmt.Sprintf(format, args...)) }

// TestNeverSawBefore checks the barrier's bookkeeping on a log written by
// the test (no canary, no root): lines before the mark and the sentinel's
// own connection are never counted, any other line refused accepts is, and
// a sentinel that never comes fails the test instead of passing it.
func TestNeverSawBefore(t *testing.T) {
	in := &Internet{LogPath: filepath.Join(t.TempDir(), "canary.log")}
	w, err := canarylog.Create(in.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	echo := func(remote, event, sum string) canarylog.Entry {
		return canarylog.Entry{Service: canarylog.ServiceEcho, Event: event, Proto: "tcp", Remote: remote, Local: "198.18.7.2:7", SHA256: sum}
	}
	w.Log(canarylog.Entry{Service: canarylog.ServiceCanary, Event: canarylog.EventReady})
	w.Log(echo("198.18.7.1:40000", canarylog.EventClose, "")) // before the mark
	mark := in.Mark()
	w.Log(echo("198.18.7.1:40001", canarylog.EventOpen, "")) // the sentinel's open line
	w.Log(echo("198.18.7.1:40001", canarylog.EventClose, "sentinel"))
	isSentinel := func(e canarylog.Entry) bool { return e.SHA256 == "sentinel" }

	run := func(mark int, sentinel func(canarylog.Entry) bool) *errorTB {
		tb := &errorTB{verdictTB: verdictTB{TB: t}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			in.NeverSawBefore(tb, mark, 50*time.Millisecond, "the sentinel", sentinel, "anything", Traffic)
		}()
		<-done
		return tb
	}
	if tb := run(mark, isSentinel); len(tb.errors) > 0 || tb.failed != "" {
		t.Errorf("only the sentinel's connection since the mark: errors %q, failed %q", tb.errors, tb.failed)
	}
	if tb := run(0, isSentinel); len(tb.errors) != 1 || !strings.Contains(tb.errors[0], ":40000") {
		t.Errorf("from the start of the log: errors %q, want one naming the line before the mark", tb.errors)
	}
	w.Log(echo("198.18.7.1:40002", canarylog.EventOpen, "")) // another connection
	if tb := run(mark, isSentinel); len(tb.errors) != 1 || !strings.Contains(tb.errors[0], ":40002") {
		t.Errorf("another connection since the mark: errors %q, want one naming it", tb.errors)
	}
	if tb := run(mark, func(canarylog.Entry) bool { return false }); tb.failed == "" {
		t.Errorf("a sentinel that never came did not fail the test (errors %q)", tb.errors)
	}
}
