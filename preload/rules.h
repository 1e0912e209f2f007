/*
 * ucxfault injector: fault rules (docs/rules.md). The conditions and the
 * action of each rule are evaluated here, on the hot path, in C.
 */
#ifndef UCXFAULT_RULES_H
#define UCXFAULT_RULES_H

#include <stdint.h>

struct ucxf_call;
struct ucxf_config;
struct ucxf_thread;

/* Hot path: the decision for a call of a hook that rules cover. The call has
 * been counted in t (t->h[hook].calls includes it). Returns the code to fail
 * with, or 0. May sleep (a delay) before returning; then c->cfg is reloaded,
 * because the configuration read before the sleep may since have been freed. */
int ucxf_rules_decide(struct ucxf_call *c, const struct ucxf_config *cfg, struct ucxf_thread *t);

/* A thread met a new configuration: keep the call bases of rules it knew,
 * start counting from now for rules it had not seen. */
void ucxf_rules_rebase(struct ucxf_thread *t, const struct ucxf_config *cfg);

/* Has a window read the coarse clock through the vDSO's own entry
 * (ucxf_rules_clock, rules_fast.h); the control side calls it as it fills
 * in a rule with a window, off the hot path. Once per process. */
void ucxf_rules_clock_resolve(void);

#endif
