/*
 * ucxfault injector: the call log, and what the observer is shown.
 *
 * The log is a ring of fixed-size records. A writer takes an index with one
 * fetch-add (recording is opt-in; when it is off no hook touches the ring),
 * fills the slot and stamps it; the Go reader copies a slot and keeps it only
 * when the stamp matches before and after, so a torn or overwritten record is
 * counted as lost, never returned.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ucxfault.h"
#include "record.h"
#include "endpoint.h"

/* The stamp of a slot being filled: never index + 1. */
#define UCXF_REC_WRITING UINT64_MAX
#define UCXF_REC_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define UCXF_REC_GET(dst, field) ((dst) = __atomic_load_n(&(field), __ATOMIC_RELAXED))

static struct ucxf_record *ucxf_ring;
static uint64_t ucxf_ring_mask;
static uint64_t ucxf_ring_head;

int ucxf_record_alloc(uint64_t capacity)
{
    uint64_t cap = 1;
    struct ucxf_record *ring;

    if (__atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE) != NULL) {
        return 0; /* allocated once: hooks may be writing into it */
    }
    while (cap < capacity) {
        cap <<= 1;
    }
    ring = calloc(cap, sizeof(*ring));
    if (ring == NULL) {
        return -1;
    }
    ucxf_ring_mask = cap - 1;
    __atomic_store_n(&ucxf_ring, ring, __ATOMIC_RELEASE);
    return 0;
}

uint64_t ucxf_record_capacity(void)
{
    return ucxf_ring != NULL ? ucxf_ring_mask + 1 : 0;
}

uint64_t ucxf_record_head(void)
{
    return __atomic_load_n(&ucxf_ring_head, __ATOMIC_ACQUIRE);
}

void ucxf_record_append(const struct ucxf_call *c, int status, void *request, uint64_t now)
{
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    struct ucxf_record *slot;
    uint64_t i, stamp;

    if (ring == NULL) {
        return;
    }
    i    = __atomic_fetch_add(&ucxf_ring_head, 1, __ATOMIC_RELAXED);
    slot = &ring[i & ucxf_ring_mask];
    /* Claim the slot: a writer descheduled after taking its index may
     * meet the writer one lap ahead in the same slot, and two writers
     * filling one slot would leave a record of mixed fields under a valid
     * stamp. The slot goes to one of them; a record that finds the slot
     * held, or holding a newer record, is dropped (the reader counts it
     * lost, as an overwritten one). */
    stamp = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED);
    if (stamp == UCXF_REC_WRITING || stamp > i + 1 ||
        !__atomic_compare_exchange_n(&slot->seq, &stamp, UCXF_REC_WRITING, 0, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED)) {
        return;
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
    /* Relaxed atomic stores: plain moves, but a reader copying the slot
     * while a lapping writer fills it is not a data race (the stamp tells
     * it to drop what it read). */
    UCXF_REC_SET(slot->t_ns, c->t0);
    UCXF_REC_SET(slot->duration_ns, now > c->t0 ? now - c->t0 : 0);
    UCXF_REC_SET(slot->size, c->size);
    UCXF_REC_SET(slot->req, (uint64_t)(uintptr_t)(c->req != NULL ? c->req : request));
    UCXF_REC_SET(slot->thread, c->thread != NULL ? c->thread->ordinal : 0);
    UCXF_REC_SET(slot->tid, c->thread != NULL ? (uint32_t)c->thread->tid : 0);
    UCXF_REC_SET(slot->ep, c->ep != NULL ? ucxf_ep_ordinal(c->ep) : -1);
    UCXF_REC_SET(slot->hook, (uint16_t)c->hook);
    UCXF_REC_SET(slot->status, (int8_t)status);
    UCXF_REC_SET(slot->flags, (uint8_t)((c->injected ? UCXF_REC_INJECTED : 0) |
                                        (c->deferred_code ? UCXF_REC_DEFERRED : 0)));
    __atomic_store_n(&slot->seq, i + 1, __ATOMIC_RELEASE);
}

/* Logs an outcome delivered on completion (ucxf_delivered): not a call, but
 * the final status of the operation of hook that returned request. */
void ucxf_record_delivery(int hook, int status, void *ep, uint64_t size, void *request, int mark, uint64_t now)
{
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    struct ucxf_record *slot;
    uint64_t i;

    if (ring == NULL) {
        return;
    }
    i    = __atomic_fetch_add(&ucxf_ring_head, 1, __ATOMIC_RELAXED);
    slot = &ring[i & ucxf_ring_mask];
    __atomic_store_n(&slot->seq, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    slot->t_ns        = now;
    slot->duration_ns = 0;
    slot->size        = size;
    slot->req         = (uint64_t)(uintptr_t)request;
    slot->thread      = ucxf_self != NULL ? ucxf_self->ordinal : 0;
    slot->tid         = ucxf_self != NULL ? (uint32_t)ucxf_self->tid : 0;
    slot->ep          = ep != NULL ? ucxf_ep_ordinal(ep) : -1;
    slot->hook        = (uint16_t)hook;
    slot->status      = (int8_t)status;
    slot->flags       = (uint8_t)(UCXF_REC_COMPLETION | ((mark & UCXF_MARK_INJECTED) ? UCXF_REC_INJECTED : 0) |
                                  ((mark & UCXF_MARK_UNLEARNED) ? UCXF_REC_UNLEARNED : 0));
    __atomic_store_n(&slot->seq, i + 1, __ATOMIC_RELEASE);
}

/* Logs an endpoint event (kind: UCXF_EPEV_*) when recording is on: a
 * creation, a close, a failure (a kill) or an error-handler call the
 * injector makes. Endpoint events are rare: no cost on the call path. */
void ucxf_record_ep_event(int32_t ordinal, int kind, int code, int injected)
{
    const struct ucxf_config *cfg = ucxf_current();
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    struct ucxf_record *slot;
    uint64_t i;

    if (cfg == NULL || !cfg->recording || ring == NULL || ordinal < 0) {
        return;
    }
    i    = __atomic_fetch_add(&ucxf_ring_head, 1, __ATOMIC_RELAXED);
    slot = &ring[i & ucxf_ring_mask];
    __atomic_store_n(&slot->seq, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    slot->t_ns        = ucxf_now_ns();
    slot->duration_ns = 0;
    slot->size        = (uint64_t)kind;
    slot->req         = 0;
    slot->thread      = ucxf_self != NULL ? ucxf_self->ordinal : 0;
    slot->tid         = ucxf_self != NULL ? (uint32_t)ucxf_self->tid : 0;
    slot->ep          = ordinal;
    slot->hook        = 0;
    slot->status      = (int8_t)code;
    slot->flags       = (uint8_t)(UCXF_REC_EP_EVENT | (injected ? UCXF_REC_INJECTED : 0));
    __atomic_store_n(&slot->seq, i + 1, __ATOMIC_RELEASE);
}

/* Copies record index into out; returns 1 when it is whole and still the
 * record of that index, 0 when it was overwritten or is being written. */
int ucxf_record_read(uint64_t index, struct ucxf_record *out)
{
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    struct ucxf_record *slot;

    if (ring == NULL) {
        return 0;
    }
    slot = &ring[index & ucxf_ring_mask];
    if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != index + 1) {
        return 0;
    }
    memset(out, 0, sizeof(*out));
    out->seq = index + 1;
    UCXF_REC_GET(out->t_ns, slot->t_ns);
    UCXF_REC_GET(out->duration_ns, slot->duration_ns);
    UCXF_REC_GET(out->size, slot->size);
    UCXF_REC_GET(out->req, slot->req);
    UCXF_REC_GET(out->thread, slot->thread);
    UCXF_REC_GET(out->tid, slot->tid);
    UCXF_REC_GET(out->ep, slot->ep);
    UCXF_REC_GET(out->hook, slot->hook);
    UCXF_REC_GET(out->status, slot->status);
    UCXF_REC_GET(out->flags, slot->flags);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) == index + 1;
}

/* Copies the whole ring into out (capacity records) in one pass, from the
 * slot of the oldest record the log holds at *head_out (read first) on, in
 * the order the writers overwrite them: a reader copying a few slots per
 * writer's call stays ahead of the writers, so only the records overtaken
 * before it reaches them are lost. Each copied slot keeps its stamp when it
 * was whole and unchanged across the copy, 0 otherwise; a stamp above
 * *head_out means a writer overtook the copy there. Returns the capacity. */
uint64_t ucxf_record_snapshot(struct ucxf_record *out, uint64_t *head_out)
{
    struct ucxf_record *ring = __atomic_load_n(&ucxf_ring, __ATOMIC_ACQUIRE);
    uint64_t            cap, head, k;

    if (ring == NULL) {
        *head_out = ucxf_record_head();
        return 0;
    }
    cap       = ucxf_ring_mask + 1;
    head      = ucxf_record_head();
    *head_out = head;
    for (k = 0; k < cap; k++) {
        struct ucxf_record *slot = &ring[(head + k) & ucxf_ring_mask];
        struct ucxf_record *o    = &out[k];
        uint64_t            seq  = __atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE);

        if (seq == 0 || seq == UCXF_REC_WRITING) {
            o->seq = 0;
            continue;
        }
        UCXF_REC_GET(o->t_ns, slot->t_ns);
        UCXF_REC_GET(o->duration_ns, slot->duration_ns);
        UCXF_REC_GET(o->size, slot->size);
        UCXF_REC_GET(o->req, slot->req);
        UCXF_REC_GET(o->thread, slot->thread);
        UCXF_REC_GET(o->tid, slot->tid);
        UCXF_REC_GET(o->ep, slot->ep);
        UCXF_REC_GET(o->hook, slot->hook);
        UCXF_REC_GET(o->status, slot->status);
        UCXF_REC_GET(o->flags, slot->flags);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        o->seq = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) == seq ? seq : 0;
    }
    return cap;
}

/*
 * Called on every failure injected without calling libucp (request NULL,
 * flags UCXF_MARK_INJECTED), and on every outcome the injector delivers on
 * completion (UCXF_MARK_COMPLETION: request is the operation's request, code
 * the status the application is given, UCXF_MARK_INJECTED when the injector
 * made it). It does nothing: `ucxfault observe` attaches a uprobe here,
 * because its probes on libucp never see those calls, nor what a trampoline
 * or a status query hands the application. The request lets the observer
 * give the outcome to the operation that returned it. Exported and never
 * inlined, so that it has a symbol.
 */
__attribute__((noinline, visibility("default"))) void
ucxf_fault_marker(int hook, int code, void *ep, uint64_t size, void *request, int flags)
{
    __asm__ volatile("" : : "r"(hook), "r"(code), "r"(ep), "r"(size), "r"(request), "r"(flags) : "memory");
}

/* An outcome handed to the application on completion (flags: UCXF_MARK_*):
 * shown to the observer, and logged when recording is on. */
void ucxf_delivered(int hook, int status, void *ep, uint64_t size, void *request, int flags)
{
    const struct ucxf_config *cfg = ucxf_current();

    ucxf_fault_marker(hook, status, ep, size, request, flags | UCXF_MARK_COMPLETION);
    if (cfg != NULL && cfg->recording) {
        ucxf_record_delivery(hook, status, ep, size, request, flags, ucxf_now_ns());
    }
}
