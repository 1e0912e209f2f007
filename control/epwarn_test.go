package control

import (
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/ucs"
)

// TestEndpointCodeWarning: the global codes or a failing rule's codes with an
// endpoint-level code give one warning naming each such code once and
// pointing to kill-ep; default codes and delay-only rules give none.
func TestEndpointCodeWarning(t *testing.T) {
	s := DefaultSettings()
	if w := endpointCodeWarning(s); w != "" {
		t.Fatalf("default settings warn: %q", w)
	}
	s.Codes = []ucs.Status{-3, -80}
	for _, text := range []string{"hooks=ucp_get_nbx prob=100 codes=-25,-80", "hooks=ucp_put_nbx delay=1ms"} {
		r, err := ParseRule(text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		s.Rules = append(s.Rules, *r)
	}
	w := endpointCodeWarning(s)
	if !strings.Contains(w, "kill-ep") || strings.Count(w, "-80(") != 1 || !strings.Contains(w, "-25(") || strings.Contains(w, "-3(") {
		t.Fatalf("warning %q: want -80 and -25 once each, not -3, and kill-ep", w)
	}
}
