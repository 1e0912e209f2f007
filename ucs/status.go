// Package ucs names and parses UCX status codes (ucs_status_t).
//
// ucs_status_t is a packed enum of one byte. Negative values are errors; the
// range ends at UCS_ERR_LAST (-100): a status pointer below it would read as a
// request pointer, so no code outside [-100, -1] is ever injected.
package ucs

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ucxfault/ucxfault/internal/abi"
)

// Status is a UCX status code as returned by libucp.
type Status int8

// Codes named in UCX 1.13.1's ucs/type/status.h.
const (
	OK                  Status = 0
	InProgress          Status = 1
	ErrNoMessage        Status = -1
	ErrNoResource       Status = -2
	ErrIOError          Status = -3
	ErrNoMemory         Status = -4
	ErrInvalidParam     Status = -5
	ErrUnreachable      Status = -6
	ErrInvalidAddr      Status = -7
	ErrNotImplemented   Status = -8
	ErrMessageTruncated Status = -9
	ErrNoProgress       Status = -10
	ErrBufferTooSmall   Status = -11
	ErrNoElem           Status = -12
	ErrSomeConnects     Status = -13
	ErrNoDevice         Status = -14
	ErrBusy             Status = -15
	ErrCanceled         Status = -16
	ErrShmemSegment     Status = -17
	ErrAlreadyExists    Status = -18
	ErrOutOfRange       Status = -19
	ErrTimedOut         Status = -20
	ErrExceedsLimit     Status = -21
	ErrUnsupported      Status = -22
	ErrRejected         Status = -23
	ErrNotConnected     Status = -24
	ErrConnectionReset  Status = -25
	ErrEndpointTimeout  Status = -80
	ErrLast             Status = -100
)

// FirstError and LastError bound the codes that may be injected.
const (
	FirstError = -1
	LastError  = -100
)

// DefaultFaultCodes are the codes drawn from when none are configured, as in
// the original tool: IO_ERROR, UNREACHABLE, TIMED_OUT.
var DefaultFaultCodes = []Status{ErrIOError, ErrUnreachable, ErrTimedOut}

var names = map[Status]string{
	OK:                  "OK",
	InProgress:          "INPROGRESS",
	ErrNoMessage:        "NO_MESSAGE",
	ErrNoResource:       "NO_RESOURCE",
	ErrIOError:          "IO_ERROR",
	ErrNoMemory:         "NO_MEMORY",
	ErrInvalidParam:     "INVALID_PARAM",
	ErrUnreachable:      "UNREACHABLE",
	ErrInvalidAddr:      "INVALID_ADDR",
	ErrNotImplemented:   "NOT_IMPLEMENTED",
	ErrMessageTruncated: "MESSAGE_TRUNCATED",
	ErrNoProgress:       "NO_PROGRESS",
	ErrBufferTooSmall:   "BUFFER_TOO_SMALL",
	ErrNoElem:           "NO_ELEM",
	ErrSomeConnects:     "SOME_CONNECTS_FAILED",
	ErrNoDevice:         "NO_DEVICE",
	ErrBusy:             "BUSY",
	ErrCanceled:         "CANCELED",
	ErrShmemSegment:     "SHMEM_SEGMENT",
	ErrAlreadyExists:    "ALREADY_EXISTS",
	ErrOutOfRange:       "OUT_OF_RANGE",
	ErrTimedOut:         "TIMED_OUT",
	ErrExceedsLimit:     "EXCEEDS_LIMIT",
	ErrUnsupported:      "UNSUPPORTED",
	ErrRejected:         "REJECTED",
	ErrNotConnected:     "NOT_CONNECTED",
	ErrConnectionReset:  "CONNECTION_RESET",
	ErrEndpointTimeout:  "ENDPOINT_TIMEOUT",
	ErrLast:             "LAST",
}

var byName = func() map[string]Status {
	m := make(map[string]Status, len(names))
	for s, n := range names {
		m[n] = s
	}
	return m
}()

// String returns the short name of s (IO_ERROR), or a name derived from the
// code's range for codes UCX 1.13.1 leaves unnamed (LINK_FAILURE_-42).
func (s Status) String() string {
	if n, ok := names[s]; ok {
		return n
	}
	switch {
	case s <= -40 && s >= -59:
		return fmt.Sprintf("LINK_FAILURE_%d", int(s))
	case s <= -60 && s >= -89:
		return fmt.Sprintf("ENDPOINT_FAILURE_%d", int(s))
	}
	return fmt.Sprintf("STATUS_%d", int(s))
}

// Injectable reports whether s may be returned as an injected failure.
func (s Status) Injectable() bool { return s <= FirstError && s >= LastError }

// ErrNotInjectable is wrapped by Parse for codes outside [-100, -1].
var ErrNotInjectable = fmt.Errorf("code is not an injectable UCX error (accepted: -1 to -100, or a name such as IO_ERROR or UCS_ERR_IO_ERROR)")

// Parse reads one error code given as a number (-3) or a name (IO_ERROR,
// UCS_ERR_IO_ERROR, io_error). Only injectable codes are accepted.
func Parse(text string) (Status, error) {
	t := strings.TrimSpace(text)
	if t == "" {
		return 0, fmt.Errorf("empty error code: %w", ErrNotInjectable)
	}
	if n, err := strconv.Atoi(t); err == nil {
		if n > FirstError || n < LastError {
			return 0, fmt.Errorf("code %d: %w", n, ErrNotInjectable)
		}
		return Status(n), nil
	}
	u := strings.ToUpper(t)
	u = strings.TrimPrefix(u, "UCS_ERR_")
	if s, ok := byName[u]; ok && s.Injectable() {
		return s, nil
	}
	return 0, fmt.Errorf("code %q: %w", text, ErrNotInjectable)
}

// MaxCodes bounds the length of a code list, so that a request cannot grow
// the injector's shared state without limit.
const MaxCodes = abi.MaxCodes

// ParseList reads a comma-separated list of codes ("-3,-6,TIMED_OUT").
func ParseList(text string) ([]Status, error) {
	parts := strings.Split(text, ",")
	if len(parts) > MaxCodes {
		return nil, fmt.Errorf("%d codes given, at most %d accepted", len(parts), MaxCodes)
	}
	out := make([]Status, 0, len(parts))
	for _, p := range parts {
		s, err := Parse(p)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// FormatList renders codes as "-3(IO_ERROR),-6(UNREACHABLE)".
func FormatList(codes []Status) string {
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d(%s)", int(c), c)
	}
	return strings.Join(parts, ",")
}

// FromRaw decodes the low byte of a register holding a ucs_status_t: the
// enum is packed, so the upper bytes are not a sign extension.
func FromRaw(reg uint64) Status { return Status(int8(reg & 0xff)) }

// EndpointLevel reports whether s is a code that real UCX reports only for an
// endpoint that has failed as a whole (NOT_CONNECTED -24, CONNECTION_RESET
// -25, ENDPOINT_TIMEOUT -80, and the link -40..-59 and endpoint -60..-89
// ranges, ucs/type/status.h): once UCX returns one, every later operation on
// that endpoint fails and the error handler runs. Failing one call with such
// a code leaves the endpoint healthy, a state real UCX never shows.
func (s Status) EndpointLevel() bool {
	switch {
	case s == ErrNotConnected, s == ErrConnectionReset, s == ErrEndpointTimeout:
		return true
	case s <= -40 && s >= -89:
		return true
	}
	return false
}
