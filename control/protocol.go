package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/ucxfault/ucxfault/recording"
	"github.com/ucxfault/ucxfault/ucs"
)

// ProtocolVersion is the version every request and response carries.
const ProtocolVersion = 1

// MaxLine bounds one request line. Replay schedules travel in one line, so
// the bound is generous; anything longer is refused and the connection closed.
const MaxLine = 32 << 20

// Commands of the protocol (the "cmd" field).
const (
	CmdStatus      = "status"
	CmdToggle      = "toggle"
	CmdEnable      = "enable"
	CmdDisable     = "disable"
	CmdProbability = "probability"
	CmdCodes       = "error_codes"
	CmdPattern     = "pattern"
	CmdSeed        = "seed"
	CmdStrategy    = "strategy"
	CmdReset       = "reset"
	CmdHooks       = "hooks"
	CmdRecord      = "record"
	CmdRecordClear = "record_clear"
	CmdRecordDump  = "record_dump"
	CmdReplay      = "replay"
	CmdReplaySelf  = "replay_self"
	CmdReplayStop  = "replay_stop"
	CmdRules       = "rules"
	CmdMode        = "mode"
	CmdKillEP      = "kill_ep"
	// CmdInflight sets Settings.InflightCode (field "code"; 0 or
	// absent: the kill's code).
	CmdInflight = "inflight_code"
)

var commands = []string{CmdStatus, CmdToggle, CmdEnable, CmdDisable, CmdProbability, CmdCodes,
	CmdPattern, CmdSeed, CmdStrategy, CmdReset, CmdHooks, CmdRecord, CmdRecordClear, CmdRecordDump,
	CmdReplay, CmdReplaySelf, CmdReplayStop, CmdRules, CmdMode, CmdKillEP, CmdInflight}

// Request is one line sent to an injected process.
type Request struct {
	V           int      `json:"v"`
	Cmd         string   `json:"cmd"`
	Probability *float64 `json:"probability,omitempty"`
	Pattern     *string  `json:"pattern,omitempty"`
	Codes       []int    `json:"codes,omitempty"`
	// Seed is sent as a decimal string; a JSON number is accepted too.
	Seed     *Seed   `json:"seed,omitempty"`
	Strategy *string `json:"strategy,omitempty"`
	// Hooks and On: hooks to switch, and whether on (hooks); On alone
	// switches recording (record).
	Hooks []string `json:"hooks,omitempty"`
	On    *bool    `json:"on,omitempty"`
	// Count limits record_dump to the newest Count calls (0 = all).
	Count int `json:"count,omitempty"`
	// Chunk, for record_dump, asks for the calls in lines of at most Chunk
	// calls each, after a header line (1 to MaxChunk; 0 = the whole
	// recording in one response line). See DumpRecording.
	Chunk int `json:"chunk,omitempty"`
	// Schedule is the replay to load (replay).
	Schedule *WireReplay `json:"schedule,omitempty"`
	// Mode is immediate or deferred (mode).
	Mode *string `json:"mode,omitempty"`
	// Endpoint and Code choose the endpoint to kill and the code its
	// failures carry (kill_ep; Code defaults to what the process's libucp reports for a dead
	// TCP peer: DeadPeerCode).
	Endpoint *int `json:"endpoint,omitempty"`
	Code     *int `json:"code,omitempty"`
	// Peer, for kill_ep instead of Endpoint, kills every open endpoint of
	// that peer (Rule.Peer; the peer status lists).
	Peer string `json:"peer,omitempty"`
	// InflightCode, for kill_ep, is what operations in flight on the
	// endpoint complete with (default: the settings' in-flight code, or
	// else Code).
	InflightCode *int `json:"inflight_code,omitempty"`
	// Detailed asks status for per-hook counters.
	Detailed bool `json:"detailed,omitempty"`
	// RuleOp, Rules and RuleID change the fault rules (rules): RuleOp is
	// add, set, del or clear; Rules holds rule texts (docs/rules.md; one
	// text may hold several rules separated by ';'); RuleID names the rule
	// to delete.
	RuleOp string   `json:"rule_op,omitempty"`
	Rules  []string `json:"rules,omitempty"`
	RuleID *int     `json:"rule_id,omitempty"`
}

// WireReplay is a replay schedule as sent over the socket.
type WireReplay struct {
	Key    string               `json:"key"` // "function" or "global"
	Cycle  bool                 `json:"cycle,omitempty"`
	Source string               `json:"source,omitempty"`
	Calls  map[string][]Outcome `json:"calls,omitempty"` // by function, for key function
	Global []GlobalOutcome      `json:"global,omitempty"`
	// Timed are kills placed by time after their endpoint's creation
	// (Replay.Timed); a schedule may hold these alone.
	Timed []TimedKill `json:"timed_kills,omitempty"`
}

// GlobalOutcome is one entry of a global replay schedule.
type GlobalOutcome struct {
	Fn string `json:"fn"`
	Outcome
}

// Response is the one line answered to each request.
type Response struct {
	V       int    `json:"v"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	// Identity names the process that answered: every answer an injected
	// process gives carries it, refusals included, and clients refuse an
	// answer without it (CheckIdentity).
	Identity  *Identity          `json:"identity,omitempty"`
	Status    *Status            `json:"status,omitempty"`
	Recording *recording.Process `json:"recording,omitempty"`
	// Stream, in the header of a chunked record_dump, says how many calls
	// and chunk lines follow; Recording then carries no calls.
	Stream *Stream `json:"stream,omitempty"`
}

// Status describes one injected process.
type Status struct {
	PID int `json:"pid"`
	// StartTime is the process start time in clock ticks since boot
	// (/proc/PID/stat field 22): with the pid it names one process, even
	// after the pid is reused.
	StartTime uint64 `json:"start_time"`
	// UID is the process's effective uid; the CLI sets it from the
	// kernel's word (SO_PEERCRED, CheckListener), and User from it: the name of
	// that user, for root's status, which lists every user's processes.
	UID  int    `json:"uid"`
	User string `json:"user,omitempty"`
	// StartedAt is the same start on the wall clock (RFC 3339 in JSON, as
	// recordings write times), to within a second.
	StartedAt   time.Time         `json:"started_at"`
	Host        string            `json:"host"`
	Rank        int               `json:"rank"`
	Command     []string          `json:"command"`
	Backend     string            `json:"backend"`
	Enabled     bool              `json:"enabled"`
	Strategy    string            `json:"strategy"`
	Probability float64           `json:"probability"`
	Pattern     string            `json:"pattern,omitempty"`
	Codes       []int             `json:"codes"`
	Seed        Seed              `json:"seed"` // a decimal string in JSON
	Recording   bool              `json:"recording"`
	Records     uint64            `json:"records"`
	RecordsLost uint64            `json:"records_lost"`
	Replay      string            `json:"replay,omitempty"`
	ReplayLen   int               `json:"replay_len,omitempty"`
	Threads     uint64            `json:"threads"`
	Calls       uint64            `json:"calls"`
	Faults      uint64            `json:"faults"`
	FaultCodes  map[string]uint64 `json:"fault_codes"`
	Hooks       []HookStatus      `json:"hooks"`
	Mode        string            `json:"mode"`
	Killed      []Kill            `json:"killed_endpoints,omitempty"`
	// TimedKills are the replay's kills placed by time, with their state.
	TimedKills []TimedKillStatus `json:"timed_kills,omitempty"`
	// Endpoints lists the process's endpoints by number: every open or
	// killed one, and the newest MaxClosedEndpoints closed ones
	// (ClosedOmitted counts the older closed ones left out).
	Endpoints     []EndpointStatus `json:"endpoints,omitempty"`
	ClosedOmitted int              `json:"endpoints_closed_omitted,omitempty"`
	// InflightCode is Settings.InflightCode: what operations in flight at
	// a kill complete with (0: the kill's code).
	InflightCode int `json:"inflight_code,omitempty"`
	// KilledRequests counts followed requests (deferred mode, or an
	// in-flight code) that were in flight on an endpoint when it was
	// killed and completed with the kill's code or its in-flight code.
	KilledRequests uint64   `json:"killed_requests,omitempty"`
	Warnings       []string `json:"warnings,omitempty"`
	// LibucpCopies lists, when two or more libucp files are mapped, each
	// copy and how many hooked calls were routed to it (each call goes to
	// the copy its caller is linked with).
	LibucpCopies []LibucpCopy `json:"libucp_copies,omitempty"`
	// Libucp lists every libucp file mapped in the process, with the
	// version that copy reports (ucp_get_version_string).
	Libucp []LibucpFile `json:"libucp,omitempty"`
	// MissingHooks names the hooks whose function no libucp mapped in the
	// process exports (rows newer than its release: hooks.Hook.Since);
	// their wrappers return UCS_ERR_UNSUPPORTED. Empty before libucp is
	// loaded.
	MissingHooks []string `json:"missing_hooks,omitempty"`
	// Rules are the fault rules in force with their counters; DelayNS is
	// the time rules' delays added, over all rules since the last reset.
	Rules   []RuleStatus `json:"rules,omitempty"`
	DelayNS uint64       `json:"delay_ns"`
	// Version is the injector's build (internal/version), so that a CLI
	// and an injector of different builds are told apart.
	Version string `json:"version,omitempty"`
}

// Endpoint states in EndpointStatus.State.
const (
	EndpointOpen   = "open"
	EndpointKilled = "killed" // by kill-ep, not closed yet
	EndpointClosed = "closed"
)

// MaxClosedEndpoints bounds the closed endpoints a status lists (the
// newest by number); the injector itself keeps the closed endpoints still
// in its table and the newest 64 whose address a new endpoint took.
const MaxClosedEndpoints = 16

// EndpointStatus is one endpoint of a process: its number (order of
// creation, from 0), its state, its calls and injected faults (counted as
// the hook counters are: application calls while some hook is armed;
// since its creation or the last reset), the code it was killed with (0:
// never), and its peer (Rule.Peer; "" when the injector cannot tell).
type EndpointStatus struct {
	Endpoint int        `json:"endpoint"`
	State    string     `json:"state"`
	Calls    uint64     `json:"calls"`
	Faults   uint64     `json:"faults"`
	Code     ucs.Status `json:"code,omitempty"`
	Peer     string     `json:"peer,omitempty"`
}

// HookStatus holds one hook's switch and counters.
type HookStatus struct {
	Name            string            `json:"name"`
	Enabled         bool              `json:"enabled"`
	Calls           uint64            `json:"calls"`
	Faults          uint64            `json:"faults"`
	CallsSinceFault uint64            `json:"calls_since_fault"`
	FaultCodes      map[string]uint64 `json:"fault_codes,omitempty"`
	// Sizes counts calls and faults by transfer size (detailed status only).
	Sizes []SizeBucket `json:"sizes,omitempty"`
}

// SizeBucket counts the calls whose size lies in [Min, 2*Min) (Min 0: size 0).
type SizeBucket struct {
	Min    uint64 `json:"min"`
	Calls  uint64 `json:"calls"`
	Faults uint64 `json:"faults"`
}

// ParseRequest decodes and checks one request line. Unknown fields, wrong
// types, a missing or other version and unknown commands are refused.
func ParseRequest(line []byte) (*Request, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, fmt.Errorf("%w: empty request", ErrInvalid)
	}
	if len(line) > MaxLine {
		return nil, fmt.Errorf("%w: request of %d bytes, at most %d accepted", ErrInvalid, len(line), MaxLine)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var r Request
	if err := dec.Decode(&r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("%w: malformed request: field %q: got a JSON %s, want %s", ErrInvalid, te.Field, te.Value, jsonKind(te.Type))
		}
		return nil, fmt.Errorf("%w: malformed request: %s", ErrInvalid, strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: one JSON object per line", ErrInvalid)
	}
	if r.V != ProtocolVersion {
		return nil, fmt.Errorf("%w: protocol version %d (this injector speaks %d; field \"v\")", ErrInvalid, r.V, ProtocolVersion)
	}
	for _, c := range commands {
		if r.Cmd == c {
			return &r, nil
		}
	}
	return nil, fmt.Errorf("%w: unknown command %q (accepted: %s)", ErrInvalid, r.Cmd, strings.Join(commands, ", "))
}

// jsonKind names what a request field of Go type t holds, in JSON's terms,
// for an error a person reads without knowing the Go types.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer from 0"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// Encode renders r as one line, newline included.
func (r *Response) Encode() []byte {
	r.V = ProtocolVersion
	b, err := json.Marshal(r)
	if err != nil {
		b, _ = json.Marshal(Response{V: ProtocolVersion, Error: "encoding response: " + err.Error()})
	}
	return append(b, '\n')
}

// Encode renders a request as one line, newline included.
func (r *Request) Encode() ([]byte, error) {
	r.V = ProtocolVersion
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding request: %w", err)
	}
	return append(b, '\n'), nil
}

// LibucpFile is one libucp file mapped in a process.
type LibucpFile struct {
	Path    string `json:"path"`
	Version string `json:"version"`
}

// LibucpCopy is one of several libucp files mapped in a process.
type LibucpCopy struct {
	Path  string `json:"path"`
	Calls uint64 `json:"calls"`
}
