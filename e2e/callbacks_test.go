package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
)

// TestCallbackArgumentsAsUCXGives checks that every callback the injector
// calls gets the pointer UCX would give it: the error handler of a killed
// endpoint gets ucp_ep_params_t's user_data when its mask bit is set (it
// overrides err_handler.arg, ucp_ep_adjust_params in UCX's ucp_ep.c), else
// err_handler.arg; a send or receive callback delivered with an injected
// failure gets the request parameter's user_data only when its mask bit is
// set, else NULL. The callbacks' pointers of a run without the injector are
// the oracle.
func TestCallbackArgumentsAsUCXGives(t *testing.T) {
	h := newHarness(t)
	prog := buildFixture(t, "cbargs")
	cbLine := regexp.MustCompile(`(?m)^(SENDCB|RECVCB) user_data=(\S+) status=(-?\d+)$`)
	for _, tc := range []struct{ mode, handlerGets string }{
		{"arg", "arg"},
		{"user_data", "user_data"},
		{"both", "user_data"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			// Without the injector: which pointer each callback gets.
			plain := testutil.StartExample(t, prog, tc.mode)
			plain.Cmd.Process.Kill()
			<-plain.Done()
			want := map[string]string{}
			for _, m := range cbLine.FindAllStringSubmatch(plain.Output(), -1) {
				want[m[1]] = m[2]
			}
			if want["SENDCB"] != "null" || want["RECVCB"] != "user_data" {
				t.Fatalf("without the injector the callbacks got %v, want send null, receive user_data:\n%s", want, plain.Output())
			}

			e := h.startProg(t, []string{"--mode", "deferred", "--rule", "hooks=ucp_tag_send_nbx,ucp_tag_recv_nbx codes=IO_ERROR"},
				prog, tc.mode)
			h.mustCtl(t, "kill-ep", "0", "--code", "CONNECTION_RESET")
			waitFor(t, 30*time.Second, "the error handler", func() bool { return strings.Contains(e.Output(), "DONE") })
			e.Cmd.Process.Signal(os.Interrupt)
			out := e.Wait(t, 30*time.Second)
			got := cbLine.FindAllStringSubmatch(out, -1)
			if len(got) != 2 {
				t.Fatalf("want one send and one receive callback:\n%s", out)
			}
			for _, m := range got {
				// Status -3 proves the injector delivered the callback.
				if m[2] != want[m[1]] || m[3] != "-3" {
					t.Errorf("%s got user_data=%s status=%s, want user_data=%s (as without the injector) status=-3", m[1], m[2], m[3], want[m[1]])
				}
			}
			wantErr := fmt.Sprintf("EPERR arg=%s status=-25", tc.handlerGets)
			if strings.Count(out, "EPERR") != 1 || !strings.Contains(out, wantErr) || !strings.Contains(out, "DONE failed=1") {
				t.Fatalf("want the error handler called once, %q:\n%s", wantErr, out)
			}
		})
	}
}

// TestKillEndpointUCXHelloWorld runs UCX's own example server
// (ucp_hello_world.c from libucx-dev, which sets err_handler.arg = NULL and
// user_data = &ep_status) under the injector and kills its endpoint while
// it waits for its client to go. It must end as it does when the client
// really dies (the example's -e keepalive client kills itself): the failure
// handler reports the code, the flush fails with it, the forced close
// succeeds, and the server exits 0.
func TestKillEndpointUCXHelloWorld(t *testing.T) {
	h := newHarness(t)
	u := testutil.UCX(t)
	src := u.Example("ucp_hello_world.c")
	if src == "" {
		t.Skipf("UCX %s (prefix %s) ships no ucp_hello_world.c (Debian: libucx-dev)", u.Version, u.Prefix)
	}
	hello := filepath.Join(t.TempDir(), "hello")
	if msg, err := exec.Command("gcc", u.GCC("-o", hello, src)...).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", src, err, msg)
	}

	// A real peer death: the client kills itself after it has received.
	port := freePort(t)
	srv := startHello(t, exec.Command(hello, "-p", port, "-e", "keepalive"), port)
	cli := exec.Command(hello, "-n", "127.0.0.1", "-p", port, "-e", "keepalive")
	cli.Run() // it ends by SIGKILL
	real := srv.wait(t, 60*time.Second)
	// The running libucp's code for a dead TCP peer (-80 up to 1.13, -25
	// from 1.14), and another one for kill-ep below.
	dead, other := testutil.DeadPeerCode(u.Major, u.Minor), -25
	if dead == -25 {
		other = -80
	}
	for _, want := range []string{fmt.Sprintf("failure handler called with status %d", dead),
		fmt.Sprintf("flush_ep completed with status %d", dead)} {
		if !strings.Contains(real, want) {
			t.Fatalf("after a real peer death the server printed no %q:\n%s", want, real)
		}
	}
	if strings.Contains(real, "failed to close ep") {
		t.Fatalf("after a real peer death the forced close failed:\n%s", real)
	}

	// kill-ep with a code keepalive does not give, so that only the
	// injector can have ended the wait.
	port = freePort(t)
	srv = startHello(t, exec.Command(h.cli, "--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--",
		hello, "-p", port, "-e", "keepalive"), port)
	cli = exec.Command(hello, "-n", "127.0.0.1", "-p", port)
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cli.Process.Kill(); cli.Wait() }()
	waitFor(t, 30*time.Second, "the server to wait for its client", func() bool {
		return strings.Contains(srv.out.String(), "Waiting for client is terminated")
	})
	// The server ends as soon as its handler has run, possibly before
	// the injector has written its answer to kill-ep: a connection closed
	// without an answer is then no error (what the server prints below
	// proves the kill).
	if r := h.ctl(t, "kill-ep", "0", "--code", strconv.Itoa(other)); r.code != 0 && !strings.Contains(r.stderr, "EOF") &&
		!strings.Contains(r.stderr, "connection reset") && !strings.Contains(r.stderr, "stale control socket") {
		t.Fatalf("kill-ep: exit %d\n%s", r.code, r.stderr)
	}
	out := srv.wait(t, 30*time.Second)
	for _, want := range []string{fmt.Sprintf("failure handler called with status %d", other),
		fmt.Sprintf("flush_ep completed with status %d", other)} {
		if !strings.Contains(out, want) {
			t.Fatalf("after kill-ep the server printed no %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"failed to close ep", "Caught signal"} {
		if strings.Contains(out, bad) {
			t.Fatalf("after kill-ep the server printed %q, unlike after a real peer death:\n%s", bad, out)
		}
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type helloServer struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan error
}

// startHello starts a hello-world server (stdout and stderr together) and
// waits until it listens.
func startHello(t *testing.T, cmd *exec.Cmd, port string) *helloServer {
	t.Helper()
	s := &helloServer{cmd: cmd, out: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFor(t, 30*time.Second, "the server to listen", func() bool { return listening(port) })
	return s
}

// listening reports whether a TCP socket listens on port (the example's
// stdout is a pipe, so its "Waiting for connection" comes only at exit, and
// its client does not retry).
func listening(port string) bool {
	var n int
	fmt.Sscan(port, &n)
	hex := fmt.Sprintf(":%04X ", n)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) > 3 && strings.HasSuffix(fields[1]+" ", hex) && fields[3] == "0A" {
				return true
			}
		}
	}
	return false
}

// wait waits for the server to exit 0 and returns what it printed.
func (s *helloServer) wait(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("server: %v\n%s", err, s.out)
		}
	case <-time.After(timeout):
		t.Fatalf("server did not exit within %v:\n%s", timeout, s.out)
	}
	return s.out.String()
}
