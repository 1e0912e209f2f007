package control

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// MaxConnections bounds the connections one injected process serves at once.
const MaxConnections = 16

// connIdleTimeout closes a connection that sends nothing for this long, so
// a stuck client cannot hold one of the MaxConnections slots forever.
const connIdleTimeout = 30 * time.Second

// ServerOptions tune Serve. A nil *ServerOptions means the defaults.
type ServerOptions struct {
	// Log receives one line per notable event (a refused peer is logged once).
	Log func(format string, args ...any)
	// AllowUID is the user allowed besides root; default: our effective uid.
	AllowUID *int
}

// Serve answers requests on l until l is closed. Each connection carries
// newline-delimited requests; a malformed or oversized request gets an error
// response and the connection is closed. Peers of another user (other than
// root) are refused by their SO_PEERCRED credentials.
func Serve(l net.Listener, e *Engine, opts *ServerOptions) error {
	if opts == nil {
		opts = &ServerOptions{}
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	allow := os.Geteuid()
	if opts.AllowUID != nil {
		allow = *opts.AllowUID
	}
	var (
		slots       = make(chan struct{}, MaxConnections)
		refusedOnce sync.Once
		wg          sync.WaitGroup
	)
	defer wg.Wait()
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accepting control connection: %w", err)
		}
		// Fail closed: a peer whose credentials cannot be read is refused.
		if uid, ok := peerUID(conn); !ok || (uid != 0 && uid != allow) {
			who := "a peer of unknown uid"
			if ok {
				who = fmt.Sprintf("uid %d", uid)
			}
			only := fmt.Sprintf("only uid %d and root may", allow)
			if allow == 0 {
				only = "only root may"
			}
			refusedOnce.Do(func() {
				logf("refused a control connection from %s (%s control this process)", who, only)
			})
			// The answer says no more than the socket's owner and /proc
			// already show; it is named like every answer, so that no
			// client takes an unnamed line for this process's.
			r := Response{Error: fmt.Sprintf("permission denied: %s may not control this process (%s)", who, only), Identity: &e.id}
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write(r.Encode())
			conn.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			r := Response{Error: fmt.Sprintf("busy: %d control connections already open", MaxConnections), Identity: &e.id}
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			conn.Write(r.Encode())
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			serveConn(conn, e)
		}()
	}
}

func peerUID(conn net.Conn) (int, bool) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, false
	}
	return int(cred.Uid), true
}

// errLineTooLong is returned by readLine for a line longer than MaxLine.
var errLineTooLong = errors.New("request line too long")

func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLine {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		if err == nil {
			return line, nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(bytes.TrimSpace(line)) > 0 {
			return line, nil
		}
		return nil, err
	}
}

func serveConn(conn net.Conn, e *Engine) {
	defer conn.Close()
	// Whatever a request does, it must not take the host down: a panic
	// here is answered as an error and the connection closed.
	defer func() {
		if p := recover(); p != nil {
			r := Response{Error: fmt.Sprintf("internal error: %v", p), Identity: &e.id}
			conn.Write(r.Encode())
		}
	}()
	br := bufio.NewReaderSize(conn, 64<<10)
	for {
		conn.SetReadDeadline(time.Now().Add(connIdleTimeout))
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				r := e.Refuse(fmt.Errorf("%w: request longer than %d bytes", ErrInvalid, MaxLine))
				conn.Write(r.Encode())
			}
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if !respond(conn, e, line) {
			return
		}
	}
}

// respond answers one request line on conn: one response line, or for a
// chunked record_dump a header and its chunk lines (writeChunked). It
// reports whether the connection may carry on.
func respond(conn net.Conn, e *Engine, line []byte) bool {
	req, err := ParseRequest(line)
	if err != nil {
		r := e.Refuse(err)
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		conn.Write(r.Encode())
		return false
	}
	r := e.Handle(req)
	if req.Cmd == CmdRecordDump && req.Chunk > 0 && r.OK && r.Recording != nil {
		return writeChunked(conn, r, req.Chunk) == nil
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(r.Encode())
	return err == nil && r.OK
}

// Listen creates the control socket at path with mode 0600, replacing a
// stale socket left by a dead process of the same pid. The socket is bound
// and listening under a private name first and then renamed into place, so
// the path never names a socket that refuses connections: between bind and
// listen it would, and a CLI could take it for a dead process's. (Under MPI
// start-up, with every core busy, that window was seen to last long enough
// for a status call to hit it.)
func Listen(path string) (net.Listener, error) {
	// The private name is no longer than the final one (a socket path
	// is limited to 107 bytes), and not one the CLI looks for.
	tmp := filepath.Join(filepath.Dir(path), "."+strings.TrimSuffix(filepath.Base(path), ".sock")+".n")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing an unfinished socket: %w", err)
	}
	// No umask change: umask is process-wide and this runs inside the host.
	// The socket is 0600 before it takes its name, and peers are checked by
	// their credentials on every connection anyway.
	l, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listening on control socket: %w", err)
	}
	// The injector removes the socket at exit from C (atexit); Go must not
	// unlink it again on Close, possibly after a new owner took the path.
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("setting control socket mode: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		os.Remove(tmp)
		if errors.Is(err, os.ErrPermission) {
			// In a shared sticky directory (/tmp), a file of another
			// user holds the name: it may be a socket planted to answer
			// in this process's place.
			return nil, fmt.Errorf("naming control socket: %s belongs to another user, who may be waiting to answer in this process's place (use the default private directory: unset %s)", path, EnvSocketDir)
		}
		return nil, fmt.Errorf("naming control socket: %w", err)
	}
	return l, nil
}
