/*
 * sgl: scatter-gather puts (UCX 1.22's SGL API) issued as NIXL issues them:
 * no callback, the request polled with ucp_request_check_status. Each put
 * writes SGL_N elements of 8 bytes; a put that reports success is checked
 * against the remote buffer. Prints one OP line per put (fixture.h), then a
 * DATA line counting successful puts whose data did not arrive.
 *
 * Needs ucp.h from UCX 1.22 or later (the test skips otherwise).
 */
#include "fixture.h"

#include <unistd.h>

#define SGL_N 4

int main(int argc, char **argv)
{
    struct fx            f;
    int                  ops = argc > 1 ? atoi(argv[1]) : 10, i, k, bad = 0;
    void                *bufs[SGL_N];
    size_t               lens[SGL_N];
    uint64_t             raddrs[SGL_N];
    ucp_rkey_h           rkeys[SGL_N];
    ucp_dt_local_sgl_t   local;
    ucp_dt_remote_sgl_t  remote;
    ucp_request_param_t  param;
    ucs_status_ptr_t     req;
    ucs_status_t         st;
    const char          *how;

    setvbuf(stdout, NULL, _IOLBF, 0);
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, 0);
    printf("READY pid=%d\n", (int)getpid());
    for (i = 0; i < ops; i++) {
        memset(f.rbuf, 0, FX_BUF);
        for (k = 0; k < SGL_N; k++) {
            bufs[k]   = (char *)f.lbuf + 64 * k;
            lens[k]   = 8;
            raddrs[k] = (uint64_t)(uintptr_t)f.rbuf + 128 * k;
            rkeys[k]  = f.rkey;
            memset(bufs[k], 'a' + (i + k) % 26, 8);
        }
        memset(&local, 0, sizeof(local));
        local.field_mask = UCP_DT_LOCAL_SGL_FIELD_BUFFERS | UCP_DT_LOCAL_SGL_FIELD_LENGTHS;
        local.buffers    = bufs;
        local.lengths    = lens;
        memset(&remote, 0, sizeof(remote));
        remote.field_mask   = UCP_DT_REMOTE_SGL_FIELD_REMOTE_ADDRS | UCP_DT_REMOTE_SGL_FIELD_LENGTHS |
                              UCP_DT_REMOTE_SGL_FIELD_RKEYS;
        remote.remote_addrs = raddrs;
        remote.lengths      = lens;
        remote.rkeys        = rkeys;
        memset(&param, 0, sizeof(param));
        param.op_attr_mask    = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_REMOTE_DATATYPE |
                                UCP_OP_ATTR_FIELD_REMOTE | UCP_OP_ATTR_FIELD_REMOTE_COUNT;
        param.datatype        = ucp_dt_make_sgl();
        param.remote_datatype = ucp_dt_make_sgl();
        param.remote          = &remote;
        param.remote_count    = SGL_N;

        req = ucp_put_nbx(f.ep, &local, SGL_N, UCP_REMOTE_ADDR_INVALID, UCP_RKEY_INVALID, &param);
        how = "immediate";
        if (req == NULL) {
            st = UCS_OK;
        } else if (UCS_PTR_IS_ERR(req)) {
            st = UCS_PTR_STATUS(req);
        } else {
            uint64_t deadline = fx_now_us() + 5000000ull;
            how               = "completion";
            do {
                ucp_worker_progress(f.worker);
                st = ucp_request_check_status(req);
                if (st == UCS_INPROGRESS && fx_now_us() > deadline) {
                    how = "timeout";
                    break;
                }
            } while (st == UCS_INPROGRESS);
            ucp_request_free(req);
        }
        if (st == UCS_OK) {
            for (k = 0; k < SGL_N; k++) {
                if (memcmp((char *)f.rbuf + 128 * k, bufs[k], 8) != 0) {
                    bad++;
                    break;
                }
            }
        }
        fx_print_op(0, (unsigned long)i, "put", 8 * SGL_N, st, how);
    }
    printf("DATA wrong=%d\n", bad);
    fx_teardown(&f);
    printf("DONE\n");
    return 0;
}
