package control

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ucxfault/ucxfault/recording"
)

// bigBackend holds a recording of n calls.
type bigBackend struct {
	memBackend
	p *recording.Process
}

func (b *bigBackend) Records(int) (*recording.Process, error) {
	c := *b.p
	return &c, nil
}

func serveBig(t *testing.T, n int) (Target, *recording.Process) {
	t.Helper()
	p := &recording.Process{PID: os.Getpid(), Rank: -1, Complete: true, Calls: make([]recording.Call, n)}
	for i := range p.Calls {
		p.Calls[i] = recording.Call{Seq: uint64(i), Fn: "ucp_put_nbx", Size: 8, Endpoint: i % 3, How: recording.HowImmediate, TimeNS: uint64(i) * 1000}
	}
	dir, err := os.MkdirTemp("", "ucxf-dump-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "s.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go Serve(l, NewEngine(&bigBackend{p: p}, DefaultSettings()), nil)
	return Target{PID: os.Getpid(), Path: path}, p
}

// TestDumpLargerThanALine checks that a recording whose one-line answer
// exceeds MaxLine arrives whole in chunks, in order, with progress, and
// that the one-line answer fails with a message about the answer's size,
// not the request's.
func TestDumpLargerThanALine(t *testing.T) {
	const n = 300000 // about 45 MB as one line
	tg, p := serveBig(t, n)
	var last, calls int
	resp, err := DumpRecording(tg, 0, 10*time.Second, func(_ Target, got, total int) {
		if got <= last || total != n {
			t.Errorf("progress %d of %d after %d", got, total, last)
		}
		last = got
		calls++
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckIdentity(tg, resp); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(resp.Recording.Calls, p.Calls) || resp.Stream != nil {
		t.Fatalf("%d calls arrived, want the %d held, equal", len(resp.Recording.Calls), n)
	}
	if want := (n + DumpChunk - 1) / DumpChunk; calls != want || last != n {
		t.Fatalf("progress told %d times, last %d; want %d times, %d", calls, last, want, n)
	}

	_, err = Send(tg, &Request{Cmd: CmdRecordDump}, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "answer line longer than") || strings.Contains(err.Error(), "request") {
		t.Fatalf("one-line dump of %d calls: %v; want an error about the answer's size", n, err)
	}
}

func TestDumpChunkBounds(t *testing.T) {
	tg, _ := serveBig(t, 10)
	for _, chunk := range []int{-1, MaxChunk + 1} {
		resp, err := Send(tg, &Request{Cmd: CmdRecordDump, Chunk: chunk}, 5*time.Second)
		if err != nil || resp.OK || !strings.Contains(resp.Error, "chunk") {
			t.Errorf("chunk %d: %+v, %v; want refused", chunk, resp, err)
		}
	}
	// An empty recording: a header and no chunk line.
	tg, _ = serveBig(t, 0)
	resp, err := DumpRecording(tg, 0, 5*time.Second, nil)
	if err != nil || !resp.OK || len(resp.Recording.Calls) != 0 {
		t.Fatalf("empty recording: %+v, %v", resp, err)
	}
}
