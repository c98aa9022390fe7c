package gateway

import (
	"fmt"

	"github.com/clawnet/clawnet/gateway/control"
)

// ExplainInbound answers whether the peer from (agent:NAME, host or an
// address) may connect to port (0: any) of an agent under policy pol.
//
// TEMPORARY: a stand-in so that the control API builds while the inbound
// data path is written; delete this file when gateway.go has the real one.
func (g *Gateway) ExplainInbound(pol, proto string, port uint16, from string) (*control.Explanation, error) {
	return nil, fmt.Errorf("%w: explaining inbound connections is not built yet", ErrBadRequest)
}
