/*
 * main.c: the test runner. Runs every TEST collected into test_registry.inc (or those named
 * on the command line, as SUITE or SUITE.NAME), prints each failure with file and line, and
 * ends with "N passed, N failed". Exit status 0 only when nothing failed.
 */
#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/base.h"

#define X(suite, name) void test_##suite##__##name(void);
#include "test_registry.inc"
#undef X

struct test_entry {
    const char *suite, *name;
    void (*fn)(void);
};

static const struct test_entry all_tests[] = {
#define X(suite, name) {#suite, #name, test_##suite##__##name},
#include "test_registry.inc"
#undef X
    {NULL, NULL, NULL},
};

static int current_failures;
static const struct test_entry *current;

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
    current_failures++;
    if (current_failures > 20) return; /* one broken test should not flood the log */
    fprintf(stderr, "  FAIL %s.%s %s:%d: ", current->suite, current->name, file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void test_log(const char *fmt, ...)
{
    fprintf(stderr, "  [%s.%s] ", current->suite, current->name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int test_failures(void) { return current_failures; }

const char *test_kit_path(void) { return dk_getenv_or("DUCKLING_KIT", "../shared/kit"); }

const char *test_kit_file(char *buf, size_t buf_size, const char *relative)
{
    snprintf(buf, buf_size, "%s/%s", test_kit_path(), relative);
    return buf;
}

const char *test_cli_path(void) { return dk_getenv_or("DUCKLING_BIN", "build/duckling"); }

static char tmpdir[256];

static void remove_tmpdir(void)
{
    if (!tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmpdir);
}

const char *test_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/duckling-tests-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(2);
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

static int selected(const struct test_entry *t, int argc, char **argv)
{
    if (argc <= 1) return 1;
    for (int i = 1; i < argc; i++) {
        size_t ns = strlen(t->suite);
        if (strcmp(argv[i], t->suite) == 0) return 1;
        if (strncmp(argv[i], t->suite, ns) == 0 && argv[i][ns] == '.' && strcmp(argv[i] + ns + 1, t->name) == 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int n_passed = 0, n_failed = 0;
    for (const struct test_entry *t = all_tests; t->fn; t++) {
        if (!selected(t, argc, argv)) continue;
        current = t;
        current_failures = 0;
        uint64_t t0 = dk_now_ns();
        t->fn();
        double ms = (double)(dk_now_ns() - t0) / 1e6;
        if (current_failures) {
            n_failed++;
            fprintf(stderr, "FAIL %s.%s (%d failures, %.0f ms)\n", t->suite, t->name, current_failures, ms);
        } else {
            n_passed++;
            fprintf(stderr, "ok   %s.%s (%.0f ms)\n", t->suite, t->name, ms);
        }
    }
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
