// Package e2e runs the ucxfault CLI and injector against real programs on
// the machine's real libucp: the example program examples/rma, shells, and
// raw socket clients.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// harness holds the built programs and a socket directory of the test's own,
// so that tests never see each other's processes.
type harness struct {
	cli, lib, rma string
	dir           string
	// byDefault: dir is the user's default directory, and no --socket-dir
	// is passed (newDefaultHarness).
	byDefault bool
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cli, lib := testutil.BuildInjector(t)
	rma := os.Getenv("UCXFAULT_EXAMPLE")
	if rma == "" {
		rma = testutil.BuildExample(t)
	}
	// Unix socket paths are limited to 108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "ucxf-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &harness{cli: cli, lib: lib, rma: rma, dir: dir}
}

// newDefaultHarness is a harness whose programs and CLI find each other
// by the default, with no --socket-dir: XDG_RUNTIME_DIR is a directory of
// the test's own (for the test's life), so the sockets are in its
// ucxfault directory, which dir names.
func newDefaultHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	t.Setenv("XDG_RUNTIME_DIR", h.dir)
	t.Setenv(control.EnvSocketDir, "")
	h.dir, h.byDefault = filepath.Join(h.dir, control.PrivateDirName), true
	return h
}

// dirArgs are the CLI's flags that choose the harness's directory.
func (h *harness) dirArgs() []string {
	if h.byDefault {
		return nil
	}
	return []string{"--socket-dir", h.dir}
}

// injectArgs builds `ucxfault inject FLAGS -- rma ARGS`.
func (h *harness) injectArgs(flags []string, rmaArgs ...string) []string {
	args := append(append(h.dirArgs(), "inject", "--lib", h.lib, "--quiet"), flags...)
	args = append(args, "--", h.rma)
	return append(args, rmaArgs...)
}

// run runs the example under the injector to completion and returns its
// operations.
func (h *harness) run(t *testing.T, flags []string, rmaArgs ...string) ([]testutil.Op, string) {
	t.Helper()
	e := testutil.StartExample(t, h.cli, h.injectArgs(flags, rmaArgs...)...)
	out := e.Wait(t, 60*time.Second)
	return testutil.ParseOps(out), out
}

// start starts the example under the injector and returns once it is READY.
func (h *harness) start(t *testing.T, flags []string, rmaArgs ...string) *testutil.Example {
	t.Helper()
	return testutil.StartExample(t, h.cli, h.injectArgs(flags, rmaArgs...)...)
}

// ctlResult is what one CLI invocation printed and returned.
type ctlResult struct {
	stdout, stderr string
	code           int
}

// ctl runs the CLI with the harness's socket directory.
func (h *harness) ctl(t *testing.T, args ...string) ctlResult {
	t.Helper()
	return h.ctlEnv(t, nil, args...)
}

func (h *harness) ctlEnv(t *testing.T, env []string, args ...string) ctlResult {
	t.Helper()
	cmd := exec.Command(h.cli, append(h.dirArgs(), args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running ucxfault %v: %v", args, err)
	}
	return ctlResult{stdout: out.String(), stderr: errb.String(), code: code}
}

// mustCtl runs the CLI and fails the test unless it exits 0.
func (h *harness) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	r := h.ctl(t, args...)
	if r.code != 0 {
		t.Fatalf("ucxfault %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// status returns the JSON status of every injected process.
func (h *harness) status(t *testing.T, extra ...string) []control.Status {
	t.Helper()
	out := h.mustCtl(t, append([]string{"status", "-o", "json", "--detailed"}, extra...)...)
	var st []control.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decoding status: %v\n%s", err, out)
	}
	return st
}

func hookStatus(t *testing.T, st control.Status, name string) control.HookStatus {
	t.Helper()
	for _, h := range st.Hooks {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("status has no hook %s", name)
	return control.HookStatus{}
}

// opsOf returns the operations of one kind (put, get, flush...).
func opsOf(ops []testutil.Op, fn string) []testutil.Op {
	var out []testutil.Op
	for _, op := range ops {
		if op.Fn == fn {
			out = append(out, op)
		}
	}
	return out
}

// failedIndices lists the positions of failed operations.
func failedIndices(ops []testutil.Op) []int {
	var out []int
	for i, op := range ops {
		if op.Status != 0 {
			out = append(out, i)
		}
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// socketOf is the control socket of pid in the harness's directory.
func (h *harness) socketOf(pid int) string {
	return filepath.Join(h.dir, fmt.Sprintf("ucx-fault-%d.sock", pid))
}
