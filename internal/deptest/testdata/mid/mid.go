// Package mid is a fixture between top and leaf/inner.
package mid

import "github.com/clawnet/clawnet/internal/deptest/testdata/leaf/inner"

var Y = inner.Err.Error()
