// Package control is ucxfault's control plane: the settings of an injector
// and their one codec to and from UCX_FAULT_* variables (env.go), the
// newline-delimited JSON protocol spoken over each process's Unix socket
// (documented in docs/protocol.md), the engine that applies requests inside
// the injected process (one handler per command, engine.go), and the client
// the CLI uses to reach processes.
// What it knows of a process from outside (its start time, whether it is
// alive) it reads through internal/proc.
package control

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/abi"
	"github.com/ucxfault/ucxfault/ucs"
)

// Strategies of fault injection.
const (
	StrategyNone    = "none"
	StrategyRandom  = "random"
	StrategyPattern = "pattern"
	StrategyReplay  = "replay"
)

// Modes: when an injected failure reaches the application.
const (
	// ModeImmediate fails the call itself.
	ModeImmediate = "immediate"
	// ModeDeferred lets the operation run and fails it on completion,
	// through its callback and status queries, where the function allows.
	ModeDeferred = "deferred"
)

// Kill is an endpoint killed with kill-ep: from then on its operations fail
// with Code, and its error handler has been called once with it.
type Kill struct {
	Endpoint int        `json:"endpoint"`
	Code     ucs.Status `json:"code"`
	// InflightCode is what operations in flight on the endpoint at the
	// kill complete with; 0 for Settings.InflightCode, or else Code.
	InflightCode ucs.Status `json:"inflight_code,omitempty"`
}

// ParseMode reads a mode name.
func ParseMode(text string) (string, error) {
	switch m := strings.ToLower(strings.TrimSpace(text)); m {
	case ModeImmediate, ModeDeferred:
		return m, nil
	}
	return "", fmt.Errorf("%w: mode %q (accepted: immediate, deferred)", ErrInvalid, text)
}

// MaxPattern bounds the length of an X/O pattern.
const MaxPattern = abi.MaxPattern

// ErrInvalid is wrapped by every validation error, so that callers can tell
// bad input (exit status 2) from a failure to reach a process.
var ErrInvalid = errors.New("invalid value")

// Settings is everything that decides which calls fail. The injector
// publishes a Settings to its C side as one unit.
type Settings struct {
	Enabled     bool         `json:"enabled"`
	Strategy    string       `json:"strategy"`
	Probability float64      `json:"probability"`
	Pattern     string       `json:"pattern,omitempty"`
	Codes       []ucs.Status `json:"codes"`
	Seed        uint64       `json:"seed"`
	// HookEnabled is indexed by hooks.ID.
	HookEnabled []bool  `json:"-"`
	Recording   bool    `json:"recording"`
	Replay      *Replay `json:"-"`
	// Rules are the fault rules in force, in order (see rules.go). A hook
	// that a rule covers is decided by the rules alone.
	Rules []Rule `json:"rules,omitempty"`
	// Mode is ModeImmediate or ModeDeferred.
	Mode string `json:"mode"`
	// Kills are the endpoints killed with kill-ep, in order.
	Kills []Kill `json:"kills,omitempty"`
	// InflightCode is what operations in flight on an endpoint at its kill
	// complete with, while the error handler and later calls get the
	// kill's code (UCX on InfiniBand purges them with -16, CANCELED); 0
	// for the kill's code. A rule's or a kill's own in-flight code wins.
	InflightCode ucs.Status `json:"inflight_code,omitempty"`
}

// ParseInflightCode reads an in-flight code (a UCX error code or name),
// as --inflight-code, inflight-code= and UCX_FAULT_INFLIGHT_CODE take it.
func ParseInflightCode(text string) (ucs.Status, error) {
	code, err := ucs.Parse(strings.TrimSpace(text))
	if err != nil {
		return 0, fmt.Errorf("%w: in-flight code %q: %v", ErrInvalid, text, err)
	}
	if code >= 0 || !code.Injectable() {
		return 0, fmt.Errorf("%w: in-flight code %d (accepted: a UCX error code, -1 to -100)", ErrInvalid, code)
	}
	return code, nil
}

// Replay is a loaded replay schedule.
type Replay struct {
	// Global uses one cursor over all hooked calls (the original tool's
	// replay) instead of one per function.
	Global bool
	// Cycle starts over at the end of the schedule instead of passing.
	Cycle bool
	// PerHook holds the outcomes of each function, indexed by hooks.ID.
	PerHook [][]Outcome
	// All holds the outcomes in call order, for Global.
	All []Outcome
	// AllHooks holds the function of each outcome of All.
	AllHooks []hooks.ID
	// Source describes where the schedule came from, for status.
	Source string
	// Timed holds the kills placed by time rather than before a call: a
	// recorded endpoint failure that no replayed call follows (an
	// incident of `ucxfault watch` holds no calls at all).
	Timed []TimedKill
}

// TimedKill kills an endpoint (as kill_ep does) AfterNS nanoseconds after
// that endpoint's creation in the target process, by the target's
// CLOCK_MONOTONIC: at once when the moment has passed by the time the
// schedule arrives, and at the endpoint's creation plus AfterNS when the
// endpoint does not exist yet. Endpoint is the endpoint's number (its order
// of creation, as in recordings).
type TimedKill struct {
	Endpoint int        `json:"endpoint"`
	Code     ucs.Status `json:"code"`
	// InflightCode is Kill.InflightCode.
	InflightCode ucs.Status `json:"inflight_code,omitempty"`
	AfterNS      uint64     `json:"after_ns"`
}

// TimedKillStatus is a TimedKill as status shows it: State is
// TimedWaiting, TimedArmed, TimedFired or TimedClosed; FiredAfterNS, once
// fired, is when it fired, in nanoseconds after the endpoint's creation.
type TimedKillStatus struct {
	TimedKill
	State        string `json:"state"`
	FiredAfterNS uint64 `json:"fired_after_ns,omitempty"`
}

// States of a timed kill (TimedKillStatus.State).
const (
	// TimedWaiting: no endpoint of that number has been created yet.
	TimedWaiting = "waiting"
	// TimedArmed: the endpoint exists; the kill fires at its moment.
	TimedArmed = "armed"
	// TimedFired: the endpoint was killed.
	TimedFired = "fired"
	// TimedClosed: the endpoint was closed before the kill's moment, which
	// is then dropped (a closed endpoint cannot be killed).
	TimedClosed = "closed"
)

// Outcome is one replayed call: pass (Code 0) or fail with Code, at once or,
// when Deferred, when the operation completes.
type Outcome struct {
	Code     ucs.Status `json:"code"`
	Deferred bool       `json:"deferred,omitempty"`
	// Kill, when set, kills that endpoint (as kill_ep does) just before
	// the call that takes this outcome: a recorded endpoint failure
	// replayed at its position in the call sequence.
	Kill *Kill `json:"kill,omitempty"`
}

// HasInflightCodes reports whether some kill of r has an in-flight code.
func (r *Replay) HasInflightCodes() bool {
	if r == nil {
		return false
	}
	for _, k := range r.Timed {
		if k.InflightCode != 0 {
			return true
		}
	}
	for _, o := range r.All {
		if o.Kill != nil && o.Kill.InflightCode != 0 {
			return true
		}
	}
	for _, outs := range r.PerHook {
		for _, o := range outs {
			if o.Kill != nil && o.Kill.InflightCode != 0 {
				return true
			}
		}
	}
	return false
}

// HasKills reports whether some outcome of r kills an endpoint.
func (r *Replay) HasKills() bool {
	if r == nil {
		return false
	}
	if len(r.Timed) > 0 {
		return true
	}
	for _, o := range r.All {
		if o.Kill != nil {
			return true
		}
	}
	for _, outs := range r.PerHook {
		for _, o := range outs {
			if o.Kill != nil {
				return true
			}
		}
	}
	return false
}

// WithoutDisabled returns r for a process whose enabled hooks are
// enabled (indexed by hooks.ID): a global schedule loses the outcomes of
// disabled hooks, whose calls take none (an opt-in set-up call recorded while
// it was off, for instance), so that the others stay in step. A schedule
// keyed by function is returned as it is.
func (r *Replay) WithoutDisabled(enabled []bool) *Replay {
	if r == nil || !r.Global {
		return r
	}
	out := *r
	out.All, out.AllHooks = nil, nil
	for i, o := range r.All {
		if id := r.AllHooks[i]; int(id) < len(enabled) && enabled[id] {
			out.All = append(out.All, o)
			out.AllHooks = append(out.AllHooks, id)
		}
	}
	return &out
}

// Len is the number of outcomes the schedule holds.
func (r *Replay) Len() int {
	if r == nil {
		return 0
	}
	if r.Global {
		return len(r.All)
	}
	n := 0
	for _, o := range r.PerHook {
		n += len(o)
	}
	return n
}

// DefaultSettings are the settings of a process started without any
// UCX_FAULT_* variable: off, random at 0 %, the default codes, every hook
// but the opt-in ones (set-up calls such as ucp_ep_create).
func DefaultSettings() Settings {
	s := Settings{Strategy: StrategyRandom, Mode: ModeImmediate, Codes: append([]ucs.Status(nil), ucs.DefaultFaultCodes...)}
	s.HookEnabled = make([]bool, len(hooks.Table))
	for i, h := range hooks.Table {
		s.HookEnabled[i] = !h.OptIn
	}
	return s
}

// FollowsInflight reports whether s has the injector follow the requests
// in flight in immediate mode: a kill whose in-flight code differs from its
// own code rewrites their completions, so they are followed from the
// moment some in-flight code is known (--inflight-code, a rule's or a
// kill's inflight-code=, a replayed failure's), before any kill. Deferred
// mode follows them anyway.
func (s Settings) FollowsInflight() bool {
	return s.InflightCode != 0 ||
		slices.ContainsFunc(s.Rules, func(r Rule) bool { return r.KillEP && r.InflightCode != 0 }) ||
		slices.ContainsFunc(s.Kills, func(k Kill) bool { return k.InflightCode != 0 }) ||
		s.Replay.HasInflightCodes()
}

// Clone returns a deep copy of s (the replay schedule is shared: it is
// never modified once loaded).
func (s Settings) Clone() Settings {
	c := s
	c.Codes = append([]ucs.Status(nil), s.Codes...)
	c.HookEnabled = append([]bool(nil), s.HookEnabled...)
	c.Rules = append([]Rule(nil), s.Rules...)
	c.Kills = append([]Kill(nil), s.Kills...)
	return c
}

// ParseProbability reads a fault probability in percent, 0 to 100, with a
// resolution of 0.01 %.
func ParseProbability(text string) (float64, error) {
	p, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(text), "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("%w: probability %q is not a number (accepted: 0 to 100, in percent, e.g. 2.5)", ErrInvalid, text)
	}
	return p, CheckProbability(p)
}

// CheckProbability validates a probability in percent.
func CheckProbability(p float64) error {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return fmt.Errorf("%w: probability %v is out of range (accepted: 0 to 100, in percent)", ErrInvalid, p)
	}
	units := p * 100
	if math.Abs(units-math.Round(units)) > 1e-6 {
		return fmt.Errorf("%w: probability %v is finer than the 0.01 %% resolution", ErrInvalid, p)
	}
	return nil
}

// ProbabilityUnits converts a percentage to units of 0.01 %.
func ProbabilityUnits(p float64) uint32 { return uint32(math.Round(p * 100)) }

// CheckPattern validates an X/O pattern (X = fault, O = pass; case is
// ignored) and returns it in upper case.
func CheckPattern(p string) (string, error) {
	u := strings.ToUpper(strings.TrimSpace(p))
	if u == "" {
		return "", fmt.Errorf("%w: empty pattern (accepted: X and O, e.g. XOOOOXOO)", ErrInvalid)
	}
	if len(u) > MaxPattern {
		return "", fmt.Errorf("%w: pattern of %d characters, at most %d accepted", ErrInvalid, len(u), MaxPattern)
	}
	for i, r := range u {
		if r != 'X' && r != 'O' {
			return "", fmt.Errorf("%w: pattern %q has %q at position %d (accepted: only X = fault and O = pass)", ErrInvalid, p, r, i)
		}
	}
	return u, nil
}

// CheckCodes validates a list of injectable codes.
func CheckCodes(codes []int) ([]ucs.Status, error) {
	if len(codes) == 0 {
		return nil, fmt.Errorf("%w: empty code list", ErrInvalid)
	}
	if len(codes) > ucs.MaxCodes {
		return nil, fmt.Errorf("%w: %d codes, at most %d accepted", ErrInvalid, len(codes), ucs.MaxCodes)
	}
	out := make([]ucs.Status, len(codes))
	for i, c := range codes {
		if c > ucs.FirstError || c < ucs.LastError {
			return nil, fmt.Errorf("%w: code %d (accepted: -1 to -100)", ErrInvalid, c)
		}
		out[i] = ucs.Status(c)
	}
	return out, nil
}

// ParseCodes reads a code list as the CLI and the environment accept it.
func ParseCodes(text string) ([]ucs.Status, error) {
	codes, err := ucs.ParseList(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return codes, nil
}

// ParseStrategy reads a strategy name.
func ParseStrategy(text string) (string, error) {
	switch s := strings.ToLower(strings.TrimSpace(text)); s {
	case StrategyRandom, StrategyPattern, StrategyNone, StrategyReplay:
		return s, nil
	}
	return "", fmt.Errorf("%w: strategy %q (accepted: random, pattern, none)", ErrInvalid, text)
}

// Env is the subset of the environment the injector reads.
type Env func(string) string

// Environment variable names, as in the original tool where it had them.
const (
	EnvEnabled          = "UCX_FAULT_ENABLED"
	EnvStrategy         = "UCX_FAULT_STRATEGY"
	EnvProbability      = "UCX_FAULT_PROBABILITY"
	EnvPattern          = "UCX_FAULT_PATTERN"
	EnvCodes            = "UCX_FAULT_ERROR_CODES"
	EnvHooks            = "UCX_FAULT_HOOKS"
	EnvDebug            = "UCX_FAULT_DEBUG"
	EnvStatsLogInterval = "UCX_FAULT_STATS_LOG_INTERVAL"
	EnvIPCBackend       = "UCX_FAULT_IPC_BACKEND"
	EnvSeed             = "UCX_FAULT_SEED"
	EnvSocketDir        = "UCX_FAULT_SOCKET_DIR"
	EnvRecordCapacity   = "UCX_FAULT_RECORD_CAPACITY"
	EnvRecord           = "UCX_FAULT_RECORD"
	EnvMode             = "UCX_FAULT_MODE"
	EnvInflightCode     = "UCX_FAULT_INFLIGHT_CODE"
)

// ParseBool reads the boolean spellings users type in environment variables.
func ParseBool(text string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(text)) {
	case "1", "true", "yes", "on", "y":
		return true, nil
	case "0", "false", "no", "off", "n", "":
		return false, nil
	}
	return false, fmt.Errorf("%w: %q is not a boolean (accepted: 1/0, true/false, yes/no, on/off)", ErrInvalid, text)
}
