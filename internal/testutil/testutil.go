// Package testutil holds helpers shared by ucxfault's tests: requirement
// checks that skip with a reason (or fail, where CI must run the test),
// building the example program examples/rma, and running and parsing it.
package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
)

// RequireEnv is the environment variable that turns the skips of RequireRoot,
// RequireBPF and BuildExample into failures: CI sets UCXFAULT_REQUIRE_BPF=1
// so that a missing requirement cannot pass silently.
const RequireEnv = "UCXFAULT_REQUIRE_BPF"

// skip skips the test with reason, or fails it when RequireEnv is set to 1.
func skip(tb testing.TB, reason string) {
	tb.Helper()
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%s (%s=1 requires it)", reason, RequireEnv)
	}
	tb.Skip(reason)
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		skip(tb, "test needs root")
	}
}

// RequireBPF skips the test unless it runs as root on a kernel with uprobes,
// BTF and BPF ring buffers: what the observer needs.
func RequireBPF(tb testing.TB) {
	tb.Helper()
	RequireRoot(tb)
	if reason := bpfMissing(); reason != "" {
		skip(tb, reason)
	}
}

// HaveBPF reports whether the observer can run here, for a test whose
// observer part is one check among others: without root or BPF it logs why
// that part is left out and returns false, or fails the test when
// RequireEnv is set to 1.
func HaveBPF(tb testing.TB) bool {
	tb.Helper()
	reason := "test needs root"
	if os.Geteuid() == 0 {
		reason = bpfMissing()
	}
	if reason == "" {
		return true
	}
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%s (%s=1 requires it)", reason, RequireEnv)
	}
	tb.Logf("the observer's part is left out: %s", reason)
	return false
}

func bpfMissing() string {
	var missing []string
	if _, err := os.Stat("/sys/bus/event_source/devices/uprobe"); err != nil {
		missing = append(missing, "uprobes (/sys/bus/event_source/devices/uprobe)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "BTF (/sys/kernel/btf/vmlinux)")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		missing = append(missing, fmt.Sprintf("BPF ring buffers (%v)", err))
	}
	if len(missing) == 0 {
		return ""
	}
	return "kernel lacks " + strings.Join(missing, ", ")
}

// RepoRoot returns the directory of the module's go.mod, found by walking up
// from the working directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := repoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getting working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

var example struct {
	once sync.Once
	path string
	skip string // a missing requirement
	err  error
}

// BuildExample compiles examples/rma/rma.c once per test binary and returns
// the path of the program. The binary lives in a directory of its own that
// outlives the test (it is shared by all tests of the binary). It skips (or,
// with UCXFAULT_REQUIRE_BPF=1, fails) when gcc or UCX is missing (UCX).
func BuildExample(tb testing.TB) string {
	tb.Helper()
	u := UCX(tb) // skips, or sets LD_LIBRARY_PATH, before the build below
	example.once.Do(func() {
		root, err := repoRoot()
		if err != nil {
			example.err = err
			return
		}
		src := filepath.Join(root, "examples", "rma", "rma.c")
		if _, err := os.Stat(src); err != nil {
			example.err = fmt.Errorf("finding example: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "ucxfault-rma-")
		if err != nil {
			example.err = fmt.Errorf("creating build directory: %w", err)
			return
		}
		out := filepath.Join(dir, "rma")
		cmd := exec.Command("gcc", u.GCC("-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o", out, "rma.c", "-lpthread")...)
		cmd.Dir = filepath.Dir(src)
		if msg, err := cmd.CombinedOutput(); err != nil {
			example.err = fmt.Errorf("building %s: %w\n%s", src, err, msg)
			return
		}
		example.path = out
	})
	if example.skip != "" {
		skip(tb, example.skip)
	}
	if example.err != nil {
		tb.Fatal(example.err)
	}
	return example.path
}

// Op is one OP line of the example program:
//
//	OP thread=<t> seq=<i> iter=<k> fn=<fn> size=<n> status=<int> name=<...> how=<...> us=<n>
type Op struct {
	Thread int
	Seq    int
	Iter   int
	// Fn is put, get, flush, putnbi or getnbi.
	Fn     string
	Size   uint64
	Status int
	// Name is ucs_status_string(Status) with spaces replaced by _.
	Name string
	// How is immediate, completion or timeout.
	How string
	US  uint64
}

// OpFields returns the key=value fields of each line of output that starts
// with OP (the examples' operation lines), in order.
func OpFields(output string) []map[string]string {
	var lines []map[string]string
	for _, line := range strings.Split(output, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "OP" {
			continue
		}
		kv := map[string]string{}
		for _, f := range fields[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		lines = append(lines, kv)
	}
	return lines
}

// ParseOps returns the OP lines of the example's output, in order. Other
// lines, and OP lines that do not parse, are skipped.
func ParseOps(output string) []Op {
	var ops []Op
	for _, kv := range OpFields(output) {
		var op Op
		var errs []error
		atoi := func(k string) int {
			n, err := strconv.Atoi(kv[k])
			errs = append(errs, err)
			return n
		}
		atou := func(k string) uint64 {
			n, err := strconv.ParseUint(kv[k], 10, 64)
			errs = append(errs, err)
			return n
		}
		op.Thread = atoi("thread")
		op.Seq = atoi("seq")
		op.Iter = atoi("iter")
		op.Fn = kv["fn"]
		op.Size = atou("size")
		op.Status = atoi("status")
		op.Name = kv["name"]
		op.How = kv["how"]
		op.US = atou("us")
		if errors.Join(errs...) != nil || op.Fn == "" {
			continue
		}
		ops = append(ops, op)
	}
	return ops
}
