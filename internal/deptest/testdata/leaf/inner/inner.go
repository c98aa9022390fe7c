// Package inner is a fixture under leaf.
package inner

import "errors"

var Err = errors.New("inner")
