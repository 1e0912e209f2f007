/*
 * fdwatch: a program that never uses UCX and watches its own file
 * descriptors.
 *
 *   fdwatch
 *
 * Lists the open descriptors first thing in main, again 200 ms later, and
 * prints
 *
 *   FDS start=<list> later=<list>
 *
 * exiting 1 when the lists differ. A single-threaded program owns every
 * descriptor number: a library that opens or closes descriptors on a thread
 * of its own while main runs can take a number the program has just closed
 * and is about to reuse (dash's redirections close(1), then dup2(f, 1)).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void list_fds(char *buf, size_t len)
{
    DIR           *d = opendir("/proc/self/fd");
    struct dirent *e;
    size_t         n = 0;

    buf[0] = '\0';
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) {
            continue;
        }
        n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%s", n ? "," : "", e->d_name);
    }
    closedir(d);
}

int main(void)
{
    static char     start[4096], later[4096];
    struct timespec ts = {0, 200000000};

    list_fds(start, sizeof(start));
    nanosleep(&ts, NULL);
    list_fds(later, sizeof(later));
    printf("FDS start=%s later=%s\n", start, later);
    return strcmp(start, later) != 0;
}
