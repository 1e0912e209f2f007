package testutil

import (
	"bytes"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Example is a running example program (see BuildExample).
type Example struct {
	// Cmd is the running command.
	Cmd *exec.Cmd
	// PID is the pid the program printed on its READY line.
	PID int

	out    *lineBuffer
	stderr *lineBuffer
	done   chan struct{}
	err    error
}

// lineBuffer collects output and reports the first READY line.
type lineBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan int // receives the READY pid once
	seen  bool
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.ready != nil && !b.seen {
		text := b.buf.String()
		// Only complete lines: the pid may still be arriving.
		if i := strings.LastIndexByte(text, '\n'); i >= 0 {
			for _, line := range strings.Split(text[:i], "\n") {
				rest, ok := strings.CutPrefix(line, "READY pid=")
				if !ok {
					continue
				}
				if f := strings.Fields(rest); len(f) > 0 {
					if pid, err := strconv.Atoi(f[0]); err == nil {
						b.seen = true
						b.ready <- pid
						break
					}
				}
			}
		}
	}
	return len(p), nil
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartExample starts bin with args and waits until it prints its READY
// line (at most 30 s). The program is killed when the test ends, if it is
// still running.
func StartExample(tb testing.TB, bin string, args ...string) *Example {
	tb.Helper()
	return StartCmd(tb, exec.Command(bin, args...))
}

// StartCmd is StartExample for a prepared command (its environment set,
// for instance); its Stdout and Stderr are replaced.
func StartCmd(tb testing.TB, cmd *exec.Cmd) *Example {
	tb.Helper()
	bin := cmd.Path
	e := &Example{
		Cmd:    cmd,
		out:    &lineBuffer{ready: make(chan int, 1)},
		stderr: &lineBuffer{},
		done:   make(chan struct{}),
	}
	e.Cmd.Stdout = e.out
	e.Cmd.Stderr = e.stderr
	// The tcp peer inherits stdout; do not wait for it forever.
	e.Cmd.WaitDelay = 2 * time.Second
	if err := e.Cmd.Start(); err != nil {
		tb.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		e.err = e.Cmd.Wait()
		close(e.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-e.done:
		default:
			e.Cmd.Process.Kill()
			<-e.done
		}
	})
	select {
	case pid := <-e.out.ready:
		e.PID = pid
	case <-e.done:
		tb.Fatalf("%s exited before READY: %v\nstdout:\n%s\nstderr:\n%s", bin, e.err, e.out, e.stderr)
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s printed no READY line within 30s\nstdout:\n%s\nstderr:\n%s", bin, e.out, e.stderr)
	}
	return e
}

// Release ends the program's --wait-before-start-ms sleep (the bundled
// examples take SIGUSR1 for it once READY): a test gives a long bound and
// releases the program once it has set up what it must before the first
// operation, however long that took on a loaded machine.
func (e *Example) Release(tb testing.TB) {
	tb.Helper()
	if err := e.Cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		tb.Fatalf("releasing the program: %v", err)
	}
}

// Output returns what the program has printed on stdout so far.
func (e *Example) Output() string { return e.out.String() }

// Stderr returns what the program has printed on stderr so far.
func (e *Example) Stderr() string { return e.stderr.String() }

// Done is closed when the program has exited.
func (e *Example) Done() <-chan struct{} { return e.done }

// Wait waits at most timeout for the program to exit and returns its
// stdout. It fails the test if the program does not exit in time or exits
// with a non-zero status.
func (e *Example) Wait(tb testing.TB, timeout time.Duration) string {
	tb.Helper()
	select {
	case <-e.done:
	case <-time.After(timeout):
		tb.Fatalf("example did not exit within %v\nstdout:\n%s\nstderr:\n%s", timeout, e.out, e.stderr)
	}
	if e.err != nil && !errors.Is(e.err, exec.ErrWaitDelay) {
		tb.Fatalf("waiting for example: %v\nstdout:\n%s\nstderr:\n%s", e.err, e.out, e.stderr)
	}
	return e.out.String()
}
