// Package osdep is a fixture that imports os/exec on Linux only.
package osdep
