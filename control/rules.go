package control

import (
	"fmt"
	"math"
	"math/bits"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/internal/abi"
	"github.com/ucxfault/ucxfault/ucs"
)

// MaxRules bounds the rules that stand at once; the C configuration holds
// that many slots.
const MaxRules = abi.MaxRules

// MaxDelay bounds one rule's delay.
const MaxDelay = time.Minute

// EnvRules holds start-up rules, separated by ';' (see docs/rules.md).
const EnvRules = "UCX_FAULT_RULES"

// RuleForms lists the tokens of a rule. Every error about rule syntax
// ends with it, so that the user sees what is accepted.
const RuleForms = `hooks=LIST|all, prob=PERCENT or pattern=XO..., codes=LIST, ` +
	`min-size=SIZE, max-size=SIZE (e.g. 64K, 1M), endpoint=N, peer=PEER, ` +
	`calls=N|N..|N..M|..M|N..M+STEP, max-faults=N, after=DUR, for=DUR, from-start, ` +
	`delay=DUR|DUR..DUR (e.g. 2ms, 1ms..5ms), delay-completion=DUR, hang, kill-ep or kill-ep=CODE (with inflight-code=CODE); ` +
	`tokens are separated by spaces, rules by ';'`

// Forms of single values, quoted in errors.
const (
	callsForms = "accepted: 3, 5.., 100..200, ..50, 100..200+10, 5..+2"
	sizeForms  = "accepted: a byte count with an optional unit K, M, G or T (powers of 1024), e.g. 4096, 64K, 1M"
	durForms   = "accepted: a duration with a unit, e.g. 500ms, 10s, 1m"
	delayForms = "accepted: DUR or MIN..MAX, e.g. 2ms or 1ms..5ms, at most 1m"
)

// CallRange selects calls by their number, counted from 0 per hook and per
// thread from the moment the rule was set: First, First+Step, ... up to
// Last inclusive (no end when Open).
type CallRange struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last,omitempty"`
	Open  bool   `json:"open,omitempty"`
	Step  uint64 `json:"step"`
}

// All reports whether the range selects every call.
func (c CallRange) All() bool { return c.First == 0 && c.Open && c.Step <= 1 }

// Contains reports whether call number k is in the range.
func (c CallRange) Contains(k uint64) bool {
	if k < c.First || (!c.Open && k > c.Last) {
		return false
	}
	return c.Step <= 1 || (k-c.First)%c.Step == 0
}

// String renders the range in the calls= syntax.
func (c CallRange) String() string {
	var s string
	switch {
	case !c.Open && c.First == c.Last:
		return strconv.FormatUint(c.First, 10)
	case c.Open:
		s = strconv.FormatUint(c.First, 10) + ".."
	default:
		s = strconv.FormatUint(c.First, 10) + ".." + strconv.FormatUint(c.Last, 10)
	}
	if c.Step > 1 {
		s += "+" + strconv.FormatUint(c.Step, 10)
	}
	return s
}

// ParseCallRange reads FIRST..LAST+STEP and its short forms: N (call N
// only), N.. (from N on), ..M (up to M), N..M, N..M+S, N..+S, and strace's
// N+ and N+S (from N on, every S-th).
func ParseCallRange(text string) (CallRange, error) {
	bad := func(why string) (CallRange, error) {
		return CallRange{}, fmt.Errorf("%w: calls %q: %s (%s)", ErrInvalid, text, why, callsForms)
	}
	num := func(s string) (uint64, bool) {
		if s == "" || strings.TrimLeft(s, "0123456789") != "" {
			return 0, false
		}
		n, err := strconv.ParseUint(s, 10, 64)
		return n, err == nil
	}
	t := strings.TrimSpace(text)
	if t == "" {
		return bad("empty")
	}
	r := CallRange{Step: 1}
	body, step, hasStep := strings.Cut(t, "+")
	if hasStep {
		if step == "" {
			r.Step = 1
		} else {
			n, ok := num(step)
			if !ok || n == 0 {
				return bad("the step after + must be a number of at least 1")
			}
			r.Step = n
		}
	}
	first, last, isRange := strings.Cut(body, "..")
	if first != "" {
		n, ok := num(first)
		if !ok {
			return bad(fmt.Sprintf("%q is not a call number", first))
		}
		r.First = n
	}
	switch {
	case isRange && last != "":
		n, ok := num(last)
		if !ok {
			return bad(fmt.Sprintf("%q is not a call number", last))
		}
		if n < r.First {
			return bad("the last call comes before the first")
		}
		r.Last = n
	case isRange:
		if first == "" && !hasStep {
			return bad("give a first or a last call")
		}
		r.Open = true
	case hasStep:
		if first == "" {
			return bad("give the first call before +")
		}
		r.Open = true // strace's N+ and N+S
	default:
		if first == "" {
			return bad("empty")
		}
		r.Last = r.First
	}
	if !r.Open && r.First == r.Last {
		// One call: a step selects nothing more (..0+100 is call 0), and
		// String prints the call alone, so the parsed range is that too.
		r.Step = 1
	}
	return r, nil
}

// ParseSize reads a byte count with an optional binary unit: 4096, 64K,
// 1M, 2G, 1T (K, KB and KiB are the same: 1024).
func ParseSize(text string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(text))
	i := len(t) - len(strings.TrimLeft(t, "0123456789"))
	digits, unit := t[:i], t[i:]
	shifts := map[string]int{"": 0, "B": 0, "K": 10, "KB": 10, "KIB": 10, "M": 20, "MB": 20, "MIB": 20,
		"G": 30, "GB": 30, "GIB": 30, "T": 40, "TB": 40, "TIB": 40}
	shift, okUnit := shifts[unit]
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || !okUnit {
		return 0, fmt.Errorf("%w: size %q (%s)", ErrInvalid, text, sizeForms)
	}
	if shift > 0 && bits.LeadingZeros64(n) < shift {
		return 0, fmt.Errorf("%w: size %q is too large (%s)", ErrInvalid, text, sizeForms)
	}
	return n << shift, nil
}

// FormatSize renders n in the largest binary unit that divides it.
func FormatSize(n uint64) string {
	for _, u := range []struct {
		shift  int
		suffix string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatUint(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(n, 10)
}

// Rule is one fault rule: the calls it matches (its hooks and conditions)
// and what happens to them. A matched call first waits for the delay, if
// any, then fails when the strategy says so; a rule with a delay and neither
// a strategy nor codes only delays. Rules are immutable once parsed.
type Rule struct {
	// ID numbers the rule in its process (from 1, never reused); 0 until
	// the rule is set.
	ID int `json:"id"`
	// HookNames is the hook list as given (nil: the default).
	HookNames []string `json:"hook_names,omitempty"`
	// Hooks are the hooks covered, in table order: the given list, or every
	// faultable hook that has the arguments the conditions look at.
	Hooks []hooks.ID `json:"hooks"`
	// Strategy is StrategyRandom, StrategyPattern, or StrategyNone (delay
	// only).
	Strategy    string  `json:"strategy"`
	Probability float64 `json:"probability,omitempty"`
	Pattern     string  `json:"pattern,omitempty"`
	// Codes are the codes to fail with; nil: the global codes.
	Codes []ucs.Status `json:"codes,omitempty"`
	// MinSize and MaxSize bound the transfer size, inclusive; HasMaxSize
	// says whether MaxSize applies.
	MinSize    uint64 `json:"min_size,omitempty"`
	MaxSize    uint64 `json:"max_size,omitempty"`
	HasMaxSize bool   `json:"has_max_size,omitempty"`
	// Endpoint is the endpoint number (endpoints numbered from 0 in the
	// order the process created them, ucp_ep_create), or -1 for any.
	Endpoint int `json:"endpoint"`
	// Peer selects the endpoints of one peer, as status shows it: "w:" and
	// 12 hex digits (a worker, for endpoints made from its address),
	// "IP:port" or "[IPv6]:port" (client and server endpoints); every
	// endpoint with that peer matches, across reconnects. "" for any.
	Peer  string    `json:"peer,omitempty"`
	Calls CallRange `json:"calls"`
	// MaxFaults bounds the calls the rule acts on (faults; delays for a
	// delay-only rule), over all threads; 0 = no bound.
	MaxFaults uint64 `json:"max_faults,omitempty"`
	// After and For describe the time window [After, After+For) counted
	// from the moment the rule is set, or from the process start when
	// FromStart; For 0 = no end.
	After     time.Duration `json:"after,omitempty"`
	For       time.Duration `json:"for,omitempty"`
	FromStart bool          `json:"from_start,omitempty"`
	// DelayMin and DelayMax give a uniform delay; both 0 = no delay.
	DelayMin time.Duration `json:"delay_min,omitempty"`
	DelayMax time.Duration `json:"delay_max,omitempty"`
	// KillEP makes the rule's action a peer death: the matched call's
	// endpoint dies just before the call (as `kill-ep` kills it), and the
	// call fails as every later call on a dead endpoint does. KillCode is
	// the death's code; 0 = the code the running libucp reports for a dead
	// TCP peer (-80 up to 1.13, -25 from 1.14; docs/peer-death.md).
	KillEP   bool       `json:"kill_ep,omitempty"`
	KillCode ucs.Status `json:"kill_code,omitempty"`
	// InflightCode, with KillEP, is what operations in flight on the
	// endpoint at the kill complete with (inflight-code=); 0 =
	// Settings.InflightCode, or else the kill's code.
	InflightCode ucs.Status `json:"inflight_code,omitempty"`
	// CompletionDelay holds the completion of each request the rule acts
	// on: its callback and status queries report it in progress until
	// CompletionDelay after the real completion (delay-completion=); 0 =
	// none. At most MaxDelay.
	CompletionDelay time.Duration `json:"completion_delay,omitempty"`
	// Hang holds the completion of each request the rule acts on until
	// the application cancels it (then UCS_ERR_CANCELED, -16) or its
	// endpoint is closed or killed (hang).
	Hang bool `json:"hang,omitempty"`
	// SetAt is when the rule was set; the window and the call numbers
	// count from there.
	SetAt time.Time `json:"set_at"`
}

// NamedHooks returns the hooks the rule names one by one in its hooks=
// list; none for the default list or hooks=all.
func (r *Rule) NamedHooks() []hooks.ID {
	if r.HookNames == nil || (len(r.HookNames) == 1 && r.HookNames[0] == "all") {
		return nil
	}
	return r.Hooks
}

// SwitchOnNamedHooks turns on in s every hook that one of rules names (see
// NamedHooks): naming a hook in a rule is as explicit as --hooks, so an
// opt-in hook (ucp_ep_create, ucp_mem_map) or one switched off does not
// leave the rule inert. The hook stays on when the rule is deleted, as
// after `hook enable`. It returns the names of the hooks it switched on, in
// table order.
func SwitchOnNamedHooks(s *Settings, rules []Rule) []string {
	var on []string
	for id := range hooks.Table {
		if s.HookEnabled[id] {
			continue
		}
		for i := range rules {
			if slices.Contains(rules[i].NamedHooks(), hooks.ID(id)) {
				s.HookEnabled[id] = true
				on = append(on, hooks.Table[id].Name)
				break
			}
		}
	}
	return on
}

// Windowed reports whether the rule has a time window.
func (r *Rule) Windowed() bool { return r.After > 0 || r.For > 0 }

// Covers reports whether the rule applies to hook id.
func (r *Rule) Covers(id hooks.ID) bool { return slices.Contains(r.Hooks, id) }

// String renders the rule in the syntax ParseRule reads; ParseRule of it
// gives the same rule (without ID and SetAt).
func (r *Rule) String() string {
	var p []string
	if r.HookNames != nil {
		p = append(p, "hooks="+strings.Join(r.HookNames, ","))
	}
	switch r.Strategy {
	case StrategyRandom:
		p = append(p, "prob="+strconv.FormatFloat(r.Probability, 'f', -1, 64))
	case StrategyPattern:
		p = append(p, "pattern="+r.Pattern)
	}
	if r.Codes != nil {
		cs := make([]string, len(r.Codes))
		for i, c := range r.Codes {
			cs[i] = strconv.Itoa(int(c))
		}
		p = append(p, "codes="+strings.Join(cs, ","))
	}
	if r.MinSize > 0 {
		p = append(p, "min-size="+FormatSize(r.MinSize))
	}
	if r.HasMaxSize {
		p = append(p, "max-size="+FormatSize(r.MaxSize))
	}
	if r.Endpoint >= 0 {
		p = append(p, "endpoint="+strconv.Itoa(r.Endpoint))
	}
	if r.Peer != "" {
		p = append(p, "peer="+r.Peer)
	}
	if !r.Calls.All() {
		p = append(p, "calls="+r.Calls.String())
	}
	if r.MaxFaults > 0 {
		p = append(p, "max-faults="+strconv.FormatUint(r.MaxFaults, 10))
	}
	if r.After > 0 {
		p = append(p, "after="+r.After.String())
	}
	if r.For > 0 {
		p = append(p, "for="+r.For.String())
	}
	if r.FromStart {
		p = append(p, "from-start")
	}
	if r.DelayMax > 0 {
		d := r.DelayMin.String()
		if r.DelayMax != r.DelayMin {
			d += ".." + r.DelayMax.String()
		}
		p = append(p, "delay="+d)
	}
	if r.KillEP {
		if r.KillCode != 0 {
			p = append(p, "kill-ep="+strconv.Itoa(int(r.KillCode)))
		} else {
			p = append(p, "kill-ep")
		}
		if r.InflightCode != 0 {
			p = append(p, "inflight-code="+strconv.Itoa(int(r.InflightCode)))
		}
	}
	p = append(p, r.holdTokens()...)
	return strings.Join(p, " ")
}

// ruleKeys maps the accepted spellings of each key to its name.
var ruleKeys = map[string]string{
	"hooks": "hooks", "hook": "hooks",
	"prob": "prob", "probability": "prob",
	"pattern": "pattern",
	"codes":   "codes", "error-codes": "codes",
	"min-size": "min-size", "max-size": "max-size",
	"endpoint": "endpoint", "ep": "endpoint",
	"peer":       "peer",
	"calls":      "calls",
	"max-faults": "max-faults",
	"after":      "after", "for": "for",
	"from-start":       "from-start",
	"delay":            "delay",
	"kill-ep":          "kill-ep",
	"inflight-code":    "inflight-code",
	"delay-completion": "delay-completion", "hang": "hang",
}

// ParseRule reads one rule: space-separated KEY=VALUE tokens (and the bare
// flag from-start), in any order. See RuleForms and docs/rules.md.
func ParseRule(text string) (*Rule, error) {
	fail := func(format string, args ...any) (*Rule, error) {
		return nil, fmt.Errorf("rule %q: %w: %s (a rule is: %s)", text, ErrInvalid, fmt.Sprintf(format, args...), RuleForms)
	}
	wrap := func(err error) (*Rule, error) {
		return nil, fmt.Errorf("rule %q: %w (a rule is: %s)", text, err, RuleForms)
	}
	r := &Rule{Endpoint: -1, Calls: CallRange{Open: true, Step: 1}}
	seen := map[string]bool{}
	var hookText string
	var hasProb, hasPattern bool
	tokens := strings.Fields(text)
	if len(tokens) == 0 {
		return fail("empty rule")
	}
	for _, tok := range tokens {
		k, v, hasValue := strings.Cut(tok, "=")
		key, ok := ruleKeys[strings.ReplaceAll(strings.ToLower(k), "_", "-")]
		if !ok {
			return fail("unknown key %q", k)
		}
		if seen[key] {
			return fail("%s given twice", key)
		}
		seen[key] = true
		if key == "kill-ep" {
			r.KillEP = true
			if hasValue {
				codes, err := ParseCodes(v)
				if err != nil {
					return wrap(err)
				}
				if len(codes) != 1 {
					return fail("kill-ep=%q: give one code", v)
				}
				r.KillCode = codes[0]
			}
			continue
		}
		if key == "inflight-code" {
			code, err := ParseInflightCode(v)
			if err != nil {
				return wrap(err)
			}
			r.InflightCode = code
			continue
		}
		if key == "hang" {
			if hasValue {
				return fail("hang takes no value (it holds a completion until a cancel, close or kill)")
			}
			r.Hang = true
			continue
		}
		if key == "from-start" {
			if hasValue {
				b, err := ParseBool(v)
				if err != nil {
					return wrap(err)
				}
				r.FromStart = b
			} else {
				r.FromStart = true
			}
			continue
		}
		if !hasValue || v == "" {
			return fail("%s needs a value: %s=...", key, key)
		}
		var err error
		switch key {
		case "hooks":
			hookText = v
		case "prob":
			r.Probability, err = ParseProbability(v)
			hasProb = true
		case "pattern":
			r.Pattern, err = CheckPattern(v)
			hasPattern = true
		case "codes":
			r.Codes, err = ParseCodes(v)
		case "min-size":
			r.MinSize, err = ParseSize(v)
		case "max-size":
			r.MaxSize, err = ParseSize(v)
			r.HasMaxSize = true
		case "endpoint":
			n, e := strconv.Atoi(v)
			if e != nil || n < 0 || n > math.MaxInt32 {
				return fail("endpoint %q is not an endpoint number (accepted: 0, 1, ... in the order the process created its endpoints)", v)
			}
			r.Endpoint = n
		case "peer":
			r.Peer, err = CheckPeer(v)
		case "calls":
			r.Calls, err = ParseCallRange(v)
		case "max-faults":
			n, e := strconv.ParseUint(v, 10, 64)
			if e != nil || n == 0 {
				return fail("max-faults %q is not a number of at least 1", v)
			}
			r.MaxFaults = n
		case "after", "for":
			d, e := time.ParseDuration(v)
			if e != nil || d < 0 || (key == "for" && d == 0) {
				return fail("%s=%q (%s; for= more than 0)", key, v, durForms)
			}
			if key == "after" {
				r.After = d
			} else {
				r.For = d
			}
		case "delay":
			r.DelayMin, r.DelayMax, err = parseDelay(v)
		case "delay-completion":
			r.CompletionDelay, err = parseCompletionDelay(v)
		}
		if err != nil {
			return wrap(err)
		}
	}
	if hasProb && hasPattern {
		return fail("give prob= or pattern=, not both")
	}
	if r.InflightCode != 0 && !r.KillEP {
		return fail("inflight-code= needs kill-ep (it is what operations in flight at the kill complete with)")
	}
	if r.KillEP && r.Codes != nil {
		return fail("give codes= or kill-ep, not both (kill-ep=CODE names the death's code)")
	}
	if r.HasMaxSize && r.MaxSize < r.MinSize {
		return fail("max-size %s is below min-size %s", FormatSize(r.MaxSize), FormatSize(r.MinSize))
	}
	if r.FromStart && !r.Windowed() {
		return fail("from-start needs after= or for=")
	}
	if err := r.checkHold(); err != nil {
		return wrap(err)
	}
	switch {
	case hasProb:
		r.Strategy = StrategyRandom
	case hasPattern:
		r.Strategy = StrategyPattern
	case (r.DelayMax > 0 || r.Holds()) && r.Codes == nil && !r.KillEP:
		r.Strategy = StrategyNone // delay or hold only: every matched call
	default:
		r.Strategy, r.Probability = StrategyRandom, 100
	}
	if err := r.resolveHooks(hookText, seen["hooks"]); err != nil {
		return wrap(err)
	}
	return r, nil
}

// MaxPeerLen bounds a peer name: the injector keeps 63 bytes of one
// (UCXF_PEER_MAX, preload/peer.h), more than the longest it makes ("[" an
// IPv6 address "]:" a port, 53).
const MaxPeerLen = 63

// CheckPeer validates a peer name as status shows it (see Rule.Peer): 3 to
// MaxPeerLen printable ASCII characters, no space, '=' or ';', with a ':'
// that is neither first nor last (every name the injector makes has one).
// It does not check that a process has such a peer: a rule may name one
// before it connects.
func CheckPeer(v string) (string, error) {
	if v == "" || len(v) > MaxPeerLen {
		return "", fmt.Errorf("%w: peer %q: want 1 to %d characters, as status shows a peer (w:1a2b3c4d5e6f, 10.0.0.2:13337, [fe80::1]:13337)", ErrInvalid, v, MaxPeerLen)
	}
	if i := strings.LastIndexByte(v, ':'); i <= 0 || i == len(v)-1 {
		return "", fmt.Errorf("%w: peer %q is not a peer name (as status shows a peer: w:1a2b3c4d5e6f, 10.0.0.2:13337, [fe80::1]:13337)", ErrInvalid, v)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' || c == '=' || c == ';' {
			return "", fmt.Errorf("%w: peer %q: character %q is not in a peer name (as status shows a peer: w:1a2b3c4d5e6f, 10.0.0.2:13337, [fe80::1]:13337)", ErrInvalid, v, c)
		}
	}
	// A worker's peer is "w:" (or, on UCX 1.10 and 1.11, "a:") and 48 bits
	// in 12 lower-case hex digits, as the injector writes it
	// (preload/peer.c): another spelling would never match.
	if kind, hex, ok := strings.Cut(v, ":"); ok && (kind == "w" || kind == "a") {
		if len(hex) != 12 || strings.Trim(hex, "0123456789abcdef") != "" {
			return "", fmt.Errorf("%w: peer %q: a worker's peer is %s: and 12 lower-case hex digits, as status shows it (w:1a2b3c4d5e6f)", ErrInvalid, v, kind)
		}
		return v, nil
	}
	// Else a client/server endpoint's: an IP address (IPv6 in brackets)
	// and a port, as inet_ntop writes them (preload/peer.c), never a name.
	i := strings.LastIndexByte(v, ':')
	host, port := v[:i], v[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		host = "" // IPv6 without brackets: not how status shows it
	}
	if p, err := strconv.ParseUint(port, 10, 16); net.ParseIP(host) == nil || err != nil || p == 0 {
		return "", fmt.Errorf("%w: peer %q is not a peer name: want w: and 12 hex digits, or an IP address and a port (as status shows a peer: w:1a2b3c4d5e6f, 10.0.0.2:13337, [fe80::1]:13337)", ErrInvalid, v)
	}
	return v, nil
}

func parseDelay(v string) (lo, hi time.Duration, err error) {
	a, b, isRange := strings.Cut(v, "..")
	lo, err = time.ParseDuration(a)
	if err == nil {
		hi = lo
		if isRange {
			hi, err = time.ParseDuration(b)
		}
	}
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("%w: delay %q (%s)", ErrInvalid, v, delayForms)
	case lo < 0 || hi < lo:
		return 0, 0, fmt.Errorf("%w: delay %q: the range runs backwards or below 0 (%s)", ErrInvalid, v, delayForms)
	case hi == 0:
		return 0, 0, fmt.Errorf("%w: delay %q is zero (%s)", ErrInvalid, v, delayForms)
	case hi > MaxDelay:
		return 0, 0, fmt.Errorf("%w: delay %q is longer than %v (%s)", ErrInvalid, v, MaxDelay, delayForms)
	}
	return lo, hi, nil
}

// resolveHooks fills r.Hooks from the hooks= text (given) or the default.
func (r *Rule) resolveHooks(text string, given bool) error {
	needSize := r.MinSize > 0 || r.HasMaxSize
	needEP := r.Endpoint >= 0 || r.Peer != "" || r.KillEP
	fits := func(h *hooks.Hook) string {
		switch {
		case !h.Faultable:
			return "is observed only and cannot be faulted or delayed"
		case r.Holds() && (!h.ReturnsRequest || h.Callback == ""):
			return "returns no request whose completion delay-completion= or hang could hold"
		case needSize && h.Size == "":
			return "has no size argument for min-size/max-size"
		case needEP && h.Endpoint == "":
			return "has no endpoint argument for endpoint=, peer= or kill-ep"
		}
		return ""
	}
	if !given || strings.EqualFold(strings.TrimSpace(text), "all") {
		if given {
			r.HookNames = []string{"all"}
		}
		for i := range hooks.Table {
			if fits(&hooks.Table[i]) == "" {
				r.Hooks = append(r.Hooks, hooks.ID(i))
			}
		}
		if len(r.Hooks) == 0 {
			return fmt.Errorf("%w: no hook fits the rule's conditions", ErrInvalid)
		}
		return nil
	}
	ids, err := hooks.ParseList(text)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for _, id := range ids {
		h := &hooks.Table[id]
		if why := fits(h); why != "" {
			return fmt.Errorf("%w: hook %s %s", ErrInvalid, h.Name, why)
		}
		r.HookNames = append(r.HookNames, h.Name)
	}
	r.Hooks = ids
	return nil
}

// ParseRules reads rules separated by ';' or newlines, as in
// UCX_FAULT_RULES. Empty rules are skipped.
func ParseRules(text string) ([]*Rule, error) {
	var out []*Rule
	for _, part := range strings.FieldsFunc(text, func(r rune) bool { return r == ';' || r == '\n' }) {
		if strings.TrimSpace(part) == "" {
			continue
		}
		r, err := ParseRule(part)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if len(out) > MaxRules {
		return nil, fmt.Errorf("%w: %d rules, at most %d may stand at once", ErrInvalid, len(out), MaxRules)
	}
	return out, nil
}

// Rule operations of the rules command (the "rule_op" field).
const (
	RuleOpAdd   = "add"   // append the rules in "rules"
	RuleOpSet   = "set"   // replace all rules with those in "rules" (none: clear)
	RuleOpDel   = "del"   // delete the rule whose id is "rule_id"
	RuleOpClear = "clear" // delete every rule
)

// RuleCounters are one rule's counters, summed over threads.
type RuleCounters struct {
	Matches, Faults, Delays, DelayNS uint64
}

// RuleStatus is one rule as status reports it.
type RuleStatus struct {
	ID int `json:"id"`
	// Rule is the rule's text in the syntax ParseRule reads.
	Rule  string   `json:"rule"`
	Hooks []string `json:"hooks"`
	// SetAt is when the rule was set (RFC 3339).
	SetAt time.Time `json:"set_at"`
	// Matches counts the calls the rule decided; Faults those it failed;
	// Delays those it delayed, and DelayNS the time that added.
	Matches uint64 `json:"matches"`
	Faults  uint64 `json:"faults"`
	Delays  uint64 `json:"delays"`
	DelayNS uint64 `json:"delay_ns"`
}

// applyRules changes the rule list of next as req asks and returns the
// message for the response. nextID numbers new rules.
func applyRules(next *Settings, req *Request, nextID *int, now time.Time) (string, error) {
	parse := func() ([]Rule, error) {
		var out []Rule
		for _, text := range req.Rules {
			rs, err := ParseRules(text)
			if err != nil {
				return nil, err
			}
			for _, r := range rs {
				out = append(out, *r)
			}
		}
		return out, nil
	}
	number := func(rs []Rule) []string {
		var texts []string
		for i := range rs {
			rs[i].ID, rs[i].SetAt = *nextID, now
			*nextID++
			texts = append(texts, fmt.Sprintf("rule %d: %s", rs[i].ID, rs[i].String()))
		}
		return texts
	}
	switch req.RuleOp {
	case RuleOpAdd, RuleOpSet:
		rs, err := parse()
		if err != nil {
			return "", err
		}
		if req.RuleOp == RuleOpAdd && len(rs) == 0 {
			return "", fmt.Errorf("%w: rules add needs at least one rule in \"rules\" (a rule is: %s)", ErrInvalid, RuleForms)
		}
		kept := next.Rules
		if req.RuleOp == RuleOpSet {
			kept = nil
		}
		if len(kept)+len(rs) > MaxRules {
			return "", fmt.Errorf("%w: %d rules would stand, at most %d may (delete some first)", ErrInvalid, len(kept)+len(rs), MaxRules)
		}
		texts := number(rs)
		next.Rules = append(slices.Clone(kept), rs...)
		if len(texts) == 0 {
			return "rules cleared", nil
		}
		msg := strings.Join(texts, "; ")
		if on := SwitchOnNamedHooks(next, rs); len(on) > 0 {
			msg += "; named by the rule, now on: " + strings.Join(on, ", ")
		}
		return msg, nil
	case RuleOpDel:
		if req.RuleID == nil {
			return "", fmt.Errorf("%w: rules del needs field \"rule_id\"", ErrInvalid)
		}
		for i, r := range next.Rules {
			if r.ID == *req.RuleID {
				next.Rules = slices.Delete(slices.Clone(next.Rules), i, i+1)
				return fmt.Sprintf("rule %d deleted", r.ID), nil
			}
		}
		ids := make([]string, len(next.Rules))
		for i, r := range next.Rules {
			ids[i] = strconv.Itoa(r.ID)
		}
		if len(ids) == 0 {
			return "", fmt.Errorf("%w: no rule %d (no rules stand)", ErrInvalid, *req.RuleID)
		}
		return "", fmt.Errorf("%w: no rule %d (rules: %s)", ErrInvalid, *req.RuleID, strings.Join(ids, ", "))
	case RuleOpClear:
		n := len(next.Rules)
		next.Rules = nil
		return fmt.Sprintf("rules cleared (%d)", n), nil
	}
	return "", fmt.Errorf("%w: rule_op %q (accepted: %s, %s, %s, %s)", ErrInvalid, req.RuleOp,
		RuleOpAdd, RuleOpSet, RuleOpDel, RuleOpClear)
}

// ruleStatus describes the rules of s with their counters.
func ruleStatus(rules []Rule, counters map[int]RuleCounters) []RuleStatus {
	var out []RuleStatus
	for i := range rules {
		r := &rules[i]
		names := make([]string, len(r.Hooks))
		for k, id := range r.Hooks {
			names[k] = hooks.Table[id].Name
		}
		c := counters[r.ID]
		out = append(out, RuleStatus{ID: r.ID, Rule: r.String(), Hooks: names, SetAt: r.SetAt,
			Matches: c.Matches, Faults: c.Faults, Delays: c.Delays, DelayNS: c.DelayNS})
	}
	return out
}

// Holds reports whether the rule holds the completion of the requests it
// acts on (delay-completion= or hang).
func (r *Rule) Holds() bool { return r.Hang || r.CompletionDelay > 0 }

// holdTokens spells the rule's hold as ParseRule reads it.
func (r *Rule) holdTokens() []string {
	switch {
	case r.Hang:
		return []string{"hang"}
	case r.CompletionDelay > 0:
		return []string{"delay-completion=" + r.CompletionDelay.String()}
	}
	return nil
}

// checkHold refuses the combinations a held completion cannot honour: a
// held request completes with its real status (or the cancel's, close's or
// kill's), so it carries no injected code, and one rule holds one way.
func (r *Rule) checkHold() error {
	switch {
	case r.Hang && r.CompletionDelay > 0:
		return fmt.Errorf("%w: give delay-completion= or hang, not both", ErrInvalid)
	case r.Holds() && r.Codes != nil:
		return fmt.Errorf("%w: a held completion keeps the operation's real status: codes= does not combine with delay-completion= or hang", ErrInvalid)
	}
	return nil
}

// parseCompletionDelay reads the value of delay-completion=: one duration,
// more than 0 and at most MaxDelay.
func parseCompletionDelay(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil || d <= 0:
		return 0, fmt.Errorf("%w: delay-completion %q (accepted: a duration above 0 with a unit, e.g. 200ms, at most %v)", ErrInvalid, v, MaxDelay)
	case d > MaxDelay:
		return 0, fmt.Errorf("%w: delay-completion %q is longer than %v", ErrInvalid, v, MaxDelay)
	}
	return d, nil
}

// endpointCodeWarning returns, when the global codes or a rule's codes
// include an endpoint-level code (ucs.Status.EndpointLevel), one warning
// that names them and points to kill-ep; "" otherwise. One warning for the
// whole settings, so a status shows it once however many rules carry such
// codes.
func endpointCodeWarning(s Settings) string {
	seen := map[ucs.Status]bool{}
	var found []ucs.Status
	add := func(cs []ucs.Status) {
		for _, c := range cs {
			if c.EndpointLevel() && !seen[c] {
				seen[c] = true
				found = append(found, c)
			}
		}
	}
	add(s.Codes)
	for i := range s.Rules {
		if s.Rules[i].Strategy != StrategyNone { // a delay-only rule fails nothing
			add(s.Rules[i].Codes)
		}
	}
	if len(found) == 0 {
		return ""
	}
	return fmt.Sprintf("codes %s are endpoint-level: a per-call fault fails single calls and leaves the endpoint healthy "+
		"(later calls succeed and no error handler runs), a state real UCX never shows; use kill-ep to fail the endpoint as a dead peer does",
		ucs.FormatList(found))
}
