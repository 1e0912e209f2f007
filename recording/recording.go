// Package recording defines the recording file: what the injector's call log
// and the observer write, and what replay reads. The format is documented in
// docs/recording-format.md; this package is its reference implementation.
package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ucxfault/ucxfault/hooks"
	"github.com/ucxfault/ucxfault/ucs"
)

// Format is the value of the "format" field of every recording.
const Format = "ucxfault-recording"

// Version is the version this build writes. Version 2 added the endpoint
// events (Process.EndpointEvents); it reads versions MinVersion to Version.
const Version = 2

// MinVersion is the oldest version this build reads: a version 1 file is a
// version 2 file without endpoint events, and replays as before.
const MinVersion = 1

// Endpoint events (EndpointEvent.Event).
const (
	// EventCreate: ucp_ep_create returned the endpoint.
	EventCreate = "create"
	// EventClose: the application closed the endpoint.
	EventClose = "close"
	// EventFailure: the endpoint failed with Code (a peer death, or a
	// kill-ep); replay turns it into a kill at the same position.
	EventFailure = "failure"
	// EventHandler: the application's error handler was called for the
	// endpoint with Code.
	EventHandler = "handler"
)

// Causes of an endpoint event the injector made (EndpointEvent.Cause).
const (
	// CauseCommand: the live kill-ep command.
	CauseCommand = "kill-ep"
	// CauseRule: a rule's kill-ep action.
	CauseRule = "rule"
	// CauseReplay: a replayed endpoint failure.
	CauseReplay = "replay"
	// CauseKill: a handler call for a kill (whichever made it).
	CauseKill = "kill"
)

// Sources of a recording.
const (
	SourceInjector = "injector"
	SourceObserver = "observer"
)

// How an operation's final status became known.
const (
	// HowImmediate: the call itself returned the final status.
	HowImmediate = "immediate"
	// HowCompletion: the call returned a request; the status is the one the
	// application later learned through ucp_request_check_status.
	HowCompletion = "completion"
	// HowUnknown: the call returned a request that was freed, or the
	// recording ended, before its status was learned.
	HowUnknown = "unknown"
)

// File is one recording.
type File struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	Source    string    `json:"source"`
	Created   time.Time `json:"created"`
	Processes []Process `json:"processes"`
}

// Process holds the calls of one process.
type Process struct {
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Rank      int       `json:"rank"`
	Command   []string  `json:"command"`
	StartTime time.Time `json:"start_time"`
	// Hooks lists the functions that were hooked or probed while recording.
	Hooks []string `json:"hooks"`
	Lost  Lost     `json:"lost"`
	// Complete is false when any counter in Lost is non-zero.
	Complete bool `json:"complete"`
	// EndpointEvents are the endpoint lifetimes and failures, in order
	// (version 2; absent in version 1 files).
	EndpointEvents []EndpointEvent `json:"endpoint_events,omitempty"`
	// AttachedEndpoints lists the endpoints that were open when the
	// observer attached (its create was not seen): they are numbered in
	// order of first use after the attach, before or among the endpoints
	// numbered by creation (version 2, observer only; absent when none).
	AttachedEndpoints []int `json:"attached_endpoints,omitempty"`
	// Calls stays the last field: encode streams it.
	Calls []Call `json:"calls"`
}

// EndpointEvent is one endpoint's creation, close, failure or error-handler
// call, placed in the process's call sequence.
type EndpointEvent struct {
	// Seq is the position: the seq of the first call after the event (the
	// number of calls before it), so a replay can act before that call.
	Seq uint64 `json:"seq"`
	// Endpoint is the endpoint's ordinal, numbered as Call.Endpoint.
	Endpoint int `json:"ep"`
	// Event is create, close, failure or handler.
	Event string `json:"event"`
	// Code is the failure's, or the handler's, UCX code (-1 to -100); 0
	// for create and close.
	Code int `json:"code,omitempty"`
	// Peer names the remote side when known (see docs/recording-format.md).
	Peer string `json:"peer,omitempty"`
	// Injected is true for a failure ucxfault made (a kill-ep), and for the
	// handler call it delivered.
	Injected bool `json:"injected,omitempty"`
	// Cause says what made an injected event (CauseCommand, CauseRule,
	// CauseReplay; CauseKill for the handler call of any kill); empty for
	// the others.
	Cause string `json:"cause,omitempty"`
	// InflightCode, on a failure, is what operations in flight on the
	// endpoint completed with when it differs from Code (0: Code);
	// replay's kill uses it too.
	InflightCode int `json:"inflight_code,omitempty"`

	// TimeNS is when it happened, in nanoseconds since the recording began.
	TimeNS uint64 `json:"t_ns"`
}

// Failures returns the process's endpoint failures in order: what replay
// turns into kills.
func (p *Process) Failures() []EndpointEvent {
	var out []EndpointEvent
	for _, e := range p.EndpointEvents {
		if e.Event == EventFailure {
			out = append(out, e)
		}
	}
	return out
}

// Lost counts what a recording is missing.
type Lost struct {
	// DroppedEvents: events the observer's ring buffer could not take.
	DroppedEvents uint64 `json:"dropped_events"`
	// OverwrittenRecords: the oldest records the injector's log overwrote.
	OverwrittenRecords uint64 `json:"overwritten_records"`
	// OvertakenRecords: records the injector's log held when a dump began
	// but the program overwrote before the dump's copy reached them (the
	// program kept calling during the dump).
	OvertakenRecords uint64 `json:"overtaken_records,omitempty"`
	// UnmatchedEntries: calls whose return was never seen.
	UnmatchedEntries uint64 `json:"unmatched_entries"`
	// UnmatchedReturns: returns whose call was never seen.
	UnmatchedReturns uint64 `json:"unmatched_returns"`
}

// Any reports whether anything was lost.
func (l Lost) Any() bool {
	return l.DroppedEvents+l.OverwrittenRecords+l.OvertakenRecords+l.UnmatchedEntries+l.UnmatchedReturns > 0
}

// Call is one application call of a hooked function and its final outcome.
type Call struct {
	// Seq orders the calls of the process, from 0.
	Seq uint64 `json:"seq"`
	// Thread is the thread's ordinal in order of first hooked call, from 0.
	Thread int `json:"thread"`
	// Fn is the libucp function.
	Fn string `json:"fn"`
	// Size is the transfer size in bytes; 0 when the function has none.
	Size uint64 `json:"size"`
	// Endpoint is the endpoint's number: its order of creation in the
	// process, from 0 (for endpoints open before the observer attached,
	// Process.AttachedEndpoints, its order of first use); -1 when the
	// function takes no endpoint.
	Endpoint int `json:"ep"`
	// Status is the final status: 0 on success, the UCX code on failure.
	Status int `json:"status"`
	// How tells when the final status became known (immediate, completion, unknown).
	How string `json:"how"`
	// Injected is true when the failure was injected by ucxfault.
	Injected bool `json:"injected"`
	// TimeNS is the call's start, in nanoseconds since the recording began.
	TimeNS uint64 `json:"t_ns"`
	// DurationNS is how long the call itself took (not its completion); 0
	// when unknown.
	DurationNS uint64 `json:"duration_ns,omitempty"`
}

// Failed reports whether the call's final status is an error.
func (c Call) Failed() bool { return c.Status < 0 }

// Sentinel errors of Read, checked with errors.Is.
var (
	ErrNotRecording   = errors.New("not a ucxfault recording")
	ErrVersion        = errors.New("unsupported recording version")
	ErrTruncated      = errors.New("recording is truncated")
	ErrInvalidContent = errors.New("invalid recording content")
)

// MaxSize bounds how much Read will read, so that a wrong path cannot make
// the CLI read a disk image into memory.
const MaxSize = 1 << 30

// Read parses and validates a recording. It refuses anything that is not a
// complete recording of this version; nothing partial is ever returned.
func Read(r io.Reader) (*File, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading recording: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidContent, MaxSize)
	}
	return Parse(data)
}

// Parse is Read on a byte slice.
func Parse(data []byte) (*File, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("%w: expected a JSON object", ErrNotRecording)
	}
	if !json.Valid(trimmed) {
		// A recording cut short still names its format near the start.
		headText := trimmed[:min(len(trimmed), 256)]
		if bytes.Contains(headText, []byte(`"`+Format+`"`)) {
			return nil, fmt.Errorf("%w: the JSON ends early or is damaged", ErrTruncated)
		}
		return nil, fmt.Errorf("%w: not valid JSON", ErrNotRecording)
	}
	// Read the header first so that a foreign file or another version is
	// reported as such rather than as a field-level decoding error.
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	if err := json.Unmarshal(trimmed, &head); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotRecording, err)
	}
	if head.Format != Format {
		return nil, fmt.Errorf("%w: format field is %q, want %q", ErrNotRecording, head.Format, Format)
	}
	if head.Version < MinVersion || head.Version > Version {
		return nil, fmt.Errorf("%w %d (this build reads versions %d to %d)", ErrVersion, head.Version, MinVersion, Version)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidContent, err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// ReadFile reads and validates the recording at path.
func ReadFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening recording: %w", err)
	}
	defer fh.Close()
	f, err := Read(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Validate checks every field a replay depends on.
func (f *File) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidContent, fmt.Sprintf(format, args...))
	}
	if f.Source != SourceInjector && f.Source != SourceObserver {
		return bad("source %q is neither %q nor %q", f.Source, SourceInjector, SourceObserver)
	}
	for pi, p := range f.Processes {
		var last uint64
		for ci, c := range p.Calls {
			if _, _, err := hooks.Lookup(c.Fn); err != nil {
				return bad("process %d call %d: %v", pi, ci, err)
			}
			if c.Status > 0 || c.Status < ucs.LastError {
				return bad("process %d call %d: status %d is not 0 or a UCX error code", pi, ci, c.Status)
			}
			switch c.How {
			case HowImmediate, HowCompletion, HowUnknown:
			default:
				return bad("process %d call %d: how %q (want immediate, completion or unknown)", pi, ci, c.How)
			}
			if ci > 0 && c.Seq <= last {
				return bad("process %d call %d: seq %d does not increase", pi, ci, c.Seq)
			}
			if c.Thread < 0 || c.Endpoint < -1 {
				return bad("process %d call %d: negative thread or endpoint", pi, ci)
			}
			last = c.Seq
		}
		if len(p.EndpointEvents) > 0 && f.Version < 2 {
			return bad("process %d: endpoint_events need version 2 (the file says %d)", pi, f.Version)
		}
		if len(p.AttachedEndpoints) > 0 && f.Version < 2 {
			return bad("process %d: attached_endpoints need version 2 (the file says %d)", pi, f.Version)
		}
		for _, ep := range p.AttachedEndpoints {
			if ep < 0 {
				return bad("process %d: negative attached endpoint %d", pi, ep)
			}
		}
		var lastEv uint64
		for ei, e := range p.EndpointEvents {
			if ei > 0 && e.Seq < lastEv {
				return bad("process %d endpoint event %d: seq %d goes back", pi, ei, e.Seq)
			}
			lastEv = e.Seq
			if e.Endpoint < 0 {
				return bad("process %d endpoint event %d: negative endpoint", pi, ei)
			}
			switch e.Event {
			case EventCreate, EventClose:
				if e.Code != 0 {
					return bad("process %d endpoint event %d: %s carries code %d", pi, ei, e.Event, e.Code)
				}
			case EventFailure, EventHandler:
				if e.Code >= 0 || e.Code < ucs.LastError {
					return bad("process %d endpoint event %d: %s code %d is not a UCX error code", pi, ei, e.Event, e.Code)
				}
				if e.InflightCode != 0 && (e.Event != EventFailure || e.InflightCode > 0 || e.InflightCode < ucs.LastError) {
					return bad("process %d endpoint event %d: inflight_code %d (a failure's UCX error code, -1 to -100)", pi, ei, e.InflightCode)
				}
			default:
				return bad("process %d endpoint event %d: event %q (want create, close, failure or handler)", pi, ei, e.Event)
			}
		}
	}
	return nil
}

// Write encodes f, indented, to w. It writes what json.Encoder with
// SetIndent("", " ") writes, one call at a time: a recording of millions of
// calls is never held encoded in memory (the encoder would hold it twice,
// about 5 GB for 4 million calls).
func (f *File) Write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	err := f.encode(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("writing recording: %w", err)
	}
	return nil
}

// encode writes f field by field. It relies on Processes and Calls being
// the last fields of their structs; should that change, it encodes f whole.
func (f *File) encode(w *bufio.Writer) error {
	const fileTail, procTail = "\"processes\": null\n}", "\"calls\": null\n  }"
	head := *f
	head.Processes = nil
	hb, err := json.MarshalIndent(head, "", " ")
	if err != nil {
		return err
	}
	if f.Processes == nil || !bytes.HasSuffix(hb, []byte(fileTail)) {
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return enc.Encode(f)
	}
	w.Write(hb[:len(hb)-len(fileTail)])
	w.WriteString("\"processes\": [")
	for i := range f.Processes {
		p := f.Processes[i]
		calls := p.Calls
		p.Calls = nil
		pb, err := json.MarshalIndent(p, "  ", " ")
		if err != nil {
			return err
		}
		if !bytes.HasSuffix(pb, []byte(procTail)) {
			return fmt.Errorf("encoding process %d: unexpected layout", p.PID)
		}
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteString("\n  ")
		w.Write(pb[:len(pb)-len(procTail)])
		switch {
		case calls == nil:
			w.WriteString("\"calls\": null")
		case len(calls) == 0:
			w.WriteString("\"calls\": []")
		default:
			w.WriteString("\"calls\": [")
			for j := range calls {
				cb, err := json.MarshalIndent(&calls[j], "    ", " ")
				if err != nil {
					return err
				}
				if j > 0 {
					w.WriteByte(',')
				}
				w.WriteString("\n    ")
				w.Write(cb)
			}
			w.WriteString("\n   ]")
		}
		w.WriteString("\n  }")
	}
	if len(f.Processes) > 0 {
		w.WriteString("\n ")
	}
	_, err = w.WriteString("]\n}\n")
	return err
}

// WriteFile writes f to path atomically (a temporary file renamed into
// place), so that a reader never sees half a recording. A link planted at
// path is replaced, never followed, and the file is made with mode 0644:
// nobody but its owner may change it. A path that is, or links to, a
// stream (a pipe, a terminal, a character device: /dev/stdout) gets the
// recording written into it, as CreateOutput opens it: replacing it would
// take the stream from its reader.
func (f *File) WriteFile(path string) error {
	if isStream(path) {
		out, err := CreateOutput(path)
		if err != nil {
			return err
		}
		if err := f.Write(out); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	tmp, err := os.CreateTemp(dirOf(path), ".ucxfault-rec-*")
	if err != nil {
		return fmt.Errorf("creating recording: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := f.Write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing recording: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("setting recording mode: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming recording into place: %w", err)
	}
	return nil
}

// isStream reports whether path is, or links to, an existing file that is
// neither a regular file nor a directory.
func isStream(path string) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return false
	}
	return true
}

// openStream opens the file the link at path points to when it is a
// stream (a terminal, a pipe, a socket, a character device), never
// creating or truncating; else the error CreateOutput gives for a link.
func openStream(path string) (int, error) {
	refused := fmt.Errorf("creating %s: it is a symbolic link, not followed (remove it, or name the file it points to)", path)
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return -1, refused
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK:
		return -1, refused
	}
	// Blocking: a named pipe with no reader yet is waited for, as a shell's
	// redirection waits.
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("creating %s: %w", path, err)
	}
	// The file opened must be the one checked, not one a link now names.
	var got unix.Stat_t
	if unix.Fstat(fd, &got) != nil || got.Dev != st.Dev || got.Ino != st.Ino {
		unix.Close(fd)
		return -1, refused
	}
	return fd, nil
}

// CreateOutput opens path to write a text output (a summary, a pattern)
// in place, with the care WriteFile takes: a symbolic link at path is
// refused, not followed (O_NOFOLLOW), a regular file is made or truncated
// with mode 0644, and one that others could write loses that permission.
// Other kinds of file (a pipe, a terminal, /dev/null) are written as they
// are, also through a link (/dev/stdout, /dev/stderr, /proc/self/fd/N): a
// link is followed only to an existing file that is not a regular file or a
// directory, where a planted link could not make the output overwrite data.
func CreateOutput(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o644)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENXIO) { // a link; a named pipe without a reader
		fd, err = openStream(path)
		if err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	// O_NONBLOCK only kept open(2) from waiting for a pipe's reader.
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	if fi.Mode().IsRegular() {
		if p := fi.Mode().Perm(); p&0o022 != 0 {
			if err := f.Chmod(p &^ 0o022); err != nil {
				f.Close()
				return nil, fmt.Errorf("creating %s: others may write it: %w", path, err)
			}
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("creating %s: %w", path, err)
		}
	}
	return f, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			if i == 0 {
				return "/"
			}
			return path[:i]
		}
	}
	return "."
}

// New returns an empty recording of the given source, stamped now.
func New(source string) *File {
	return &File{Format: Format, Version: Version, Source: source, Created: time.Now().UTC()}
}

// Outcomes returns, per function, the sequence of final statuses in call
// order: the replay schedule of a process.
func (p *Process) Outcomes() map[string][]int {
	out := map[string][]int{}
	for _, c := range p.Calls {
		out[c.Fn] = append(out[c.Fn], c.Status)
	}
	return out
}
