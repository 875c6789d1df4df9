/*
 * test_proc.c: runs the built binary for the end-to-end suites (the interface is test_proc.h).
 */
#include "test_proc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "test.h"

void proc_free(proc_result *r)
{
    dk_free(r->out);
    dk_free(r->err);
    memset(r, 0, sizeof(*r));
}

/* The environment every spawned command gets: no server (DUCKLING_HOST at a port nothing
 * listens on, so `run` is local whatever runs on this machine) and a history file of the
 * test run's own. A test's env entries ("KEY=VALUE") come after and win. */
void child_env(const char *const *env)
{
    char history[512];
    snprintf(history, sizeof history, "%s/history", test_tmpdir());
    setenv("DUCKLING_HOST", "127.0.0.1:1", 1);
    setenv("DUCKLING_HISTORY", history, 1);
    for (size_t i = 0; env && env[i]; i++) putenv((char *)env[i]);
}

/* Runs the binary with args (NULL-terminated, args[0] is the subcommand), stdin from
 * stdin_text (or /dev/null). */
int spawn(proc_result *r, const char *stdin_text, const char *const *args)
{
    return spawn_env(r, stdin_text, args, NULL);
}

/* spawn with extra environment entries (NULL-terminated "KEY=VALUE"s, or NULL). */
int spawn_env(proc_result *r, const char *stdin_text, const char *const *args, const char *const *env)
{
    memset(r, 0, sizeof(*r));
    static int counter;
    char out_path[512], err_path[512], in_path[512];
    counter++;
    snprintf(out_path, sizeof out_path, "%s/cli-%d.out", test_tmpdir(), counter);
    snprintf(err_path, sizeof err_path, "%s/cli-%d.err", test_tmpdir(), counter);
    snprintf(in_path, sizeof in_path, "%s/cli-%d.in", test_tmpdir(), counter);
    char e[DK_ERRLEN];
    if (dk_file_write(in_path, stdin_text ? stdin_text : "", stdin_text ? strlen(stdin_text) : 0, e) != DK_OK) return -1;
    const char *argv[64];
    size_t n = 0;
    argv[n++] = test_cli_path();
    for (size_t i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int in = open(in_path, O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0) _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        child_env(env);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    r->exited = WIFEXITED(st);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (dk_file_read(out_path, 1 << 26, &r->out, &r->n_out, e) != DK_OK) return -1;
    if (dk_file_read(err_path, 1 << 26, &r->err, &r->n_err, e) != DK_OK) return -1;
    return 0;
}

int binary_ready(void)
{
    if (access(test_cli_path(), X_OK) != 0) {
        test_fail_at(__FILE__, __LINE__, "no binary at %s (build it first)", test_cli_path());
        return 0;
    }
    return 1;
}
