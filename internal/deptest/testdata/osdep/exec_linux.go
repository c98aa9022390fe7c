package osdep

import "os/exec"

var _ = exec.Command
