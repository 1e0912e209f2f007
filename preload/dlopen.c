/*
 * ucxfault injector: the dlopen() interposer.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

#include "ucxfault.h"
#include "dlopen.h"


#define UCXF_MAX_BYPASS 8
static char ucxf_bypass[UCXF_MAX_BYPASS][256];
static int ucxf_nbypass;

/*
 * A library opened with RTLD_DEEPBIND resolves its symbols in its own
 * dependencies first, so its ucp_* calls go straight to libucp and no
 * LD_PRELOAD wrapper sees them. It cannot be injected (only an LD_AUDIT
 * library could), but it must not be injected nothing in silence: dlopen is
 * wrapped to notice it, say so on stderr, and list it in status.
 */
void *dlopen(const char *file, int mode)
{
    void *handle = ucxf_dlopen_real(file, mode);

    if (handle != NULL) {
        ucxf_after_dlopen();
    }
    if (handle != NULL && (mode & RTLD_DEEPBIND) && file != NULL) {
        void *sym = dlsym(handle, "ucp_put_nbx");
        Dl_info mine, theirs;
        if (sym != NULL && dladdr((void *)ucxf_resolve, &mine) != 0 && dladdr(sym, &theirs) != 0 &&
            mine.dli_fbase != theirs.dli_fbase) {
            int n = __atomic_fetch_add(&ucxf_nbypass, 1, __ATOMIC_RELAXED);
            if (n < UCXF_MAX_BYPASS) {
                snprintf(ucxf_bypass[n], sizeof(ucxf_bypass[n]), "%s", file);
            }
            fprintf(stderr,
                    "ucxfault: %s was opened with RTLD_DEEPBIND and binds libucp directly: "
                    "its UCX calls bypass the injector\n",
                    file);
        }
    }
    return handle;
}

/* Copies the i-th bypassing library's path into buf; returns how many
 * there are. */
int ucxf_bypassed(int i, char *buf, size_t len)
{
    int n = __atomic_load_n(&ucxf_nbypass, __ATOMIC_RELAXED);

    if (i >= 0 && i < n && i < UCXF_MAX_BYPASS && len > 0) {
        snprintf(buf, len, "%s", ucxf_bypass[i]);
    }
    return n;
}
