package observer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
)

func hookID(t *testing.T, name string) hooks.ID {
	t.Helper()
	id, _, err := hooks.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// errPtr is UCS_STATUS_PTR(code).
func errPtr(code int64) uint64 { return uint64(code) }

func TestCorrelate(t *testing.T) {
	put, get := hookID(t, "ucp_put_nbx"), hookID(t, "ucp_get_nbx")
	flush, check := hookID(t, "ucp_ep_flush_nbx"), hookID(t, "ucp_request_check_status")
	const (
		ep1, ep2   = 0x7f0000001000, 0x7f0000002000
		req1, req2 = 0x55550000a000, 0x55550000b000
		base       = 1_000_000
	)
	// Events in return order; entry times say the call order.
	events := []rawCall{
		// thread 100: a put that completes at once, on ep1
		{Hook: put, TID: 100, EntryNS: base + 10, DurationNS: 5, Ret: 0, Size: 8, EP: ep1},
		// a put that fails at once with -3
		{Hook: put, TID: 100, EntryNS: base + 20, DurationNS: 5, Ret: errPtr(-3), Size: 16, EP: ep1},
		// -100 is still an error pointer; -101 would be a request
		{Hook: get, TID: 100, EntryNS: base + 30, DurationNS: 5, Ret: errPtr(-100), Size: 32, EP: ep2},
		// a put returning req1, polled: in progress, then -80 (raw byte
		// 0xb0 with garbage in the upper bytes)
		{Hook: put, TID: 100, EntryNS: base + 40, DurationNS: 5, Ret: req1, Size: 64, EP: ep2},
		{Hook: check, TID: 100, EntryNS: base + 50, DurationNS: 1, Ret: 0x7fff_1234_5601, Req: req1},
		{Hook: check, TID: 100, EntryNS: base + 60, DurationNS: 1, Ret: 0x7fff_1234_56b0, Req: req1},
		// thread 200 (whose call entered earlier, returned later): a flush
		// returning req2 that completes OK
		{Hook: flush, TID: 200, EntryNS: base + 5, DurationNS: 100, Ret: req2, EP: ep2},
		{Hook: check, TID: 200, EntryNS: base + 110, DurationNS: 1, Ret: 0, Req: req2},
		// a get returning req1 again (reused); then another call
		// returning req1 while that one is pending: the first becomes
		// unknown; the second stays pending to the end.
		{Hook: get, TID: 200, EntryNS: base + 120, DurationNS: 1, Ret: req1, Size: 128, EP: ep1},
		{Hook: put, TID: 200, EntryNS: base + 130, DurationNS: 1, Ret: req1, Size: 256, EP: ep1},
		// a check on an unknown request: just a call
		{Hook: check, TID: 200, EntryNS: base + 140, DurationNS: 1, Ret: 0, Req: 0xdead0000},
	}
	c := newCorrelator()
	for _, ev := range events {
		c.add(ev)
	}
	got := c.finish(base)
	type row struct {
		Fn            string
		Thread, EP    int
		Size          uint64
		Status        int
		How           string
		TimeNS, DurNS uint64
	}
	imm, comp, unk := recording.HowImmediate, recording.HowCompletion, recording.HowUnknown
	want := []row{
		{"ucp_ep_flush_nbx", 0, 0, 0, 0, comp, 5, 100},
		{"ucp_put_nbx", 1, 1, 8, 0, imm, 10, 5},
		{"ucp_put_nbx", 1, 1, 16, -3, imm, 20, 5},
		{"ucp_get_nbx", 1, 0, 32, -100, imm, 30, 5},
		{"ucp_put_nbx", 1, 0, 64, -80, comp, 40, 5},
		{"ucp_request_check_status", 1, -1, 0, 0, imm, 50, 1},
		{"ucp_request_check_status", 1, -1, 0, -80, imm, 60, 1},
		{"ucp_request_check_status", 0, -1, 0, 0, imm, 110, 1},
		{"ucp_get_nbx", 0, 1, 128, 0, unk, 120, 1},
		{"ucp_put_nbx", 0, 1, 256, 0, unk, 130, 1},
		{"ucp_request_check_status", 0, -1, 0, 0, imm, 140, 1},
	}
	if len(got) != len(want) {
		t.Fatalf("%d calls, want %d: %+v", len(got), len(want), got)
	}
	for i, g := range got {
		r := row{g.Fn, g.Thread, g.Endpoint, g.Size, g.Status, g.How, g.TimeNS, g.DurationNS}
		if r != want[i] || g.Seq != uint64(i) || g.Injected {
			t.Errorf("call %d: %+v (seq %d), want %+v", i, r, g.Seq, want[i])
		}
	}
	// -3, -100, -80 (the put) and -80 (the check that saw it).
	if c.errors != 4 {
		t.Errorf("errors %d, want 4", c.errors)
	}
	f := recording.New(recording.SourceObserver)
	f.Processes = []recording.Process{{Calls: got, Complete: true}}
	if err := f.Validate(); err != nil {
		t.Errorf("recording does not validate: %v", err)
	}
}

func TestIsErrPtr(t *testing.T) {
	for p, want := range map[uint64]bool{
		0: false, 1: false, 0x7fff00001000: false,
		errPtr(-1): true, errPtr(-80): true, errPtr(-100): true, errPtr(-101): false,
	} {
		if isErrPtr(p) != want {
			t.Errorf("isErrPtr(%#x) = %v, want %v", p, !want, want)
		}
	}
}

// decodeEvent copies a ring-buffer record into the bpf2go-generated type;
// the record is written here field by field, packed in host order (struct
// event has no implicit padding), so a generated type that no longer matches the
// C struct, or a decoder that misplaces a field, fails.
func TestDecodeEvent(t *testing.T) {
	in := observerEvent{EntryNs: 11, DurationNs: 22, Ret: 33, Caller: 0xcafe, Size: 44, Ep: 55,
		Raddr: 0xbeef, Req: 66, Tid: 77, Pid: 88, Hook: 3, Flags: eventInjected | eventCompletion}
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, in); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != eventSize {
		t.Fatalf("struct event packs into %d bytes, the generated type is %d", buf.Len(), eventSize)
	}
	got, pid, ok := decodeEvent(buf.Bytes())
	want := rawCall{Hook: 3, TID: 77, EntryNS: 11, DurationNS: 22, Ret: 33, Size: 44, EP: 55, Req: 66,
		Injected: true, Completion: true}
	if !ok || got != want || pid != 88 {
		t.Errorf("decodeEvent = %+v, %d, %v; want %+v, 88", got, pid, ok, want)
	}
	if _, _, ok := decodeEvent(buf.Bytes()[:10]); ok {
		t.Error("decodeEvent accepted a short record")
	}
}

func TestObjectsParse(t *testing.T) {
	// Both committed objects must parse; only the host's is embedded.
	for _, obj := range []string{"observer_x86_bpfel.o", "observer_arm64_bpfel.o"} {
		spec, err := ebpf.LoadCollectionSpec(obj)
		if err != nil {
			t.Fatalf("%s: %v", obj, err)
		}
		for _, p := range []string{observerProgUcxfEntry, observerProgUcxfReturn} {
			if spec.Programs[p] == nil {
				t.Errorf("%s: no program %s", obj, p)
			}
		}
		if spec.Maps[observerMapHookCfgs].MaxEntries != hooks.MaxHooks {
			t.Errorf("%s: hook_cfgs has %d entries, hooks.MaxHooks is %d", obj, spec.Maps[observerMapHookCfgs].MaxEntries, hooks.MaxHooks)
		}
	}
	if len(hooks.Table) > hooks.MaxHooks {
		t.Errorf("hooks.Table has %d rows, more than the BPF map holds", len(hooks.Table))
	}
	for _, h := range hooks.Table {
		for _, name := range []string{h.Size, h.Endpoint, h.RemoteAddr, h.Request} {
			if i := h.ArgIndex(name); name != "" && (i == 0 || i > 6) {
				t.Errorf("%s: argument %q at position %d, the probe reads positions 1 to 6", h.Name, name, i)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	p := &recording.Process{}
	for i := 1; i <= 100; i++ {
		st := 0
		if i%10 == 0 {
			st = -80
		}
		p.Calls = append(p.Calls, recording.Call{Fn: "ucp_get_nbx", Status: st, DurationNS: uint64(i) * 1000})
	}
	p.Calls = append(p.Calls,
		recording.Call{Fn: "ucp_put_nbx", Status: -3, DurationNS: 7},
		recording.Call{Fn: "ucp_put_nbx", Status: -6},
	)
	got := Summarize(p)
	if len(got) != 2 || got[0].Fn != "ucp_put_nbx" || got[1].Fn != "ucp_get_nbx" {
		t.Fatalf("Summarize order: %+v", got)
	}
	put, get := got[0], got[1]
	if put.Calls != 2 || put.Failed() != 2 || put.Errors["IO_ERROR"] != 1 || put.Errors["UNREACHABLE"] != 1 || put.Max != 7 || put.P50 != 7 {
		t.Errorf("put summary %+v", put)
	}
	if get.Calls != 100 || get.Errors["ENDPOINT_TIMEOUT"] != 10 || get.P50 != 50*time.Microsecond ||
		get.P99 != 99*time.Microsecond || get.Max != 100*time.Microsecond {
		t.Errorf("get summary %+v", get)
	}
}

func TestCapabilityError(t *testing.T) {
	if err := capabilityError(1 << capSysAdmin); err != nil {
		t.Errorf("CAP_SYS_ADMIN: %v", err)
	}
	if err := capabilityError(1<<capBPF | 1<<capPerfmon); err != nil {
		t.Errorf("CAP_BPF+CAP_PERFMON: %v", err)
	}
	for caps, want := range map[uint64]string{
		0:               "missing CAP_BPF and CAP_PERFMON",
		1 << capBPF:     "missing CAP_PERFMON (",
		1 << capPerfmon: "missing CAP_BPF (",
	} {
		err := capabilityError(caps)
		if !errors.Is(err, ErrPermission) || !strings.Contains(err.Error(), want) {
			t.Errorf("caps %#x: %v, want ErrPermission saying %q", caps, err, want)
		}
	}
}

// The same calls, as the injector logs them and as the observer's probes
// and the injector's markers show them, go through one request follower
// and give the same recording, call for call and field for field: the
// observer's Raws differ (pointers and tids for ordinals, libucp's return
// where the injector overrode a status query, a marker without a request
// for a failure given as a call returned), the operations do not.
func TestCorrelateDeliveriesAgreeWithInjector(t *testing.T) {
	send, recv := hookID(t, "ucp_tag_send_nbx"), hookID(t, "ucp_tag_recv_nbx")
	check, test := hookID(t, "ucp_request_check_status"), hookID(t, "ucp_request_test")
	const (
		ep           = 0x7f0000001000
		r, q, p, u   = 0x55550000a000, 0x55550000b000, 0x55550000c000, 0x55550000d000
		base         = 1_000_000
		inflight     = 1 // UCS_INPROGRESS: a request was returned
		injected     = eventInjected
		completion   = eventCompletion
		unlearnedBit = eventUnlearned
	)
	type step struct {
		hook   hooks.ID
		ret    uint64 // as the probe or the marker reports it
		status int    // as the injector logs it
		req    uint64
		flags  uint16
		call   bool // a call (else a delivery)
		seen   bool // the injector logs it
		marker bool // the observer sees it
	}
	steps := []step{
		// a send whose callback gets an injected -3, then its request
		// is freed and returned again by a send that completes OK
		{hook: send, ret: r, status: inflight, req: r, call: true, seen: true, marker: true},
		{hook: send, ret: errPtr(-3), status: -3, req: r, flags: injected | completion, seen: true, marker: true},
		{hook: send, ret: r, status: inflight, req: r, call: true, seen: true, marker: true},
		{hook: send, ret: 0, status: 0, req: r, flags: completion, seen: true, marker: true},
		// a receive polled: libucp says OK, the injector returns -6
		{hook: recv, ret: q, status: inflight, req: q, call: true, seen: true, marker: true},
		{hook: check, ret: 0, status: -6, req: q, flags: injected, call: true, seen: true, marker: true},
		{hook: recv, ret: errPtr(-6), status: -6, req: q, flags: injected | completion, seen: true, marker: true},
		// a send freed before its failure reached the application
		{hook: send, ret: p, status: inflight, req: p, call: true, seen: true, marker: true},
		{hook: send, ret: errPtr(-20), status: -20, req: p, flags: injected | completion | unlearnedBit, seen: true, marker: true},
		// a send that completed at once and was failed as it returned
		{hook: send, ret: 0, status: -3, call: true, flags: injected, seen: true, marker: true},
		{hook: send, ret: errPtr(-3), flags: injected | completion, marker: true},
		// a receive completed through ucp_request_test, a poll too:
		// in progress, then done (no delivery: nothing followed it)
		{hook: recv, ret: u, status: inflight, req: u, call: true, seen: true, marker: true},
		{hook: test, ret: inflight, status: inflight, req: u, call: true, seen: true, marker: true},
		{hook: test, ret: 0, status: 0, req: u, call: true, seen: true, marker: true},
	}
	c := newCorrelator()
	var raws []recording.Raw
	for i, s := range steps {
		ts := uint64(base + 10*i)
		var dur uint64
		if s.call {
			dur = 3
		}
		if s.marker {
			ev := rawCall{Hook: s.hook, TID: 4242, EntryNS: ts, DurationNS: dur, Ret: s.ret, Size: 8, EP: ep, Req: s.req,
				Injected: s.flags&injected != 0 && !s.call, Completion: !s.call, Unlearned: s.flags&unlearnedBit != 0}
			c.add(ev)
		}
		if s.seen {
			raw := recording.Raw{TimeNS: ts, DurationNS: dur, ThreadKey: 1, Hook: s.hook, EndpointKey: 1, Size: 8,
				Status: s.status, Request: s.req, Injected: s.flags&injected != 0,
				Completion: !s.call, Unlearned: s.flags&unlearnedBit != 0}
			// The injector logs an endpoint and a size only for
			// functions that take them.
			if hooks.Table[s.hook].Endpoint == "" {
				raw.EndpointKey = 0
			}
			if hooks.Table[s.hook].Size == "" {
				raw.Size = 0
			}
			raws = append(raws, raw)
		}
	}
	observed := c.finish(base)
	recorded, st := recording.Build(raws)
	type outcome struct {
		Fn       string
		Status   int
		How      string
		Injected bool
	}
	strip := func(cs []recording.Call) []outcome {
		var out []outcome
		for _, c := range cs {
			out = append(out, outcome{c.Fn, c.Status, c.How, c.Injected})
		}
		return out
	}
	want := []outcome{
		{"ucp_tag_send_nbx", -3, recording.HowCompletion, true},
		{"ucp_tag_send_nbx", 0, recording.HowCompletion, false},
		{"ucp_tag_recv_nbx", -6, recording.HowCompletion, true},
		{"ucp_request_check_status", -6, recording.HowImmediate, true},
		{"ucp_tag_send_nbx", -20, recording.HowUnknown, true},
		{"ucp_tag_send_nbx", -3, recording.HowImmediate, true},
		{"ucp_tag_recv_nbx", 0, recording.HowCompletion, false},
		{"ucp_request_test", 0, recording.HowImmediate, false},
		{"ucp_request_test", 0, recording.HowImmediate, false},
	}
	if got := strip(recorded); !reflect.DeepEqual(got, want) {
		t.Errorf("injector's recording:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(observed, recorded) {
		t.Errorf("the observer's recording differs from the injector's:\nobserved %+v\nrecorded %+v", observed, recorded)
	}
	if st.Unknown != 0 {
		t.Errorf("%d requests unresolved, want 0", st.Unknown)
	}
	if c.errors != 5 {
		t.Errorf("observer counted %d failed calls, want 5", c.errors)
	}
}

// The observer's endpoint lifetimes: the probe of ucp_ep_create hands the
// new handle (read through ep_p at return), a create event after the call;
// a close call brings a close event just before it; the handle reused by a
// later create is a new endpoint; an endpoint used before any create is
// numbered by first use and listed as attached.
func TestCorrelateEndpointLifetimes(t *testing.T) {
	put, create, closeNB := hookID(t, "ucp_put_nbx"), hookID(t, "ucp_ep_create"), hookID(t, "ucp_ep_close_nb")
	const (
		old, ep = 0x7f0000009000, 0x7f0000001000
		base    = 1_000_000
	)
	c := newCorrelator()
	for _, ev := range []rawCall{
		{Hook: put, TID: 1, EntryNS: base + 1, DurationNS: 1, EP: old},
		{Hook: create, TID: 1, EntryNS: base + 10, DurationNS: 5, EP: ep},
		{Hook: put, TID: 1, EntryNS: base + 20, DurationNS: 1, EP: ep},
		{Hook: closeNB, TID: 1, EntryNS: base + 30, DurationNS: 1, EP: ep},
		{Hook: create, TID: 1, EntryNS: base + 40, DurationNS: 5, EP: ep},
		{Hook: put, TID: 1, EntryNS: base + 50, DurationNS: 1, EP: ep},
		// a failed create hands no endpoint
		{Hook: create, TID: 1, EntryNS: base + 60, DurationNS: 5, Ret: 0xfd},
	} {
		c.add(ev)
	}
	calls, events, attached := c.finishAll(base)
	var got []string
	for _, e := range events {
		got = append(got, e.Event+" "+string(rune('0'+e.Endpoint))+" "+calls[min(int(e.Seq), len(calls)-1)].Fn)
	}
	want := []string{"create 1 ucp_put_nbx", "close 1 ucp_ep_close_nb", "create 2 ucp_put_nbx"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if !reflect.DeepEqual(attached, []int{0}) {
		t.Errorf("attached %v, want [0]", attached)
	}
	if calls[3].Endpoint != 1 || calls[5].Endpoint != 2 {
		t.Errorf("the close call on %d, the put after the second create on %d; want 1 and 2", calls[3].Endpoint, calls[5].Endpoint)
	}
}
