package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// canceled is UCS_ERR_CANCELED, what UCX on InfiniBand purges the
// operations in flight on a dead peer's endpoint with.
const canceled = -16

// withInflight returns real's events as a kill with in-flight code code
// must show them: every operation that completed with a failure while in
// flight at the death (phase inflight) completes with code instead; the
// handler and everything after keep theirs.
func withInflight(real []testutil.PeerEvent, code int) []testutil.PeerEvent {
	out := append([]testutil.PeerEvent(nil), real...)
	for i := range out {
		if out[i].Phase == "inflight" && out[i].Kind != "handler" && out[i].Status < 0 {
			out[i].Status = code
		}
	}
	return out
}

// TestInflightCode: with `inject --inflight-code -16`, a kill-ep completes
// the operations in flight on the endpoint with -16 (polled puts, gets and
// flush; callback sends and flush), while the error handler and the later
// calls get the kill's code: the real death's log with its in-flight
// failures read as -16, event for event. In immediate mode, where the
// injector otherwise follows no request, and in deferred mode.
func TestInflightCode(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name   string
		run    peerRun
		inject []string
	}{
		{"rma immediate", peerRun{scenario: "rma", stopFirst: true, args: []string{"--size", "1048576", "--close", "force", "--wait-ms", "2000"}},
			[]string{"--probability", "0", "--inflight-code", "-16"}},
		{"cbsend deferred", peerRun{scenario: "cbsend", stopFirst: true, args: []string{"--size", "1048576", "--close", "flush", "--wait-ms", "2000"}},
			[]string{"--mode", "deferred", "--probability", "0", "--inflight-code", "CANCELED"}},
		// The in-flight code arms every hook: the puts, gets and flush
		// are followed though nothing injects into them.
		{"rma immediate, their hooks not injected into", peerRun{scenario: "rma", stopFirst: true, args: []string{"--size", "1048576", "--close", "force", "--wait-ms", "2000"}},
			[]string{"--hooks", "ucp_tag_send_nbx", "--probability", "0", "--inflight-code", "-16"}},
		// The sends of phase "after", posted on the dead endpoint, keep
		// the kill's code, as after the real death: only what was in
		// flight at the kill gets the in-flight code.
		{"cbsend immediate, their hooks not injected into", peerRun{scenario: "cbsend", stopFirst: true, args: []string{"--size", "1048576", "--after-size", "1048576", "--close", "flush", "--wait-ms", "2000"}},
			[]string{"--hooks", "ucp_put_nbx", "--probability", "0", "--inflight-code", "CANCELED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			real := tc.run
			real.death = deathKill
			emu := tc.run
			emu.death = deathEmulated
			emu.inject = tc.inject
			r := runPeer(t, h, real)
			e := runPeer(t, h, emu)
			var inflightFailures int
			for _, ev := range r.phase("inflight") {
				if ev.Kind != "handler" && ev.Status < 0 {
					inflightFailures++
				}
			}
			if inflightFailures == 0 {
				t.Fatalf("the real death failed nothing in flight: the scenario proves nothing\n%s", r.out)
			}
			if err := testutil.ComparePeerLogs(withInflight(r.events, canceled), e.events); err != nil {
				t.Errorf("%v\nreal:\n%s\nemulated:\n%s", err, r.out, e.out)
			}
			e.requireHandlerOnce(t, 0, 10*time.Second) // the kill's code, once
		})
	}
}

// TestInflightCodeRule: a rule's inflight-code= (with kill-ep) completes
// the operations in flight at the rule's kill with its code; the killed get
// itself fails at once with the kill's code, as the handler gets it.
func TestInflightCodeRule(t *testing.T) {
	h := newHarness(t)
	run := peerRun{scenario: "rma", death: deathRule, stopFirst: true,
		inject: []string{"--probability", "0", "--rule", "hooks=ucp_get_nbx calls=2 kill-ep inflight-code=-16"},
		args:   []string{"--size", "1048576", "--close", "force", "--wait-ms", "2000"}}
	r := runPeer(t, h, run)
	var inflight, killed, handlers int
	for _, ev := range r.events {
		switch {
		case ev.Kind == "handler":
			if ev.Status != r.code {
				t.Errorf("handler: %s, want the kill's %d", ev.Canonical(), r.code)
			}
			handlers++
		case ev.Phase == "post" && ev.Kind == "get" && ev.Op == 5:
			if ev.Status != r.code || ev.Via != "immediate" {
				t.Errorf("the killed get: %s, want %d at once", ev.Canonical(), r.code)
			}
			killed++
		case ev.Phase == "inflight" && ev.Kind != "handler" && ev.Status < 0:
			if ev.Status != canceled {
				t.Errorf("in flight at the kill: %s, want %d", ev.Canonical(), canceled)
			}
			inflight++
		case ev.Phase == "after" && ev.Status < 0 && ev.Status != r.code:
			t.Errorf("after the kill: %s, want the kill's %d", ev.Canonical(), r.code)
		}
	}
	if killed != 1 || inflight == 0 || handlers != 1 || r.handlers != 1 {
		t.Errorf("killed get seen %d times, %d operations failed in flight, %d handler calls (program counted %d); want 1, some, 1:\n%s",
			killed, inflight, handlers, r.handlers, r.out)
	}
}

// TestEmulatedKillInflightAndHandler: with libucp's failure path switched
// off (UCXFAULT_NATIVE_KILL=0, the path of UCX 1.10 and 1.11), the
// injector's own emulation honours the in-flight code too (what failed in
// flight failed with it; the handler and later calls get the kill's code),
// and its handler call, made by the injector, is recorded once.
func TestEmulatedKillInflightAndHandler(t *testing.T) {
	t.Setenv("UCXFAULT_NATIVE_KILL", "0")
	h := newHarness(t)
	path := filepath.Join(t.TempDir(), "rec.json")
	args := []string{"--count", "4", "--size", "1048576", "--close", "force", "--wait-ms", "3000"}
	var status string
	r := injectedPeerRunWith(t, h, "rma", []string{"--mode", "deferred", "--probability", "0", "--inflight-code", "-16"}, args,
		func() { h.mustCtl(t, "record-toggle", "on") },
		func() {
			h.mustCtl(t, "kill-ep", "0")
			status = h.mustCtl(t, "status")
		}, path)
	if r.handlers != 1 {
		t.Fatalf("handler ran %d times, want once:\n%s", r.handlers, r.out)
	}
	for _, ev := range r.events {
		switch {
		case ev.Kind == "handler" && ev.Status != r.code,
			ev.Phase == "inflight" && ev.Kind != "handler" && ev.Status < 0 && ev.Status != canceled,
			ev.Phase == "after" && ev.Status < 0 && ev.Status != r.code:
			t.Errorf("%s: want the handler and later calls with %d, what failed in flight with %d", ev.Canonical(), r.code, canceled)
		}
	}
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var handlers []recording.EndpointEvent
	for _, e := range f.Processes[0].EndpointEvents {
		if e.Event == recording.EventHandler {
			handlers = append(handlers, e)
		}
	}
	if len(handlers) != 1 || handlers[0].Code != r.code || handlers[0].Cause != recording.CauseKill {
		t.Errorf("handler events %+v, want one with %d (cause kill)", handlers, r.code)
	}
	// status says when kills are emulated: this run took the emulation,
	// not libucp's path.
	if !strings.Contains(status, "emulated") {
		t.Errorf("status does not say the kill is emulated:\n%s", status)
	}
}
