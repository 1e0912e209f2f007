package observer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/internal/testutil"
	"github.com/ucxfault/ucxfault/observer"
)

// TestNodeWatchesAProcessTheProbesAnnounce: with --all, a process that
// starts later on a libucp file that is probed already is watched at its
// first probed call, announced by the probes themselves: /proc is scanned
// once, at the start (Scan is an hour here), so nothing else can find it.
// Its calls from then on are all recorded.
func TestNodeWatchesAProcessTheProbesAnnounce(t *testing.T) {
	testutil.RequireBPF(t)
	data, err := os.ReadFile(testutil.BuildExample(t))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ann%d", time.Now().UnixNano()%1e9)
	bin := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// Its libucp gets the probes at the start.
	first := testutil.StartExample(t, bin, "--ops", "0", "--seq", "put", "--interval-us", "20000")
	n, err := observer.StartNode(context.Background(), &observer.NodeOptions{All: true, Comm: name, Scan: time.Hour})
	if err != nil {
		t.Fatalf("StartNode: %v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			n.Stop()
		}
	}()
	// Setting up, before READY, it calls ucp_mem_map and ucp_ep_create:
	// the announcement.
	later := testutil.StartExample(t, bin, "--ops", "20", "--seq", "put,flush", "--wait-before-start-ms", "60000")
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, _ := n.Stats()
		if slices.ContainsFunc(ps, func(p observer.ProcessStats) bool { return p.PID == later.PID }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process started later was not watched in 30 s (watching %+v)", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := syscall.Kill(later.PID, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	ops := testutil.ParseOps(later.Wait(t, 30*time.Second))
	first.Cmd.Process.Kill()
	f, _, err := n.Stop()
	stopped = true
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if len(f.Processes) != 2 {
		t.Fatalf("%d parts, want the first process and the later one", len(f.Processes))
	}
	p := &f.Processes[1]
	if p.PID != later.PID || !p.Complete {
		t.Fatalf("part 1: pid %d complete %v, want pid %d complete", p.PID, p.Complete, later.PID)
	}
	got := countFn(p)
	if len(ops) != 40 || got["ucp_put_nbx"] != 20 || got["ucp_ep_flush_nbx"] != 20 {
		t.Fatalf("the later process printed %d operations, its part holds %v", len(ops), got)
	}
}
