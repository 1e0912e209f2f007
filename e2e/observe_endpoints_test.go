package e2e

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/recording"
)

// epLifetime is one create or close event, with the call at its position:
// for a create, the call just before it (ucp_ep_create); for a close, the
// call it precedes.
func epLifetimes(t *testing.T, p *recording.Process) []string {
	t.Helper()
	var out []string
	for _, e := range p.EndpointEvents {
		var fn string
		switch e.Event {
		case recording.EventCreate:
			if e.Seq == 0 || e.Seq > uint64(len(p.Calls)) {
				t.Fatalf("create of endpoint %d at seq %d, after no call", e.Endpoint, e.Seq)
			}
			fn = p.Calls[e.Seq-1].Fn
		case recording.EventClose:
			if e.Seq >= uint64(len(p.Calls)) {
				t.Fatalf("close of endpoint %d at seq %d, before no call", e.Endpoint, e.Seq)
			}
			c := p.Calls[e.Seq]
			if c.Endpoint != e.Endpoint {
				t.Errorf("close of endpoint %d before a call on endpoint %d (%s)", e.Endpoint, c.Endpoint, c.Fn)
			}
			fn = c.Fn
		default:
			continue
		}
		out = append(out, fmt.Sprintf("%s ep=%d at %s", e.Event, e.Endpoint, fn))
	}
	return out
}

// TestObservedEndpointLifetimes: the observer, attached to an
// uninstrumented client whose endpoint 0 is already open, records that
// endpoint as numbered by first use (attached_endpoints), its close, and a
// new endpoint created after it (reconnect: often at the closed one's
// address) as endpoint 1, created and closed: each create just after its
// ucp_ep_create, each close just before its close call, as the injector
// logs them.
func TestObservedEndpointLifetimes(t *testing.T) {
	testutil.RequireBPF(t)
	h := newHarness(t)
	args := []string{"--scenario", "idle", "--close", "flush", "--reconnect", "--wait-ms", "200", "--linger-ms", "100"}
	want := []string{
		"close ep=0 at ucp_ep_close_nbx",
		"create ep=1 at ucp_ep_create",
		"close ep=1 at ucp_ep_close_nbx",
	}

	observed := observedPeerRun(t, h, args)
	if !slices.Equal(observed.AttachedEndpoints, []int{0}) {
		t.Errorf("attached endpoints %v, want [0] (open before the observer attached)", observed.AttachedEndpoints)
	}
	if got := epLifetimes(t, observed); !slices.Equal(got, want) {
		t.Errorf("observed lifetimes:\n%s\nwant:\n%s\nevents %+v", strings.Join(got, "\n"), strings.Join(want, "\n"), observed.EndpointEvents)
	}
	var on1 int
	for _, c := range observed.Calls {
		if c.Endpoint == 1 {
			on1++
		}
		if c.Endpoint > 1 {
			t.Errorf("call %d (%s) on endpoint %d: only 0 and 1 exist", c.Seq, c.Fn, c.Endpoint)
		}
	}
	if on1 == 0 {
		t.Errorf("no call on the reconnected endpoint 1")
	}

}

// observedPeerRun runs the conformance client without the injector against
// a live server and observes it from its READY line (its first endpoint
// open) to its exit.
func observedPeerRun(t *testing.T, h *harness, args []string) *recording.Process {
	t.Helper()
	prog := buildPeerdeath(t)
	hello := filepath.Join(t.TempDir(), "hello")
	srv := exec.Command(prog, "server", "--hello", hello)
	srv.Env = peerEnv(nil)
	server := testutil.StartCmd(t, srv)
	t.Cleanup(func() { server.Cmd.Process.Kill() })
	cli := exec.Command(prog, append([]string{"client", "--hello", hello}, args...)...)
	cli.Env = peerEnv(nil)
	stdin, err := cli.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	client := testutil.StartCmd(t, cli)
	waitFor(t, 20*time.Second, "the client's READY line", func() bool { return strings.Contains(client.Output(), "READY ") })
	path := filepath.Join(t.TempDir(), "observed.json")
	obs := exec.Command(h.cli, "observe", strconv.Itoa(client.Cmd.Process.Pid), "-o", path)
	// The client waits for a line on stdin: sent once the probes are on.
	out := &bannerWriter{banner: "observing process", seen: func() { io.WriteString(stdin, "go\n") }}
	obs.Stdout, obs.Stderr = out, out
	if err := obs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { obs.Process.Signal(syscall.SIGKILL) })
	res := client.Wait(t, 60*time.Second)
	stdin.Close()
	if err := obs.Wait(); err != nil {
		t.Fatalf("observe: %v\n%s\nclient:\n%s", err, out.String(), res)
	}
	f, err := recording.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the observer's recording: %v\n%s", err, out.String())
	}
	t.Logf("observer:\n%s\nclient:\n%s\ncalls: %d", out.String(), res, len(f.Processes[0].Calls))
	return &f.Processes[0]
}
