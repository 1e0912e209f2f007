package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"net"
	"os"
	"sync"
	"time"

	"github.com/ucxfault/ucxfault/recording"
)

// A recording can be far larger than any request line: the default call
// log of 262,144 records is about 50 MB of JSON, and UCX_FAULT_RECORD_CAPACITY
// may raise it to 2^28 records. A chunked record_dump streams it over the
// connection in lines of at most MaxChunk calls, each far below MaxLine, so
// both sides hold one line at a time beside the recording itself and nothing
// is left behind if either side dies (docs/protocol.md says why this is
// preferred to a file written in the socket directory).

// MaxChunk bounds the calls of one chunk line. A call encodes to at most
// about 300 bytes (ten fields, numbers of at most 20 digits, a function
// name), so a chunk line stays under 20 MB, below MaxLine.
const MaxChunk = 65536

// DumpChunk is the number of calls per line the CLI asks for: lines of
// about 3 MB.
const DumpChunk = 16384

// Stream describes the chunk lines that follow a chunked record_dump's
// header line.
type Stream struct {
	// Calls is the number of calls in all chunks together.
	Calls int `json:"calls"`
	// Chunks is the number of chunk lines that follow.
	Chunks int `json:"chunks"`
}

// Chunk is one line of a chunked record_dump after the header: Part counts
// from 0, Calls continue the previous chunk's.
type Chunk struct {
	V     int              `json:"v"`
	Part  int              `json:"part"`
	Calls []recording.Call `json:"calls"`
}

// chunkWriteTimeout bounds one chunk line's write: a reader that stops
// reading frees its connection slot.
const chunkWriteTimeout = 30 * time.Second

// writeChunked writes r, a successful record_dump response, as a header line
// and chunk lines of at most chunk calls.
func writeChunked(conn net.Conn, r Response, chunk int) error {
	p := *r.Recording
	calls := p.Calls
	p.Calls = []recording.Call{}
	r.Recording = &p
	r.Stream = &Stream{Calls: len(calls), Chunks: (len(calls) + chunk - 1) / chunk}
	w := bufio.NewWriterSize(conn, 1<<20)
	conn.SetWriteDeadline(time.Now().Add(chunkWriteTimeout))
	if _, err := w.Write(r.Encode()); err != nil {
		return err
	}
	for part := 0; part*chunk < len(calls); part++ {
		end := min((part+1)*chunk, len(calls))
		b, err := json.Marshal(Chunk{V: ProtocolVersion, Part: part, Calls: calls[part*chunk : end]})
		if err != nil {
			return fmt.Errorf("encoding chunk %d: %w", part, err)
		}
		conn.SetWriteDeadline(time.Now().Add(chunkWriteTimeout))
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	conn.SetWriteDeadline(time.Now().Add(chunkWriteTimeout))
	return w.Flush()
}

// Progress is told, after each chunk line, how many calls of a process's
// recording have arrived and how many the process announced.
type Progress func(t Target, got, total int)

// DumpRecording asks t for its recording (the newest count calls; 0 = all)
// in chunk lines, and returns the response with the calls put together.
// timeout bounds the connection, the wait for the header (the process
// builds the recording first) and the wait for each line, not the whole
// transfer, so a recording of any size arrives whole. An error response
// (for instance from a process too old to know chunks) is returned as
// such. Who listens is checked before the request is sent (CheckListener), and
// the header's identity before any chunk is read (CheckIdentity).
func DumpRecording(t Target, count int, timeout time.Duration, progress Progress) (*Response, error) {
	resp, _, err := dumpRecording(t, count, timeout, progress)
	return resp, err
}

// dumpRecording is DumpRecording, also returning the uid of the process
// that answered (-1 when none did).
func dumpRecording(t Target, count int, timeout time.Duration, progress Progress) (*Response, int, error) {
	req := &Request{Cmd: CmdRecordDump, Count: count, Chunk: DumpChunk}
	line, err := req.Encode()
	if err != nil {
		return nil, -1, err
	}
	conn, uid, err := dial(t, timeout)
	if err != nil {
		return nil, -1, err
	}
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 1<<20)
	conn.SetDeadline(time.Now().Add(timeout))
	if _, werr := conn.Write(line); werr != nil {
		if respLine, err := readLine(br); err == nil {
			var resp Response
			if json.Unmarshal(respLine, &resp) == nil && !resp.OK && resp.Error != "" {
				if err := CheckIdentity(t, &resp); err != nil {
					return nil, uid, err
				}
				return &resp, uid, nil
			}
		}
		return nil, uid, fmt.Errorf("sending to %s: %w", t.Path, werr)
	}
	head, err := readAnswer(br, t.Path)
	if err != nil {
		return nil, uid, err
	}
	var resp Response
	if err := json.Unmarshal(head, &resp); err != nil {
		return nil, uid, fmt.Errorf("decoding response from %s: %w", t.Path, err)
	}
	if err := CheckIdentity(t, &resp); err != nil {
		return nil, uid, err
	}
	if !resp.OK || resp.Recording == nil {
		return &resp, uid, nil
	}
	if resp.Stream == nil {
		// A whole answer in one line: nothing follows.
		return &resp, uid, nil
	}
	st := *resp.Stream
	if st.Calls < 0 || st.Chunks < 0 || st.Chunks > st.Calls || (st.Calls > 0 && st.Chunks == 0) {
		return nil, uid, fmt.Errorf("decoding response from %s: %d calls in %d chunks announced", t.Path, st.Calls, st.Chunks)
	}
	// Announced by the process itself: capped so that a bad header cannot
	// make the CLI allocate without bound before the data is there.
	calls := make([]recording.Call, 0, min(st.Calls, 1<<22))
	for part := 0; part < st.Chunks; part++ {
		conn.SetReadDeadline(time.Now().Add(timeout))
		b, err := readAnswer(br, t.Path)
		if err != nil {
			return nil, uid, fmt.Errorf("chunk %d of %d: %w", part+1, st.Chunks, err)
		}
		if !bytes.HasSuffix(b, []byte("\n")) {
			return nil, uid, fmt.Errorf("reading response from %s: the connection closed in the middle of chunk %d of %d (did the process exit?)", t.Path, part+1, st.Chunks)
		}
		var c Chunk
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, uid, fmt.Errorf("decoding chunk %d of %d from %s: %w", part+1, st.Chunks, t.Path, err)
		}
		if c.Part != part || len(calls)+len(c.Calls) > st.Calls {
			return nil, uid, fmt.Errorf("decoding chunk %d of %d from %s: part %d with %d calls after %d of %d", part+1, st.Chunks, t.Path, c.Part, len(c.Calls), len(calls), st.Calls)
		}
		calls = append(calls, c.Calls...)
		if progress != nil {
			progress(t, len(calls), st.Calls)
		}
	}
	if len(calls) != st.Calls {
		return nil, uid, fmt.Errorf("reading response from %s: %d calls arrived, %d announced", t.Path, len(calls), st.Calls)
	}
	resp.Recording.Calls = calls
	resp.Stream = nil
	return &resp, uid, nil
}

// readAnswer reads one answer line of at most MaxLine bytes.
func readAnswer(br *bufio.Reader, path string) ([]byte, error) {
	b, err := readLine(br)
	switch {
	case errors.Is(err, errLineTooLong):
		return nil, fmt.Errorf("reading response from %s: %w", path, errAnswerTooLong)
	case err != nil:
		return nil, fmt.Errorf("reading response from %s: %w", path, err)
	}
	return b, nil
}

// errAnswerTooLong names what readLine's limit means on the client side.
var errAnswerTooLong = fmt.Errorf("an answer line longer than %d bytes", MaxLine)

// DumpAll runs DumpRecording on every target at once, four at a time (each
// recording is held whole in memory), and returns the results in target
// order, checked as Broadcast checks them.
func DumpAll(targets []Target, count int, timeout time.Duration, progress Progress) []Result {
	out := make([]Result, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			resp, uid, err := dumpRecording(t, count, timeout, progress)
			if errors.Is(err, ErrStale) {
				os.Remove(t.Path)
			}
			out[i] = Result{Target: t, Resp: resp, Err: err, UID: uid}
		}()
	}
	wg.Wait()
	return out
}
