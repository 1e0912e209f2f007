package recording

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOutputsFollowNoLink: a link planted at the output path is neither
// followed by CreateOutput nor by WriteFile, and what they write is not
// world-writable.
func TestOutputsFollowNoLink(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "out")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if f, err := CreateOutput(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		if f != nil {
			f.Close()
		}
		t.Fatalf("CreateOutput through a link: %v", err)
	}
	if err := New("test").WriteFile(link); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("WriteFile followed the link: the victim holds %q", b)
	}
	if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("WriteFile left %v (%v), want a regular file of mode 0644", fi.Mode(), err)
	}

	// An existing world-writable file loses that permission and is truncated.
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("old content"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o666)
	f, err := CreateOutput(open)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("new\n")
	f.Close()
	fi, _ := os.Stat(open)
	if b, _ := os.ReadFile(open); string(b) != "new\n" || fi.Mode().Perm()&0o022 != 0 {
		t.Fatalf("rewritten: %q, mode %v", b, fi.Mode())
	}
	// A link to a stream is followed: /dev/stdout through a pipe, and a
	// link of the test's own to /dev/null.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pipeLink := fmt.Sprintf("/proc/self/fd/%d", w.Fd())
	if f, err := CreateOutput(pipeLink); err != nil {
		t.Fatalf("%s (a pipe): %v", pipeLink, err)
	} else {
		f.WriteString("through the link\n")
		f.Close()
	}
	w.Close()
	if b, _ := io.ReadAll(r); string(b) != "through the link\n" {
		t.Fatalf("read from the pipe %q", b)
	}
	// A recording too goes into the stream, not in place of it: a named
	// pipe (its reader gets the recording) and a link to a pipe.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		r, err := os.Open(fifo)
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(r)
		r.Close()
		got <- b
	}()
	if err := New("test").WriteFile(fifo); err != nil {
		t.Fatalf("WriteFile into a named pipe: %v", err)
	}
	if b := <-got; !strings.Contains(string(b), `"source": "test"`) {
		t.Fatalf("the pipe's reader got %q, want the recording", b)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("the named pipe was replaced: %v (%v)", fi.Mode(), err)
	}
	nullLink := filepath.Join(dir, "null")
	if err := os.Symlink("/dev/null", nullLink); err != nil {
		t.Fatal(err)
	}
	if f, err := CreateOutput(nullLink); err != nil {
		t.Fatalf("a link to /dev/null: %v", err)
	} else {
		f.Close()
	}
	// A dangling link is not followed (it would create the file).
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "nothing-here"), dangling)
	if f, err := CreateOutput(dangling); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		if f != nil {
			f.Close()
		}
		t.Fatalf("CreateOutput through a dangling link: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nothing-here")); err == nil {
		t.Fatal("CreateOutput created the file a dangling link names")
	}
	// /dev/null is written as it is.
	if f, err := CreateOutput("/dev/null"); err != nil {
		t.Fatalf("/dev/null: %v", err)
	} else {
		f.Close()
	}
}
