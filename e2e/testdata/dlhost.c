/*
 * dlhost: a program that does not link libucp and opens a UCX plugin with
 * dlopen(RTLD_LOCAL).
 *
 *   dlhost PLUGIN PUTS [LINGER_MS]
 *
 * Prints "READY pid=<pid>" before it opens the plugin, calls its
 * plugin_run(PUTS), prints "DONE", sleeps LINGER_MS (default 0) and exits 0.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int (*run)(unsigned long);
    void           *h;
    unsigned long   ms;
    struct timespec ts;

    if (argc < 3) {
        fprintf(stderr, "usage: %s PLUGIN PUTS [LINGER_MS]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("READY pid=%d\n", (int)getpid());
    h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "SETUP-ERROR dlopen: %s\n", dlerror());
        return 3;
    }
    *(void **)&run = dlsym(h, "plugin_run");
    if (run == NULL) {
        fprintf(stderr, "SETUP-ERROR dlsym: %s\n", dlerror());
        return 3;
    }
    run(strtoul(argv[2], NULL, 10));
    printf("DONE\n");
    ms = argc > 3 ? strtoul(argv[3], NULL, 10) : 0;
    ts.tv_sec  = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
    return 0;
}
