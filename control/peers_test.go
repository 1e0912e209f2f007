package control

import (
	"errors"
	"strings"
	"testing"

	"github.com/ucxfault/ucxfault/hooks"
)

// epBackend is a memBackend whose process has endpoints.
type epBackend struct {
	memBackend
	eps []EndpointStatus
}

func (b *epBackend) Info() Status {
	return Status{PID: 1, Endpoints: append([]EndpointStatus(nil), b.eps...)}
}

func TestKillPeer(t *testing.T) {
	const p, q = "w:0123456789ab", "127.0.0.1:13337"
	b := &epBackend{eps: []EndpointStatus{
		{Endpoint: 0, State: EndpointOpen, Peer: p},
		{Endpoint: 1, State: EndpointClosed, Peer: p},
		{Endpoint: 2, State: EndpointOpen, Peer: p},
		{Endpoint: 3, State: EndpointOpen, Peer: q},
		{Endpoint: 4, State: EndpointKilled, Peer: p, Code: -80},
	}}
	e := NewEngine(b, DefaultSettings())
	r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdKillEP, Peer: p})
	if !r.OK || !strings.Contains(r.Message, "endpoint 0, 2 killed with -80") {
		t.Fatalf("kill_ep peer %s: %+v", p, r)
	}
	k := e.Settings().Kills
	if len(k) != 2 || k[0] != (Kill{Endpoint: 0, Code: -80}) || k[1] != (Kill{Endpoint: 2, Code: -80}) {
		t.Fatalf("kills %+v, want endpoints 0 and 2 (the open ones of the peer) with -80", k)
	}
	code := -25
	if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdKillEP, Peer: q, Code: &code}); !r.OK {
		t.Fatalf("kill_ep peer %s code -25: %+v", q, r)
	}
	if k := e.Settings().Kills; len(k) != 3 || k[2] != (Kill{Endpoint: 3, Code: -25}) {
		t.Fatalf("kills %+v, want endpoint 3 with -25 last", k)
	}
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{Peer: "w:ffffffffffff"}, "no open endpoint has peer w:ffffffffffff (open endpoints' peers: " + p},
		{Request{Peer: p, Endpoint: ptr(0)}, "not both"},
		{Request{Peer: "a b:1"}, "not in a peer name"},
		{Request{Peer: "x"}, "not a peer name"},
		{Request{Peer: "x:"}, "not a peer name"},
		{Request{Peer: strings.Repeat("x", MaxPeerLen+1)}, "want 1 to 63 characters"},
	} {
		req := tc.req
		req.V, req.Cmd = ProtocolVersion, CmdKillEP
		before := e.Settings()
		r := e.Handle(&req)
		if r.OK || !strings.Contains(r.Error, tc.want) {
			t.Errorf("kill_ep %+v: %+v, want an error with %q", tc.req, r, tc.want)
		}
		if !settingsEqual(e.Settings(), before) {
			t.Errorf("kill_ep %+v failed but changed the settings", tc.req)
		}
	}
}

func TestStatusEndpoints(t *testing.T) {
	b := &epBackend{}
	for i := 0; i < MaxClosedEndpoints+3; i++ {
		b.eps = append(b.eps, EndpointStatus{Endpoint: i, State: EndpointClosed, Calls: 5})
	}
	b.eps = append(b.eps, EndpointStatus{Endpoint: MaxClosedEndpoints + 3, State: EndpointOpen, Calls: 7, Faults: 2})
	e := NewEngine(b, DefaultSettings())
	st := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdStatus}).Status
	if st == nil || len(st.Endpoints) != MaxClosedEndpoints+1 || st.ClosedOmitted != 3 || st.Endpoints[0].Endpoint != 3 {
		t.Fatalf("status endpoints %+v (omitted %d), want the newest %d closed ones from endpoint 3 and the open one, 3 omitted",
			st.Endpoints, st.ClosedOmitted, MaxClosedEndpoints)
	}
	if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdReset}); !r.OK {
		t.Fatal(r.Error)
	}
	b.eps[len(b.eps)-1].Calls, b.eps[len(b.eps)-1].Faults = 10, 3
	st = e.Handle(&Request{V: ProtocolVersion, Cmd: CmdStatus}).Status
	last := st.Endpoints[len(st.Endpoints)-1]
	if last.Calls != 3 || last.Faults != 1 {
		t.Fatalf("after reset the open endpoint shows %d calls, %d faults; want 3 and 1 (counted since the reset)", last.Calls, last.Faults)
	}
}

// TestPeerSpelling: a worker's peer must be spelled as status shows it,
// or a rule would never match and a kill would find no endpoint.
func TestPeerSpelling(t *testing.T) {
	for _, bad := range []string{"w:zzz", "w:0123456789AB", "w:0123456789a", "a:0123456789abc", "w:", "10.0.0.2",
		"W:0123456789ab", "x:1", "host:1", "10.0.0.2:x", "10.0.0.2:70000", "fe80::1:13337"} {
		if _, err := ParseRule("hooks=ucp_get_nbx peer=" + bad); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("peer=%s: %v, want refused as invalid", bad, err)
		}
		e := NewEngine(&epBackend{}, DefaultSettings())
		if r := e.Handle(&Request{V: ProtocolVersion, Cmd: CmdKillEP, Peer: bad}); r.OK || strings.Contains(r.Error, "no open endpoint") {
			t.Errorf("kill_ep peer %s: %+v, want refused as invalid", bad, r)
		}
	}
}

func TestRulePeer(t *testing.T) {
	for _, peer := range []string{"w:0123456789ab", "a:0123456789ab", "10.0.0.2:13337", "[fe80::1]:13337"} {
		r, err := ParseRule("hooks=ucp_get_nbx peer=" + peer + " kill-ep")
		if err != nil {
			t.Fatal(err)
		}
		if r.Peer != peer {
			t.Fatalf("peer %q parsed as %q", peer, r.Peer)
		}
		again, err := ParseRule(r.String())
		if err != nil || again.Peer != peer || again.String() != r.String() {
			t.Fatalf("%q does not read back: %v %+v", r.String(), err, again)
		}
	}
	r, err := ParseRule("peer=w:0123456789ab")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Hooks) == 0 {
		t.Fatalf("peer= rule covers no hook")
	}
	for _, id := range r.Hooks {
		if h := hooks.Table[id]; h.Endpoint == "" {
			t.Fatalf("peer= covers %s, which has no endpoint", h.Name)
		}
	}
	for text, want := range map[string]string{
		"peer=":                           "needs a value",
		"peer=a=b:1":                      "not in a peer name",
		"peer=x":                          "not a peer name",
		"peer=10.0.0.1:1 peer=10.0.0.2:1": "given twice",
		"hooks=ucp_worker_flush_nbx peer=w:000000000001": "no endpoint argument for endpoint=, peer= or kill-ep",
		"peer=" + strings.Repeat("1", 64):                "want 1 to 63 characters",
	} {
		_, err := ParseRule(text)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRule(%q): %v, want an error with %q", text, err, want)
		}
	}
}

// TestKillInflightCodeSaysWhatItMisses: kill-ep with an in-flight code of
// its own, with nothing followed before, says that the requests posted
// before the command (in deferred mode, those of hooks not injected into)
// complete as libucp completes them; with an in-flight code known before
// the kill it does not.
func TestKillInflightCodeSaysWhatItMisses(t *testing.T) {
	code, inflight := -80, -16
	kill := func(s Settings, ep int) Response {
		e := NewEngine(&fakeBackend{}, s)
		return e.Handle(&Request{V: ProtocolVersion, Cmd: CmdKillEP, Endpoint: ptr(ep), Code: &code, InflightCode: &inflight})
	}
	late := "earlier ones were not followed and complete as libucp completes them (with -80 when it purges them"
	if r := kill(DefaultSettings(), 0); !r.OK || !strings.Contains(r.Message, late) {
		t.Fatalf("kill-ep --inflight-code in immediate mode, nothing followed: %+v, want %q", r, late)
	}
	deferred := DefaultSettings()
	deferred.Mode = ModeDeferred
	if r := kill(deferred, 0); !r.OK || !strings.Contains(r.Message, "earlier ones of other hooks were not followed") {
		t.Fatalf("kill-ep --inflight-code in deferred mode, nothing followed: %+v", r)
	}
	followed := DefaultSettings()
	followed.InflightCode = -16
	if r := kill(followed, 0); !r.OK || strings.Contains(r.Message, "not followed") || !strings.Contains(r.Message, "complete with -16") {
		t.Fatalf("--inflight-code set before: %+v", r)
	}
}
