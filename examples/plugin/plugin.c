/*
 * plugin.c - a UCX user loaded with dlopen(), for ucxfault.
 *
 * Exports one function, plugin_run(ops). It creates its own UCP context,
 * worker and endpoint to its own worker (self), maps a buffer, and issues
 * `ops` iterations of ucp_put_nbx followed by ucp_ep_flush_nbx. Each operation
 * prints one OP line in the format of examples/rma (fn=put / fn=flush). Every
 * error is printed and the loop goes on; every wait is bounded.
 *
 * libucp reaches a process only through this plugin (the loader does not link
 * it), which is how Python extensions and NIXL-style plugins use UCX.
 *
 * Build:
 *   gcc -O2 -g -Wall -Wextra -Werror -shared -fPIC -o plugin.so plugin.c \
 *       -lucp -lucs
 */
#include <ucp/api/ucp.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PUT_SIZE        8
#define BUF_LEN         4096
#define OP_TIMEOUT_US   (5 * 1000 * 1000ULL)
#define CLOSE_TIMEOUT_US (2 * 1000 * 1000ULL)

int plugin_run(int ops);

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
}

static void status_name(ucs_status_t status, char *buf, size_t len)
{
    const char *s = ucs_status_string(status);
    size_t i;

    snprintf(buf, len, "%s", s != NULL ? s : "unknown");
    for (i = 0; buf[i] != '\0'; i++) {
        if (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n') {
            buf[i] = '_';
        }
    }
}

/* Wait (bounded) for what an nbx call returned; sets *how. */
static ucs_status_t complete(ucp_worker_h worker, ucs_status_ptr_t ret,
                             const char **how)
{
    uint64_t     deadline;
    ucs_status_t status;

    *how = "immediate";
    if (!UCS_PTR_IS_PTR(ret)) {
        return UCS_PTR_STATUS(ret); /* NULL is UCS_OK */
    }
    deadline = now_us() + OP_TIMEOUT_US;
    for (;;) {
        ucp_worker_progress(worker);
        status = ucp_request_check_status(ret);
        if (status != UCS_INPROGRESS) {
            *how = "completion";
            break;
        }
        if (now_us() >= deadline) {
            ucp_request_cancel(worker, ret);
            *how   = "timeout";
            status = UCS_ERR_TIMED_OUT;
            break;
        }
    }
    ucp_request_free(ret);
    return status;
}

static void report(unsigned long seq, unsigned long iter, const char *fn,
                   size_t size, ucs_status_t status, const char *how,
                   uint64_t us)
{
    char name[128];

    status_name(status, name, sizeof(name));
    printf("OP thread=0 seq=%lu iter=%lu fn=%s size=%zu status=%d name=%s "
           "how=%s us=%llu\n", seq, iter, fn, size, (int)status, name, how,
           (unsigned long long)us);
    fflush(stdout);
}

static void setup_error(const char *what, ucs_status_t status)
{
    fprintf(stderr, "SETUP-ERROR plugin %s: %s\n", what,
            ucs_status_string(status));
}

int plugin_run(int ops)
{
    ucp_params_t        params;
    ucp_worker_params_t wparams;
    ucp_mem_map_params_t mparams;
    ucp_ep_params_t     eparams;
    ucp_request_param_t rparam;
    ucp_context_h       context = NULL;
    ucp_worker_h        worker  = NULL;
    ucp_address_t      *addr    = NULL;
    size_t              addr_len;
    ucp_ep_h            ep      = NULL;
    ucp_mem_h           memh    = NULL;
    ucp_rkey_h          rkey    = NULL;
    void               *rkey_buf;
    size_t              rkey_len;
    char               *lbuf = NULL, *rbuf = NULL;
    ucs_status_t        status;
    ucs_status_ptr_t    ret;
    const char         *how;
    unsigned long       seq = 0;
    int                 iter, failed = -1;
    uint64_t            t0;

    lbuf = calloc(1, BUF_LEN);
    rbuf = calloc(1, BUF_LEN);
    if (lbuf == NULL || rbuf == NULL) {
        setup_error("malloc", UCS_ERR_NO_MEMORY);
        goto out;
    }

    memset(&params, 0, sizeof(params));
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features   = UCP_FEATURE_RMA;
    status = ucp_init(&params, NULL, &context);
    if (status != UCS_OK) {
        setup_error("ucp_init", status);
        context = NULL;
        goto out;
    }

    memset(&wparams, 0, sizeof(wparams));
    wparams.field_mask  = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wparams.thread_mode = UCS_THREAD_MODE_SINGLE;
    status = ucp_worker_create(context, &wparams, &worker);
    if (status != UCS_OK) {
        setup_error("ucp_worker_create", status);
        worker = NULL;
        goto out;
    }

    memset(&mparams, 0, sizeof(mparams));
    mparams.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS |
                         UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mparams.address    = rbuf;
    mparams.length     = BUF_LEN;
    status = ucp_mem_map(context, &mparams, &memh);
    if (status != UCS_OK) {
        setup_error("ucp_mem_map", status);
        memh = NULL;
        goto out;
    }

    status = ucp_worker_get_address(worker, &addr, &addr_len);
    if (status != UCS_OK) {
        setup_error("ucp_worker_get_address", status);
        addr = NULL;
        goto out;
    }

    memset(&eparams, 0, sizeof(eparams));
    eparams.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
    eparams.address    = addr;
    status = ucp_ep_create(worker, &eparams, &ep);
    if (status != UCS_OK) {
        setup_error("ucp_ep_create", status);
        ep = NULL;
        goto out;
    }

    status = ucp_rkey_pack(context, memh, &rkey_buf, &rkey_len);
    if (status != UCS_OK) {
        setup_error("ucp_rkey_pack", status);
        goto out;
    }
    status = ucp_ep_rkey_unpack(ep, rkey_buf, &rkey);
    ucp_rkey_buffer_release(rkey_buf);
    if (status != UCS_OK) {
        setup_error("ucp_ep_rkey_unpack", status);
        rkey = NULL;
        goto out;
    }

    failed = 0;
    for (iter = 0; iter < ops; iter++) {
        memset(&rparam, 0, sizeof(rparam));
        t0  = now_us();
        ret = ucp_put_nbx(ep, lbuf, PUT_SIZE, (uint64_t)(uintptr_t)rbuf, rkey,
                          &rparam);
        status = complete(worker, ret, &how);
        report(seq++, (unsigned long)iter, "put", PUT_SIZE, status, how,
               now_us() - t0);
        if (status != UCS_OK) {
            failed++;
        }

        memset(&rparam, 0, sizeof(rparam));
        t0  = now_us();
        ret = ucp_ep_flush_nbx(ep, &rparam);
        status = complete(worker, ret, &how);
        report(seq++, (unsigned long)iter, "flush", 0, status, how,
               now_us() - t0);
        if (status != UCS_OK) {
            failed++;
        }
    }

out:
    if (rkey != NULL) {
        ucp_rkey_destroy(rkey);
    }
    if (ep != NULL) {
        /* a self endpoint has no error handling: force close is invalid */
        memset(&rparam, 0, sizeof(rparam));
        ret = ucp_ep_close_nbx(ep, &rparam);
        if (UCS_PTR_IS_PTR(ret)) {
            uint64_t deadline = now_us() + CLOSE_TIMEOUT_US;
            while (ucp_request_check_status(ret) == UCS_INPROGRESS &&
                   now_us() < deadline) {
                ucp_worker_progress(worker);
            }
            ucp_request_free(ret);
        } else if (UCS_PTR_IS_ERR(ret)) {
            fprintf(stderr, "plugin: ucp_ep_close_nbx: %s\n",
                    ucs_status_string(UCS_PTR_STATUS(ret)));
        }
    }
    if (addr != NULL) {
        ucp_worker_release_address(worker, addr);
    }
    if (memh != NULL) {
        ucp_mem_unmap(context, memh);
    }
    if (worker != NULL) {
        ucp_worker_destroy(worker);
    }
    if (context != NULL) {
        ucp_cleanup(context);
    }
    free(lbuf);
    free(rbuf);
    return failed;
}
