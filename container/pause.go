package container

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Pause is the holder container's whole program (`clawnet pause`, hidden):
// it keeps a network namespace alive by existing, and exits 0 on SIGTERM,
// SIGINT or SIGHUP. As a container's PID 1 it must handle those itself: the
// kernel drops signals PID 1 has no handler for, and `docker stop` would
// otherwise wait its full timeout before killing it.
func Pause(ctx context.Context) error {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(ch)
	select {
	case <-ch:
	case <-ctx.Done():
	}
	return nil
}
