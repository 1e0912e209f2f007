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

	"github.com/ucxfault/ucxfault/internal/abi"
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
	// OutEndpoint names the parameter through which the function hands
	// back a new endpoint (ucp_ep_create's ep_p): the observer reads the
	// handle there when the call returns UCS_OK, for the endpoint's create
	// event.
	OutEndpoint string
	// ClosesEndpoint: the function closes its endpoint (Endpoint). A
	// recording logs the endpoint's close event just before the call, and
	// the endpoint's number retires (docs/recording-format.md).
	ClosesEndpoint bool
	// Rewrite names a C function of the injector that the wrapper calls
	// first, on every call, as `RewriteArg = Rewrite(RewriteArg)`: the
	// argument libucp is given in place of the application's (ucp_ep_create's
	// parameters, with the error handler routed through the injector so
	// that its calls are recorded). It returns its argument when it has
	// nothing to change.
	Rewrite, RewriteArg string
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
	// Since is the first UCX release whose libucp exports the function,
	// "major.minor"; empty for the functions of every release from 1.13
	// on (the oldest this project is tested with). A wrapper of a newer
	// function forwards only where the running libucp exports it (else it
	// returns UCS_ERR_UNSUPPORTED and says so once), the observer probes it
	// only there, and `hook list` says which processes have it.
	Since string
	// Header names the UCX header that declares the function when it is
	// not ucp.h (which the injector includes): the generated C then
	// declares it itself from Params, whatever UCX headers it is built
	// with. A function newer than the build's ucp.h (Since) gets its own
	// declaration too.
	Header string
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
		Before: "ucxf_before_ep_close", ClosesEndpoint: true,
		Faultable: true, ReturnsRequest: true, Summary: "close an endpoint",
	},
	// The older close calls: libucp's own ucp_ep_close_nbx does the work
	// (ucp_ep_destroy calls ucp_disconnect_nb, which calls ucp_ep_close_nb,
	// which calls ucp_ep_close_nbx, each through libucp's PLT in 1.13.1),
	// so they are observed, for the endpoint's close, and never faulted.
	{
		Name: "ucp_ep_close_nb", Return: StatusPtr, Params: []Param{{"ucp_ep_h", "ep"}, {"unsigned", "mode"}},
		Endpoint: "ep", Before: "ucxf_before_ep_close_nb", ClosesEndpoint: true, ReturnsRequest: true,
		Summary: "close an endpoint (the older call), never faulted",
	},
	{
		Name: "ucp_disconnect_nb", Return: StatusPtr, Params: []Param{{"ucp_ep_h", "ep"}},
		Endpoint: "ep", Before: "ucxf_before_ep_disconnect", ClosesEndpoint: true, ReturnsRequest: true,
		Summary: "close an endpoint (deprecated), never faulted",
	},
	{
		Name: "ucp_ep_destroy", Return: Void, Params: []Param{{"ucp_ep_h", "ep"}},
		Endpoint: "ep", Before: "ucxf_before_ep_disconnect", ClosesEndpoint: true,
		Summary: "close an endpoint and wait (deprecated), never faulted",
	},
	{
		Name: "ucp_ep_create", Return: Status,
		Params: []Param{{"ucp_worker_h", "worker"}, {"const ucp_ep_params_t *", "params"}, {"ucp_ep_h *", "ep_p"}},
		Before: "ucxf_peer_before_create", After: "ucxf_after_ep_create",
		Rewrite: "ucxf_ep_params_rewrite", RewriteArg: "params", OutEndpoint: "ep_p",
		OptIn: true, Faultable: true, Summary: "create an endpoint",
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
		// From 1.14 on it waits for completion and returns the operation's
		// status; 1.13 returns an immediate error (a failed endpoint).
		Faultable: true, Summary: "atomic post (old API)",
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
		Request: "request", Before: "ucxf_before_request_release", Summary: "release a request, never faulted",
	},
	{
		Name: "ucp_request_cancel", Return: Void, Params: []Param{{"ucp_worker_h", "worker"}, {"void *", "request"}},
		Request: "request", Before: "ucxf_before_request_cancel",
		Summary: "cancel a request, never faulted (ends a held completion)",
	},
	{
		Name: "ucp_worker_progress", Return: Unsigned, Params: []Param{{"ucp_worker_h", "worker"}},
		Before: "ucxf_before_worker_progress", NoProbe: true,
		Summary: "progress a worker, never faulted (delivers kill-ep error handlers)",
	},
	// Set-up calls of NIXL's UCX backend. Those that can fail are opt-in
	// set-up hooks, like ucp_ep_create; the others are observed.
	{
		Name: "ucp_rkey_pack", Return: Status,
		Params: []Param{{"ucp_context_h", "context"}, {"ucp_mem_h", "memh"}, {"void **", "rkey_buffer_p"},
			{"size_t *", "size_p"}},
		OptIn: true, Faultable: true, Summary: "pack a memory handle's remote key",
	},
	{
		Name: "ucp_mem_query", Return: Status,
		Params:  []Param{{"const ucp_mem_h", "memh"}, {"ucp_mem_attr_t *", "attr"}},
		Summary: "query a memory handle, never faulted (returns UCS_OK in every release)",
	},
	{
		Name: "ucp_worker_arm", Return: Status, Params: []Param{{"ucp_worker_h", "worker"}},
		OptIn: true, Faultable: true, Summary: "arm a worker's event file descriptor",
	},
	{
		Name: "ucp_worker_get_efd", Return: Status, Params: []Param{{"ucp_worker_h", "worker"}, {"int *", "fd"}},
		OptIn: true, Faultable: true, Summary: "get a worker's event file descriptor",
	},
	{
		Name: "ucp_worker_query", Return: Status,
		Params: []Param{{"ucp_worker_h", "worker"}, {"ucp_worker_attr_t *", "attr"}},
		OptIn:  true, Faultable: true, Summary: "query a worker (its address, thread mode)",
	},
	{
		Name: "ucp_worker_set_am_recv_handler", Return: Status,
		Params: []Param{{"ucp_worker_h", "worker"}, {"const ucp_am_handler_param_t *", "param"}},
		OptIn:  true, Faultable: true, Summary: "install an active message handler",
	},
	{
		Name: "ucp_ep_evaluate_perf", Return: Status,
		Params: []Param{{"ucp_ep_h", "ep"}, {"const ucp_ep_evaluate_perf_param_t *", "param"},
			{"ucp_ep_evaluate_perf_attr_t *", "attr"}},
		Endpoint: "ep",
		Summary:  "estimate an endpoint's transfer time, observed only (fails only on invalid input)",
	},
	// The host side of the GPU device API (ucp/api/device/ucp_host.h, which
	// ucp.h does not include). Its handle types are opaque pointers here.
	// The GPU-initiated data calls (ucp_device_put and friends) are inlined
	// into CUDA kernels: no symbol, no hook.
	{
		Name: "ucp_device_local_mem_list_create", Return: Status,
		Params: []Param{{"const void *", "params"}, {"void **", "mem_list_h"}},
		Since:  "1.21", Header: "ucp/api/device/ucp_host.h",
		OptIn: true, Faultable: true, Summary: "create a GPU device list of local memory",
	},
	{
		Name: "ucp_device_remote_mem_list_create", Return: Status,
		Params: []Param{{"const void *", "params"}, {"void **", "mem_list_h"}},
		Since:  "1.21", Header: "ucp/api/device/ucp_host.h",
		OptIn: true, Faultable: true, Summary: "create a GPU device list of remote memory",
	},
	{
		Name: "ucp_device_mem_list_release", Return: Void, Params: []Param{{"void *", "mem_list_h"}},
		Since: "1.20", Header: "ucp/api/device/ucp_host.h",
		Summary: "release a GPU device memory list, never faulted",
	},
}

// SinceVersion returns the major and minor release of h.Since, 1.13 when
// it is empty.
func (h *Hook) SinceVersion() (major, minor int) {
	if h.Since == "" {
		return 1, 13
	}
	if _, err := fmt.Sscanf(h.Since, "%d.%d", &major, &minor); err != nil {
		return 1, 13
	}
	return major, minor
}

// MaxHooks bounds the table; the C state and the observer's hook_cfgs map
// are sized by it (hooks.ABI, generated into internal/abi).
const MaxHooks = abi.MaxHooks

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
	if len(name) > 64 {
		name = name[:61] + "..."
	}
	if near := Closest(n); near != "" {
		return 0, nil, fmt.Errorf("%w %q: did you mean %s? (ucxfault hook list shows every hook)", ErrUnknownHook, name, near)
	}
	return 0, nil, fmt.Errorf("%w %q (ucxfault hook list shows every hook; all names every one)", ErrUnknownHook, name)
}

// Closest returns the hook name nearest to name (with or without the ucp_
// prefix) by edit distance, or "" when none is within a third of the
// name's length: a typo gets a suggestion, a different word does not.
func Closest(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "ucp_") {
		n = "ucp_" + n
	}
	if len(n) > 64 {
		return ""
	}
	best, bestD := "", len(n)/3+1
	for _, h := range Table {
		if d := editDistance(n, h.Name); d < bestD {
			best, bestD = h.Name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
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
		return nil, fmt.Errorf("empty hook list (give hook names separated by commas, or all; ucxfault hook list shows every hook)")
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
