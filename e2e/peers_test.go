package e2e

// Peers: the peer status shows for each kind of endpoint, the per-endpoint
// counters, the peer= rule selector and kill-ep PEER, on the conformance
// program testdata/peerdeath.c over TCP (real libucp, real processes).

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/control"
	"github.com/ucxfault/ucxfault/internal/testutil"
)

// pdServer is one running peerdeath server: its hello file and the port of
// its listener.
type pdServer struct {
	ex    *testutil.Example
	hello string
	port  int
}

// startPDServer starts a peerdeath server, under the injector when
// injected.
func startPDServer(t *testing.T, h *harness, injected bool) pdServer {
	t.Helper()
	prog := buildPeerdeath(t)
	hello := filepath.Join(t.TempDir(), "hello")
	args := []string{"server", "--hello", hello}
	var cmd *exec.Cmd
	if injected {
		cmd = exec.Command(h.cli, append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet",
			"--probability", "0", "--", prog}, args...)...)
	} else {
		cmd = exec.Command(prog, args...)
	}
	cmd.Env = peerEnv(nil)
	ex := testutil.StartCmd(t, cmd)
	b, err := os.ReadFile(hello)
	if err != nil || len(b) < 16 {
		t.Fatalf("reading the server's hello file: %v (%d bytes)", err, len(b))
	}
	// struct hello: magic, addr_len, rkey_len, port (host order, u32 each).
	return pdServer{ex: ex, hello: hello, port: int(binary.LittleEndian.Uint32(b[12:16]))}
}

// pdClient is one peerdeath client under the injector, at its READY line.
type pdClient struct {
	ex    *testutil.Example
	stdin io.WriteCloser
}

func startPDClient(t *testing.T, h *harness, srv pdServer, inject []string, args ...string) pdClient {
	t.Helper()
	a := append([]string{"--socket-dir", h.dir, "inject", "--lib", h.lib, "--quiet", "--probability", "0"}, inject...)
	a = append(append(a, "--", buildPeerdeath(t), "client", "--hello", srv.hello,
		"--wait-ms", "300", "--linger-ms", "100"), args...)
	cmd := exec.Command(h.cli, a...)
	cmd.Env = peerEnv(nil)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	return pdClient{ex: testutil.StartCmd(t, cmd), stdin: stdin}
}

// finish lets the client post its batch and run to its end.
func (c pdClient) finish(t *testing.T) string {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	out := c.ex.Wait(t, 40*time.Second)
	c.stdin.Close()
	return out
}

// endpoints returns the status's endpoint rows of one process.
func (h *harness) endpoints(t *testing.T, pid int) []control.EndpointStatus {
	t.Helper()
	st := h.status(t, "--pid", strconv.Itoa(pid))
	if len(st) != 1 {
		t.Fatalf("status of pid %d: %d processes", pid, len(st))
	}
	return st[0].Endpoints
}

var workerPeer = regexp.MustCompile(`^w:[0-9a-f]{12}$`)

// tcpConnected reports whether /proc/net/tcp holds an established
// connection from 127.0.0.1:local to 127.0.0.1:remote.
func tcpConnected(t *testing.T, local, remote int) bool {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X 0100007F:%04X 01", local, remote)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 3 && strings.Join(fields[1:4], " ") == want {
			return true
		}
	}
	return false
}

// TestPeers shows, on real TCP endpoints: the peer of an address endpoint
// is the remote worker's, the same across close-and-reconnect rounds and
// another for another server process; a sockaddr client's is the server's
// IP:port; a server's endpoint's is the client's address; the endpoint rows
// count each endpoint's calls and faults; a peer= rule added live hits the
// peer's next endpoint; kill-ep PEER kills, and says so when nothing
// matches.
func TestPeers(t *testing.T) {
	h := newHarness(t)
	srvA := startPDServer(t, h, true)
	srvB := startPDServer(t, h, false)

	// Three rounds of connect, check (put, get, flush), close to A: the
	// first get fails by a rule.
	c1 := startPDClient(t, h, srvA, []string{"--rule", "hooks=ucp_get_nbx calls=0 codes=-3"},
		"--scenario", "reconnect", "--rounds", "3", "--reconnect")
	eps := h.endpoints(t, c1.ex.PID)
	type row struct {
		state         string
		calls, faults uint64
	}
	want := []row{{control.EndpointClosed, 4, 1}, {control.EndpointClosed, 4, 0}, {control.EndpointOpen, 3, 0}}
	if len(eps) != len(want) {
		t.Fatalf("endpoints %+v, want 3", eps)
	}
	peerA := eps[0].Peer
	for i, ep := range eps {
		if got := (row{ep.State, ep.Calls, ep.Faults}); ep.Endpoint != i || got != want[i] {
			t.Errorf("endpoint %d: %+v, want %+v (put, get, flush, close each)", i, ep, want[i])
		}
		if !workerPeer.MatchString(ep.Peer) || ep.Peer != peerA {
			t.Errorf("endpoint %d: peer %q, want the same w:<12 hex digits> for every round to one server (%q)", i, ep.Peer, peerA)
		}
	}
	tbl := h.mustCtl(t, "status", "--pid", strconv.Itoa(c1.ex.PID))
	if !strings.Contains(tbl, peerA) || !strings.Contains(tbl, "ENDPOINT") {
		t.Errorf("the status table lists no endpoint of peer %s:\n%s", peerA, tbl)
	}

	// A rule added now for A's peer fails the gets of every endpoint to
	// it: the open one's (phase after) and the next one's (endpoint 3).
	h.mustCtl(t, "--pid", strconv.Itoa(c1.ex.PID), "rule", "add", "--peer", peerA, "--hooks", "ucp_get_nbx", "--codes=-5")
	out := c1.finish(t)
	evs, err := testutil.ParsePeerEvents(out)
	if err != nil {
		t.Fatal(err)
	}
	var gets []string
	for _, ev := range evs {
		if ev.Kind == "get" && ev.EP >= 2 {
			gets = append(gets, fmt.Sprintf("%s/ep%d/%d", ev.Phase, ev.EP, ev.Status))
		}
	}
	if strings.Join(gets, " ") != "warm/ep2/0 after/ep2/-5 warm/ep3/-5" {
		t.Errorf("gets of endpoints 2 and 3: %v, want the peer= rule to fail those after it was added, the reconnected endpoint's too\n%s", gets, out)
	}

	// Another server: another peer, which a rule for A's does not hit.
	// kill-ep PEER kills its endpoint.
	c2 := startPDClient(t, h, srvB, []string{"--rule", "peer=" + peerA + " hooks=ucp_get_nbx codes=-5"}, "--scenario", "idle")
	eps = h.endpoints(t, c2.ex.PID)
	if len(eps) != 1 || !workerPeer.MatchString(eps[0].Peer) || eps[0].Peer == peerA {
		t.Fatalf("endpoints to the second server: %+v, want one whose peer is a w: name other than %s", eps, peerA)
	}
	if eps[0].Calls != 3 || eps[0].Faults != 0 || !strings.Contains(c2.ex.Output(), " phase=warm ep=0 op=1 kind=get status=0 ") {
		t.Errorf("a rule for peer %s acted on an endpoint of peer %s: %+v\n%s", peerA, eps[0].Peer, eps[0], c2.ex.Output())
	}
	peerB := eps[0].Peer
	pid := strconv.Itoa(c2.ex.PID)
	if r := h.ctl(t, "--pid", pid, "kill-ep", "-1"); r.code != 2 {
		t.Errorf("kill-ep -1: exit %d, want 2\n%s", r.code, r.stderr)
	}
	for _, bad := range []string{"a=b:1", "x", "w:"} {
		if r := h.ctl(t, "--pid", pid, "kill-ep", bad); r.code != 2 || !strings.Contains(r.stderr, "peer") {
			t.Errorf("kill-ep %s: exit %d, want 2 with a message on peers\n%s", bad, r.code, r.stderr)
		}
	}
	if r := h.ctl(t, "--pid", pid, "kill-ep", peerA); r.code != 1 || !strings.Contains(r.stderr, "no open endpoint has peer "+peerA) {
		t.Errorf("kill-ep %s (no endpoint of it here): exit %d, want 1 and a message\n%s", peerA, r.code, r.stderr)
	}
	if msg := h.mustCtl(t, "--pid", pid, "kill-ep", peerB); !strings.Contains(msg, "endpoint 0 killed") {
		t.Errorf("kill-ep %s: %q", peerB, msg)
	}
	if eps = h.endpoints(t, c2.ex.PID); len(eps) != 1 || eps[0].State != control.EndpointKilled || eps[0].Code == 0 {
		t.Errorf("after kill-ep %s: %+v, want endpoint 0 killed", peerB, eps)
	}
	out = c2.finish(t)
	if !strings.Contains(out, "\nDONE handlers=1") {
		t.Errorf("kill-ep %s: the error handler did not run once:\n%s", peerB, out)
	}

	// A sockaddr client: the server's IP:port; on the server, the client's.
	c3 := startPDClient(t, h, srvA, nil, "--scenario", "idle", "--connect", "sockaddr")
	eps = h.endpoints(t, c3.ex.PID)
	if len(eps) != 1 || eps[0].Peer != fmt.Sprintf("127.0.0.1:%d", srvA.port) {
		t.Errorf("sockaddr client endpoints %+v, want one with peer 127.0.0.1:%d", eps, srvA.port)
	}
	var srvEps []control.EndpointStatus
	waitFor(t, 10*time.Second, "the server's endpoint", func() bool {
		srvEps = h.endpoints(t, srvA.ex.PID)
		return len(srvEps) == 1
	})
	host, port, _ := strings.Cut(srvEps[0].Peer, ":")
	n, _ := strconv.Atoi(port)
	if host != "127.0.0.1" || n == 0 || !tcpConnected(t, n, srvA.port) {
		t.Errorf("server endpoint %+v: want the client's address, 127.0.0.1:PORT connected to the listener's port %d", srvEps[0], srvA.port)
	}
	c3.finish(t)
}
