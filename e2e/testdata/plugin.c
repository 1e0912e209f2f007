/*
 * plugin: a shared object that uses UCX, for dlhost to open with
 * RTLD_LOCAL (as a Python extension or an MPI component is opened): libucp
 * comes in with it, after the injector started, and outside the global
 * scope that dlsym(RTLD_NEXT) searches.
 *
 *   gcc -shared -fPIC -o plugin.so plugin.c -lucp -lucs
 */
#include "fixture.h"

#include <unistd.h>

/* plugin_run does puts puts and prints an OP line for each. */
int plugin_run(unsigned long puts)
{
    struct fx     f;
    unsigned long i;
    const char   *how;
    ucs_status_t  st;

    fx_setup(&f, UCS_THREAD_MODE_SINGLE, 0);
    for (i = 0; i < puts; i++) {
        st = fx_put(&f, 0, 8, &how);
        fx_print_op(0, i, "put", 8, st, how);
    }
    fx_teardown(&f);
    return 0;
}
