/*
 * Runs the injector's ucxf_is_ucx_object (preload/ucx_object.h) on each
 * line of stdin and prints "<ucx> <libucp>" per line, for the table test
 * that holds it and proc.IsUCXLibrary to the same answers.
 */
#include <stdio.h>
#include <string.h>

#include "ucx_object.h"

int main(void)
{
    char line[4096];
    int libucp, ucx;

    while (fgets(line, sizeof(line), stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        ucx = ucxf_is_ucx_object(line, &libucp);
        printf("%d %d\n", ucx, libucp);
    }
    return 0;
}
