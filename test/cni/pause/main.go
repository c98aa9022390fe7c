// Command pause is the CNI tier's pod sandbox process (what Kubernetes'
// pause image runs): it holds the pod's namespaces and exits on SIGTERM or
// SIGINT. It is built into an image by the tier, since none can be pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
