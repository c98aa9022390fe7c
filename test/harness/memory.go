package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory is what the kernel says about a process's resident memory, from
// /proc/PID/status. It counts what the process itself holds (Go heap,
// stacks, the netstack's buffers), not socket buffers in the kernel.
type Memory struct {
	// RSS is VmRSS now; Peak is VmHWM, the most it has been since the
	// process started or since ResetPeakRSS.
	RSS, Peak int64
}

// Memory reads clawnetd's resident memory.
func (d *Daemon) Memory() (Memory, error) { return ProcMemory(d.PID()) }

// ResetPeakRSS resets clawnetd's VmHWM to its current RSS, so a later Peak
// covers only what came after.
func (d *Daemon) ResetPeakRSS() error { return ResetPeakRSS(d.PID()) }

// ProcMemory reads VmRSS and VmHWM of a process.
func ProcMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("read memory of %d: %w", pid, err)
	}
	var m Memory
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		// "   123456 kB"
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: unexpected %q", pid, k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.Peak = n << 10
		}
		found++
	}
	if found != 2 {
		return Memory{}, fmt.Errorf("/proc/%d/status has no VmRSS and VmHWM (a zombie?)", pid)
	}
	return m, nil
}

// ResetPeakRSS resets a process's VmHWM to its current RSS (clear_refs 5).
func ResetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS of %d: %w", pid, err)
	}
	return nil
}

// MiB renders a byte count in MiB with one decimal, for figures in logs.
func MiB(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }

// GoHeap is clawnetd's runtime.MemStats as its heap profile reports them.
type GoHeap struct {
	// HeapInuse is the bytes in in-use spans of the Go heap; Sys all the
	// runtime has taken from the OS; HeapReleased what it gave back.
	HeapInuse, Sys, HeapReleased int64
}

// GoHeap reads clawnetd's memory statistics from /debug/pprof/heap on the
// control socket; with gc it runs a collection first, so HeapInuse is
// what is live.
func (d *Daemon) GoHeap(gc bool) (GoHeap, error) {
	path := "/debug/pprof/heap?debug=1"
	if gc {
		path += "&gc=1"
	}
	b, err := d.Get(path)
	if err != nil {
		return GoHeap{}, err
	}
	var h GoHeap
	fields := map[string]*int64{"HeapInuse": &h.HeapInuse, "Sys": &h.Sys, "HeapReleased": &h.HeapReleased}
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// "# HeapInuse = 123456"
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		p := fields[k]
		if !ok || p == nil {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return GoHeap{}, fmt.Errorf("heap profile: %s = %q: %w", k, v, err)
		}
		*p = n
		found++
	}
	if found != len(fields) {
		return GoHeap{}, fmt.Errorf("heap profile lacks some of the MemStats HeapInuse, Sys and HeapReleased")
	}
	return h, nil
}
