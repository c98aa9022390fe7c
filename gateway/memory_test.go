package gateway

import (
	"runtime"
	"runtime/debug"
	"testing"
)

var sink [][]byte

// TestReturnHeld: after a burst is freed, the held free heap goes back to
// the system.
func TestReturnHeld(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no GC of ours until we ask
	for i := 0; i < 128; i++ {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	if before.HeapIdle-before.HeapReleased <= freeHeld {
		t.Skipf("the runtime already returned the burst (idle %d, released %d)", before.HeapIdle, before.HeapReleased)
	}
	if !returnHeld() {
		t.Fatal("returnHeld() = false with 128 MiB freed and held")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if held := after.HeapIdle - after.HeapReleased; held > freeHeld {
		t.Fatalf("still %d bytes free and held after returnHeld", held)
	}
}
