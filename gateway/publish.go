package gateway

import (
	"errors"

	"github.com/clawnet/clawnet/gateway/control"
)

// Publish opens host listeners for the agent called name (see inbound.go).
func (g *Gateway) Publish(name string, ps []control.Publish) error {
	return errors.New("publishing is not built yet")
}

// Unpublish closes the agent's listeners for ps.
func (g *Gateway) Unpublish(name string, ps []control.Publish) error {
	return errors.New("publishing is not built yet")
}
