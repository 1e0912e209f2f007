// Package hooks is the single table of the ucp_* functions that ucxfault
// hooks. The injector's C wrappers are generated from it (go generate writes
// preload/hooks_gen.c and preload/hooks_gen.h), the control plane accepts its
// names, and the observer attaches one probe pair per row. A new hook is one
// row here and a `make generate`.
package hooks

import (
	"fmt"
	"sort"
	"strings"
)

//go:generate go run ./gen -o ../preload

// Return says how a function reports its status, and therefore how a fault
// is returned to the caller.
type Return int

const (
	// StatusPtr functions return ucs_status_ptr_t: NULL, a request, or
	// UCS_STATUS_PTR(code). A fault returns UCS_STATUS_PTR(code).
	StatusPtr Return = iota
	// Status functions return ucs_status_t. A fault returns the code.
	Status
)

// String names the C return type.
func (r Return) String() string {
	if r == StatusPtr {
		return "ucs_status_ptr_t"
	}
	return "ucs_status_t"
}

// Param is one C parameter of a hooked function.
type Param struct {
	Type string
	Name string
}

// Hook is one row of the table.
type Hook struct {
	// Name is the exported libucp symbol.
	Name string
	// Return is the C return convention.
	Return Return
	// Params are the C parameters, in order, exactly as in ucp.h.
	Params []Param
	// Size, Endpoint, RemoteAddr and Request name the parameters that carry
	// the transfer size, the endpoint, the remote address and the request
	// examined; empty when the function has none.
	Size, Endpoint, RemoteAddr, Request string
	// Faultable is false for functions that are only observed (their failure
	// would not be one UCX can produce, or would break the host).
	Faultable bool
	// ReturnsRequest is true when a successful call may return a request
	// whose final status arrives later.
	ReturnsRequest bool
	// Polls is true for status queries on a request: they are never
	// replayed by position (their number depends on timing); a replayed
	// failure on completion is delivered through them instead.
	Polls bool
	// Summary says in a few words what the function does, for `hook list`.
	Summary string
}

// ID is a hook's index in Table; it is the hook's number in the C state and
// the BPF attach cookie.
type ID uint16

var rmaParams = func(bufType string) []Param {
	return []Param{
		{"ucp_ep_h", "ep"},
		{bufType, "buffer"},
		{"size_t", "count"},
		{"uint64_t", "remote_addr"},
		{"ucp_rkey_h", "rkey"},
		{"const ucp_request_param_t *", "param"},
	}
}

// Table lists every hooked function. The order defines the IDs: append new
// rows at the end so that recordings and the C state keep their numbers.
var Table = []Hook{
	{
		Name: "ucp_put_nbx", Return: StatusPtr, Params: rmaParams("const void *"),
		Size: "count", Endpoint: "ep", RemoteAddr: "remote_addr",
		Faultable: true, ReturnsRequest: true, Summary: "RMA put",
	},
	{
		Name: "ucp_get_nbx", Return: StatusPtr, Params: rmaParams("void *"),
		Size: "count", Endpoint: "ep", RemoteAddr: "remote_addr",
		Faultable: true, ReturnsRequest: true, Summary: "RMA get",
	},
	{
		Name: "ucp_ep_flush_nbx", Return: StatusPtr,
		Params:    []Param{{"ucp_ep_h", "ep"}, {"const ucp_request_param_t *", "param"}},
		Endpoint:  "ep",
		Faultable: true, ReturnsRequest: true, Summary: "flush an endpoint",
	},
	{
		Name: "ucp_request_check_status", Return: Status,
		Params:    []Param{{"void *", "request"}},
		Request:   "request",
		Faultable: true, Polls: true, Summary: "poll a request's status",
	},
}

// MaxHooks bounds the table; the C state is sized by it.
const MaxHooks = 64

// ErrUnknownHook is wrapped by Lookup and ParseList for names not in Table.
var ErrUnknownHook = fmt.Errorf("unknown hook")

// Lookup finds a hook by its full name (ucp_put_nbx) or without the ucp_
// prefix (put_nbx).
func Lookup(name string) (ID, *Hook, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "ucp_") {
		n = "ucp_" + n
	}
	for i := range Table {
		if Table[i].Name == n {
			return ID(i), &Table[i], nil
		}
	}
	return 0, nil, fmt.Errorf("%w %q (accepted: %s, or all)", ErrUnknownHook, name, strings.Join(Names(), ", "))
}

// Names returns the names of all hooks in table order.
func Names() []string {
	out := make([]string, len(Table))
	for i, h := range Table {
		out[i] = h.Name
	}
	return out
}

// ParseList reads a comma-separated list of hook names, or "all".
func ParseList(text string) ([]ID, error) {
	t := strings.TrimSpace(text)
	if t == "" {
		return nil, fmt.Errorf("empty hook list (accepted: %s, or all)", strings.Join(Names(), ", "))
	}
	if strings.EqualFold(t, "all") {
		ids := make([]ID, len(Table))
		for i := range Table {
			ids[i] = ID(i)
		}
		return ids, nil
	}
	seen := map[ID]bool{}
	var ids []ID
	for _, p := range strings.Split(t, ",") {
		id, _, err := Lookup(p)
		if err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// ArgIndex returns the 1-based position of the named parameter, or 0 when
// name is empty or not a parameter. The observer reads arguments by position.
func (h *Hook) ArgIndex(name string) int {
	if name == "" {
		return 0
	}
	for i, p := range h.Params {
		if p.Name == name {
			return i + 1
		}
	}
	return 0
}

// CName is the identifier used for the hook in generated C (UCXF_HOOK_PUT_NBX).
func (h *Hook) CName() string {
	return "UCXF_HOOK_" + strings.ToUpper(strings.TrimPrefix(h.Name, "ucp_"))
}
