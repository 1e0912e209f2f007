/*
 * paramspy: preloaded after the injector, it stands between the injector
 * and libucp's ucp_put_nbx (the injector's dlsym(RTLD_NEXT) finds it first)
 * and prints the parameter that would reach libucp, then calls libucp.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <ucp/api/ucp.h>

ucs_status_ptr_t ucp_put_nbx(ucp_ep_h ep, const void *buffer, size_t count, uint64_t remote_addr,
                             ucp_rkey_h rkey, const ucp_request_param_t *param)
{
    static __typeof__(ucp_put_nbx) *real;

    if (real == NULL) {
        real = (__typeof__(ucp_put_nbx) *)dlsym(RTLD_NEXT, "ucp_put_nbx");
    }
    printf("SPY param=%p mask=0x%x\n", (const void *)param, param->op_attr_mask);
    return real(ep, buffer, count, remote_addr, rkey, param);
}
