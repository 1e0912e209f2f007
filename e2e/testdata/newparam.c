/*
 * newparam: puts whose ucp_request_param_t comes from newer UCX headers than
 * the injector's. The parameter is the application's structure with a member
 * after the known ones and a mask bit (15) that no UCX header defines, as a
 * parameter from UCX 1.22's headers looks to an injector built with 1.13's.
 * paramspy.c, preloaded after the injector, prints what reaches libucp.
 *
 * Three puts, each printed as APP (the parameter's address), then SPY lines
 * (paramspy), then an OP line and a CB line (callbacks run):
 *   poll      unknown bit, no callback: polled with ucp_request_check_status
 *   callback  unknown bit, a callback
 *   known     known bits only, a callback (the injector may copy it)
 */
#include "fixture.h"

#define NP_UNKNOWN_BIT (1u << 15)

struct np_param {
    ucp_request_param_t p;
    uint64_t            trailing; /* a member newer headers might add */
};

static void np_done(void *req, ucs_status_t st, void *user)
{
    (void)req;
    *(volatile int *)user = st == UCS_OK ? 1 : (int)st;
}

static void np_put(struct fx *f, const char *variant, uint32_t mask, int with_cb)
{
    struct np_param param;
    volatile int    done = 0;
    ucs_status_ptr_t req;
    ucs_status_t    st;
    const char     *how = "immediate";
    uint64_t        deadline = fx_now_us() + 5000000ull;

    memset(&param, 0, sizeof(param));
    param.p.op_attr_mask = mask;
    param.trailing       = 0x7e57ab1e;
    if (with_cb) {
        param.p.op_attr_mask |= UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        param.p.cb.send       = np_done;
        param.p.user_data     = (void *)&done;
    }
    printf("APP variant=%s param=%p\n", variant, (void *)&param);
    req = ucp_put_nbx(f->ep, f->lbuf, 8, (uint64_t)(uintptr_t)f->rbuf, f->rkey, &param.p);
    if (req == NULL) {
        st = UCS_OK;
    } else if (UCS_PTR_IS_ERR(req)) {
        st = UCS_PTR_STATUS(req);
    } else {
        how = "completion";
        for (;;) {
            ucp_worker_progress(f->worker);
            st = with_cb ? (done == 0 ? UCS_INPROGRESS : done == 1 ? UCS_OK : (ucs_status_t)done)
                         : ucp_request_check_status(req);
            if (st != UCS_INPROGRESS) {
                break;
            }
            if (fx_now_us() > deadline) {
                how = "timeout";
                break;
            }
        }
        ucp_request_free(req);
    }
    fx_print_op(0, 0, variant, 8, st, how);
    printf("CB variant=%s done=%d\n", variant, (int)done);
}

int main(void)
{
    struct fx f;

    setvbuf(stdout, NULL, _IOLBF, 0);
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, 0);
    np_put(&f, "poll", NP_UNKNOWN_BIT, 0);
    np_put(&f, "callback", NP_UNKNOWN_BIT, 1);
    np_put(&f, "known", 0, 1);
    fx_teardown(&f);
    printf("DONE\n");
    return 0;
}
