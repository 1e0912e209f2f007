/*
 * ucxfault injector: an endpoint's peer (peer.c), the name status shows and
 * the peer= rule selector matches (docs/peer-death.md, "Peers").
 */
#ifndef UCXFAULT_PEER_H
#define UCXFAULT_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <ucp/api/ucp.h>

/* A peer's name with its NUL: "w:" and 12 hex digits, "a:" and 12 hex
 * digits, "IPv4:port" or "[IPv6]:port" (at most 53 characters). */
#define UCXF_PEER_MAX 64

/* The hash the peer= selector compares (FNV-1a 64 of the name, never 0);
 * 0 for NULL or "". Go hashes a rule's peer= with this same function. */
uint64_t ucxf_peer_hash(const char *name);

/* Before ucp_ep_create, on the creating thread: a server-side endpoint's
 * connection request is queried for the client's address now, because
 * libucp consumes the request while it creates the endpoint. */
void ucxf_peer_before_create(ucp_worker_h worker, const ucp_ep_params_t *params, ucp_ep_h *ep_p);

/* After a successful ucp_ep_create, on the same thread: the new endpoint's
 * peer, as an index into the peer table (>= 0), or -1 when the parameters
 * name none the injector can read. Not on the hot path: endpoints are
 * created rarely. */
int32_t ucxf_peer_of_params(const ucp_ep_params_t *params);

/* The peer at an index from ucxf_peer_of_params: immutable once published. */
const char *ucxf_peer_name(int32_t index);
uint64_t ucxf_peer_hash_at(int32_t index);

#endif
