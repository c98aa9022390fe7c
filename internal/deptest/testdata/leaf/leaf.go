// Package leaf is a fixture that exists but nothing imports.
package leaf
