package control

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ucxfault/ucxfault/hooks"
)

// The UCX_FAULT_* variables that carry Settings have one codec: EncodeEnv
// writes them (ucxfault inject) and FromEnv reads them (the injector at
// load), so what inject means is what the injector does.

// SettingsEnv lists the variables that carry Settings, in the order
// EncodeEnv writes them. The others (UCX_FAULT_DEBUG, _SOCKET_DIR,
// _IPC_BACKEND, _RECORD_CAPACITY, _STATS_LOG_INTERVAL) configure the
// process, not the injection.
var SettingsEnv = []string{EnvEnabled, EnvStrategy, EnvProbability, EnvPattern, EnvCodes,
	EnvHooks, EnvSeed, EnvMode, EnvRecord, EnvRules, EnvInflightCode}

// ErrNotInEnv is returned by EncodeEnv for settings the environment cannot
// carry.
var ErrNotInEnv = errors.New("settings cannot travel in UCX_FAULT_* variables")

// EncodeEnv renders s as "NAME=value" assignments, one for each variable
// of SettingsEnv, that FromEnv reads back as s: rules are renumbered from 1
// and their time counts from the load. An empty value means the default
// (UCX_FAULT_HOOKS: the default hooks and those the rules name; the seed,
// when seeded is false: one the injector draws). What the environment
// cannot say is refused with ErrNotInEnv: a replay schedule, killed
// endpoints, and hook switches that no UCX_FAULT_HOOKS list gives (a list
// names only hooks that can fail and switches the others off).
func EncodeEnv(s Settings, seeded bool) ([]string, error) {
	if s.Replay != nil || len(s.Kills) > 0 {
		return nil, fmt.Errorf("%w: a replay schedule or killed endpoints", ErrNotInEnv)
	}
	hookList, err := encodeHooks(s)
	if err != nil {
		return nil, err
	}
	codes := make([]string, len(s.Codes))
	for i, c := range s.Codes {
		codes[i] = strconv.Itoa(int(c))
	}
	seed := ""
	if seeded {
		seed = strconv.FormatUint(s.Seed, 10)
	}
	rules := make([]string, len(s.Rules))
	for i := range s.Rules {
		rules[i] = s.Rules[i].String()
	}
	values := map[string]string{
		EnvEnabled:      strconv.FormatBool(s.Enabled),
		EnvStrategy:     s.Strategy,
		EnvProbability:  strconv.FormatFloat(s.Probability, 'f', -1, 64),
		EnvPattern:      s.Pattern,
		EnvCodes:        strings.Join(codes, ","),
		EnvHooks:        hookList,
		EnvSeed:         seed,
		EnvMode:         s.Mode,
		EnvRecord:       strconv.FormatBool(s.Recording),
		EnvRules:        strings.Join(rules, "; "),
		EnvInflightCode: "",
	}
	if s.InflightCode != 0 {
		values[EnvInflightCode] = strconv.Itoa(int(s.InflightCode))
	}
	out := make([]string, len(SettingsEnv))
	for i, name := range SettingsEnv {
		out[i] = name + "=" + values[name]
	}
	return out, nil
}

// encodeHooks renders s.HookEnabled as FromEnv reads UCX_FAULT_HOOKS: empty
// for the default (with the hooks s's rules name switched on), all, or the
// list of the hooks that can fail and are on.
func encodeHooks(s Settings) (string, error) {
	def := DefaultSettings()
	SwitchOnNamedHooks(&def, s.Rules)
	if slices.Equal(s.HookEnabled, def.HookEnabled) {
		return "", nil
	}
	if !slices.Contains(s.HookEnabled, false) && len(s.HookEnabled) == len(hooks.Table) {
		return "all", nil
	}
	var names []string
	back := DefaultSettings()
	for i := range back.HookEnabled {
		back.HookEnabled[i] = false
	}
	for i, on := range s.HookEnabled {
		if on && i < len(hooks.Table) && hooks.Table[i].Faultable && hooks.Table[i].Refusal == "" {
			names = append(names, hooks.Table[i].Name)
			back.HookEnabled[i] = true
		}
	}
	SwitchOnNamedHooks(&back, s.Rules)
	if len(names) == 0 || !slices.Equal(back.HookEnabled, s.HookEnabled) {
		return "", fmt.Errorf("%w: no %s list switches on exactly the hooks on", ErrNotInEnv, EnvHooks)
	}
	return strings.Join(names, ","), nil
}

// FromEnv builds the start-up settings from UCX_FAULT_* variables (the
// decoder of EncodeEnv's assignments); an empty variable is one not set. Any bad
// value is an error; the caller reports it once and leaves the injector off.
// seeded reports whether UCX_FAULT_SEED was given.
func FromEnv(getenv Env) (s Settings, seeded bool, err error) {
	s = DefaultSettings()
	wrap := func(name string, e error) error { return fmt.Errorf("%s: %w", name, e) }
	if v := getenv(EnvStrategy); v != "" {
		if s.Strategy, err = ParseStrategy(v); err != nil {
			return s, false, wrap(EnvStrategy, err)
		}
	}
	if v := getenv(EnvProbability); v != "" {
		if s.Probability, err = ParseProbability(v); err != nil {
			return s, false, wrap(EnvProbability, err)
		}
		if getenv(EnvStrategy) == "" {
			s.Strategy = StrategyRandom
		}
	}
	if v := getenv(EnvPattern); v != "" {
		if s.Pattern, err = CheckPattern(v); err != nil {
			return s, false, wrap(EnvPattern, err)
		}
		if getenv(EnvStrategy) == "" {
			s.Strategy = StrategyPattern
		}
	}
	if s.Strategy == StrategyPattern && s.Pattern == "" {
		return s, false, wrap(EnvStrategy, fmt.Errorf("%w: strategy pattern needs %s", ErrInvalid, EnvPattern))
	}
	if v := getenv(EnvCodes); v != "" {
		if s.Codes, err = ParseCodes(v); err != nil {
			return s, false, wrap(EnvCodes, err)
		}
	}
	if v := getenv(EnvHooks); v != "" {
		ids, e := hooks.ParseFaultList(v)
		if e != nil {
			return s, false, wrap(EnvHooks, fmt.Errorf("%w: %v", ErrInvalid, e))
		}
		for i := range s.HookEnabled {
			s.HookEnabled[i] = false
		}
		for _, id := range ids {
			s.HookEnabled[id] = true
		}
	}
	if v := getenv(EnvSeed); v != "" {
		seed, e := strconv.ParseUint(strings.TrimSpace(v), 0, 64)
		if e != nil {
			return s, false, wrap(EnvSeed, fmt.Errorf("%w: seed %q is not an unsigned 64-bit integer", ErrInvalid, v))
		}
		s.Seed, seeded = seed, true
	}
	if v := getenv(EnvMode); v != "" {
		if s.Mode, err = ParseMode(v); err != nil {
			return s, false, wrap(EnvMode, err)
		}
	}
	if v := getenv(EnvInflightCode); v != "" {
		if s.InflightCode, err = ParseInflightCode(v); err != nil {
			return s, false, wrap(EnvInflightCode, err)
		}
	}
	if v := getenv(EnvRecord); v != "" {
		if s.Recording, err = ParseBool(v); err != nil {
			return s, false, wrap(EnvRecord, err)
		}
	}
	if v := getenv(EnvRules); v != "" {
		rules, e := ParseRules(v)
		if e != nil {
			return s, false, wrap(EnvRules, e)
		}
		now := time.Now()
		for i, r := range rules {
			r.ID, r.SetAt = i+1, now
			s.Rules = append(s.Rules, *r)
		}
		// After UCX_FAULT_HOOKS: a hook a rule names is on whatever the
		// list says.
		SwitchOnNamedHooks(&s, s.Rules)
	}
	if v := getenv(EnvEnabled); v != "" {
		if s.Enabled, err = ParseBool(v); err != nil {
			return s, false, wrap(EnvEnabled, err)
		}
	}
	return s, seeded, nil
}
