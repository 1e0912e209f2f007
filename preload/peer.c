/*
 * ucxfault injector: an endpoint's peer.
 *
 * Worked out once, when the endpoint is created (ucp_ep_create is rare),
 * from what the application passed, and never again:
 *
 *   UCP_EP_PARAM_FIELD_REMOTE_ADDRESS: "w:" and the low 48 bits of the
 *       remote worker's unique id, in hex, from ucp_worker_address_query
 *       (UCP_WORKER_ADDRESS_ATTR_FIELD_UID, UCX 1.12 on). The id is the
 *       random 64-bit uuid libucp packs into every worker address
 *       (src/ucp/wireup/address.c), so every address of one worker, and
 *       every reconnect to it, gives the same name. Where the running
 *       libucp does not export the function (UCX 1.10, 1.11), "a:" and 48
 *       bits of an FNV-1a hash of the address's first 16 bytes (its header
 *       and that same uuid, the layout of every release from 1.10 to 1.22).
 *   UCP_EP_PARAM_FIELD_SOCK_ADDR (a client): the server's "IP:port"
 *       ("[IPv6]:port").
 *   UCP_EP_PARAM_FIELD_CONN_REQUEST (a server): the client's "IP:port",
 *       from ucp_conn_request_query (UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR,
 *       UCX 1.10 on), asked before the real ucp_ep_create, which consumes
 *       the request.
 *
 * The query functions are looked up in the libucp whose ucp_ep_create the
 * application calls, and only when one libucp is mapped (an object of one
 * copy handed to another's function could be misread). Their attribute
 * structures are passed with only the fields this file reads set in
 * field_mask, as UCX's ABI rules ask: libucp writes no other field, so a
 * structure of this build's layout is safe with any release.
 *
 * Names are interned in an append-only table, so an endpoint stores an
 * index and readers never see a name being written.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "ucxfault.h"
#include "peer.h"
#include "epfail.h"
#include "dlopen.h"

#define UCXF_PEER_SLOTS 4096 /* as many as endpoints */

static uint64_t ucxf_peer_keys[UCXF_PEER_SLOTS]; /* hash; 0 = free */
static uint8_t ucxf_peer_ready[UCXF_PEER_SLOTS]; /* 1 once the name is written */
static char ucxf_peer_names[UCXF_PEER_SLOTS][UCXF_PEER_MAX];

typedef ucs_status_t (*ucxf_addr_query_fn)(ucp_address_t *, ucp_worker_address_attr_t *);
typedef ucs_status_t (*ucxf_conn_query_fn)(ucp_conn_request_h, ucp_conn_request_attr_t *);
static int ucxf_peer_resolved;
static ucxf_addr_query_fn ucxf_peer_addr_query;
static ucxf_conn_query_fn ucxf_peer_conn_query;

/* The client's address of this thread's ucp_ep_create in progress on a
 * connection request ("" when none). */
static __thread char ucxf_peer_client[UCXF_PEER_MAX] __attribute__((tls_model("initial-exec")));

static uint64_t ucxf_fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h       = 0xcbf29ce484222325ull;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t ucxf_peer_hash(const char *name)
{
    uint64_t h;

    if (name == NULL || name[0] == '\0') {
        return 0;
    }
    h = ucxf_fnv1a(name, strlen(name));
    return h != 0 ? h : 1;
}

static void ucxf_peer_resolve(void)
{
    char copies[8];
    void *anchor, *h;
    Dl_info info;

    if (__atomic_load_n(&ucxf_peer_resolved, __ATOMIC_ACQUIRE)) {
        return;
    }
    /* Two threads may resolve at once: both find the same answer. */
    anchor = ucxf_resolve(UCXF_HOOK_EP_CREATE);
    if (anchor != NULL && ucxf_libucp_copies(copies, sizeof(copies)) <= 1 && dladdr(anchor, &info) != 0 &&
        info.dli_fname != NULL && (h = ucxf_dlopen_real(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY)) != NULL) {
        __atomic_store_n(&ucxf_peer_addr_query, (ucxf_addr_query_fn)dlsym(h, "ucp_worker_address_query"),
                         __ATOMIC_RELEASE);
        __atomic_store_n(&ucxf_peer_conn_query, (ucxf_conn_query_fn)dlsym(h, "ucp_conn_request_query"),
                         __ATOMIC_RELEASE);
        dlclose(h); /* RTLD_NOLOAD took a reference; libucp stays mapped */
    }
    __atomic_store_n(&ucxf_peer_resolved, 1, __ATOMIC_RELEASE);
}

/* "IPv4:port" or "[IPv6]:port"; "" for another family. */
static void ucxf_peer_sockaddr(const struct sockaddr *sa, socklen_t len, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN];

    out[0] = '\0';
    if (sa == NULL) {
        return;
    }
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) != NULL) {
            snprintf(out, n, "%s:%u", host, (unsigned)ntohs(in->sin_port));
        }
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) != NULL) {
            snprintf(out, n, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
        }
    }
}

void ucxf_peer_before_create(ucp_worker_h worker, const ucp_ep_params_t *params, ucp_ep_h *ep_p)
{
    ucxf_conn_query_fn query;
    ucp_conn_request_attr_t attr;

    (void)worker;
    (void)ep_p;
    ucxf_peer_client[0] = '\0';
    if (params == NULL || !(params->field_mask & UCP_EP_PARAM_FIELD_CONN_REQUEST) ||
        params->conn_request == NULL) {
        return;
    }
    ucxf_peer_resolve();
    query = __atomic_load_n(&ucxf_peer_conn_query, __ATOMIC_ACQUIRE);
    if (query == NULL) {
        return;
    }
    memset(&attr, 0, sizeof(attr));
    attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
    if (query(params->conn_request, &attr) == UCS_OK) {
        ucxf_peer_sockaddr((const struct sockaddr *)&attr.client_address, sizeof(attr.client_address),
                           ucxf_peer_client, sizeof(ucxf_peer_client));
    }
}

/* The index of name in the peer table, inserted if new; -1 when full. */
static int32_t ucxf_peer_intern(const char *name)
{
    uint64_t h = ucxf_peer_hash(name), i, n;

    if (h == 0) {
        return -1;
    }
    for (n = 0, i = h; n < UCXF_PEER_SLOTS; n++, i++) {
        int s      = (int)(i & (UCXF_PEER_SLOTS - 1));
        uint64_t k = __atomic_load_n(&ucxf_peer_keys[s], __ATOMIC_ACQUIRE);
        if (k == 0) {
            uint64_t expected = 0;
            if (__atomic_compare_exchange_n(&ucxf_peer_keys[s], &expected, h, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                snprintf(ucxf_peer_names[s], UCXF_PEER_MAX, "%s", name);
                __atomic_store_n(&ucxf_peer_ready[s], 1, __ATOMIC_RELEASE);
                return s;
            }
            k = expected;
        }
        if (k == h) {
            /* Another thread is writing the same name: wait for it. */
            while (!__atomic_load_n(&ucxf_peer_ready[s], __ATOMIC_ACQUIRE)) {
                ucxf_cpu_relax();
            }
            return s;
        }
    }
    return -1;
}

int32_t ucxf_peer_of_params(const ucp_ep_params_t *params)
{
    char name[UCXF_PEER_MAX];

    name[0] = '\0';
    if (params == NULL) {
        return -1;
    }
    if ((params->field_mask & UCP_EP_PARAM_FIELD_REMOTE_ADDRESS) && params->address != NULL) {
        ucxf_addr_query_fn query;
        ucp_worker_address_attr_t attr;

        ucxf_peer_resolve();
        query = __atomic_load_n(&ucxf_peer_addr_query, __ATOMIC_ACQUIRE);
        memset(&attr, 0, sizeof(attr));
        attr.field_mask = UCP_WORKER_ADDRESS_ATTR_FIELD_UID;
        /* A uid of 0 is libucp's default for an address packed without
         * one (UCP_ADDRESS_DEFAULT_WORKER_UUID): it names no worker. */
        if (query != NULL && query((ucp_address_t *)params->address, &attr) == UCS_OK && attr.worker_uid != 0) {
            snprintf(name, sizeof(name), "w:%012" PRIx64, (uint64_t)(attr.worker_uid & 0xffffffffffffull));
        } else {
            snprintf(name, sizeof(name), "a:%012" PRIx64,
                     (uint64_t)(ucxf_fnv1a(params->address, UCXF_EPFAIL_ADDR_PREFIX) & 0xffffffffffffull));
        }
    } else if (params->field_mask & UCP_EP_PARAM_FIELD_SOCK_ADDR) {
        ucxf_peer_sockaddr(params->sockaddr.addr, params->sockaddr.addrlen, name, sizeof(name));
    } else if (params->field_mask & UCP_EP_PARAM_FIELD_CONN_REQUEST) {
        memcpy(name, ucxf_peer_client, sizeof(name));
    }
    return ucxf_peer_intern(name);
}

const char *ucxf_peer_name(int32_t index)
{
    if (index < 0 || index >= UCXF_PEER_SLOTS || !__atomic_load_n(&ucxf_peer_ready[index], __ATOMIC_ACQUIRE)) {
        return "";
    }
    return ucxf_peer_names[index];
}

uint64_t ucxf_peer_hash_at(int32_t index)
{
    if (index < 0 || index >= UCXF_PEER_SLOTS || !__atomic_load_n(&ucxf_peer_ready[index], __ATOMIC_ACQUIRE)) {
        return 0;
    }
    return __atomic_load_n(&ucxf_peer_keys[index], __ATOMIC_ACQUIRE);
}
