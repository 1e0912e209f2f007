package ucs

import "testing"

// TestEndpointLevel pins the codes UCX reports only for a failed endpoint
// (ucs/type/status.h: -24, -25, -80 and the link and endpoint ranges) and
// checks that per-call codes near them are not taken for them.
func TestEndpointLevel(t *testing.T) {
	for _, c := range []Status{-24, -25, -40, -59, -60, -80, -89} {
		if !c.EndpointLevel() {
			t.Errorf("%d: not endpoint-level", int(c))
		}
	}
	for _, c := range []Status{-1, -3, -6, -16, -20, -23, -26, -39, -90, -100} {
		if c.EndpointLevel() {
			t.Errorf("%d: endpoint-level", int(c))
		}
	}
}
