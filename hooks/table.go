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
	// Void functions return nothing and are never faulted.
	Void
	// Unsigned functions return a count (ucp_worker_progress) and are
	// never faulted.
	Unsigned
)

// String names the C return type.
func (r Return) String() string {
	switch r {
	case StatusPtr:
		return "ucs_status_ptr_t"
	case Status:
		return "ucs_status_t"
	case Void:
		return "void"
	}
	return "unsigned"
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
	// Polls is true for status queries on a request. A poll reports the
	// status of the operation that made the request, as in UCX, which
	// never fails a poll by itself: it delivers the failure decided for
	// that operation (in deferred mode, or replayed), is never replayed by
	// position (how often a program polls depends on timing), and is drawn
	// on its own only when named (OptIn). Even then libucp answers first,
	// and only a request whose operation has completed may be failed: one
	// still in flight stays UCS_INPROGRESS, since a program that believes
	// it finished reuses the request's memory and buffers (Open MPI keeps
	// requests on its stack) while libucp still owns them.
	Polls bool
	// Callback names the member of ucp_request_param_t's cb union that the
	// function uses (send, recv, recv_stream, recv_am): a failure on
	// completion is delivered through it. Empty for functions without a
	// ucp_request_param_t.
	Callback string
	// Param is the name of the ucp_request_param_t parameter, if any.
	Param string
	// CompletionOnly: the function may only fail on completion (its input
	// is owned by UCP and must be consumed).
	CompletionOnly bool
	// ForceClose: a failure closes the endpoint for real with
	// UCP_EP_CLOSE_FLAG_FORCE first, since an error return promises that
	// the endpoint's resources were released.
	ForceClose bool
	// Refusal, when set, is why faults on this function are refused.
	Refusal string
	// Before and After name C functions of the injector called with the
	// function's arguments before the real call and after a successful
	// one, whether or not injection is on (they keep the state kill-ep and
	// deferred failures need).
	Before, After string
	// OptIn rows are off until named (in --hooks, UCX_FAULT_HOOKS or
	// `hook enable`): failing set-up calls (ucp_ep_create, ucp_mem_map)
	// stops most programs before they do anything worth testing, and
	// failing polls on their own makes which operation fails depend on
	// how often the program polls (NIXL polls about 1000 times per
	// transfer), not on the seed.
	OptIn bool
	// NoProbe keeps the observer off this function unless it is asked for
	// by name (ucp_worker_progress runs millions of times a second).
	NoProbe bool
	// Summary says in a few words what the function does, for `hook list`.
	Summary string
}

// ID is a hook's index in Table; it is the hook's number in the C state and
// the BPF attach cookie.
type ID uint16

// Parameter lists shared by several rows.
var (
	rmaParams = func(bufType string) []Param {
		return []Param{{"ucp_ep_h", "ep"}, {bufType, "buffer"}, {"size_t", "count"},
			{"uint64_t", "remote_addr"}, {"ucp_rkey_h", "rkey"}, {"const ucp_request_param_t *", "param"}}
	}
	nbiParams = func(bufType string) []Param {
		return []Param{{"ucp_ep_h", "ep"}, {bufType, "buffer"}, {"size_t", "length"},
			{"uint64_t", "remote_addr"}, {"ucp_rkey_h", "rkey"}}
	}
	tagSendParams = []Param{{"ucp_ep_h", "ep"}, {"const void *", "buffer"}, {"size_t", "count"},
		{"ucp_tag_t", "tag"}, {"const ucp_request_param_t *", "param"}}
	param = Param{"const ucp_request_param_t *", "param"}
)

// Table lists every hooked function. The order defines the IDs: append new
// rows at the end so that recordings and the C state keep their numbers.
var Table = []Hook{
	{
		Name: "ucp_put_nbx", Return: StatusPtr, Params: rmaParams("const void *"),
		Size: "count", Endpoint: "ep", RemoteAddr: "remote_addr", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "RMA put",
	},
	{
		Name: "ucp_get_nbx", Return: StatusPtr, Params: rmaParams("void *"),
		Size: "count", Endpoint: "ep", RemoteAddr: "remote_addr", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "RMA get",
	},
	{
		Name: "ucp_ep_flush_nbx", Return: StatusPtr, Params: []Param{{"ucp_ep_h", "ep"}, param},
		Endpoint: "ep", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "flush an endpoint",
	},
	{
		Name: "ucp_request_check_status", Return: Status, Params: []Param{{"void *", "request"}},
		Request:   "request",
		Faultable: true, Polls: true, OptIn: true, Summary: "poll a request's status",
	},
	{
		Name: "ucp_tag_send_nbx", Return: StatusPtr, Params: tagSendParams,
		Size: "count", Endpoint: "ep", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "tagged send",
	},
	{
		Name: "ucp_tag_send_sync_nbx", Return: StatusPtr, Params: tagSendParams,
		Size: "count", Endpoint: "ep", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "tagged synchronous send",
	},
	{
		Name: "ucp_tag_recv_nbx", Return: StatusPtr,
		Params: []Param{{"ucp_worker_h", "worker"}, {"void *", "buffer"}, {"size_t", "count"},
			{"ucp_tag_t", "tag"}, {"ucp_tag_t", "tag_mask"}, param},
		Size: "count", Param: "param", Callback: "recv",
		Faultable: true, ReturnsRequest: true, Summary: "tagged receive",
	},
	{
		Name: "ucp_stream_send_nbx", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"const void *", "buffer"}, {"size_t", "count"}, param},
		Size:   "count", Endpoint: "ep", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "stream send",
	},
	{
		Name: "ucp_stream_recv_nbx", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"void *", "buffer"}, {"size_t", "count"}, {"size_t *", "length"}, param},
		Size:   "count", Endpoint: "ep", Param: "param", Callback: "recv_stream",
		Faultable: true, ReturnsRequest: true, Summary: "stream receive",
	},
	{
		Name: "ucp_am_send_nbx", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"unsigned", "id"}, {"const void *", "header"},
			{"size_t", "header_length"}, {"const void *", "buffer"}, {"size_t", "count"}, param},
		Size: "count", Endpoint: "ep", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "active message send",
	},
	{
		Name: "ucp_am_recv_data_nbx", Return: StatusPtr,
		Params: []Param{{"ucp_worker_h", "worker"}, {"void *", "data_desc"}, {"void *", "buffer"},
			{"size_t", "count"}, param},
		Size: "count", Param: "param", Callback: "recv_am", CompletionOnly: true,
		Faultable: true, ReturnsRequest: true, Summary: "receive active message data",
	},
	{
		Name: "ucp_atomic_op_nbx", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"ucp_atomic_op_t", "opcode"}, {"const void *", "buffer"},
			{"size_t", "count"}, {"uint64_t", "remote_addr"}, {"ucp_rkey_h", "rkey"}, param},
		Size: "count", Endpoint: "ep", RemoteAddr: "remote_addr", Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "atomic operation",
	},
	{
		Name: "ucp_worker_flush_nbx", Return: StatusPtr, Params: []Param{{"ucp_worker_h", "worker"}, param},
		Param: "param", Callback: "send",
		Faultable: true, ReturnsRequest: true, Summary: "flush a worker",
	},
	{
		Name: "ucp_ep_close_nbx", Return: StatusPtr, Params: []Param{{"ucp_ep_h", "ep"}, param},
		Endpoint: "ep", Param: "param", Callback: "send", ForceClose: true,
		Before:    "ucxf_before_ep_close",
		Faultable: true, ReturnsRequest: true, Summary: "close an endpoint",
	},
	{
		Name: "ucp_ep_create", Return: Status,
		Params: []Param{{"ucp_worker_h", "worker"}, {"const ucp_ep_params_t *", "params"}, {"ucp_ep_h *", "ep_p"}},
		After:  "ucxf_after_ep_create",
		OptIn:  true, Faultable: true, Summary: "create an endpoint",
	},
	{
		Name: "ucp_mem_map", Return: Status,
		Params: []Param{{"ucp_context_h", "context"}, {"const ucp_mem_map_params_t *", "params"}, {"ucp_mem_h *", "memh_p"}},
		OptIn:  true, Faultable: true, Summary: "map or allocate memory",
	},
	{
		Name: "ucp_ep_rkey_unpack", Return: Status,
		Params:   []Param{{"ucp_ep_h", "ep"}, {"const void *", "rkey_buffer"}, {"ucp_rkey_h *", "rkey_p"}},
		Endpoint: "ep", OptIn: true, Faultable: true, Summary: "unpack a remote key (application calls only)",
	},
	{
		Name: "ucp_request_test", Return: Status,
		Params:  []Param{{"void *", "request"}, {"ucp_tag_recv_info_t *", "info"}},
		Request: "request", Faultable: true, Polls: true, OptIn: true, Summary: "poll a receive request",
	},
	{
		Name: "ucp_put_nbi", Return: Status, Params: nbiParams("const void *"),
		Size: "length", Endpoint: "ep", RemoteAddr: "remote_addr",
		Faultable: true, Summary: "RMA put, implicit completion",
	},
	{
		Name: "ucp_get_nbi", Return: Status, Params: nbiParams("void *"),
		Size: "length", Endpoint: "ep", RemoteAddr: "remote_addr",
		Faultable: true, Summary: "RMA get, implicit completion",
	},
	{
		Name: "ucp_tag_send_nb", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"const void *", "buffer"}, {"size_t", "count"},
			{"ucp_datatype_t", "datatype"}, {"ucp_tag_t", "tag"}, {"ucp_send_callback_t", "cb"}},
		Size: "count", Endpoint: "ep", Faultable: true, ReturnsRequest: true, Summary: "tagged send (old API)",
	},
	{
		Name: "ucp_tag_recv_nb", Return: StatusPtr,
		Params: []Param{{"ucp_worker_h", "worker"}, {"void *", "buffer"}, {"size_t", "count"},
			{"ucp_datatype_t", "datatype"}, {"ucp_tag_t", "tag"}, {"ucp_tag_t", "tag_mask"}, {"ucp_tag_recv_callback_t", "cb"}},
		Size: "count", Faultable: true, ReturnsRequest: true, Summary: "tagged receive (old API)",
	},
	{
		Name: "ucp_stream_send_nb", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"const void *", "buffer"}, {"size_t", "count"},
			{"ucp_datatype_t", "datatype"}, {"ucp_send_callback_t", "cb"}, {"unsigned", "flags"}},
		Size: "count", Endpoint: "ep", Faultable: true, ReturnsRequest: true, Summary: "stream send (old API)",
	},
	{
		Name: "ucp_stream_recv_nb", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"void *", "buffer"}, {"size_t", "count"}, {"ucp_datatype_t", "datatype"},
			{"ucp_stream_recv_callback_t", "cb"}, {"size_t *", "length"}, {"unsigned", "flags"}},
		Size: "count", Endpoint: "ep", Faultable: true, ReturnsRequest: true, Summary: "stream receive (old API)",
	},
	{
		Name: "ucp_ep_flush_nb", Return: StatusPtr,
		Params:   []Param{{"ucp_ep_h", "ep"}, {"unsigned", "flags"}, {"ucp_send_callback_t", "cb"}},
		Endpoint: "ep", Faultable: true, ReturnsRequest: true, Summary: "flush an endpoint (old API)",
	},
	{
		Name: "ucp_worker_flush_nb", Return: StatusPtr,
		Params:    []Param{{"ucp_worker_h", "worker"}, {"unsigned", "flags"}, {"ucp_send_callback_t", "cb"}},
		Faultable: true, ReturnsRequest: true, Summary: "flush a worker (old API)",
	},
	{
		Name: "ucp_atomic_post", Return: Status,
		Params: []Param{{"ucp_ep_h", "ep"}, {"ucp_atomic_post_op_t", "opcode"}, {"uint64_t", "value"},
			{"size_t", "op_size"}, {"uint64_t", "remote_addr"}, {"ucp_rkey_h", "rkey"}},
		Size: "op_size", Endpoint: "ep", RemoteAddr: "remote_addr",
		Refusal: "ucp_atomic_post cannot fail in UCX 1.13.1 (it posts and returns UCS_OK); " +
			"a failure there would be one no real program ever sees",
		Summary: "atomic post (old API), observed only",
	},
	{
		Name: "ucp_atomic_fetch_nb", Return: StatusPtr,
		Params: []Param{{"ucp_ep_h", "ep"}, {"ucp_atomic_fetch_op_t", "opcode"}, {"uint64_t", "value"},
			{"void *", "result"}, {"size_t", "op_size"}, {"uint64_t", "remote_addr"}, {"ucp_rkey_h", "rkey"},
			{"ucp_send_callback_t", "cb"}},
		Size: "op_size", Endpoint: "ep", RemoteAddr: "remote_addr",
		Faultable: true, ReturnsRequest: true, Summary: "atomic fetch (old API)",
	},
	{
		Name: "ucp_request_free", Return: Void, Params: []Param{{"void *", "request"}},
		Request: "request", Before: "ucxf_before_request_free", Summary: "free a request, never faulted",
	},
	{
		Name: "ucp_request_release", Return: Void, Params: []Param{{"void *", "request"}},
		Request: "request", Before: "ucxf_before_request_free", Summary: "release a request, never faulted",
	},
	{
		Name: "ucp_request_cancel", Return: Void, Params: []Param{{"ucp_worker_h", "worker"}, {"void *", "request"}},
		Request: "request", Summary: "cancel a request, never faulted",
	},
	{
		Name: "ucp_worker_progress", Return: Unsigned, Params: []Param{{"ucp_worker_h", "worker"}},
		Before: "ucxf_before_worker_progress", NoProbe: true,
		Summary: "progress a worker, never faulted (delivers kill-ep error handlers)",
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

// ErrNotFaultable is wrapped by ParseFaultList for hooks named explicitly
// that never fail.
var ErrNotFaultable = fmt.Errorf("hook cannot be faulted")

// ParseFaultList is ParseList for lists of hooks to fault: a hook named
// explicitly must be one that can fail ("all" simply includes the others,
// which are then counted and recorded but never failed).
func ParseFaultList(text string) ([]ID, error) {
	ids, err := ParseList(text)
	if err != nil || strings.EqualFold(strings.TrimSpace(text), "all") {
		return ids, err
	}
	for _, id := range ids {
		h := &Table[id]
		switch {
		case h.Refusal != "":
			return nil, fmt.Errorf("%w: %s", ErrNotFaultable, h.Refusal)
		case !h.Faultable:
			return nil, fmt.Errorf("%w: %s is never faulted (%s)", ErrNotFaultable, h.Name, h.Summary)
		}
	}
	return ids, nil
}
