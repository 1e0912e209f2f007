package e2e

// Safety under faults of our own: every way in which the injector library,
// its control socket or the observer could hurt the host is tried on real
// programs and the real libucp. This file holds the helpers the safety tests
// share; the tests are in safety_*_test.go, one file per subject (socket,
// requests, process, host, observer). The C fixtures live in testdata/ and
// are built by the tests with gcc.

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// buildFixture compiles testdata/NAME.c into the test's temporary directory
// and returns the program's path.
func buildFixture(t *testing.T, name string) string {
	t.Helper()
	return buildC(t, name, name, "-lpthread", "-ldl")
}

// buildC compiles testdata/NAME.c into OUT in the test's temporary
// directory with the given extra gcc arguments.
func buildC(t *testing.T, name, out string, args ...string) string {
	t.Helper()
	u := testutil.UCX(t)
	src, err := filepath.Abs(filepath.Join("testdata", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(t.TempDir(), out)
	argv := u.GCC(append([]string{"-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o", out, src}, args...)...)
	if msg, err := exec.Command("gcc", argv...).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", src, err, msg)
	}
	return out
}

// startProg starts prog under `ucxfault inject FLAGS` and returns once it
// prints READY.
func (h *harness) startProg(t *testing.T, flags []string, prog string, args ...string) *testutil.Example {
	t.Helper()
	a := append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet"}, flags...)
	a = append(append(a, "--", prog), args...)
	return testutil.StartExample(t, h.cli, a...)
}

// preloadEnv is the environment of a program preloaded by hand.
func (h *harness) preloadEnv(extra ...string) []string {
	return append(os.Environ(), append([]string{"LD_PRELOAD=" + h.lib, "UCX_FAULT_SOCKET_DIR=" + h.dir,
		"UCX_WARN_UNUSED_ENV_VARS=n"}, extra...)...)
}

// sockets lists the control sockets in the harness's directory.
func (h *harness) sockets(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "ucx-fault-") && strings.HasSuffix(e.Name(), ".sock") {
			out = append(out, e.Name())
		}
	}
	return out
}

// statusJSON runs `status -o json` and returns what it printed and its result.
func (h *harness) statusJSON(t *testing.T) ([]control.Status, ctlResult) {
	t.Helper()
	r := h.ctl(t, "status", "-o", "json", "--detailed")
	var st []control.Status
	if strings.TrimSpace(r.stdout) != "" {
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("decoding status: %v\n%s", err, r.stdout)
		}
	}
	return st, r
}

// sendLine sends one raw request line on a new connection and returns the
// response line ("" when the connection closed without one).
func sendLine(t *testing.T, path, line string) string {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dialing %s: %v", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, line); err != nil {
		t.Fatalf("sending %q: %v", line, err)
	}
	resp, _ := bufio.NewReader(conn).ReadString('\n')
	return resp
}

// stillRunning fails the test unless e keeps printing operations.
func stillRunning(t *testing.T, e *testutil.Example) {
	t.Helper()
	select {
	case <-e.Done():
		t.Fatalf("the host exited\nstderr:\n%s", e.Stderr())
	default:
	}
	before := len(testutil.ParseOps(e.Output()))
	waitFor(t, 10*time.Second, "the host to keep running", func() bool {
		return len(testutil.ParseOps(e.Output())) > before+5
	})
}

// lineValue returns the value of key=VALUE on the first line starting with
// prefix, or "".
func lineValue(out, prefix, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
	}
	return ""
}
