/*
 * atomicpost: three 8-byte ucp_atomic_post adds on the self endpoint, each
 * printed as an OP line (fn=atomic_post), then the remote value. Its set-up
 * (fixture.h) calls ucp_rkey_pack, an opt-in set-up hook.
 */
#include "fixture.h"

int main(void)
{
    struct fx    f;
    ucs_status_t st;
    int          i;

    setvbuf(stdout, NULL, _IOLBF, 0);
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, UCP_FEATURE_AMO64);
    for (i = 0; i < 3; i++) {
        st = ucp_atomic_post(f.ep, UCP_ATOMIC_POST_OP_ADD, 1, sizeof(uint64_t), (uint64_t)(uintptr_t)f.rbuf,
                             f.rkey);
        fx_print_op(0, (unsigned long)i, "atomic_post", sizeof(uint64_t), st, "immediate");
    }
    fx_teardown(&f);
    printf("DONE\n");
    return 0;
}
