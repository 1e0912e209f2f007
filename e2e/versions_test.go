package e2e

// What differs between the UCX versions users run (1.13 to 1.22), and what
// an injector built with one version's headers must do with an application
// built with another's.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

// runWithSpy runs prog under `ucxfault inject FLAGS` with spy preloaded
// after the injector, and returns its stdout and stderr.
func (h *harness) runWithSpy(t *testing.T, spy string, flags []string, prog string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet"}, flags...)
	cmd := exec.CommandContext(ctx, h.cli, append(args, "--", prog)...)
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+spy, "UCX_WARN_UNUSED_ENV_VARS=n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", prog, err, stdout.String(), stderr.String())
	}
	return stdout.String(), stderr.String()
}

// spyBlock is what newparam printed for one variant: the application's
// parameter address, the addresses and masks that reached libucp, the OP
// line's status and how, and the callback's value.
type spyBlock struct {
	app       string
	spied     []string
	masks     []string
	status    string
	how, done string
}

var (
	appLine = regexp.MustCompile(`^APP variant=(\w+) param=(0x[0-9a-f]+)$`)
	spyLine = regexp.MustCompile(`^SPY param=(0x[0-9a-f]+) mask=(0x[0-9a-f]+)$`)
	opLine  = regexp.MustCompile(`^OP .* status=(-?\d+) .* how=(\w+) `)
	cbLine  = regexp.MustCompile(`^CB variant=\w+ done=(-?\d+)$`)
)

func parseSpy(t *testing.T, out string) map[string]*spyBlock {
	t.Helper()
	blocks := map[string]*spyBlock{}
	var cur *spyBlock
	for _, l := range strings.Split(out, "\n") {
		switch m := appLine.FindStringSubmatch(l); {
		case m != nil:
			cur = &spyBlock{app: m[2]}
			blocks[m[1]] = cur
		case cur == nil:
		case spyLine.MatchString(l):
			s := spyLine.FindStringSubmatch(l)
			cur.spied, cur.masks = append(cur.spied, s[1]), append(cur.masks, s[2])
		case opLine.MatchString(l):
			s := opLine.FindStringSubmatch(l)
			cur.status, cur.how = s[1], s[2]
		case cbLine.MatchString(l):
			cur.done = cbLine.FindStringSubmatch(l)[1]
		}
	}
	for _, v := range []string{"poll", "callback", "known"} {
		if blocks[v] == nil || blocks[v].status == "" || blocks[v].done == "" {
			t.Fatalf("newparam printed no complete %s block:\n%s", v, out)
		}
	}
	return blocks
}

// TestDeferredNeverRewritesUnknownParam gives the deferred mode a
// ucp_request_param_t whose mask has a bit no UCX header defines and whose
// structure has a member after the known ones, as a parameter from newer
// headers than the injector's looks. What reaches libucp must be the
// application's own structure (a polled put), or nothing at all with the
// call failed at once (a put with a callback, which cannot be wrapped
// without a copy); a parameter the injector knows is still copied (the
// spy sees another address), which shows the spy can tell the two apart.
func TestDeferredNeverRewritesUnknownParam(t *testing.T) {
	h := newHarness(t)
	prog := buildC(t, "newparam", "newparam", "-lpthread")
	spy := buildC(t, "paramspy", "paramspy.so", "-shared", "-fPIC", "-ldl")
	out, stderr := h.runWithSpy(t, spy, []string{"--mode", "deferred", "--probability", "100", "--codes", "-25",
		"--hooks", "ucp_put_nbx"}, prog)
	b := parseSpy(t, out)

	if p := b["poll"]; len(p.spied) != 1 || p.spied[0] != p.app || p.masks[0] != "0x8000" || p.status != "-25" {
		t.Errorf("polled put with an unknown mask bit: libucp got %v (masks %v), the application's is %s; status %s, want -25\n%s",
			p.spied, p.masks, p.app, p.status, out)
	}
	if c := b["callback"]; len(c.spied) != 0 || c.status != "-25" || c.how != "immediate" || c.done != "0" {
		t.Errorf("put with an unknown mask bit and a callback: libucp got %v, status %s how %s, callback %s; "+
			"want no call, -25 at once, no callback\n%s", c.spied, c.status, c.how, c.done, out)
	}
	if k := b["known"]; len(k.spied) != 1 || k.spied[0] == k.app || k.done != "-25" {
		t.Errorf("put with known bits and a callback: libucp got %v (the application's is %s), callback %s; "+
			"want the injector's copy and -25 through the callback\n%s", k.spied, k.app, k.done, out)
	}
	if n := strings.Count(stderr, "are newer than the UCX"); n != 1 {
		t.Errorf("the unknown mask bits were reported %d times on stderr, want once:\n%s", n, stderr)
	}
}

// TestSGLPutUnderDeferredMode issues UCX 1.22's scatter-gather puts as NIXL
// does (no callback, the request polled) under deferred failures: the
// parameter's SGL members (after memh) must reach libucp, whatever headers
// the injector was built with; a parameter cut at 1.13's size crashed inside
// libucp. Over this machine's transports libucp may refuse SGL puts
// (-16 over self, with an error log): each put then reports that real
// status, or -25 where the injected failure came first.
func TestSGLPutUnderDeferredMode(t *testing.T) {
	u := testutil.UCX(t)
	if !u.HeaderHas("UCP_OP_ATTR_FIELD_REMOTE_DATATYPE") {
		t.Skipf("UCX %s (headers in %s) has no SGL API (UCX 1.22 or later)", u.Version, u.IncludeDir)
	}
	h := newHarness(t)
	prog := buildC(t, "sgl", "sgl", "-lpthread")
	base, err := exec.Command(prog, "5").CombinedOutput()
	if err != nil {
		t.Fatalf("sgl without the injector: %v\n%s", err, base)
	}
	real := map[int]bool{}
	for _, op := range testutil.ParseOps(string(base)) {
		real[op.Status] = true
	}
	if len(real) != 1 {
		t.Fatalf("sgl without the injector gave statuses %v, want one:\n%s", real, base)
	}
	for _, seed := range []string{"1", "2"} {
		out := h.runProgram(t, []string{"--mode", "deferred", "--probability", "50", "--seed", seed, "--codes", "-25",
			"--hooks", "ucp_put_nbx"}, prog, "20")
		ops := testutil.ParseOps(out)
		if len(ops) != 20 || !strings.Contains(out, "DATA wrong=0") || !strings.Contains(out, "DONE") {
			t.Fatalf("seed %s: %d ops, want 20 with their data and DONE:\n%s", seed, len(ops), out)
		}
		for i, op := range ops {
			if !real[op.Status] && op.Status != -25 {
				t.Errorf("seed %s: put %d status %d, want the real %v or the injected -25", seed, i, op.Status, real)
			}
		}
	}
}

// TestStatusShowsLibucpVersionAndFile: status says which UCX the process
// runs, as its libucp reports it, and from which file.
func TestStatusShowsLibucpVersionAndFile(t *testing.T) {
	u := testutil.UCX(t)
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--quiet")
	st := h.status(t)
	if len(st) != 1 || len(st[0].Libucp) != 1 {
		t.Fatalf("status %+v: want one process with one libucp", st)
	}
	f := st[0].Libucp[0]
	want, _ := filepath.EvalSymlinks(filepath.Join(u.LibDir, "libucp.so.0"))
	got, _ := filepath.EvalSymlinks(f.Path)
	if f.Version != u.Version || got != want {
		t.Errorf("status libucp %+v (%s); want version %s from %s", f, got, u.Version, want)
	}
	out := h.mustCtl(t, "status")
	if line := fmt.Sprintf("pid %d: libucp %s %s", e.PID, u.Version, f.Path); !strings.Contains(out, line) {
		t.Errorf("status does not say %q:\n%s", line, out)
	}
}

// TestAtomicPostAndSetUpHooksFail: ucp_atomic_post is a data call that can
// fail (an immediate error in 1.13, the operation's status from 1.14 on), so
// it fails under the default hooks; ucp_rkey_pack is an opt-in set-up hook:
// untouched by default, failed when named.
func TestAtomicPostAndSetUpHooksFail(t *testing.T) {
	h := newHarness(t)
	prog := buildC(t, "atomicpost", "atomicpost", "-lpthread")
	r := h.ctl(t, "inject", "--lib", h.lib, "--quiet", "--probability", "100", "--codes", "-25", "--", prog)
	ops := testutil.ParseOps(r.stdout)
	if r.code != 0 || len(ops) != 3 || !strings.Contains(r.stdout, "DONE") {
		t.Fatalf("default hooks at 100 %%: exit %d, %d ops; want set-up untouched and 3 atomic posts\n%s%s", r.code, len(ops), r.stdout, r.stderr)
	}
	for _, op := range ops {
		if op.Status != -25 {
			t.Errorf("atomic_post %d: status %d, want -25", op.Seq, op.Status)
		}
	}
	r = h.ctl(t, "inject", "--lib", h.lib, "--quiet", "--probability", "100", "--codes", "-4", "--hooks", "ucp_rkey_pack", "--", prog)
	if r.code != 3 || !strings.Contains(r.stderr, "SETUP-ERROR ucp_rkey_pack") {
		t.Errorf("--hooks ucp_rkey_pack at 100 %%: exit %d; want the set-up to fail in ucp_rkey_pack (exit 3)\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestHookListSaysWhichExist: hook list gives each row's first release, and
// for a running process the hooks its libucp does not export (the GPU
// device API's host calls before 1.20/1.21).
func TestHookListSaysWhichExist(t *testing.T) {
	u := testutil.UCX(t)
	h := newHarness(t)
	e := h.start(t, []string{"--probability", "0"}, "--ops", "0", "--interval-us", "1000", "--quiet")
	out := h.mustCtl(t, "hook", "list", "-o", "wide") // the return type is a wide column
	if !regexp.MustCompile(`│ ucp_device_local_mem_list_create +│ ucs_status_t +│ opt-in +│ 1\.21 +│`).MatchString(out) {
		t.Errorf("hook list has no opt-in 1.21 row for ucp_device_local_mem_list_create:\n%s", out)
	}
	var want string
	switch {
	case u.AtLeast(1, 21):
		want = fmt.Sprintf("pid %d (libucp %s): every hook exists", e.PID, u.Version)
	case u.AtLeast(1, 20):
		want = fmt.Sprintf("pid %d (libucp %s): not exported, so never called: ucp_device_local_mem_list_create, ucp_device_remote_mem_list_create\n", e.PID, u.Version)
	default:
		want = fmt.Sprintf("pid %d (libucp %s): not exported, so never called: ucp_device_local_mem_list_create, ucp_device_remote_mem_list_create, ucp_device_mem_list_release\n", e.PID, u.Version)
	}
	if !strings.Contains(out, want) {
		t.Errorf("hook list does not say %q:\n%s", want, out)
	}
}
