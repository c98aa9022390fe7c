// Command clawnetd is the clawnet gateway daemon.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/clawnet/clawnet/gateway"
)

func main() {
	if err := gateway.Run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "clawnetd:", err)
		os.Exit(1)
	}
}
