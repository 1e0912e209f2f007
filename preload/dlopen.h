/*
 * ucxfault injector: the real dlopen, for the injector's own calls.
 *
 * dlopen.c interposes dlopen() to notice libraries opened with
 * RTLD_DEEPBIND and UCX objects opened late. The injector's own dlopen()
 * calls (RTLD_NOLOAD look-ups of a mapped libucp) need neither, so they
 * call the next definition directly instead of going through the
 * interposer. Inline, with one cached pointer per file, so that no file
 * depends on dlopen.c for it.
 */
#ifndef UCXFAULT_DLOPEN_H
#define UCXFAULT_DLOPEN_H

#include <dlfcn.h>
#include <stddef.h>

static inline void *ucxf_dlopen_real(const char *file, int mode)
{
    static void *(*real)(const char *, int);
    void *(*next)(const char *, int) = __atomic_load_n(&real, __ATOMIC_ACQUIRE);

    if (next == NULL) {
        next = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
        if (next == NULL) {
            return NULL;
        }
        __atomic_store_n(&real, next, __ATOMIC_RELEASE);
    }
    return next(file, mode);
}

#endif
