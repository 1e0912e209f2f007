/*
 * loader.c - loads examples/plugin/plugin.so with dlopen() and runs it.
 *
 *   loader --mode local|deepbind|global --ops N [--wait-before-start-ms MS]
 *          [--linger-ms MS] PLUGIN.so...
 *
 * mode local:    dlopen(RTLD_NOW | RTLD_LOCAL)
 *      deepbind: dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND)
 *      global:   dlopen(RTLD_NOW | RTLD_GLOBAL)
 *
 * The loader does not link libucp (build it with -ldl only): UCX arrives in
 * the process only as a dependency of the plugin, as with Python extensions
 * or NIXL's UCX backend. It opens every plugin given, then runs each in
 * turn. It prints READY before dlopen, then each plugin's OP lines and a
 * line PLUGIN <path> failed=<n>, then DONE failed=<total>.
 *
 * Build:
 *   gcc -O2 -g -Wall -Wextra -Werror -o loader loader.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define EXIT_SETUP 3
#define MAX_PLUGINS 8

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void sleep_ms(unsigned long ms)
{
    struct timespec req, rem;

    req.tv_sec  = (time_t)(ms / 1000);
    req.tv_nsec = (long)((ms % 1000) * 1000000L);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR && !g_stop) {
        req = rem;
    }
}

static unsigned long parse_ulong(const char *opt, const char *s,
                                 unsigned long max)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v > max) {
        fprintf(stderr, "invalid value for --%s: '%s'\n", opt, s);
        exit(EXIT_USAGE);
    }
    return v;
}

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
        "Usage: %s --mode local|deepbind|global [--ops N]\n"
        "          [--wait-before-start-ms MS] [--linger-ms MS] PLUGIN.so...\n",
        prog);
}

int main(int argc, char **argv)
{
    enum { O_MODE = 256, O_OPS, O_WAIT, O_LINGER, O_HELP };
    static const struct option longopts[] = {
        { "mode",                 required_argument, NULL, O_MODE },
        { "ops",                  required_argument, NULL, O_OPS },
        { "wait-before-start-ms", required_argument, NULL, O_WAIT },
        { "linger-ms",            required_argument, NULL, O_LINGER },
        { "help",                 no_argument,       NULL, O_HELP },
        { NULL, 0, NULL, 0 }
    };
    const char      *mode  = NULL;
    unsigned long    ops   = 10, wait_ms = 0, linger_ms = 0;
    int              flags = 0, c, failed;
    void            *handles[MAX_PLUGINS];
    int              nplugins, i, total = 0;
    int            (*run)(int);
    struct sigaction sa;
    char            *err;

    setvbuf(stdout, NULL, _IOLBF, 0);
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_MODE:
            mode = optarg;
            break;
        case O_OPS:
            ops = parse_ulong("ops", optarg, INT_MAX);
            break;
        case O_WAIT:
            wait_ms = parse_ulong("wait-before-start-ms", optarg, 86400000UL);
            break;
        case O_LINGER:
            linger_ms = parse_ulong("linger-ms", optarg, 86400000UL);
            break;
        case 'h':
        case O_HELP:
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return EXIT_USAGE;
        }
    }
    if (mode == NULL || optind >= argc || argc - optind > MAX_PLUGINS) {
        usage(stderr, argv[0]);
        return EXIT_USAGE;
    }
    if (strcmp(mode, "local") == 0) {
        flags = RTLD_NOW | RTLD_LOCAL;
    } else if (strcmp(mode, "deepbind") == 0) {
        flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
    } else if (strcmp(mode, "global") == 0) {
        flags = RTLD_NOW | RTLD_GLOBAL;
    } else {
        fprintf(stderr, "--mode must be local, deepbind or global\n");
        return EXIT_USAGE;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    printf("READY pid=%d mode=%s\n", (int)getpid(), mode);
    fflush(stdout);
    if (wait_ms > 0) {
        sleep_ms(wait_ms);
    }

    /* Every plugin is opened before any runs: with plugins linked against
     * different copies of libucp, both copies are mapped throughout. */
    nplugins = argc - optind;
    for (i = 0; i < nplugins; i++) {
        handles[i] = dlopen(argv[optind + i], flags);
        if (handles[i] == NULL) {
            err = dlerror();
            fprintf(stderr, "SETUP-ERROR dlopen %s: %s\n", argv[optind + i],
                    err != NULL ? err : "unknown error");
            return EXIT_SETUP;
        }
    }
    for (i = 0; i < nplugins; i++) {
        dlerror();
        *(void **)&run = dlsym(handles[i], "plugin_run");
        err = dlerror();
        if (err != NULL || run == NULL) {
            fprintf(stderr, "SETUP-ERROR dlsym plugin_run: %s\n",
                    err != NULL ? err : "NULL symbol");
            return EXIT_SETUP;
        }
        failed = run((int)ops);
        if (failed < 0) {
            fprintf(stderr, "SETUP-ERROR plugin_run failed to set up UCX\n");
            return EXIT_SETUP;
        }
        total += failed;
        printf("PLUGIN %s failed=%d\n", argv[optind + i], failed);
    }
    printf("DONE failed=%d\n", total);
    fflush(stdout);
    if (linger_ms > 0 && !g_stop) {
        sleep_ms(linger_ms);
    }
    for (i = nplugins - 1; i >= 0; i--) {
        dlclose(handles[i]);
    }
    return 0;
}
