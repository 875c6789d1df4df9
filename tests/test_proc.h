/*
 * test_proc.h: running the built duckling binary from tests (test_proc.c): its stdout,
 * stderr and exit status, with stdin from a string and an environment without a server.
 * Shared by the suites that test commands end to end (test_cli*.c).
 */
#ifndef DK_TEST_PROC_H
#define DK_TEST_PROC_H

#include <stddef.h>

typedef struct proc_result {
    int exited;   /* 1 if it exited normally (no signal) */
    int status;   /* exit status */
    char *out;    /* stdout, NUL-terminated, dk_free */
    size_t n_out;
    char *err;    /* stderr */
    size_t n_err;
} proc_result;

void proc_free(proc_result *r);

/* Runs the binary with args (NULL-terminated, args[0] is the subcommand), stdin from
 * stdin_text (or empty). The environment: no server (DUCKLING_HOST at a port nothing listens
 * on) and a history file of the test run's own. 0, or -1 when it could not be run. */
int spawn(proc_result *r, const char *stdin_text, const char *const *args);
/* spawn with extra environment entries (NULL-terminated "KEY=VALUE"s, or NULL); they win. */
int spawn_env(proc_result *r, const char *stdin_text, const char *const *args, const char *const *env);

/* In a forked child before exec: the environment spawn gives (no server, the test run's own
 * history file) plus env's entries ("KEY=VALUE", NULL-terminated, may be NULL). */
void child_env(const char *const *env);

/* 1 when the binary exists (else records a failure and returns 0). */
int binary_ready(void);

#endif
