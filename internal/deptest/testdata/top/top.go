// Package top is a fixture: top → mid → leaf/inner → errors.
package top

import (
	"strings"

	"github.com/clawnet/clawnet/internal/deptest/testdata/mid"
)

var X = strings.ToUpper(mid.Y)
