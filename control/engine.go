package control

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/abi"
	"github.com/ucxfault/ucxfault/internal/proc"
	"github.com/ucxfault/ucxfault/internal/version"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// HookCounters are one hook's counters as the injector's C side keeps them.
type HookCounters struct {
	Calls, Faults, SinceFault uint64
	// Codes counts faults by code, indexed by -code.
	Codes [abi.CodeSlots]uint64
	// SizeCalls and SizeFaults count by transfer size: bucket 0 is size 0,
	// bucket b > 0 holds sizes in [2^(b-1), 2^b).
	SizeCalls, SizeFaults []uint64
}

// Counters are the summed counters of all threads.
type Counters struct {
	Hooks   []HookCounters
	Threads uint64
	// Rules are the counters of the rules in force, by rule ID; DelayNS is
	// the time all rules' delays added.
	Rules   map[int]RuleCounters
	DelayNS uint64
}

// Identity names one process: its pid and its start time in clock ticks
// since boot (/proc/PID/stat field 22). The pid alone may name another
// process later (pids are reused) or elsewhere (another pid namespace
// sharing the socket directory); with the start time it does not.
type Identity struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// Backend is what the engine drives: the injector's C state in a real
// process. Implementations must be safe for use by one goroutine at a time
// (the engine serialises calls).
type Backend interface {
	// Apply publishes s whole; the hot path sees the old or the new settings.
	Apply(s Settings) error
	// Counters sums the per-thread counters.
	Counters() Counters
	// Identity names the process; the engine reads it once.
	Identity() Identity
	// Info fills the fields of Status that describe the process.
	Info() Status
	// Records returns the logged calls (the newest count when count > 0).
	Records(count int) (*recording.Process, error)
	// RecordClear drops the logged calls.
	RecordClear()
}

// Engine applies requests to a Backend. It keeps the settings and the
// counters' baseline (reset subtracts rather than writes to counters that
// other threads own).
type Engine struct {
	mu   sync.Mutex
	b    Backend
	id   Identity
	s    Settings
	base Counters
	// nextRule numbers the next rule set; rule IDs are never reused.
	nextRule int
	// epBase holds each endpoint's counters at the last reset, by number.
	epBase map[int]EndpointStatus
}

// NewEngine returns an engine whose current settings are s (already applied).
func NewEngine(b Backend, s Settings) *Engine {
	e := &Engine{b: b, id: b.Identity(), s: s.Clone(), nextRule: 1}
	for _, r := range s.Rules {
		e.nextRule = max(e.nextRule, r.ID+1)
	}
	return e
}

// Identity returns the identity every answer carries.
func (e *Engine) Identity() Identity { return e.id }

// Settings returns a copy of the current settings.
func (e *Engine) Settings() Settings {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s.Clone()
}

// Refuse returns the answer to a request that was refused before it reached
// a handler (it could not be parsed): an error, with the identity.
func (e *Engine) Refuse(err error) Response {
	return Response{Error: err.Error(), Identity: &e.id}
}

// HandleLine parses and applies one request line and returns the response
// line. A request that cannot be parsed gets an error response.
func (e *Engine) HandleLine(line []byte) (resp []byte, ok bool) {
	req, err := ParseRequest(line)
	if err != nil {
		r := e.Refuse(err)
		return r.Encode(), false
	}
	r := e.Handle(req)
	return r.Encode(), r.OK
}

// plan is what a command asks for, built and validated by its handler
// without changing anything: the settings to publish (nil: they stay), and
// what else changes once they are published.
type plan struct {
	next *Settings
	msg  string
	// nextRule, when not 0, is the rule number to hand out next.
	nextRule int
	// after runs once the settings are published (or at once when next
	// is nil): moving the counters' baseline, dropping the call log.
	after []func()
	// recording is record_dump's answer.
	recording *recording.Process
}

// answer says what an answer carries besides the identity and the message.
type answer int

const (
	answerMessage   answer = iota
	answerStatus           // the full status (every thread's counters summed)
	answerRecording        // the call log
)

// handler is one command: plan validates the request against the engine's
// state, which it only reads; answer says what the reply carries.
type handler struct {
	plan   func(e *Engine, req *Request) (plan, error)
	answer answer
}

// handlers routes each command to its handler. The status is built only
// where the answer is one: status itself, and rules, whose answer shows the
// rules in force with their numbers and counters.
var handlers = map[string]handler{
	CmdStatus:      {planNothing, answerStatus},
	CmdRecordDump:  {planRecordDump, answerRecording},
	CmdToggle:      {planToggle, answerMessage},
	CmdEnable:      {planEnabled(true), answerMessage},
	CmdDisable:     {planEnabled(false), answerMessage},
	CmdProbability: {planProbability, answerMessage},
	CmdPattern:     {planPattern, answerMessage},
	CmdCodes:       {planCodes, answerMessage},
	CmdSeed:        {planSeed, answerMessage},
	CmdStrategy:    {planStrategy, answerMessage},
	CmdReset:       {planReset, answerMessage},
	CmdHooks:       {planHooks, answerMessage},
	CmdRecord:      {planRecord, answerMessage},
	CmdRecordClear: {planRecordClear, answerMessage},
	CmdReplay:      {planReplay, answerMessage},
	CmdReplaySelf:  {planReplaySelf, answerMessage},
	CmdReplayStop:  {planReplayStop, answerMessage},
	CmdRules:       {planRules, answerStatus},
	CmdMode:        {planMode, answerMessage},
	CmdKillEP:      {planKillEP, answerMessage},
	CmdInflight:    {planInflightCode, answerMessage},
}

// Handle applies one request. A request changes all it asks for, or
// nothing: its handler builds and validates the new settings aside, and
// only once the backend has published them does anything else change.
// Every answer carries the process's identity.
func (e *Engine) Handle(req *Request) Response {
	e.mu.Lock()
	defer e.mu.Unlock()
	fail := func(err error) Response { return Response{Error: err.Error(), Identity: &e.id} }
	h, ok := handlers[req.Cmd]
	if !ok {
		return fail(fmt.Errorf("%w: unknown command %q", ErrInvalid, req.Cmd))
	}
	p, err := h.plan(e, req)
	if err != nil {
		return fail(err)
	}
	if p.next != nil {
		if err := e.b.Apply(*p.next); err != nil {
			return fail(fmt.Errorf("applying settings: %w", err))
		}
		e.s = *p.next
	}
	if p.nextRule != 0 {
		e.nextRule = p.nextRule
	}
	for _, f := range p.after {
		f()
	}
	r := Response{OK: true, Message: p.msg, Identity: &e.id}
	switch h.answer {
	case answerStatus:
		// status has always answered with the per-hook detail.
		st := e.status(req.Detailed || req.Cmd == CmdStatus)
		r.Status = &st
	case answerRecording:
		r.Recording = p.recording
	}
	return r
}

// change returns a plan that publishes a copy of the current settings as f
// changes it.
func (e *Engine) change(f func(next *Settings) (string, error)) (plan, error) {
	next := e.s.Clone()
	msg, err := f(&next)
	if err != nil {
		return plan{}, err
	}
	return plan{next: &next, msg: msg}, nil
}

func planNothing(*Engine, *Request) (plan, error) { return plan{}, nil }

func planRecordDump(e *Engine, req *Request) (plan, error) {
	if req.Count < 0 {
		return plan{}, fmt.Errorf("%w: record_dump count %d (accepted: 0 = all, or the newest N)", ErrInvalid, req.Count)
	}
	if req.Chunk < 0 || req.Chunk > MaxChunk {
		return plan{}, fmt.Errorf("%w: record_dump chunk %d (accepted: 0 = one line, or 1 to %d calls per line)", ErrInvalid, req.Chunk, MaxChunk)
	}
	p, err := e.b.Records(req.Count)
	if err != nil {
		return plan{}, fmt.Errorf("dumping records: %w", err)
	}
	return plan{recording: p}, nil
}

func planToggle(e *Engine, _ *Request) (plan, error) {
	return e.change(func(next *Settings) (string, error) {
		next.Enabled = !next.Enabled
		return onOff("injection", next.Enabled), nil
	})
}

func planEnabled(on bool) func(*Engine, *Request) (plan, error) {
	return func(e *Engine, _ *Request) (plan, error) {
		return e.change(func(next *Settings) (string, error) {
			next.Enabled = on
			return onOff("injection", on), nil
		})
	}
}

func planProbability(e *Engine, req *Request) (plan, error) {
	if req.Probability == nil {
		return plan{}, fmt.Errorf("%w: probability needs field \"probability\"", ErrInvalid)
	}
	if err := CheckProbability(*req.Probability); err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		next.Probability, next.Strategy = *req.Probability, StrategyRandom
		return fmt.Sprintf("strategy random, probability %.2f %%", next.Probability), nil
	})
}

func planPattern(e *Engine, req *Request) (plan, error) {
	if req.Pattern == nil {
		return plan{}, fmt.Errorf("%w: pattern needs field \"pattern\"", ErrInvalid)
	}
	p, err := CheckPattern(*req.Pattern)
	if err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		next.Pattern, next.Strategy = p, StrategyPattern
		return "strategy pattern " + p, nil
	})
}

func planCodes(e *Engine, req *Request) (plan, error) {
	codes, err := CheckCodes(req.Codes)
	if err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		next.Codes = codes
		return "error codes " + ucs.FormatList(codes), nil
	})
}

func planSeed(e *Engine, req *Request) (plan, error) {
	if req.Seed == nil {
		return plan{}, fmt.Errorf("%w: seed needs field \"seed\"", ErrInvalid)
	}
	return e.change(func(next *Settings) (string, error) {
		next.Seed = uint64(*req.Seed)
		return "seed " + strconv.FormatUint(next.Seed, 10), nil
	})
}

func planStrategy(e *Engine, req *Request) (plan, error) {
	if req.Strategy == nil {
		return plan{}, fmt.Errorf("%w: strategy needs field \"strategy\"", ErrInvalid)
	}
	s, err := ParseStrategy(*req.Strategy)
	if err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		if s == StrategyPattern && next.Pattern == "" {
			return "", fmt.Errorf("%w: no pattern set; send a pattern command instead", ErrInvalid)
		}
		if s == StrategyReplay && next.Replay == nil {
			return "", fmt.Errorf("%w: no replay loaded; send a replay command instead", ErrInvalid)
		}
		next.Strategy = s
		return "strategy " + s, nil
	})
}

func planReset(e *Engine, _ *Request) (plan, error) {
	next := DefaultSettings()
	// A dead endpoint stays dead, as a peer that died does not return.
	next.Seed, next.Kills = e.s.Seed, append([]Kill(nil), e.s.Kills...)
	return plan{next: &next, msg: "reset: injection off, default settings, counters and records cleared",
		after: []func(){func() { e.base = e.b.Counters(); e.epBase = endpointBase(e.b.Info().Endpoints) }, e.b.RecordClear}}, nil
}

func planHooks(e *Engine, req *Request) (plan, error) {
	if req.On == nil || len(req.Hooks) == 0 {
		return plan{}, fmt.Errorf("%w: hooks needs fields \"hooks\" (names or all) and \"on\"", ErrInvalid)
	}
	return e.change(func(next *Settings) (string, error) {
		for _, name := range req.Hooks {
			ids, err := hooks.ParseFaultList(name)
			if err != nil {
				return "", fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			for _, id := range ids {
				next.HookEnabled[id] = *req.On
			}
		}
		return onOff("hooks", *req.On), nil
	})
}

func planRecord(e *Engine, req *Request) (plan, error) {
	return e.change(func(next *Settings) (string, error) {
		if req.On == nil {
			next.Recording = !next.Recording
		} else {
			next.Recording = *req.On
		}
		return onOff("recording", next.Recording), nil
	})
}

// planRecordClear is the one command that leaves the settings as they are.
func planRecordClear(e *Engine, _ *Request) (plan, error) {
	return plan{msg: "records cleared", after: []func(){e.b.RecordClear}}, nil
}

func planReplay(e *Engine, req *Request) (plan, error) {
	r, err := ReplayFromWire(req.Schedule)
	if err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		r = r.WithoutDisabled(next.HookEnabled)
		if r.Len() == 0 && len(r.Timed) == 0 {
			return "", fmt.Errorf("%w: no outcome of the schedule is for an enabled hook", ErrInvalid)
		}
		next.Replay, next.Strategy, next.Enabled = r, StrategyReplay, true
		msg := fmt.Sprintf("replaying %d outcomes from %s", r.Len(), r.Source)
		if r.Len() == 0 {
			msg = "replaying " + r.Source
		}
		for _, k := range r.Timed {
			msg += fmt.Sprintf("; endpoint %d dies with %d (%s) %v after its creation", k.Endpoint, k.Code, k.Code,
				time.Duration(k.AfterNS).Round(time.Microsecond))
		}
		return msg, nil
	})
}

func planReplaySelf(e *Engine, req *Request) (plan, error) {
	p, err := e.b.Records(0)
	if err != nil {
		return plan{}, fmt.Errorf("reading own records: %w", err)
	}
	if len(p.Calls) == 0 {
		return plan{}, fmt.Errorf("%w: nothing recorded to replay (turn recording on first)", ErrInvalid)
	}
	key := "function"
	if req.Schedule != nil && req.Schedule.Key != "" {
		key = req.Schedule.Key
	}
	w := ScheduleFromCalls(p.Calls, key, req.Schedule != nil && req.Schedule.Cycle, "own recording")
	r, err := ReplayFromWire(w)
	if err != nil {
		return plan{}, err
	}
	pl, err := e.change(func(next *Settings) (string, error) {
		r = r.WithoutDisabled(next.HookEnabled)
		if r.Len() == 0 {
			return "", fmt.Errorf("%w: no recorded outcome is for an enabled hook", ErrInvalid)
		}
		next.Replay, next.Strategy, next.Enabled, next.Recording = r, StrategyReplay, true, false
		return fmt.Sprintf("replaying %d recorded outcomes", r.Len()), nil
	})
	pl.after = append(pl.after, e.b.RecordClear)
	return pl, err
}

func planReplayStop(e *Engine, _ *Request) (plan, error) {
	return e.change(func(next *Settings) (string, error) {
		next.Replay = nil
		if next.Strategy == StrategyReplay {
			next.Strategy = StrategyNone
		}
		return "replay stopped", nil
	})
}

func planRules(e *Engine, req *Request) (plan, error) {
	// Numbers are handed out from a copy: a command that fails uses none.
	nextRule := e.nextRule
	p, err := e.change(func(next *Settings) (string, error) {
		msg, err := applyRules(next, req, &nextRule, time.Now())
		if err == nil && !next.Enabled && len(next.Rules) > 0 && req.RuleOp != RuleOpDel && req.RuleOp != RuleOpClear {
			// Rules act only while injection is on: a rule added now
			// would otherwise do nothing, and say nothing about it.
			msg += "; injection is off, so no rule acts until it is on (ucxfault enable)"
		}
		return msg, err
	})
	p.nextRule = nextRule
	return p, err
}

func planMode(e *Engine, req *Request) (plan, error) {
	if req.Mode == nil {
		return plan{}, fmt.Errorf("%w: mode needs field \"mode\"", ErrInvalid)
	}
	m, err := ParseMode(*req.Mode)
	if err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		next.Mode = m
		return "failures " + map[string]string{ModeImmediate: "at once", ModeDeferred: "on completion where the function allows"}[m], nil
	})
}

func planKillEP(e *Engine, req *Request) (plan, error) {
	if req.Peer != "" {
		return planKillPeer(e, req)
	}
	if req.Endpoint == nil {
		return plan{}, fmt.Errorf("%w: kill_ep needs field \"endpoint\", an endpoint ordinal from 0, or \"peer\"", ErrInvalid)
	}
	if *req.Endpoint < 0 {
		return plan{}, fmt.Errorf("%w: kill_ep \"endpoint\" %d: an endpoint ordinal counts from 0", ErrInvalid, *req.Endpoint)
	}
	code, err := killCode(req, e.b.Info) // the one command that looks at the loaded libraries
	if err != nil {
		return plan{}, err
	}
	inflight, err := killInflightCode(req)
	if err != nil {
		return plan{}, err
	}
	return e.change(func(next *Settings) (string, error) {
		for _, k := range next.Kills {
			if k.Endpoint == *req.Endpoint {
				return "", fmt.Errorf("%w: endpoint %d is already dead (with %d)", ErrInvalid, k.Endpoint, k.Code)
			}
		}
		note := inflightNote(*next, code, inflight)
		next.Kills = append(next.Kills, Kill{Endpoint: *req.Endpoint, Code: code, InflightCode: inflight})
		return fmt.Sprintf("endpoint %d killed with %d (%s)", *req.Endpoint, int(code), code) + note, nil
	})
}

// killInflightCode is kill_ep's in-flight code (0: none of its own).
func killInflightCode(req *Request) (ucs.Status, error) {
	if req.InflightCode == nil {
		return 0, nil
	}
	return ParseInflightCode(strconv.Itoa(*req.InflightCode))
}

// inflightNote is what a kill with code and in-flight code inflight (0:
// none of its own) adds to its reply under the settings s before it: the
// code the operations in flight complete with, when it is not the kill's,
// and, when nothing followed the requests posted before the command
// (s.FollowsInflight; deferred mode follows those of the hooks it injects
// into), that those complete as libucp completes them
// (docs/peer-death.md): said, not left to be found.
func inflightNote(s Settings, code, inflight ucs.Status) string {
	in := cmp.Or(inflight, s.InflightCode)
	if in == 0 || in == code {
		return ""
	}
	note := fmt.Sprintf("; operations in flight complete with %d (%s)", int(in), in)
	if s.FollowsInflight() {
		return note
	}
	which := "earlier ones were not followed"
	if s.Mode == ModeDeferred {
		note += " if posted after this command reached the process or through a hook injected into"
		which = "earlier ones of other hooks were not followed"
	} else {
		note += " if posted after this command reached the process"
	}
	return note + fmt.Sprintf(": %s and complete as libucp completes them (with %d when it purges them, with their own status when they finished first; "+
		"give the in-flight code before the kill: --inflight-code or 'ucxfault inflight-code')", which, int(code))
}

func planInflightCode(e *Engine, req *Request) (plan, error) {
	var code ucs.Status
	if req.Code != nil && *req.Code != 0 {
		var err error
		if code, err = ParseInflightCode(strconv.Itoa(*req.Code)); err != nil {
			return plan{}, err
		}
	}
	return e.change(func(next *Settings) (string, error) {
		next.InflightCode = code
		if code == 0 {
			return "operations in flight at a kill complete with the kill's code", nil
		}
		return fmt.Sprintf("operations in flight at a kill complete with %d (%s), those posted from now on; the handler and later calls get the kill's code", code, code), nil
	})
}

// killCode is kill_ep's code: the request's, else what the process's
// libucp reports for a dead TCP peer (from info, the process's status).
func killCode(req *Request, info func() Status) (ucs.Status, error) {
	code := 0
	if req.Code != nil {
		code = *req.Code
	} else {
		code = int(DeadPeerCode(info().Libucp))
	}
	codes, err := CheckCodes([]int{code})
	if err != nil {
		return 0, err
	}
	return codes[0], nil
}

// planKillPeer kills every open endpoint whose peer is req.Peer, as a peer
// process that dies takes all its connections with it. Endpoints of that
// peer created later are not killed (a peer that comes back is reached
// again); a rule with peer= and kill-ep kills those too.
func planKillPeer(e *Engine, req *Request) (plan, error) {
	if req.Endpoint != nil {
		return plan{}, fmt.Errorf("%w: kill_ep takes \"endpoint\" or \"peer\", not both", ErrInvalid)
	}
	peer, err := CheckPeer(req.Peer)
	if err != nil {
		return plan{}, err
	}
	info := e.b.Info()
	code, err := killCode(req, func() Status { return info })
	if err != nil {
		return plan{}, err
	}
	inflight, err := killInflightCode(req)
	if err != nil {
		return plan{}, err
	}
	var eps []int
	var known []string
	for _, ep := range info.Endpoints {
		if ep.State == EndpointOpen && ep.Peer == peer {
			eps = append(eps, ep.Endpoint)
		}
		if ep.Peer != "" && ep.State == EndpointOpen && !slices.Contains(known, ep.Peer) {
			known = append(known, ep.Peer)
		}
	}
	if len(eps) == 0 {
		if len(known) == 0 {
			return plan{}, fmt.Errorf("%w: no open endpoint has peer %s (this process has no open endpoint with a known peer)", ErrInvalid, peer)
		}
		return plan{}, fmt.Errorf("%w: no open endpoint has peer %s (open endpoints' peers: %s)", ErrInvalid, peer, strings.Join(known, ", "))
	}
	return e.change(func(next *Settings) (string, error) {
		note := inflightNote(*next, code, inflight)
		names := make([]string, len(eps))
		for i, ep := range eps {
			next.Kills = append(next.Kills, Kill{Endpoint: ep, Code: code, InflightCode: inflight})
			names[i] = strconv.Itoa(ep)
		}
		return fmt.Sprintf("peer %s: endpoint %s killed with %d (%s)", peer, strings.Join(names, ", "), int(code), code) + note, nil
	})
}

// endpointBase keys endpoints' counters by number.
func endpointBase(eps []EndpointStatus) map[int]EndpointStatus {
	m := make(map[int]EndpointStatus, len(eps))
	for _, ep := range eps {
		m[ep.Endpoint] = ep
	}
	return m
}

// endpointsSince returns eps with the counters at the last reset taken
// off, and only the newest MaxClosedEndpoints closed ones (eps is sorted
// by number), with how many closed ones were left out.
func endpointsSince(eps []EndpointStatus, base map[int]EndpointStatus) ([]EndpointStatus, int) {
	closed := 0
	for _, ep := range eps {
		if ep.State == EndpointClosed {
			closed++
		}
	}
	omit := max(closed-MaxClosedEndpoints, 0)
	out := make([]EndpointStatus, 0, len(eps)-omit)
	skip := omit
	for _, ep := range eps {
		if ep.State == EndpointClosed && skip > 0 {
			skip--
			continue
		}
		if b, ok := base[ep.Endpoint]; ok {
			ep.Calls -= min(b.Calls, ep.Calls)
			ep.Faults -= min(b.Faults, ep.Faults)
		}
		out = append(out, ep)
	}
	return out, omit
}

func onOff(what string, on bool) string {
	if on {
		return what + " on"
	}
	return what + " off"
}

// status builds the full status: it sums every thread's counters and walks
// the loaded libraries, so only the answers that are a status build it.
func (e *Engine) status(detailed bool) Status {
	st := e.b.Info()
	st.PID, st.StartTime = e.id.PID, e.id.StartTime
	st.UID = os.Geteuid()
	if t, err := proc.WallTime(e.id.StartTime); err == nil {
		st.StartedAt = t
	}
	st.Enabled = e.s.Enabled
	st.Strategy = e.s.Strategy
	st.Probability = e.s.Probability
	st.Pattern = e.s.Pattern
	st.Seed = Seed(e.s.Seed)
	st.Version = version.String()
	st.Recording = e.s.Recording
	st.Mode = e.s.Mode
	st.Killed = append([]Kill(nil), e.s.Kills...)
	st.Endpoints, st.ClosedOmitted = endpointsSince(st.Endpoints, e.epBase)
	st.InflightCode = int(e.s.InflightCode)
	for _, c := range e.s.Codes {
		st.Codes = append(st.Codes, int(c))
	}
	if e.s.Replay != nil {
		st.Replay, st.ReplayLen = e.s.Replay.Source, e.s.Replay.Len()
	}
	cur := e.b.Counters()
	st.Threads = cur.Threads
	st.Rules = ruleStatus(e.s.Rules, cur.Rules)
	if w := endpointCodeWarning(e.s); w != "" {
		st.Warnings = append(st.Warnings, w)
	}
	st.DelayNS = cur.DelayNS - e.base.DelayNS
	st.FaultCodes = map[string]uint64{}
	for i, hc := range cur.Hooks {
		if i >= len(hooks.Table) {
			break
		}
		var base HookCounters
		if i < len(e.base.Hooks) {
			base = e.base.Hooks[i]
		}
		hs := HookStatus{Name: hooks.Table[i].Name, Enabled: e.s.HookEnabled[i],
			Calls: hc.Calls - base.Calls, Faults: hc.Faults - base.Faults, CallsSinceFault: hc.SinceFault}
		if hs.Faults == 0 {
			hs.CallsSinceFault = hs.Calls
		}
		if detailed {
			for b := range hc.SizeCalls {
				var bc, bf uint64
				if b < len(base.SizeCalls) {
					bc, bf = base.SizeCalls[b], base.SizeFaults[b]
				}
				if n := hc.SizeCalls[b] - bc; n > 0 {
					hs.Sizes = append(hs.Sizes, SizeBucket{Min: BucketMin(b), Calls: n, Faults: hc.SizeFaults[b] - bf})
				}
			}
		}
		for k := 1; k < len(hc.Codes); k++ {
			n := hc.Codes[k] - base.Codes[k]
			if n == 0 {
				continue
			}
			key := strconv.Itoa(-k)
			st.FaultCodes[key] += n
			if detailed {
				if hs.FaultCodes == nil {
					hs.FaultCodes = map[string]uint64{}
				}
				hs.FaultCodes[key] = n
			}
		}
		st.Calls += hs.Calls
		st.Faults += hs.Faults
		st.Hooks = append(st.Hooks, hs)
	}
	return st
}

// ReplayFromWire validates a wire schedule and converts it.
func ReplayFromWire(w *WireReplay) (*Replay, error) {
	if w == nil {
		return nil, fmt.Errorf("%w: replay needs field \"schedule\"", ErrInvalid)
	}
	r := &Replay{Cycle: w.Cycle, Source: w.Source, PerHook: make([][]Outcome, len(hooks.Table))}
	if r.Source == "" {
		r.Source = "a schedule"
	}
	check := func(fn string, o Outcome) (hooks.ID, error) {
		id, h, err := hooks.Lookup(fn)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if o.Code != 0 && (!o.Code.Injectable() || !h.Faultable) {
			return 0, fmt.Errorf("%w: outcome %d for %s cannot be injected", ErrInvalid, o.Code, fn)
		}
		if o.Deferred && !h.ReturnsRequest {
			return 0, fmt.Errorf("%w: %s returns no request, so it cannot fail on completion", ErrInvalid, fn)
		}
		if k := o.Kill; k != nil && (k.Endpoint < 0 || k.Code >= 0 || !k.Code.Injectable()) {
			return 0, fmt.Errorf("%w: kill of endpoint %d with %d before %s: want an endpoint from 0 and an injectable code", ErrInvalid, k.Endpoint, k.Code, fn)
		}
		if o.Kill != nil && !consumes(h) {
			return 0, fmt.Errorf("%w: %s takes no outcome, so no kill can be placed before it", ErrInvalid, fn)
		}
		return id, nil
	}
	switch w.Key {
	case "function", "":
		n := 0
		for fn, outs := range w.Calls {
			for _, o := range outs {
				id, err := check(fn, o)
				if err != nil {
					return nil, err
				}
				r.PerHook[id] = append(r.PerHook[id], o)
				n++
			}
		}
		if n == 0 && len(w.Timed) == 0 {
			return nil, fmt.Errorf("%w: replay schedule holds no calls", ErrInvalid)
		}
	case "global":
		r.Global = true
		for _, g := range w.Global {
			id, err := check(g.Fn, g.Outcome)
			if err != nil {
				return nil, err
			}
			if !consumes(&hooks.Table[id]) {
				continue // would hold the cursor back one call
			}
			r.All = append(r.All, g.Outcome)
			r.AllHooks = append(r.AllHooks, id)
		}
		if len(r.All) == 0 && len(w.Timed) == 0 {
			return nil, fmt.Errorf("%w: replay schedule holds no calls", ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("%w: replay key %q (accepted: function, global)", ErrInvalid, w.Key)
	}
	seen := map[int]bool{}
	for _, k := range w.Timed {
		if k.Endpoint < 0 || k.Code >= 0 || !k.Code.Injectable() ||
			(k.InflightCode != 0 && (k.InflightCode > 0 || !k.InflightCode.Injectable())) {
			return nil, fmt.Errorf("%w: timed kill of endpoint %d with %d (in flight %d): want an endpoint from 0 and injectable codes", ErrInvalid, k.Endpoint, k.Code, k.InflightCode)
		}
		if seen[k.Endpoint] {
			return nil, fmt.Errorf("%w: two timed kills of endpoint %d (an endpoint dies once)", ErrInvalid, k.Endpoint)
		}
		seen[k.Endpoint] = true
		r.Timed = append(r.Timed, k)
	}
	return r, nil
}

// ErrNoCalls is returned by ScheduleFromRecording for an empty recording.
var ErrNoCalls = errors.New("recording holds no calls")

// consumes reports whether a call of h takes an outcome from a replay
// schedule: the injector draws (ucxf_enter) only for hooks that can fail, and
// never for status queries. The others (ucp_request_free, _release, _cancel,
// ucp_worker_progress) are recorded but must not be scheduled: with --key
// global each entry of theirs would make every later outcome land one call
// early.
func consumes(h *hooks.Hook) bool {
	return h.Faultable && h.Refusal == "" && !h.Polls
}

// ScheduleFromCalls turns recorded calls into a replay schedule. Status
// queries (ucp_request_check_status, ucp_request_test) are left out, named
// or not: they are no decision points (how often a program polls depends on
// timing), and a failure learned through them is replayed as the completion
// status of the operation it belonged to. So are calls that never take an
// outcome (consumes).
func ScheduleFromCalls(calls []recording.Call, key string, cycle bool, source string) *WireReplay {
	w := &WireReplay{Key: key, Cycle: cycle, Source: source, Calls: map[string][]Outcome{}}
	for _, c := range calls {
		if _, h, err := hooks.Lookup(c.Fn); err != nil || !consumes(h) {
			continue
		}
		o := Outcome{}
		if c.Status < 0 {
			o.Code = ucs.Status(c.Status)
			// A failure recorded with how unknown was attached to a
			// request freed before the application learned it: it too
			// arrived on completion.
			o.Deferred = c.How == recording.HowCompletion || c.How == recording.HowUnknown
		}
		if key == "global" {
			w.Global = append(w.Global, GlobalOutcome{Fn: c.Fn, Outcome: o})
		} else {
			w.Calls[c.Fn] = append(w.Calls[c.Fn], o)
		}
	}
	return w
}

// ScheduleFromProcess is ScheduleFromCalls for one recorded process, with its
// endpoint failures (recording version 2) turned into kills: each one kills
// the same endpoint, with the same code, just before the first call at or
// after its position that takes an outcome, so the replayed run's error
// handler runs as the recorded run's did. A failure that no such call
// follows (every failure of a `watch` incident, which holds no calls) is
// placed by time instead, when the recording holds its endpoint's
// creation: a TimedKill as long after the endpoint's creation as the
// failure came after it. Returns how many failures could be placed neither
// way and were left out.
func ScheduleFromProcess(p *recording.Process, key string, cycle bool, source string) (*WireReplay, int) {
	w := ScheduleFromCalls(p.Calls, key, cycle, source)
	failures := p.Failures()
	if len(failures) == 0 {
		return w, 0
	}
	// index[i] is where call i's outcome sits in w: its function's list,
	// or the global list; -1 for calls that take none.
	index := make([]int, len(p.Calls))
	perFn := map[string]int{}
	global := 0
	for i, c := range p.Calls {
		index[i] = -1
		if _, h, err := hooks.Lookup(c.Fn); err != nil || !consumes(h) {
			continue
		}
		if key == "global" {
			index[i] = global
			global++
		} else {
			index[i] = perFn[c.Fn]
			perFn[c.Fn]++
		}
	}
	dropped := 0
	for _, ev := range failures {
		placed := false
		for i, c := range p.Calls {
			if c.Seq < ev.Seq || index[i] < 0 {
				continue
			}
			var o *Outcome
			if key == "global" {
				o = &w.Global[index[i]].Outcome
			} else {
				o = &w.Calls[c.Fn][index[i]]
			}
			if o.Kill != nil {
				continue // one kill per call; the next call takes this one
			}
			o.Kill = &Kill{Endpoint: ev.Endpoint, Code: ucs.Status(ev.Code), InflightCode: ucs.Status(ev.InflightCode)}
			placed = true
			break
		}
		if !placed {
			if k, ok := timedKill(p, ev); ok && !slices.ContainsFunc(w.Timed, func(t TimedKill) bool { return t.Endpoint == k.Endpoint }) {
				w.Timed = append(w.Timed, k)
			} else {
				dropped++
			}
		}
	}
	return w, dropped
}

// timedKill places failure ev of p by time: as long after its endpoint's
// creation as it came; false when p holds no creation of that endpoint
// before it, or the endpoint has a kill already.
func timedKill(p *recording.Process, ev recording.EndpointEvent) (TimedKill, bool) {
	var created *recording.EndpointEvent
	for i, e := range p.EndpointEvents {
		if e.Endpoint == ev.Endpoint && e.Event == recording.EventCreate && e.TimeNS <= ev.TimeNS {
			created = &p.EndpointEvents[i]
		}
	}
	if created == nil {
		return TimedKill{}, false
	}
	return TimedKill{Endpoint: ev.Endpoint, Code: ucs.Status(ev.Code), InflightCode: ucs.Status(ev.InflightCode),
		AfterNS: ev.TimeNS - created.TimeNS}, true
}

// BucketMin is the smallest size in size bucket b.
func BucketMin(b int) uint64 {
	if b == 0 {
		return 0
	}
	return 1 << (b - 1)
}

// DeadPeerCode is the status the running libucp reports for a TCP peer that
// died, kill_ep's default: UCS_ERR_ENDPOINT_TIMEOUT (-80) up to UCX 1.13,
// UCS_ERR_CONNECTION_RESET (-25) from 1.14 on (UCX commit dd0d43da4f,
// docs/peer-death.md; measured on 1.13.1 and 1.22.0). A process without
// libucp yet gets -80.
func DeadPeerCode(libucp []LibucpFile) ucs.Status {
	for _, f := range libucp {
		var major, minor int
		if _, err := fmt.Sscanf(f.Version, "%d.%d", &major, &minor); err == nil && (major > 1 || minor >= 14) {
			return ucs.ErrConnectionReset
		}
	}
	return ucs.ErrEndpointTimeout
}
