package testutil

import (
	"fmt"
	"strconv"
	"strings"
)

// PeerEvent is one event the conformance program e2e/testdata/peerdeath.c
// printed: something its application code saw, in the order it saw it.
//
//	PD ev=<n> phase=<p> ep=<e> op=<i> kind=<k> status=<code> via=<v> t_us=<us>
type PeerEvent struct {
	// Phase is warm, post, inflight, pending, hold, after, close or linger.
	Phase string
	// EP is the endpoint's number in the program's order of creation.
	EP int
	// Op is the operation's index within its phase, -1 for the handler.
	Op int
	// Kind is put, get, flush, tagsend, amsend, streamrecv, close or handler.
	Kind string
	// Status is the ucs_status_t seen (1 = UCS_INPROGRESS for via=pending).
	Status int
	// Via is immediate (return value), callback (from ucp_worker_progress),
	// poll (ucp_request_check_status) or pending (never seen complete).
	Via string
	// TUs is the wall clock (CLOCK_REALTIME) in microseconds when seen.
	// Canonical forms and comparisons ignore it.
	TUs int64
}

// Canonical is the event without its time: two runs that showed the
// application the same thing have equal canonical lines.
func (e PeerEvent) Canonical() string {
	return fmt.Sprintf("phase=%s ep=%d op=%d kind=%s status=%d via=%s", e.Phase, e.EP, e.Op, e.Kind, e.Status, e.Via)
}

// ParsePeerEvents reads the PD lines of out in order; other lines are
// skipped. A PD line that lacks a field or has a malformed number is an
// error: a changed program must not be compared as an empty log.
func ParsePeerEvents(out string) ([]PeerEvent, error) {
	var evs []PeerEvent
	for n, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "PD ")
		if !ok {
			continue
		}
		f := map[string]string{}
		for _, kv := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = v
			}
		}
		var e PeerEvent
		var err error
		num := func(k string) int64 {
			if err != nil {
				return 0
			}
			v, ok := f[k]
			if !ok {
				err = fmt.Errorf("line %d: no %s: %q", n+1, k, line)
				return 0
			}
			x, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil {
				err = fmt.Errorf("line %d: field %s: %w", n+1, k, perr)
			}
			return x
		}
		e.EP, e.Op, e.Status, e.TUs = int(num("ep")), int(num("op")), int(num("status")), num("t_us")
		e.Phase, e.Kind, e.Via = f["phase"], f["kind"], f["via"]
		if err == nil && (e.Phase == "" || e.Kind == "" || e.Via == "") {
			err = fmt.Errorf("line %d: phase, kind or via missing: %q", n+1, line)
		}
		if err != nil {
			return nil, fmt.Errorf("parsing peer events: %w", err)
		}
		evs = append(evs, e)
	}
	return evs, nil
}

// ComparePeerLogs compares what two runs of the conformance program showed
// the application (a real peer death, an emulated one), event by event in
// order, ignoring times. It returns nil when they are equal, or an error
// naming the first difference: its position and both canonical lines, or
// the events one log has beyond the other's end.
func ComparePeerLogs(real, emulated []PeerEvent) error {
	for i := 0; i < len(real) && i < len(emulated); i++ {
		if a, b := real[i].Canonical(), emulated[i].Canonical(); a != b {
			return fmt.Errorf("event %d differs: real %q, emulated %q", i, a, b)
		}
	}
	switch {
	case len(real) > len(emulated):
		return fmt.Errorf("emulated log ends after %d events; real goes on with %q", len(emulated), real[len(emulated)].Canonical())
	case len(emulated) > len(real):
		return fmt.Errorf("real log ends after %d events; emulated goes on with %q", len(real), emulated[len(real)].Canonical())
	}
	return nil
}

// UCXVersion reads the "VERSION major.minor.release" line the conformance
// program prints from ucp_get_version.
func UCXVersion(out string) (major, minor, release int, err error) {
	for _, line := range strings.Split(out, "\n") {
		v, ok := strings.CutPrefix(line, "VERSION ")
		if !ok {
			continue
		}
		if _, err := fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &release); err != nil {
			return 0, 0, 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		return major, minor, release, nil
	}
	return 0, 0, 0, fmt.Errorf("no VERSION line")
}

// DeadPeerCode is the status a libucp of the given version reports for a
// TCP peer that died (SIGKILL): to the error handler, to operations in
// flight and to every later operation on the endpoint. Up to 1.13 the TCP
// transport reported a closed connection as UCS_ERR_ENDPOINT_TIMEOUT (-80);
// UCX commit dd0d43da4f ("UCT/TCP: Fix status returned when disconnected",
// first released in v1.14.0) made it UCS_ERR_CONNECTION_RESET (-25).
// Measured: -80 on Debian's 1.13.1, -25 on 1.22.0.
func DeadPeerCode(major, minor int) int {
	if major > 1 || (major == 1 && minor >= 14) {
		return -25
	}
	return -80
}
