package main

import (
	"crypto/rand"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/hooks"
)

// libName is the injector's file name.
const libName = "libucxfault.so"

// findLibrary locates libucxfault.so: --lib, then UCXFAULT_LIB, then beside
// the ucxfault binary, then in ../lib relative to it.
func findLibrary(flag string) (string, error) {
	if flag != "" {
		return checkLibrary(flag, "--lib")
	}
	if env := os.Getenv("UCXFAULT_LIB"); env != "" {
		return checkLibrary(env, "UCXFAULT_LIB")
	}
	self, err := os.Executable()
	if err == nil {
		dir := filepath.Dir(self)
		for _, cand := range []string{filepath.Join(dir, libName), filepath.Join(dir, "..", "lib", libName)} {
			if _, err := os.Stat(cand); err == nil {
				return filepath.Abs(cand)
			}
		}
	}
	return "", fmt.Errorf("%s not found beside %s (give --lib PATH or set UCXFAULT_LIB)", libName, self)
}

func checkLibrary(path, from string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", usagef("resolving %s: %w", from, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", usagef("%s %s: %w", from, path, err)
	}
	// ld.so would only warn about a file that is not a shared object and
	// run the program without the injector.
	f, err := elf.Open(abs)
	if err != nil {
		return "", usagef("%s %s: not a shared library: %w", from, path, err)
	}
	defer f.Close()
	if f.Type != elf.ET_DYN {
		return "", usagef("%s %s: not a shared library (ELF type %v)", from, path, f.Type)
	}
	return abs, nil
}

// isGoBinary reports whether path is a Go program: a second Go runtime in
// one process is unsupported, so such a host cannot be injected.
func isGoBinary(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Section(".go.buildinfo") != nil
}

type injectOptions struct {
	lib         string
	probability string
	pattern     string
	codes       string
	hooks       string
	seed        string
	record      bool
	disabled    bool
	debug       bool
	quiet       bool
	mode        string
	rules       []string
	inflight    string
}

func newInjectCmd() *cobra.Command {
	var o injectOptions
	cmd := &cobra.Command{
		Use:   "inject [flags] -- PROGRAM [ARGS...]",
		Short: "Run a program with the fault injector loaded",
		Long: `Runs PROGRAM with libucxfault.so preloaded and the settings passed through
UCX_FAULT_* variables. ucxfault replaces itself with PROGRAM, so the pid,
exit status and signals are PROGRAM's. Injection starts on; without
--probability or --pattern it fails nothing until told to (the counters run).

The start-up line on stderr names the settings and the seed (drawn at
random unless --seed or UCX_FAULT_SEED gives one). At exit, each process
that used UCX prints one summary line on stderr, "ucxfault[PID]: exit:
FAULTS faults in CALLS calls; seed ..., mode, rules", and appends it to the
file UCX_FAULT_SUMMARY_FILE names, if set; --quiet keeps both lines off
stderr.

Exit status: PROGRAM's; 2 on bad input before PROGRAM starts.`,
		Example: `  ucxfault inject --probability 5 --codes IO_ERROR,TIMED_OUT -- ./app
  ucxfault inject --pattern XOO --hooks ucp_put_nbx --seed 7 -- ./app`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("inject needs a program to run: ucxfault inject [flags] -- PROGRAM [ARGS...]")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			// An empty value would silently mean "not given".
			for _, name := range []string{"probability", "pattern"} {
				if c.Flags().Changed(name) && c.Flags().Lookup(name).Value.String() == "" {
					return usagef("--%s needs a value (an empty one is not accepted)", name)
				}
			}
			for _, text := range o.rules {
				if strings.TrimSpace(text) == "" {
					return usagef("--rule needs a rule (an empty one is not accepted; see ucxfault rule --help)")
				}
			}
			if o.seed == "" {
				// Drawn here rather than in the injector, so that the
				// start-up line can show it: any run can be repeated with
				// --seed. A seed the environment already gives is kept.
				if v := os.Getenv(control.EnvSeed); v != "" {
					o.seed = v
				} else {
					o.seed = strconv.FormatUint(drawSeed(), 10)
				}
			}
			env, err := o.environment()
			if err != nil {
				return err
			}
			lib, err := findLibrary(o.lib)
			if err != nil {
				return err
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return usagef("finding program: %w", err) // a program that is not there is bad input
			}
			if isGoBinary(path) {
				return usagef("%s is a Go program: a second Go runtime cannot be loaded into it, so it cannot be injected", path)
			}
			env = append(env, "LD_PRELOAD="+joinPreload(lib, os.Getenv("LD_PRELOAD")))
			// UCX warns about every UCX_* variable it does not know, which
			// includes ours; silence that unless the user decided otherwise.
			if _, set := os.LookupEnv("UCX_WARN_UNUSED_ENV_VARS"); !set {
				env = append(env, "UCX_WARN_UNUSED_ENV_VARS=n")
			}
			if !o.quiet {
				fmt.Fprintf(c.ErrOrStderr(), "ucxfault: injecting into %s (pid %d): %s\n", path, os.Getpid(), o.summary())
			}
			full := mergeEnv(os.Environ(), env)
			if err := syscall.Exec(path, args, full); err != nil {
				return fmt.Errorf("starting %s: %w", path, err)
			}
			return errors.New("unreachable")
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.lib, "lib", "", "path of libucxfault.so (default: UCXFAULT_LIB, or beside ucxfault)")
	f.StringVar(&o.probability, "probability", "", "fail calls at random with this probability in percent")
	f.StringVar(&o.pattern, "pattern", "", "fail calls by a repeating X/O pattern (X = fail)")
	f.StringVar(&o.codes, "codes", "", "codes to fail with (default -3,-6,-20), numbers or names")
	var optIn []string
	for _, h := range hooks.Table {
		if h.OptIn {
			optIn = append(optIn, h.Name)
		}
	}
	f.StringVar(&o.hooks, "hooks", "", "hooks to fault (default: all but the opt-in "+strings.Join(optIn, ",")+
		", which fault only when named; polls then are timing-dependent): "+strings.Join(hooks.Names(), ","))
	f.StringVar(&o.seed, "seed", "", "seed for random faults (default: drawn at random, shown in the start-up line, the exit line and status)")
	f.BoolVar(&o.record, "record", false, "record calls from the start")
	f.BoolVar(&o.disabled, "disabled", false, "start with injection off")
	f.BoolVar(&o.debug, "debug", false, "log the injector's actions on stderr")
	f.BoolVar(&o.quiet, "quiet", false, "print neither the start-up line nor the exit summary line (UCX_FAULT_SUMMARY_FILE still gets it)")
	f.StringVar(&o.mode, "mode", "", "immediate (default) or deferred: fail on completion where the function allows")
	f.StringVar(&o.inflight, "inflight-code", "", "what operations in flight at a kill complete with, e.g. -16 or CANCELED as InfiniBand purges them (default: the kill's code; the handler gets the kill's code)")
	f.StringArrayVar(&o.rules, "rule", nil, "a fault rule, e.g. 'hooks=ucp_put_nbx calls=100..200+10' (repeatable; see ucxfault rule --help)")
	f.SetInterspersed(false)
	return cmd
}

// environment validates the flags and turns them into UCX_FAULT_* settings
// through the codec the injector reads them back with (control.EncodeEnv).
// Only the variables the flags set are written: one the flags leave alone
// keeps what the environment already says (UCX_FAULT_RULES exported by
// hand, for instance).
func (o *injectOptions) environment() ([]string, error) {
	if o.probability != "" && o.pattern != "" {
		return nil, usagef("give --probability or --pattern, not both")
	}
	s := control.DefaultSettings()
	s.Enabled = !o.disabled
	set := []string{control.EnvEnabled}
	if o.probability != "" {
		p, err := control.ParseProbability(o.probability)
		if err != nil {
			return nil, err
		}
		s.Strategy, s.Probability = control.StrategyRandom, p
		set = append(set, control.EnvStrategy, control.EnvProbability)
	}
	if o.pattern != "" {
		p, err := control.CheckPattern(o.pattern)
		if err != nil {
			return nil, err
		}
		s.Strategy, s.Pattern = control.StrategyPattern, p
		set = append(set, control.EnvStrategy, control.EnvPattern)
	}
	if o.codes != "" {
		codes, err := control.ParseCodes(o.codes)
		if err != nil {
			return nil, err
		}
		s.Codes = codes
		set = append(set, control.EnvCodes)
	}
	if o.hooks != "" {
		ids, err := hooks.ParseFaultList(o.hooks)
		if err != nil {
			return nil, usageError{err}
		}
		for i := range s.HookEnabled {
			s.HookEnabled[i] = false
		}
		for _, id := range ids {
			s.HookEnabled[id] = true
		}
		set = append(set, control.EnvHooks)
	}
	if o.seed != "" {
		seed, err := strconv.ParseUint(o.seed, 0, 64)
		if err != nil {
			return nil, usagef("--seed %q is not an unsigned 64-bit integer", o.seed)
		}
		s.Seed = seed
		set = append(set, control.EnvSeed)
	}
	if len(o.rules) > 0 {
		for _, text := range o.rules {
			rs, err := control.ParseRules(text)
			if err != nil {
				return nil, err
			}
			for _, r := range rs {
				s.Rules = append(s.Rules, *r)
			}
		}
		if len(s.Rules) > control.MaxRules {
			return nil, usagef("%d rules given, at most %d may stand at once", len(s.Rules), control.MaxRules)
		}
		// As the injector does on reading them (control.FromEnv).
		control.SwitchOnNamedHooks(&s, s.Rules)
		set = append(set, control.EnvRules)
	}
	if o.mode != "" {
		m, err := control.ParseMode(o.mode)
		if err != nil {
			return nil, err
		}
		s.Mode = m
		set = append(set, control.EnvMode)
	}
	if o.inflight != "" {
		code, err := control.ParseInflightCode(o.inflight)
		if err != nil {
			return nil, err
		}
		s.InflightCode = code
		set = append(set, control.EnvInflightCode)
	}
	if o.record {
		s.Recording = true
		set = append(set, control.EnvRecord)
	}
	all, err := control.EncodeEnv(s, o.seed != "")
	if err != nil {
		return nil, fmt.Errorf("encoding settings: %w", err)
	}
	var env []string
	for _, kv := range all {
		if name, _, _ := strings.Cut(kv, "="); slices.Contains(set, name) {
			env = append(env, kv)
		}
	}
	if o.debug {
		env = append(env, control.EnvDebug+"=1")
	}
	if !o.quiet {
		env = append(env, control.EnvExitSummary+"=1")
	}
	// Without --socket-dir the program picks the private directory
	// the CLI looks in (control.PrivateDir); a chosen one travels.
	if global.socketDir != "" {
		env = append(env, control.EnvSocketDir+"="+global.socketDir)
	}
	return env, nil
}

// drawSeed draws a seed from the system's random source.
func drawSeed() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint64(time.Now().UnixNano())
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (o *injectOptions) summary() string {
	var parts []string
	if o.disabled {
		parts = append(parts, "injection off")
	}
	switch {
	case o.probability != "":
		parts = append(parts, "random "+o.probability+"%")
	case o.pattern != "":
		parts = append(parts, "pattern "+strings.ToUpper(o.pattern))
	case len(o.rules) > 0:
		parts = append(parts, "faults by rules only")
	default:
		parts = append(parts, "no faults until set")
	}
	if o.codes != "" {
		parts = append(parts, "codes "+o.codes)
	}
	if o.hooks != "" {
		parts = append(parts, "hooks "+o.hooks)
	}
	if o.seed != "" {
		parts = append(parts, "seed "+o.seed)
	}
	if o.record {
		parts = append(parts, "recording")
	}
	if len(o.rules) > 0 {
		parts = append(parts, "rules: "+strings.Join(o.rules, "; "))
		if on := o.hooksNamedByRules(); len(on) > 0 {
			parts = append(parts, "on because a rule names them: "+strings.Join(on, ", "))
		}
	}
	return strings.Join(parts, ", ")
}

// hooksNamedByRules lists the hooks that would be off (opt-in, or left out
// of --hooks) and that the rules switch on by naming them, as the injector
// does when it reads its environment (control.FromEnv). The options have
// been checked already.
func (o *injectOptions) hooksNamedByRules() []string {
	s := control.DefaultSettings()
	if o.hooks != "" {
		ids, err := hooks.ParseFaultList(o.hooks)
		if err != nil {
			return nil
		}
		for i := range s.HookEnabled {
			s.HookEnabled[i] = false
		}
		for _, id := range ids {
			s.HookEnabled[id] = true
		}
	}
	var rules []control.Rule
	for _, text := range o.rules {
		rs, err := control.ParseRules(text)
		if err != nil {
			return nil
		}
		for _, r := range rs {
			rules = append(rules, *r)
		}
	}
	return control.SwitchOnNamedHooks(&s, rules)
}

// joinPreload puts lib first and keeps an existing LD_PRELOAD.
func joinPreload(lib, existing string) string {
	if existing == "" {
		return lib
	}
	for _, p := range strings.FieldsFunc(existing, func(r rune) bool { return r == ':' || r == ' ' }) {
		if p == lib {
			return existing
		}
	}
	return lib + ":" + existing
}

// mergeEnv overrides base with the NAME=value entries of over.
func mergeEnv(base, over []string) []string {
	names := map[string]bool{}
	for _, kv := range over {
		name, _, _ := strings.Cut(kv, "=")
		names[name] = true
	}
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if !names[name] {
			out = append(out, kv)
		}
	}
	return append(out, over...)
}
