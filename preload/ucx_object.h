/*
 * Which mapped objects are part of UCX. Kept apart from the rest of the
 * injector, with no dependency on it, so that the Go twin of this
 * predicate (proc.IsUCXLibrary in internal/proc) can be tested against it
 * by compiling this very header (internal/proc/predicate_test.go).
 */
#ifndef UCXF_UCX_OBJECT_H
#define UCXF_UCX_OBJECT_H

#include <string.h>

/*
 * Whether the object at path is one of UCX's core libraries: libucp,
 * libucs, libuct or libucm, under its usual name (libucp.so.0) or a
 * renamed copy (libucp-3f2a1b9c.so.0.0.0, as Python wheels bundle it).
 * Sets *libucp for a libucp. UCX's plugins (libuct_ib.so, libucm_cuda.so)
 * are not counted: they never call the ucp API, and leaving them out keeps
 * the table of internal code ranges small.
 */
static inline int ucxf_is_ucx_object(const char *path, int *libucp)
{
    const char *base = strrchr(path, '/');

    base = base != NULL ? base + 1 : path;
    *libucp = 0;
    if (strncmp(base, "libuc", 5) != 0 || base[5] == '\0' || strchr("pstm", base[5]) == NULL ||
        (base[6] != '.' && base[6] != '-') || strstr(base, ".so") == NULL) {
        return 0;
    }
    *libucp = base[5] == 'p';
    return 1;
}

#endif
