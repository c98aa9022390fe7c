package gateway

import (
	"runtime"
	"runtime/debug"
	"time"
)

// memoryReturner gives memory back to the system after a burst: Go's own
// scavenger returns freed pages slowly, so after an agent that pinned all
// its budget detaches (or a flood ends), RSS would stay near its peak for
// a long while. Every period it looks at how much of the heap is free but
// still held, and returns it when that is a lot. limits.memory_limit (the
// runtime's soft limit, as GOMEMLIMIT) makes the runtime work to stay
// under a figure as well.
type memoryReturner struct {
	stop chan struct{}
	done chan struct{}
}

// freeHeld is how much free, still held heap is worth a FreeOSMemory.
const freeHeld = 32 << 20

func newMemoryReturner(every time.Duration, limit int64) *memoryReturner {
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	}
	m := &memoryReturner{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				returnHeld()
			}
		}
	}()
	return m
}

// returnHeld returns free heap to the system when more than freeHeld of it
// is held, and says whether it did.
func returnHeld() bool {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapIdle-ms.HeapReleased <= freeHeld {
		return false
	}
	debug.FreeOSMemory()
	return true
}

func (m *memoryReturner) close() {
	close(m.stop)
	<-m.done
}
