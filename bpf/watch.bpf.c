// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// watch.bpf.c: the probes of `ucxfault watch`, the always-on failure watch.
// Compiled by bpf2go (observer/watch.go) with -target amd64,arm64.
//
// Unlike observer.bpf.c, nothing here runs on a data-path call: the probes
// sit only on libucp's failure path (ucp_ep_set_failed or
// ucp_ep_set_lanes_failed, the functions that schedule them,
// ucp_ep_invoke_err_cb, ucp_ep_reqs_purge, ucp_ep_req_purge,
// ucp_ep_err_pending_purge), which runs only when an endpoint fails, and on
// the rare endpoint lifetime calls (ucp_ep_create, ucp_ep_close_nbx,
// ucp_ep_close_nb, ucp_ep_destroy). A put, a get or a poll takes no trap.
// The caller of the scheduling function tells a kill of the ucxfault
// injector from libucp's own. Every event goes to user space, which keeps
// the processes it watches (--comm, --cgroup) and drops the others: at this
// rate a filter in the kernel would save nothing.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
	unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
};
#elif defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
struct pt_regs;
#else
#error "watch.bpf.c supports -target amd64 and arm64 only"
#endif

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_ANY = 0,
};
enum {
	BPF_RB_FORCE_WAKEUP = 2,
};

struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// The kinds of watch events (the attach cookie of the generic programs).
enum wkind {
	WK_SET_FAILED = 1, // ucp_ep_set_failed(ep, lane, status) (1.13)
	WK_ERR_CB = 2,     // ucp_ep_invoke_err_cb(ep, status)
	WK_REQS_PURGE = 3, // ucp_ep_reqs_purge(ep, status)
	WK_REQ_PURGE = 4,  // ucp_ep_req_purge(ep, req, status, recursive)
	WK_CREATE = 5,     // ucp_ep_create(worker, params, ep_p) returned
	WK_CLOSE_NBX = 6,  // ucp_ep_close_nbx(ep, param)
	WK_CLOSE_NB = 7,   // ucp_ep_close_nb(ep, mode)
	WK_DESTROY = 8,    // ucp_ep_destroy(ep)
	WK_PENDING_PURGE = 10, // ucp_ep_err_pending_purge(uct_req, (void *)status)
	WK_SET_LANES_FAILED = 11, // ucp_ep_set_lanes_failed(ep, lanes, status) (1.21 on)
	// ucp_ep_set_failed_schedule(ep, lane, status) (up to 1.20) and
	// ucp_ep_set_lanes_failed_schedule(ep, lanes, status) (1.21 on): who
	// scheduled the failure, libucp or the ucxfault injector's kill (arg:
	// the caller's return address).
	WK_SCHEDULE = 12,
};

// Offsets in ucp_ep_params_t (ucp/api/ucp.h, the same in every release:
// UCX appends fields) and its field_mask bits.
#define PARAMS_ADDRESS 8
#define PARAMS_SOCKADDR 56
#define FIELD_REMOTE_ADDRESS (1 << 0)
#define FIELD_SOCK_ADDR (1 << 4)
#define FIELD_CONN_REQUEST (1 << 6)

// wevent is one watch event. ep is the endpoint (for create: the one
// returned); arg is the request (REQ_PURGE), the flags or mode (close);
// status is the UCX code; peer holds, for create, the first bytes of the
// sockaddr (peer_kind 1) or of the worker address (peer_kind 2) passed.
struct wevent {
	__u64 ts_ns;
	__u64 ep;
	__u64 arg;
	__u32 pid; // the process (tgid)
	__u32 tid;
	__s32 status;
	__u16 kind;
	__u8 peer_kind;
	__u8 pad;
	__u8 peer[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} wevents SEC(".maps");

// lost counts the events the ring buffer had no room for (index 0).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} wlost SEC(".maps");

// creating holds a thread's ucp_ep_create in progress: its params and ep_p.
// LRU: a thread that dies inside ucp_ep_create leaves an entry that ages
// out instead of filling the map.
struct create_args {
	__u64 params;
	__u64 ep_p;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); // pid_tgid
	__type(value, struct create_args);
} creating SEC(".maps");

// stop is set before detaching: no more events.
volatile __u64 stop = 0;

// As in observer.bpf.c: the watch's own pid namespace when it is not the
// initial one, so that pids are the ones its /proc shows.
const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0;

const struct wevent *unused_wevent __attribute__((unused));

static __always_inline __u64 current(void)
{
	if (!pidns_ino)
		return bpf_get_current_pid_tgid();
	struct bpf_pidns_info ns = {};
	if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
		return 0;
	return (__u64)ns.tgid << 32 | ns.pid;
}

static __always_inline struct wevent *reserve(__u64 pid_tgid, __u16 kind)
{
	struct wevent *e = bpf_ringbuf_reserve(&wevents, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *c = bpf_map_lookup_elem(&wlost, &zero);
		if (c)
			*c += 1;
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = (__u32)(pid_tgid >> 32);
	e->tid = (__u32)pid_tgid;
	e->kind = kind;
	return e;
}

// ucs_status_t is a packed enum (one byte): sign-extend the low byte.
static __always_inline __s32 status_of(__u64 reg)
{
	return (__s32)(__s8)(reg & 0xff);
}

// watch_fail serves the failure path and the closes, by cookie (enum wkind).
SEC("uprobe")
int watch_fail(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	if (!pid_tgid || stop)
		return 0;
	__u16 kind = (__u16)bpf_get_attach_cookie(ctx);
	struct wevent *e = reserve(pid_tgid, kind);
	if (!e)
		return 0;
	e->ep = PT_REGS_PARM1(ctx);
	switch (kind) {
	case WK_SET_FAILED:
	case WK_SET_LANES_FAILED:
		e->status = status_of(PT_REGS_PARM3(ctx));
		break;
	case WK_ERR_CB:
	case WK_REQS_PURGE:
		e->status = status_of(PT_REGS_PARM2(ctx));
		break;
	case WK_REQ_PURGE:
		e->arg = PT_REGS_PARM2(ctx);
		e->status = status_of(PT_REGS_PARM3(ctx));
		break;
	case WK_CLOSE_NBX:
		e->arg = PT_REGS_PARM2(ctx);
		break;
	case WK_CLOSE_NB:
		e->arg = PT_REGS_PARM2(ctx);
		break;
	case WK_SCHEDULE:
		e->status = status_of(PT_REGS_PARM3(ctx));
		{
			__u64 caller = 0;
#if defined(__TARGET_ARCH_x86)
			// At the first instruction the return address is at *sp.
			bpf_probe_read_user(&caller, sizeof(caller), (void *)PT_REGS_SP(ctx));
#else
			caller = PT_REGS_RET(ctx); // the link register
#endif
			e->arg = caller;
		}
		break;
	case WK_PENDING_PURGE:
		// A request waiting in a transport's pending queue, failed by
		// the lanes' purge: no endpoint argument (ep stays 0, user space
		// gives it to the endpoint failing in this thread).
		e->ep = 0;
		e->arg = PT_REGS_PARM1(ctx);
		e->status = status_of(PT_REGS_PARM2(ctx));
		break;
	default:
		break;
	}
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("uprobe")
int watch_create(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	if (!pid_tgid || stop)
		return 0;
	struct create_args a = {
		.params = PT_REGS_PARM2(ctx),
		.ep_p = PT_REGS_PARM3(ctx),
	};
	bpf_map_update_elem(&creating, &pid_tgid, &a, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int watch_created(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	if (!pid_tgid)
		return 0;
	struct create_args *a = bpf_map_lookup_elem(&creating, &pid_tgid);
	if (!a)
		return 0;
	struct create_args c = *a;
	bpf_map_delete_elem(&creating, &pid_tgid);
	if (stop)
		return 0;
	struct wevent *e = reserve(pid_tgid, WK_CREATE);
	if (!e)
		return 0;
	e->status = status_of(PT_REGS_RC(ctx));
	__u64 ep = 0;
	if (c.ep_p)
		bpf_probe_read_user(&ep, sizeof(ep), (void *)c.ep_p);
	e->ep = ep;
	__u64 mask = 0;
	if (c.params)
		bpf_probe_read_user(&mask, sizeof(mask), (void *)c.params);
	e->arg = mask;
	__u64 p = 0;
	if (mask & FIELD_SOCK_ADDR) {
		if (!bpf_probe_read_user(&p, sizeof(p), (void *)(c.params + PARAMS_SOCKADDR)) && p &&
		    !bpf_probe_read_user(e->peer, 28, (void *)p))
			e->peer_kind = 1;
	} else if (mask & FIELD_REMOTE_ADDRESS) {
		if (!bpf_probe_read_user(&p, sizeof(p), (void *)(c.params + PARAMS_ADDRESS)) && p &&
		    !bpf_probe_read_user(e->peer, 16, (void *)p))
			e->peer_kind = 2;
	}
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}
