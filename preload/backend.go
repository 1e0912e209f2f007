package main

/*
#include <stdlib.h>
#include <string.h>
#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"
#include "defer.h"
#include "rules.h"
#include "epfail.h"
*/
import "C"

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// retireGrace is how long a replaced C configuration is kept before it is
// freed. A hook holds a configuration pointer for the few nanoseconds of a
// decision, never across a sleep or a call into libucp; ten seconds covers a
// thread descheduled in between by orders of magnitude.
const retireGrace = 10 * time.Second

// A client sending commands in a loop would keep ten seconds of
// configurations (12.5 KB each): past retireMax of them, the oldest are
// freed once retireMinGrace old, still thousands of times longer than a
// decision holds one.
const (
	retireMax      = 256
	retireMinGrace = 100 * time.Millisecond
)

// defaultRecordCapacity is the call log's size when UCX_FAULT_RECORD_CAPACITY
// is not set: 262144 records of 56 bytes, allocated when recording starts.
const defaultRecordCapacity = 1 << 18

type retired struct {
	at    time.Time
	cfg   unsafe.Pointer
	alloc []unsafe.Pointer
}

// cBackend drives the C state of this process.
type cBackend struct {
	retired   []retired
	live      []unsafe.Pointer // allocations of the current configuration
	replay    *control.Replay  // the schedule the current configuration holds
	recCap    uint64
	startTime uint64
	host      string
	rank      int
	command   []string
	start     time.Time
	ipc       string
	rules     ruleSlots // the rules in force, see backend_rules.go
	// killed holds the endpoint ordinals already killed in the C endpoint
	// table (a kill cannot be undone). Kept by ordinal, not by position in
	// Settings.Kills: settings that failed to apply must not shift which
	// kills count as done.
	killed map[int]bool
	// killMu orders the kills of Apply (the engine's goroutine) and of the
	// replay's timer (timed) on killed and the endpoint table.
	killMu sync.Mutex
	// timed runs the replay's kills placed by time (timed.go).
	timed timedKills
}

func newCBackend() *cBackend {
	b := &cBackend{recCap: defaultRecordCapacity, rank: -1, start: time.Now(), killed: map[int]bool{}}
	if v := os.Getenv(control.EnvRecordCapacity); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 || n > 1<<28 {
			logf("%s=%q is not a record count between 1 and %d; using %d", control.EnvRecordCapacity, v, 1<<28, b.recCap)
		} else {
			b.recCap = n
		}
	}
	b.startTime, _ = proc.SelfStartTime()
	b.host, _ = os.Hostname()
	b.rank = proc.SelfRank()
	b.command, _ = proc.SelfCommand()
	b.ipc, _ = control.ParseBackend(os.Getenv(control.EnvIPCBackend))
	b.rules.startNS = uint64(C.ucxf_now_ns())
	return b
}

func (b *cBackend) cBytes(n int) unsafe.Pointer {
	p := C.calloc(C.size_t(n), 1)
	if p == nil {
		return nil
	}
	b.live = append(b.live, p)
	return p
}

// Apply builds a C configuration from s and publishes it. It applies s
// whole or not at all: every step that can fail comes first, and what
// cannot be undone (killing an endpoint, restarting the replay cursors)
// happens only once nothing can fail any more.
func (b *cBackend) Apply(s control.Settings) error {
	var kills []control.Kill
	for _, k := range s.Kills {
		if b.killed[k.Endpoint] {
			continue
		}
		if C.ucxf_ep_has_ordinal(C.int32_t(k.Endpoint)) == 0 {
			return fmt.Errorf("no endpoint %d in this process yet (endpoints are numbered from 0 in order of creation, and retire at their close)", k.Endpoint)
		}
		kills = append(kills, k)
	}
	if s.Recording && C.ucxf_record_capacity() == 0 {
		// Allocated once and kept: an unused call log changes nothing.
		if C.ucxf_record_alloc(C.uint64_t(b.recCap)) != 0 {
			return fmt.Errorf("allocating a call log of %d records: out of memory", b.recCap)
		}
	}
	cfg := C.ucxf_config_new()
	if cfg == nil {
		return fmt.Errorf("allocating configuration: out of memory")
	}
	prevLive := b.live
	b.live = nil
	cfg.seed = C.uint64_t(s.Seed)
	if text := control.SettingsSummary(s); len(text) > 0 {
		if p := b.cBytes(len(text) + 1); p != nil {
			copy(unsafe.Slice((*byte)(p), len(text)+1), text)
			cfg.summary = (*C.char)(p)
		}
	}
	cfg.enabled = boolC(s.Enabled)
	cfg.recording = boolC(s.Recording)
	cfg.deferred_mode = boolC(s.Mode == control.ModeDeferred)
	// A replayed endpoint failure is a kill: calls on the endpoint fail
	// and its requests are followed from the start, as under kill-ep.
	cfg.kills = boolC(len(s.Kills) > 0 || slices.ContainsFunc(s.Rules, func(r control.Rule) bool { return r.KillEP }) ||
		s.Replay.HasKills())
	cfg.inflight_code = C.int8_t(s.InflightCode)
	cfg.follow_inflight = boolC(s.FollowsInflight())
	switch s.Strategy {
	case control.StrategyRandom:
		cfg.strategy = C.UCXF_STRATEGY_RANDOM
	case control.StrategyPattern:
		cfg.strategy = C.UCXF_STRATEGY_PATTERN
	case control.StrategyReplay:
		cfg.strategy = C.UCXF_STRATEGY_REPLAY
	default:
		cfg.strategy = C.UCXF_STRATEGY_NONE
	}
	cfg.prob_units = C.uint32_t(control.ProbabilityUnits(s.Probability))
	if len(s.Codes) == 0 || len(s.Codes) > C.UCXF_MAX_CODES {
		C.free(unsafe.Pointer(cfg))
		b.live = prevLive
		return fmt.Errorf("%d error codes (want 1 to %d)", len(s.Codes), C.UCXF_MAX_CODES)
	}
	cfg.ncodes = C.uint32_t(len(s.Codes))
	for i, c := range s.Codes {
		cfg.codes[i] = C.int8_t(c)
	}
	cfg.pattern_len = C.uint32_t(len(s.Pattern))
	for i := 0; i < len(s.Pattern) && i < C.UCXF_MAX_PATTERN; i++ {
		if s.Pattern[i] == 'X' {
			cfg.pattern[i] = 1
		}
	}
	for i := range hooks.Table {
		if i < len(s.HookEnabled) && s.HookEnabled[i] {
			cfg.hook_enabled[i] = 1
		}
	}
	commitRules, removedRules, err := b.fillRules(cfg, s)
	if err != nil {
		for _, p := range b.live {
			C.free(p)
		}
		C.free(unsafe.Pointer(cfg))
		b.live = prevLive
		return err
	}
	if r := s.Replay; r != nil {
		cfg.replay_global = boolC(r.Global)
		cfg.replay_cycle = boolC(r.Cycle)
		if r.Global {
			cfg.replay_all = b.schedule(r.All)
		} else {
			for i, outs := range r.PerHook {
				cfg.replay[i] = b.schedule(outs)
			}
		}
	}
	// Nothing fails from here on.
	b.killMu.Lock()
	for _, k := range kills {
		// An endpoint never leaves the table, so the ordinal found above
		// is still there.
		inflight := k.InflightCode
		if inflight == 0 {
			inflight = s.InflightCode
		}
		C.ucxf_ep_kill_ordinal(C.int32_t(k.Endpoint), C.int(k.Code), C.int(inflight))
		// The call log's note of the failure (when recording is on).
		C.ucxf_record_ep_event(C.int32_t(k.Endpoint), C.UCXF_EPEV_FAILURE, C.int(k.Code), C.UCXF_EPCAUSE_COMMAND,
			C.int(inflight), 0)
		b.killed[k.Endpoint] = true
	}
	b.killMu.Unlock()
	newReplay := s.Replay != b.replay
	if newReplay {
		// A new schedule starts at its first outcome.
		C.ucxf_replay_reset()
		b.replay = s.Replay
	}
	old := C.ucxf_publish(cfg)
	if newReplay {
		// After the publication: the configuration that follows killed
		// endpoints (cfg.kills) is in force before a timed kill fires.
		var timed []control.TimedKill
		if s.Replay != nil {
			timed = s.Replay.Timed
		}
		b.timed.start(timed, int(s.InflightCode), b.timedKill)
	}
	commitRules()
	// A removed rule's budget goes with the last configuration that used it.
	prevLive = append(prevLive, removedRules...)
	now := time.Now()
	if old != nil {
		b.retired = append(b.retired, retired{at: now, cfg: unsafe.Pointer(old), alloc: prevLive})
	}
	keep := b.retired[:0]
	for i, r := range b.retired {
		age := now.Sub(r.at)
		if age < retireGrace && (len(b.retired)-i <= retireMax || age < retireMinGrace) {
			keep = append(keep, r)
			continue
		}
		for _, p := range r.alloc {
			C.free(p)
		}
		C.free(r.cfg)
	}
	b.retired = keep
	return nil
}

// timedKill is the kill of a timed kill whose moment came: what Apply does
// for kill-ep, logged as a replayed failure.
func (b *cBackend) timedKill(k control.TimedKill, inflight int) {
	b.killMu.Lock()
	defer b.killMu.Unlock()
	if b.killed[k.Endpoint] {
		return // dead already (kill-ep): the handler is called once
	}
	if k.InflightCode != 0 {
		inflight = int(k.InflightCode)
	}
	if C.ucxf_ep_kill_ordinal(C.int32_t(k.Endpoint), C.int(k.Code), C.int(inflight)) != 0 {
		return
	}
	C.ucxf_record_ep_event(C.int32_t(k.Endpoint), C.UCXF_EPEV_FAILURE, C.int(k.Code), C.UCXF_EPCAUSE_REPLAY,
		C.int(inflight), 0)
	b.killed[k.Endpoint] = true
}

func (b *cBackend) schedule(outs []control.Outcome) C.struct_ucxf_schedule {
	var s C.struct_ucxf_schedule
	if len(outs) == 0 {
		return s
	}
	codes := b.cBytes(len(outs))
	deferred := b.cBytes(len(outs))
	if codes == nil || deferred == nil {
		return s // out of memory: an empty schedule passes every call
	}
	cs := unsafe.Slice((*int8)(codes), len(outs))
	ds := unsafe.Slice((*uint8)(deferred), len(outs))
	for i, o := range outs {
		cs[i] = int8(o.Code)
		if o.Deferred {
			ds[i] = 1
		}
	}
	s.len = C.uint64_t(len(outs))
	for i := len(outs) - 1; i >= 0; i-- {
		if outs[i].Code < 0 || outs[i].Kill != nil {
			s.events_end = C.uint64_t(i + 1)
			break
		}
	}
	s.codes = (*C.int8_t)(codes)
	s.deferred = (*C.uint8_t)(deferred)
	hasKill := false
	for _, o := range outs {
		hasKill = hasKill || o.Kill != nil
	}
	if !hasKill {
		return s
	}
	eps := b.cBytes(4 * len(outs))
	kcodes := b.cBytes(len(outs))
	kinflight := b.cBytes(len(outs))
	if eps == nil || kcodes == nil || kinflight == nil {
		return s // out of memory: the outcomes still replay, without kills
	}
	es := unsafe.Slice((*int32)(eps), len(outs))
	ks := unsafe.Slice((*int8)(kcodes), len(outs))
	is := unsafe.Slice((*int8)(kinflight), len(outs))
	for i, o := range outs {
		es[i], is[i] = -1, 0
		if o.Kill != nil {
			es[i], ks[i], is[i] = int32(o.Kill.Endpoint), int8(o.Kill.Code), int8(o.Kill.InflightCode)
		}
	}
	s.kill_ep = (*C.int32_t)(eps)
	s.kill_code = (*C.int8_t)(kcodes)
	s.kill_inflight = (*C.int8_t)(kinflight)
	return s
}

func boolC(v bool) C.uint8_t {
	if v {
		return 1
	}
	return 0
}

// Counters sums the per-thread counters.
func (b *cBackend) Counters() control.Counters {
	var raw [C.UCXF_NUM_HOOKS]C.struct_ucxf_hook_counters
	var threads C.uint64_t
	C.ucxf_stats_sum(&raw[0], &threads)
	out := control.Counters{Threads: uint64(threads), Hooks: make([]control.HookCounters, len(raw))}
	b.ruleCounters(&out)
	for i := range raw {
		h := &out.Hooks[i]
		h.Calls = uint64(raw[i].calls)
		h.Faults = uint64(raw[i].faults)
		h.SinceFault = uint64(raw[i].calls_at_fault) // calls since, as ucxf_stats_sum totals it
		for k := range h.Codes {
			h.Codes[k] = uint64(raw[i].codes[k])
		}
		h.SizeCalls = make([]uint64, C.UCXF_SIZE_BUCKETS)
		h.SizeFaults = make([]uint64, C.UCXF_SIZE_BUCKETS)
		for k := range h.SizeCalls {
			h.SizeCalls[k] = uint64(raw[i].size_calls[k])
			h.SizeFaults[k] = uint64(raw[i].size_faults[k])
		}
	}
	return out
}

// Identity names this process: its pid and the start time read once at
// load.
func (b *cBackend) Identity() control.Identity {
	return control.Identity{PID: os.Getpid(), StartTime: b.startTime}
}

// Info describes this process.
func (b *cBackend) Info() control.Status {
	st := control.Status{PID: os.Getpid(), StartTime: b.startTime, Host: b.host, Rank: b.rank,
		Command: b.command, Backend: b.ipc}
	st.Records = uint64(C.ucxf_record_head())
	if capa := uint64(C.ucxf_record_capacity()); capa > 0 && st.Records > capa {
		st.RecordsLost = st.Records - capa
		st.Records = capa
	}
	var buf [1024]C.char
	var ver [64]C.char
	for i := 0; i < int(C.ucxf_libucp_file(C.int(i), &buf[0], C.size_t(len(buf)), &ver[0], C.size_t(len(ver)))) && i < 4; i++ {
		st.Libucp = append(st.Libucp, control.LibucpFile{Path: C.GoString(&buf[0]), Version: C.GoString(&ver[0])})
	}
	if len(st.Libucp) > 0 {
		for i := range hooks.Table {
			if C.ucxf_hook_exists(C.int(i)) == 0 {
				st.MissingHooks = append(st.MissingHooks, hooks.Table[i].Name)
			}
		}
	}
	if n := int(C.ucxf_libucp_copies(&buf[0], C.size_t(len(buf)))); n > 1 {
		st.Warnings = append(st.Warnings, fmt.Sprintf("%d copies of libucp are mapped: %s; each call goes to the copy its caller is linked with",
			n, strings.ReplaceAll(C.GoString(&buf[0]), "\n", ", ")))
		for i := 0; ; i++ {
			var calls C.uint64_t
			if i >= int(C.ucxf_route_copy(C.int(i), &buf[0], C.size_t(len(buf)), &calls)) {
				break
			}
			st.LibucpCopies = append(st.LibucpCopies, control.LibucpCopy{Path: C.GoString(&buf[0]), Calls: uint64(calls)})
		}
	}
	for i := 0; i < int(C.ucxf_bypassed(C.int(i), &buf[0], C.size_t(len(buf)))) && i < 8; i++ {
		st.Warnings = append(st.Warnings, fmt.Sprintf("%s was opened with RTLD_DEEPBIND: its UCX calls bypass the injector", C.GoString(&buf[0])))
	}
	if n := uint64(C.ucxf_defer_overflow()); n > 0 {
		st.Warnings = append(st.Warnings, fmt.Sprintf("%d requests could not be followed: their failures on completion were returned at once, or a kill-ep could not fail them", n))
	}
	if d := C.ucxf_epfail_emulated(); d != nil {
		st.Warnings = append(st.Warnings, "kill-ep is "+C.GoString(d)+": a kill is emulated by the injector and differs from a real peer death (docs/peer-death.md)")
	}
	st.KilledRequests = uint64(C.ucxf_defer_kill_count())
	st.Endpoints = endpointRows()
	st.TimedKills = b.timed.snapshot()
	return st
}

// endpointStates maps the endpoint table's states (UCXF_EP_*, endpoint.h)
// to the status's.
var endpointStates = map[C.int8_t]string{
	C.UCXF_EP_OPEN:   control.EndpointOpen,
	C.UCXF_EP_KILLED: control.EndpointKilled,
	C.UCXF_EP_CLOSED: control.EndpointClosed,
}

// endpointRows lists every endpoint the C table knows, by number: those in
// the table and the newest it retired (ucxf_ep_rows), with the counters
// summed over threads at this instant.
func endpointRows() []control.EndpointStatus {
	rows := make([]C.struct_ucxf_ep_row, C.UCXF_EP_SLOTS+C.UCXF_EP_GONE)
	n := int(C.ucxf_ep_rows(&rows[0], C.int(len(rows))))
	out := make([]control.EndpointStatus, 0, n)
	for _, r := range rows[:n] {
		if r.ordinal < 0 {
			continue
		}
		out = append(out, control.EndpointStatus{Endpoint: int(r.ordinal), State: endpointStates[r.state],
			Calls: uint64(r.calls), Faults: uint64(r.faults), Code: ucs.Status(r.code),
			Peer: C.GoString(&r.peer[0])})
	}
	slices.SortFunc(out, func(a, b control.EndpointStatus) int { return a.Endpoint - b.Endpoint })
	return out
}

// Records reads the call log and follows requests to their final status.
// The log is copied in one C pass (ucxf_record_snapshot) as it stands at
// one instant, the per-thread counts read first, so that a program that
// keeps calling during a dump overtakes only the few slots the copy had
// not yet reached. The records of all threads are merged by time (the
// log's clock, one for the process; recording.Build sorts them), and the
// newest capacity records are kept (count, when smaller): the log's pool
// holds a few chunks more than its capacity, for the chunks threads are
// filling. Every record appended since the last clear and not returned
// is counted: in Lost.OvertakenRecords, up to the slots the program
// rewrote during the copy (where the capacity was not reached), the rest
// in Lost.OverwrittenRecords.
func (b *cBackend) Records(count int) (*recording.Process, error) {
	capa := uint64(C.ucxf_record_capacity())
	slots := uint64(C.ucxf_record_slots())
	p := &recording.Process{Host: b.host, PID: os.Getpid(), Rank: b.rank, Command: b.command,
		StartTime: b.start.UTC(), Hooks: hooks.Names(), Calls: []recording.Call{}}
	// A Go-owned buffer: the records hold no Go pointers.
	snap := make([]C.struct_ucxf_record, slots+1)
	var cHead C.uint64_t
	C.ucxf_record_snapshot(&snap[0], &cHead)
	head := uint64(cHead)
	var late uint64
	recs := make([]*C.struct_ucxf_record, 0, min(head, slots))
	for k := uint64(0); k < slots; k++ {
		rec := &snap[k]
		switch {
		case rec.seq != 0:
			recs = append(recs, rec)
		case rec.flags&C.UCXF_REC_LATE != 0:
			late++
		}
	}
	// One order for the process: by time, then by thread's segment and
	// index, so that equal times keep each thread's own order.
	slices.SortStableFunc(recs, func(x, y *C.struct_ucxf_record) int {
		switch {
		case x.t_ns != y.t_ns:
			return cmpU64(uint64(x.t_ns), uint64(y.t_ns))
		case x.seg != y.seg:
			return cmpU64(uint64(x.seg), uint64(y.seg))
		}
		return cmpU64(uint64(x.seq), uint64(y.seq))
	})
	if capa > 0 && uint64(len(recs)) > capa {
		recs = recs[uint64(len(recs))-capa:]
	}
	if lost := head - min(head, uint64(len(recs))); lost > 0 {
		// Overtaken: records the log held at the start (up to its
		// capacity) that the program rewrote before the copy reached
		// them; the rest were dropped before the dump.
		held := min(head, capa)
		p.Lost.OvertakenRecords = min(late, held-min(held, uint64(len(recs))))
		p.Lost.OverwrittenRecords = lost - p.Lost.OvertakenRecords
	}
	if count > 0 && len(recs) > count {
		recs = recs[len(recs)-count:]
	}
	// The peers, as status names them, of the endpoints the table still
	// knows (open, and the newest it retired).
	peers := map[int]string{}
	for _, e := range endpointRows() {
		peers[e.Endpoint] = e.Peer
	}
	raws := make([]recording.Raw, 0, len(recs))
	for _, rec := range recs {
		if rec.flags&C.UCXF_REC_EP_EVENT != 0 {
			if ev := epEventNames[uint64(rec.size)]; ev != "" && rec.ep >= 0 {
				raws = append(raws, recording.Raw{TimeNS: uint64(rec.t_ns), ThreadKey: uint64(rec.thread) + 1,
					EndpointKey: uint64(int64(rec.ep) + 1), KeyIsNumber: true, Event: ev, Code: int(rec.status),
					Peer:     peers[int(rec.ep)],
					Injected: rec.flags&C.UCXF_REC_INJECTED != 0, Cause: epCauses[uint64(rec.hook)],
					InflightCode: inflightOf(int(rec.status), int(int8(uint8(rec.req))))})
			}
			continue
		}
		raws = append(raws, recording.Raw{
			TimeNS: uint64(rec.t_ns), DurationNS: uint64(rec.duration_ns),
			ThreadKey: uint64(rec.thread) + 1, Hook: hooks.ID(rec.hook),
			EndpointKey: uint64(int64(rec.ep) + 1), KeyIsNumber: rec.ep >= 0, Size: uint64(rec.size),
			Status: int(rec.status), Request: uint64(rec.req),
			Injected:   rec.flags&C.UCXF_REC_INJECTED != 0,
			Completion: rec.flags&C.UCXF_REC_COMPLETION != 0,
			Unlearned:  rec.flags&C.UCXF_REC_UNLEARNED != 0,
		})
	}
	var st recording.BuildStats
	p.Calls, st = recording.Build(raws)
	p.EndpointEvents = st.Events
	p.Complete = !p.Lost.Any()
	return p, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// epEventNames maps the call log's endpoint event kinds (UCXF_EPEV_*,
// record.h) to the recording's names.
var epEventNames = map[uint64]string{
	C.UCXF_EPEV_CREATE:  recording.EventCreate,
	C.UCXF_EPEV_CLOSE:   recording.EventClose,
	C.UCXF_EPEV_FAILURE: recording.EventFailure,
	C.UCXF_EPEV_HANDLER: recording.EventHandler,
}

// inflightOf is a failure's in-flight code as the recording keeps it: 0
// when it is the failure's own code.
func inflightOf(code, inflight int) int {
	if inflight == code {
		return 0
	}
	return inflight
}

// epCauses maps the call log's causes of endpoint events (UCXF_EPCAUSE_*,
// record.h) to the recording's names.
var epCauses = map[uint64]string{
	C.UCXF_EPCAUSE_COMMAND: recording.CauseCommand,
	C.UCXF_EPCAUSE_RULE:    recording.CauseRule,
	C.UCXF_EPCAUSE_REPLAY:  recording.CauseReplay,
	C.UCXF_EPCAUSE_KILL:    recording.CauseKill,
}

// RecordClear drops the logged calls.
func (b *cBackend) RecordClear() {
	C.ucxf_record_clear()
}
