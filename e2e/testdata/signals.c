/*
 * signals: a UCX host's own signal handling under the injector.
 *
 *   signals handlers   installs SIGUSR1 and SIGTERM handlers, raises SIGUSR1
 *                      three times itself (raise, kill from another thread),
 *                      prints READY, then puts until SIGTERM; prints
 *                      "GOT usr1=<n> term=<n>" and exits 0. Each SIGUSR1
 *                      received is announced as "USR1 <count>".
 *   signals segv       installs its own SIGSEGV handler and writes to a
 *                      PROT_NONE page three times; the handler checks the
 *                      faulting address and makes the page writable.
 *                      Prints "SEGV handled=<n> addr-ok=<n>" and exits 0.
 *   signals segv-ucx   writes to a PROT_NONE page with UCX's own handler
 *                      in place (UCX_HANDLE_ERRORS): UCX reports it and the
 *                      process dies.
 *
 * Every mode first prints which object the SIGSEGV handler in force after
 * ucp_init belongs to: "SEGV-OWNER <path>".
 */
#include "fixture.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, term, segvs, segv_addr_ok;
static char                 *page;
static long                  page_size;

static void on_usr1(int sig)
{
    (void)sig;
    usr1++;
}

static void on_term(int sig)
{
    (void)sig;
    term++;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    segvs++;
    if ((char *)si->si_addr >= page && (char *)si->si_addr < page + page_size) {
        segv_addr_ok++;
        mprotect(page, (size_t)page_size, PROT_READ | PROT_WRITE);
        return; /* the write is retried and succeeds */
    }
    _exit(70); /* not our fault: do not loop */
}

static void *kill_self(void *arg)
{
    (void)arg;
    kill(getpid(), SIGUSR1);
    return NULL;
}

static void print_segv_owner(void)
{
    struct sigaction cur;
    Dl_info          info;
    void            *fn;

    sigaction(SIGSEGV, NULL, &cur);
    fn = (cur.sa_flags & SA_SIGINFO) ? (void *)cur.sa_sigaction : (void *)cur.sa_handler;
    if (fn == (void *)SIG_DFL) {
        printf("SEGV-OWNER default\n");
    } else if (dladdr(fn, &info) != 0 && info.dli_fname != NULL) {
        printf("SEGV-OWNER %s\n", info.dli_fname);
    } else {
        printf("SEGV-OWNER unknown\n");
    }
}

static void wait_usr1(int want)
{
    uint64_t deadline = fx_now_us() + 5000000ull;

    while (usr1 < want && fx_now_us() < deadline) {
        fx_sleep_ms(1);
    }
}

static int mode_handlers(struct fx *f)
{
    struct sigaction sa;
    pthread_t        t;
    int              seen;
    const char      *how;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);

    raise(SIGUSR1);
    wait_usr1(1);
    raise(SIGUSR1);
    wait_usr1(2);
    pthread_create(&t, NULL, kill_self, NULL);
    pthread_join(t, NULL);
    wait_usr1(3);
    printf("SELF usr1=%d\n", (int)usr1);
    seen = usr1; /* before READY: a signal may come at once */
    printf("READY pid=%d\n", (int)getpid());
    while (!term) {
        fx_put(f, 0, 8, &how);
        if (usr1 != seen) {
            seen = usr1;
            printf("USR1 %d\n", seen);
        }
        fx_sleep_ms(1);
    }
    printf("GOT usr1=%d term=%d\n", (int)usr1, (int)term);
    return 0;
}

static int mode_segv(void)
{
    struct sigaction sa;
    int              i;

    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags     = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    for (i = 0; i < 3; i++) {
        mprotect(page, (size_t)page_size, PROT_NONE);
        ((volatile char *)page)[i] = (char)i;
    }
    printf("SEGV handled=%d addr-ok=%d\n", (int)segvs, (int)segv_addr_ok);
    return 0;
}

int main(int argc, char **argv)
{
    struct fx f;
    int       rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s handlers|segv|segv-ucx\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    page_size = sysconf(_SC_PAGESIZE);
    page      = mmap(NULL, (size_t)page_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        perror("mmap");
        return 3;
    }
    fx_setup(&f, UCS_THREAD_MODE_SINGLE, 0);
    print_segv_owner();
    if (strcmp(argv[1], "handlers") == 0) {
        rc = mode_handlers(&f);
    } else if (strcmp(argv[1], "segv") == 0) {
        rc = mode_segv();
    } else if (strcmp(argv[1], "segv-ucx") == 0) {
        fflush(stdout);
        ((volatile char *)page)[0] = 1;
        rc = 71; /* not reached */
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        rc = 2;
    }
    fx_teardown(&f);
    return rc;
}
