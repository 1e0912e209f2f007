// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// observer.bpf.c: the uprobe/uretprobe pair that ucxfault's observer attaches
// to every hooked ucp_* function. Compiled by bpf2go (observer/observer.go)
// with -target amd64,arm64, which defines __TARGET_ARCH_x86 or
// __TARGET_ARCH_arm64 for bpf_tracing.h.
//
// One entry program and one return program serve all hooks: the hook id (the
// row of hooks.Table) arrives as the attach cookie. The probes are attached
// once per libucp file for every process that maps it; the programs keep
// the calls of the processes in the procs map (the watched ones) and return
// at once for any other, so watching more processes adds nothing per call. Entries are pushed on a
// small per-thread stack; a return pops its entry and emits ONE event per
// completed application call through a ring buffer. Calls made from inside
// libucp/libucs/libuct (libucp calls its own exported functions through its
// PLT) are counted and dropped, so that the observer counts the same
// application calls as the injector.
//
// No vmlinux.h: the context of a uprobe is the architecture's user register
// frame (struct pt_regs), whose layout is ABI, so it is declared here.

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
// Same layout as the kernel's struct pt_regs and user space's <asm/ptrace.h>,
// with the user-space field names bpf_tracing.h expects without vmlinux.h.
struct pt_regs {
	unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8;
	unsigned long rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss;
};
#define UCXF_PARM6(x) ((x)->r9)
#elif defined(__TARGET_ARCH_arm64)
// bpf_tracing.h casts the context to struct user_pt_regs, the head of the
// kernel's struct pt_regs on arm64.
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
struct pt_regs;
#define UCXF_PARM6(x) (((const struct user_pt_regs *)(x))->regs[5])
#else
#error "observer.bpf.c supports -target amd64 and arm64 only"
#endif

// Constants of <linux/bpf.h>, which is not included: it pulls in <asm/types.h>
// from a multiarch directory that differs between hosts.
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
	BPF_RB_AVAIL_DATA = 0,
};

// The helper declarations name this type of <linux/bpf.h>.
struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

// UCXF_MAX_HOOKS, the return kinds (enum ucxf_ret_kind) and the marker's
// flags (UCXF_MARK_*, the events' flags): generated from hooks/abi.go,
// shared with the injector and the Go side.
#include "../preload/abi_gen.h"

// Sizes; the Go side reads them from the generated types.
#define STACK_DEPTH 16 // per thread; a power of two
#define MAX_RANGES 32  // executable mappings of libucp/libucs/libuct
#define MAX_THREADS 16384
#define MAX_PROCS 1024 // watched processes; the Go side may raise it

// hook_cfg says, per hook id, which 1-based argument positions hold what
// matters (0 = none). Filled from Go from hooks.Table.
struct hook_cfg {
	__u8 size_arg;
	__u8 ep_arg;
	__u8 raddr_arg;
	__u8 req_arg;
	__u8 ret_kind;
	__u8 enabled;
	// out_ep_arg: the position of a pointer through which the call hands
	// back a new endpoint (ucp_ep_create's ep_p), read at return.
	__u8 out_ep_arg;
	__u8 pad;
};

// lib_ranges is the set of executable mappings whose callers are internal.
struct lib_range {
	__u64 start;
	__u64 end;
};
struct lib_ranges {
	__u32 count;
	__u32 pad;
	struct lib_range r[MAX_RANGES];
};

enum frame_flags {
	FRAME_INTERNAL = 1, // caller inside libucp/libucs/libuct
	FRAME_PREARM = 2,   // entered before all probes were attached
	FRAME_OUT_EP = 4,   // ep holds the address of the new endpoint's handle
};

// frame is one call in progress.
struct frame {
	__u64 entry_ns;
	__u64 ret_sp; // the stack pointer the return will see
	__u64 caller;
	__u64 size;
	__u64 ep;
	__u64 raddr;
	__u64 req;
	__u16 hook;
	__u8 flags;
	__u8 pad[5];
};

// stack is a thread's calls in progress: a circular stack whose oldest
// frame is overwritten when it is full.
struct stack {
	__u32 top;   // frames ever pushed minus popped (index of the next push)
	__u32 count; // frames held, at most STACK_DEPTH
	struct frame f[STACK_DEPTH];
};

// proc is a watched process: its entry in procs is the filter, and it holds
// the code ranges that tell its internal calls apart. The Go side replaces
// the whole value when the process maps more of UCX (a hash map update
// swaps the element: a probe sees the old ranges or the new, never a mix).
struct proc {
	struct lib_ranges internal;  // libucp/libucs/libuct/libucm
	struct lib_ranges forwarder; // the ucxfault injector
};

// event is one completed application call.
struct event {
	__u64 entry_ns;
	__u64 duration_ns;
	__u64 ret; // the raw return register
	__u64 caller;
	__u64 size;
	__u64 ep;
	__u64 raddr;
	__u64 req;
	__u32 tid;
	__u32 pid; // the process (tgid): which part of the recording
	__u16 hook;
	// UCXF_MARK_*, as the injector's marker passes them in its sixth
	// argument: INJECTED, the injector made this failure; COMPLETION,
	// not a call but the outcome of the operation whose request is req,
	// delivered now (req 0: of this thread's call that just returned);
	// UNLEARNED, with COMPLETION, the request was freed before the
	// failure reached the application.
	__u16 flags;
	__u8 pad2[4];
};

// Counter indexes of the per-CPU counters map.
enum counter {
	CNT_CALLS = 0,         // events submitted
	CNT_DROPPED = 1,       // bpf_ringbuf_reserve failed
	CNT_UNMATCHED_RET = 2, // a return without its entry
	CNT_OVERWRITTEN = 3,   // a frame overwritten by a full stack
	CNT_STALE = 4,         // a frame whose return was never seen
	CNT_NO_STACK = 5,      // the stack map was full: entry not recorded
	CNT_INTERNAL = 6,      // internal calls dropped
	CNT_MAX = 7,
};

// counts are one process's counters on one CPU.
struct counts {
	__u64 c[CNT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

// Events do not wake the reader one by one: a wake-up (irq_work, then a
// context switch to the reader) costs more than the probe itself. The
// reader polls with a short deadline, and a wake-up is forced once a
// quarter of the ring waits.
#define WAKEUP_BYTES (2 << 20)

static __always_inline void submit(struct event *e)
{
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
										     : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, UCXF_MAX_HOOKS);
	__type(key, __u32);
	__type(value, struct hook_cfg);
} hook_cfgs SEC(".maps");

// procs holds the watched processes, by tgid. The forwarder ranges are the
// executable mappings of the ucxfault injector: its wrappers call the real
// function, so the return address a probe sees is the wrapper's, and the
// application's is one frame further up.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32); // tgid
	__type(value, struct proc);
} procs SEC(".maps");

// seen holds the unwatched processes already announced to the Go side
// (HOOK_HELLO), so that each is announced once, not at every call.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); // tgid
	__type(value, __u8);
} seen SEC(".maps");

// HOOK_HELLO is the hook of an event that is not a call: a process that is
// not watched entered a probed function (discover is set). The Go side
// decides whether to watch it: a process that loads an already probed
// libucp is watched at its first call, not at the next scan of /proc.
#define HOOK_HELLO 0xffff

// discover is set when the observer watches every process (--all).
const volatile __u8 discover = 0;

// pidns_dev and pidns_ino name the observer's pid namespace when it is not
// the initial one (a container without the host's pids): the programs then
// see every process by its pid in that namespace, as the observer's /proc
// shows it, and skip the processes that namespace cannot see.
const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0;

// current returns the calling thread as tgid << 32 | tid, as the observer
// sees them, or 0 for a thread outside its pid namespace.
static __always_inline __u64 current(void)
{
	if (!pidns_ino)
		return bpf_get_current_pid_tgid();
	struct bpf_pidns_info ns = {};
	if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
		return 0;
	return (__u64)ns.tgid << 32 | ns.pid;
}

// stacks are keyed by pid_tgid (tgid << 32 | tid), so that the Go side can
// drop the stacks of a process that exited.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u64); // pid_tgid
	__type(value, struct stack);
} stacks SEC(".maps");

// A zeroed stack to insert new threads from (too big for the BPF stack).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack);
} empty_stack SEC(".maps");

// counters are per process (inserted by the Go side when it watches one)
// and per CPU, so that no cache line is shared between CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_PROCS);
	__type(key, __u32); // tgid
	__type(value, struct counts);
} counters SEC(".maps");

// armed_ns is set once the first file's probes are attached; calls entered
// before it are dropped silently. (A process watched later is added to
// procs only once the probes of its libucp are in place.) stop_ns is set before detaching: no new entries are
// recorded and unmatched returns are no longer counted.
volatile __u64 armed_ns = 0;
volatile __u64 stop_ns = 0;

// Force BTF for types Go reads (bpf2go -type) that no map refers to.
const struct event *unused_event __attribute__((unused));
const enum counter *unused_counter __attribute__((unused));

static __always_inline void count(__u32 tgid, __u32 idx)
{
	struct counts *c = bpf_map_lookup_elem(&counters, &tgid);
	if (c && idx < CNT_MAX)
		__sync_fetch_and_add(&c->c[idx], 1);
}

// hello announces the unwatched process tgid once.
static __attribute__((noinline)) int hello(__u32 tgid)
{
	__u8 one = 1;
	if (!tgid || bpf_map_lookup_elem(&seen, &tgid))
		return 0;
	if (bpf_map_update_elem(&seen, &tgid, &one, BPF_NOEXIST))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0; // the next scan of /proc finds it
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = tgid;
	e->hook = HOOK_HELLO;
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

// args holds the first six integer arguments of a call (and two zeros, so
// that any index masked with 7 is in bounds).
struct args {
	__u64 a[8];
};

// read_args loads every argument register at its fixed offset: the verifier
// rejects a context access at a computed offset, which is what the compiler
// makes of a switch on the argument position.
static __always_inline void read_args(struct pt_regs *ctx, struct args *x)
{
	__u64 v;
	v = PT_REGS_PARM1(ctx);
	barrier_var(v);
	x->a[0] = v;
	v = PT_REGS_PARM2(ctx);
	barrier_var(v);
	x->a[1] = v;
	v = PT_REGS_PARM3(ctx);
	barrier_var(v);
	x->a[2] = v;
	v = PT_REGS_PARM4(ctx);
	barrier_var(v);
	x->a[3] = v;
	v = PT_REGS_PARM5(ctx);
	barrier_var(v);
	x->a[4] = v;
	v = UCXF_PARM6(ctx);
	barrier_var(v);
	x->a[5] = v;
	x->a[6] = 0;
	x->a[7] = 0;
}

// arg returns the argument at 1-based position n, 0 for none.
static __always_inline __u64 arg(const struct args *x, __u8 n)
{
	if (n == 0 || n > 6)
		return 0;
	return x->a[(n - 1) & 7];
}

static __always_inline int in_ranges(const struct lib_ranges *lr, __u64 caller)
{
	__u32 n = lr->count;
	for (__u32 i = 0; i < MAX_RANGES; i++) {
		if (i >= n)
			break;
		if (caller >= lr->r[i].start && caller < lr->r[i].end)
			return 1;
	}
	return 0;
}

SEC("uprobe")
int ucxf_entry(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	__u32 tgid = (__u32)(pid_tgid >> 32);
	struct proc *p = bpf_map_lookup_elem(&procs, &tgid);
	if (!p) {
		if (discover)
			hello(tgid);
		return 0;
	}
	if (stop_ns)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);
	struct hook_cfg *cfg = bpf_map_lookup_elem(&hook_cfgs, &id);
	if (!cfg || !cfg->enabled)
		return 0;

	struct stack *st = bpf_map_lookup_elem(&stacks, &pid_tgid);
	if (!st) {
		__u32 zero = 0;
		struct stack *empty = bpf_map_lookup_elem(&empty_stack, &zero);
		if (!empty)
			return 0;
		bpf_map_update_elem(&stacks, &pid_tgid, empty, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stacks, &pid_tgid);
		if (!st) {
			count(tgid, CNT_NO_STACK);
			return 0;
		}
	}

	// The caller's return address and the stack pointer the return will
	// see. x86-64: at the first instruction the return address is at *sp,
	// and `ret` pops it (sp + 8 at return). arm64: it is in the link
	// register and sp is the same at entry and at return.
	__u64 sp = PT_REGS_SP(ctx);
	__u64 caller = 0;
	__u64 ret_sp;
#if defined(__TARGET_ARCH_x86)
	bpf_probe_read_user(&caller, sizeof(caller), (void *)sp);
	ret_sp = sp + 8;
#else
	caller = PT_REGS_RET(ctx);
	ret_sp = sp;
#endif

	// Called through the injector: its wrapper (or the wrapper's slow
	// half) called the real function, so the return address seen here is
	// the injector's. Its frames keep the frame pointer (it is built with
	// -fno-omit-frame-pointer), and at the real function's first
	// instruction the frame pointer register is still the injector's:
	// walk up to three frames while the return address stays in it.
	// (Probing the wrappers themselves would be simpler, but a uretprobe
	// replaces the return address the injector reads to tell internal
	// calls apart.)
	{
#if defined(__TARGET_ARCH_x86)
		__u64 fp = ctx->rbp;
#else
		__u64 fp = ((const struct user_pt_regs *)ctx)->regs[29];
#endif
		for (int i = 0; i < 3; i++) {
			__u64 outer = 0, next = 0;
			if (!in_ranges(&p->forwarder, caller))
				break;
			if (bpf_probe_read_user(&outer, sizeof(outer), (void *)(fp + 8)) ||
			    bpf_probe_read_user(&next, sizeof(next), (void *)fp))
				break;
			caller = outer;
			fp = next;
		}
	}

	__u8 flags = 0;
	if (in_ranges(&p->internal, caller))
		flags |= FRAME_INTERNAL;
	if (!armed_ns)
		flags |= FRAME_PREARM;

	__u32 top = st->top;
	struct frame *f = &st->f[top & (STACK_DEPTH - 1)];
	if (st->count >= STACK_DEPTH) {
		// The slot of the next push holds the oldest frame: its return
		// will never be matched.
		if (!(f->flags & (FRAME_INTERNAL | FRAME_PREARM)))
			count(tgid, CNT_OVERWRITTEN);
	} else {
		st->count++;
	}
	f->entry_ns = now;
	f->ret_sp = ret_sp;
	f->caller = caller;
	f->hook = (__u16)id;
	f->flags = flags;
	struct args x;
	read_args(ctx, &x);
	f->size = arg(&x, cfg->size_arg);
	f->ep = arg(&x, cfg->ep_arg);
	if (cfg->out_ep_arg) {
		f->ep = arg(&x, cfg->out_ep_arg);
		flags |= FRAME_OUT_EP;
		f->flags = flags;
	}
	f->raddr = arg(&x, cfg->raddr_arg);
	f->req = arg(&x, cfg->req_arg);
	st->top = top + 1;
	return 0;
}

SEC("uretprobe")
int ucxf_return(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	__u32 tgid = (__u32)(pid_tgid >> 32);
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u32 id = (__u32)bpf_get_attach_cookie(ctx);
	__u64 sp = PT_REGS_SP(ctx);
	__u32 tid = (__u32)pid_tgid;

	// No stack: this thread has entered no call since its process was
	// watched (the stack is made at the first entry, or counted
	// CNT_NO_STACK when it could not be), so this call began before: the
	// return of a call the observer never started to record, not a loss.
	struct stack *st = bpf_map_lookup_elem(&stacks, &pid_tgid);
	if (!st)
		return 0;

	// Frames deeper than this return (a smaller return sp) belong to
	// calls whose return was never seen (a longjmp, or a probe attached
	// in between): discard them. The frame of this return has exactly
	// this sp and this hook.
	struct frame fr;
	int found = 0;
	for (int i = 0; i < STACK_DEPTH; i++) {
		if (st->count == 0)
			break;
		struct frame *f = &st->f[(st->top - 1) & (STACK_DEPTH - 1)];
		if (f->ret_sp < sp) {
			if (!(f->flags & (FRAME_INTERNAL | FRAME_PREARM)))
				count(tgid, CNT_STALE);
			st->top--;
			st->count--;
			continue;
		}
		if (f->ret_sp == sp && f->hook == id) {
			fr = *f;
			found = 1;
			st->top--;
			st->count--;
		}
		break;
	}
	if (!found) {
		if (!stop_ns)
			count(tgid, CNT_UNMATCHED_RET);
		return 0;
	}
	if (fr.flags & FRAME_PREARM)
		return 0;
	if (fr.flags & FRAME_INTERNAL) {
		count(tgid, CNT_INTERNAL);
		return 0;
	}

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(tgid, CNT_DROPPED);
		return 0;
	}
	e->entry_ns = fr.entry_ns;
	e->duration_ns = now - fr.entry_ns;
	e->ret = PT_REGS_RC(ctx);
	e->caller = fr.caller;
	e->size = fr.size;
	e->ep = fr.ep;
	if (fr.flags & FRAME_OUT_EP) {
		// The new endpoint, once the call succeeded (ucs_status_t is a
		// packed enum: its low byte); 0 otherwise.
		__u64 h = 0;
		if ((e->ret & 0xff) == 0 && fr.ep)
			bpf_probe_read_user(&h, sizeof(h), (void *)fr.ep);
		e->ep = h;
	}
	e->raddr = fr.raddr;
	e->req = fr.req;
	e->tid = tid;
	e->pid = tgid;
	e->hook = fr.hook;
	e->flags = 0;
	submit(e);
	count(tgid, CNT_CALLS);
	return 0;
}

// ucxf_marker fires on the injector's ucxf_fault_marker(hook, code, ep,
// size, request, flags): a call the injector failed without calling libucp,
// which the probes on libucp therefore never see (flags UCXF_MARK_INJECTED), or
// an outcome the injector handed the application on completion, through a
// callback or a status query (UCXF_MARK_COMPLETION, with the operation's
// request, so that the reader gives it to that operation).
SEC("uprobe")
int ucxf_marker(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	__u32 tgid = (__u32)(pid_tgid >> 32);
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0;
	if (stop_ns || !armed_ns)
		return 0;
	__u32 id = (__u32)PT_REGS_PARM1(ctx);
	struct hook_cfg *cfg = bpf_map_lookup_elem(&hook_cfgs, &id);
	if (!cfg || !cfg->enabled)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(tgid, CNT_DROPPED);
		return 0;
	}
	__s64 code = (__s32)PT_REGS_PARM2(ctx);
	e->entry_ns = bpf_ktime_get_ns();
	e->duration_ns = 0;
	// As the wrapper returns it: UCS_STATUS_PTR(code), or the status byte.
	e->ret = cfg->ret_kind == UCXF_RET_STATUS_PTR ? (__u64)code : (__u64)(code & 0xff);
	e->caller = 0;
	e->size = PT_REGS_PARM4(ctx);
	e->ep = PT_REGS_PARM3(ctx);
	e->raddr = 0;
	e->req = PT_REGS_PARM5(ctx);
	e->tid = (__u32)pid_tgid;
	e->pid = tgid;
	e->hook = (__u16)id;
	e->flags = (__u16)(UCXF_PARM6(ctx) & (UCXF_MARK_INJECTED | UCXF_MARK_COMPLETION | UCXF_MARK_UNLEARNED));
	submit(e);
	count(tgid, CNT_CALLS);
	return 0;
}

// ucxf_ep_err fires on libucp's own ucp_ep_invoke_err_cb(ep, status), the
// function through which UCX calls an endpoint's error handler once the
// endpoint failed (src/ucp/core/ucp_ep.c; exported by 1.13.1 and 1.22.0):
// a real endpoint failure, with the endpoint and the code the handler
// gets. ucs_status_t is a packed enum: the status is the low byte of the
// second argument's register. It is not a call of the application, so it
// goes out flagged UCXF_MARK_EP_FAILURE, whatever the hook filters say.
SEC("uprobe")
int ucxf_ep_err(struct pt_regs *ctx)
{
	__u64 pid_tgid = current();
	__u32 tgid = (__u32)(pid_tgid >> 32);
	if (!bpf_map_lookup_elem(&procs, &tgid))
		return 0;
	if (stop_ns || !armed_ns)
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(tgid, CNT_DROPPED);
		return 0;
	}
	e->entry_ns = bpf_ktime_get_ns();
	e->duration_ns = 0;
	e->ret = (__u64)(PT_REGS_PARM2(ctx) & 0xff);
	e->caller = 0;
	e->size = 0;
	e->ep = PT_REGS_PARM1(ctx);
	e->raddr = 0;
	e->req = 0;
	e->tid = (__u32)pid_tgid;
	e->pid = tgid;
	e->hook = 0;
	e->flags = UCXF_MARK_EP_FAILURE;
	submit(e);
	count(tgid, CNT_CALLS);
	return 0;
}
