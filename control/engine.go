package control

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// HookCounters are one hook's counters as the injector's C side keeps them.
type HookCounters struct {
	Calls, Faults, SinceFault uint64
	// Codes counts faults by code, indexed by -code.
	Codes [101]uint64
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

// Backend is what the engine drives: the injector's C state in a real
// process. Implementations must be safe for use by one goroutine at a time
// (the engine serialises calls).
type Backend interface {
	// Apply publishes s whole; the hot path sees the old or the new settings.
	Apply(s Settings) error
	// Counters sums the per-thread counters.
	Counters() Counters
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
	s    Settings
	base Counters
	// nextRule numbers the next rule set; rule IDs are never reused.
	nextRule int
}

// NewEngine returns an engine whose current settings are s (already applied).
func NewEngine(b Backend, s Settings) *Engine {
	e := &Engine{b: b, s: s.Clone(), nextRule: 1}
	for _, r := range s.Rules {
		e.nextRule = max(e.nextRule, r.ID+1)
	}
	return e
}

// Settings returns a copy of the current settings.
func (e *Engine) Settings() Settings {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s.Clone()
}

// HandleLine parses and applies one request line and returns the response
// line. A request that cannot be parsed gets an error response.
func (e *Engine) HandleLine(line []byte) (resp []byte, ok bool) {
	req, err := ParseRequest(line)
	if err != nil {
		r := Response{Error: err.Error()}
		return r.Encode(), false
	}
	r := e.Handle(req)
	return r.Encode(), r.OK
}

// Handle applies one request. A request changes all it asks for, or
// nothing: the new settings are built and validated aside, then published.
func (e *Engine) Handle(req *Request) Response {
	e.mu.Lock()
	defer e.mu.Unlock()
	msg, err := e.handle(req)
	if err != nil {
		return Response{Error: err.Error()}
	}
	r := Response{OK: true, Message: msg}
	switch req.Cmd {
	case CmdRecordDump:
		p, err := e.b.Records(req.Count)
		if err != nil {
			return Response{Error: fmt.Sprintf("dumping records: %v", err)}
		}
		r.Recording = p
	default:
		st := e.status(req.Detailed || req.Cmd == CmdStatus)
		r.Status = &st
	}
	return r
}

// handle builds the settings req asks for and applies them. Whatever else
// the command changes (counters' baseline, the call log) is done by the
// functions in after, run only once the backend has applied the settings:
// a command that fails changes nothing.
func (e *Engine) handle(req *Request) (string, error) {
	next := e.s.Clone()
	var (
		msg   string
		after []func()
	)
	switch req.Cmd {
	case CmdStatus:
		return "", nil
	case CmdRecordDump:
		if req.Count < 0 {
			return "", fmt.Errorf("%w: record_dump count %d (accepted: 0 = all, or the newest N)", ErrInvalid, req.Count)
		}
		if req.Chunk < 0 || req.Chunk > MaxChunk {
			return "", fmt.Errorf("%w: record_dump chunk %d (accepted: 0 = one line, or 1 to %d calls per line)", ErrInvalid, req.Chunk, MaxChunk)
		}
		return "", nil
	case CmdToggle:
		next.Enabled = !next.Enabled
		msg = onOff("injection", next.Enabled)
	case CmdEnable:
		next.Enabled = true
		msg = "injection on"
	case CmdDisable:
		next.Enabled = false
		msg = "injection off"
	case CmdProbability:
		if req.Probability == nil {
			return "", fmt.Errorf("%w: probability needs field \"probability\"", ErrInvalid)
		}
		if err := CheckProbability(*req.Probability); err != nil {
			return "", err
		}
		next.Probability, next.Strategy = *req.Probability, StrategyRandom
		msg = fmt.Sprintf("strategy random, probability %.2f %%", next.Probability)
	case CmdPattern:
		if req.Pattern == nil {
			return "", fmt.Errorf("%w: pattern needs field \"pattern\"", ErrInvalid)
		}
		p, err := CheckPattern(*req.Pattern)
		if err != nil {
			return "", err
		}
		next.Pattern, next.Strategy = p, StrategyPattern
		msg = "strategy pattern " + p
	case CmdCodes:
		codes, err := CheckCodes(req.Codes)
		if err != nil {
			return "", err
		}
		next.Codes = codes
		msg = "error codes " + ucs.FormatList(codes)
	case CmdSeed:
		if req.Seed == nil {
			return "", fmt.Errorf("%w: seed needs field \"seed\"", ErrInvalid)
		}
		next.Seed = *req.Seed
		msg = "seed " + strconv.FormatUint(next.Seed, 10)
	case CmdStrategy:
		if req.Strategy == nil {
			return "", fmt.Errorf("%w: strategy needs field \"strategy\"", ErrInvalid)
		}
		s, err := ParseStrategy(*req.Strategy)
		if err != nil {
			return "", err
		}
		if s == StrategyPattern && next.Pattern == "" {
			return "", fmt.Errorf("%w: no pattern set; send a pattern command instead", ErrInvalid)
		}
		if s == StrategyReplay && next.Replay == nil {
			return "", fmt.Errorf("%w: no replay loaded; send a replay command instead", ErrInvalid)
		}
		next.Strategy = s
		msg = "strategy " + s
	case CmdReset:
		seed, kills := next.Seed, next.Kills
		next = DefaultSettings()
		// A dead endpoint stays dead, as a peer that died does not return.
		next.Seed, next.Kills = seed, kills
		after = append(after, func() { e.base = e.b.Counters() }, e.b.RecordClear)
		msg = "reset: injection off, default settings, counters and records cleared"
	case CmdHooks:
		if req.On == nil || len(req.Hooks) == 0 {
			return "", fmt.Errorf("%w: hooks needs fields \"hooks\" (names or all) and \"on\"", ErrInvalid)
		}
		for _, name := range req.Hooks {
			ids, err := hooks.ParseFaultList(name)
			if err != nil {
				return "", fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			for _, id := range ids {
				next.HookEnabled[id] = *req.On
			}
		}
		msg = onOff("hooks", *req.On)
	case CmdRecord:
		if req.On == nil {
			next.Recording = !next.Recording
		} else {
			next.Recording = *req.On
		}
		msg = onOff("recording", next.Recording)
	case CmdRecordClear:
		after = append(after, e.b.RecordClear)
		msg = "records cleared"
	case CmdReplay:
		r, err := ReplayFromWire(req.Schedule)
		if err != nil {
			return "", err
		}
		r = r.WithoutDisabled(next.HookEnabled)
		if r.Len() == 0 {
			return "", fmt.Errorf("%w: no outcome of the schedule is for an enabled hook", ErrInvalid)
		}
		next.Replay, next.Strategy, next.Enabled = r, StrategyReplay, true
		msg = fmt.Sprintf("replaying %d outcomes from %s", r.Len(), r.Source)
	case CmdReplaySelf:
		p, err := e.b.Records(0)
		if err != nil {
			return "", fmt.Errorf("reading own records: %w", err)
		}
		if len(p.Calls) == 0 {
			return "", fmt.Errorf("%w: nothing recorded to replay (turn recording on first)", ErrInvalid)
		}
		key := "function"
		if req.Schedule != nil && req.Schedule.Key != "" {
			key = req.Schedule.Key
		}
		w := ScheduleFromCalls(p.Calls, key, req.Schedule != nil && req.Schedule.Cycle, "own recording")
		r, err := ReplayFromWire(w)
		if err != nil {
			return "", err
		}
		r = r.WithoutDisabled(next.HookEnabled)
		if r.Len() == 0 {
			return "", fmt.Errorf("%w: no recorded outcome is for an enabled hook", ErrInvalid)
		}
		after = append(after, e.b.RecordClear)
		next.Replay, next.Strategy, next.Enabled, next.Recording = r, StrategyReplay, true, false
		msg = fmt.Sprintf("replaying %d recorded outcomes", r.Len())
	case CmdRules:
		m, err := applyRules(&next, req, &e.nextRule, time.Now())
		if err != nil {
			return "", err
		}
		msg = m
	case CmdMode:
		if req.Mode == nil {
			return "", fmt.Errorf("%w: mode needs field \"mode\"", ErrInvalid)
		}
		m, err := ParseMode(*req.Mode)
		if err != nil {
			return "", err
		}
		next.Mode = m
		msg = "failures " + map[string]string{ModeImmediate: "at once", ModeDeferred: "on completion where the function allows"}[m]
	case CmdKillEP:
		if req.Endpoint == nil || *req.Endpoint < 0 {
			return "", fmt.Errorf("%w: kill_ep needs field \"endpoint\", an endpoint ordinal from 0", ErrInvalid)
		}
		code := int(DeadPeerCode(e.b.Info().Libucp))
		if req.Code != nil {
			code = *req.Code
		}
		codes, err := CheckCodes([]int{code})
		if err != nil {
			return "", err
		}
		for _, k := range next.Kills {
			if k.Endpoint == *req.Endpoint {
				return "", fmt.Errorf("%w: endpoint %d is already dead (with %d)", ErrInvalid, k.Endpoint, k.Code)
			}
		}
		next.Kills = append(next.Kills, Kill{Endpoint: *req.Endpoint, Code: codes[0]})
		msg = fmt.Sprintf("endpoint %d killed with %d (%s)", *req.Endpoint, code, codes[0])
	case CmdReplayStop:
		next.Replay = nil
		if next.Strategy == StrategyReplay {
			next.Strategy = StrategyNone
		}
		msg = "replay stopped"
	default:
		return "", fmt.Errorf("%w: unknown command %q", ErrInvalid, req.Cmd)
	}
	if req.Cmd != CmdRecordClear { // the one command that leaves the settings as they are
		if err := e.b.Apply(next); err != nil {
			return "", fmt.Errorf("applying settings: %w", err)
		}
		e.s = next
	}
	for _, f := range after {
		f()
	}
	return msg, nil
}

func onOff(what string, on bool) string {
	if on {
		return what + " on"
	}
	return what + " off"
}

func (e *Engine) status(detailed bool) Status {
	st := e.b.Info()
	st.Enabled = e.s.Enabled
	st.Strategy = e.s.Strategy
	st.Probability = e.s.Probability
	st.Pattern = e.s.Pattern
	st.Seed = e.s.Seed
	st.Recording = e.s.Recording
	st.Mode = e.s.Mode
	st.Killed = append([]Kill(nil), e.s.Kills...)
	for _, c := range e.s.Codes {
		st.Codes = append(st.Codes, int(c))
	}
	if e.s.Replay != nil {
		st.Replay, st.ReplayLen = e.s.Replay.Source, e.s.Replay.Len()
	}
	cur := e.b.Counters()
	st.Threads = cur.Threads
	st.Rules = ruleStatus(e.s.Rules, cur.Rules)
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
		if n == 0 {
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
		if len(r.All) == 0 {
			return nil, fmt.Errorf("%w: replay schedule holds no calls", ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("%w: replay key %q (accepted: function, global)", ErrInvalid, w.Key)
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
