/*
 * args.c: helpers shared by the command files: option values, strict number and id-list
 * parsing, the one-line error report and model loading. No command logic lives here.
 */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/store.h"

int cli_error(const char *cmd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "duckling %s: %s\n", cmd, msg);
    return 1;
}

int cli_opt_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) {
        cli_error(cmd, "option %s needs a value", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int cli_parse_long(const char *cmd, const char *option, const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != 0) {
        cli_error(cmd, "%s: '%s' is not an integer", option, s);
        return -1;
    }
    if (v < min || v > max) {
        cli_error(cmd, "%s: %ld is out of range [%ld, %ld]", option, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_float(const char *cmd, const char *option, const char *s, float min, float max, float *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != 0 || !isfinite(v)) {
        cli_error(cmd, "%s: '%s' is not a number", option, s);
        return -1;
    }
    if (v < min || v > max) {
        cli_error(cmd, "%s: %g is out of range [%g, %g]", option, v, (double)min, (double)max);
        return -1;
    }
    *out = (float)v;
    return 0;
}

int cli_parse_ids(const char *cmd, const char *option, const char *s, int32_t **ids, size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    int32_t *v = dk_malloc_array(cap, sizeof(int32_t));
    if (!v) {
        cli_error(cmd, "out of memory");
        return -1;
    }
    size_t n = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ') p++;
        char *end = NULL;
        errno = 0;
        long long x = (*p >= '0' && *p <= '9') ? strtoll(p, &end, 10) : -1;
        if (x < 0 || errno || x > INT32_MAX) {
            dk_free(v);
            cli_error(cmd, "%s: bad token id list '%s' (expected ids like 1,2,3)", option, s);
            return -1;
        }
        v[n++] = (int32_t)x;
        p = end;
        while (*p == ' ') p++;
        if (*p == 0) break;
        if (*p != ',') {
            dk_free(v);
            cli_error(cmd, "%s: bad token id list '%s' (expected ids like 1,2,3)", option, s);
            return -1;
        }
        p++;
    }
    *ids = v;
    *n_ids = n;
    return 0;
}

int cli_load_model(const char *cmd, const char *model, bool vocab_only, int n_threads, bool exact, engine_model **out)
{
    char err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.vocab_only = vocab_only;
    lp.n_threads = n_threads;
    lp.exact = exact;
    /* MODEL is a path when it reads as one (/..., ./..., ../..., *.gguf): loaded as given, so
     * the engine reports what is wrong with the file; anything else is a store name (or a
     * file the store finds by that name). */
    size_t n = strlen(model);
    bool is_path = model[0] == '/' || strncmp(model, "./", 2) == 0 || strncmp(model, "../", 3) == 0 ||
                   (n > 5 && strcasecmp(model + n - 5, ".gguf") == 0);
    if (is_path) {
        if (engine_model_load(out, model, &lp, err) != DK_OK) return cli_error(cmd, "%s", err);
        return 0;
    }
    store *st = NULL;
    store_model *m = NULL;
    int rc = store_open(&st, NULL, NULL, err);
    if (rc == DK_OK) rc = store_resolve(st, model, &m, err);
    if (rc == DK_OK) rc = engine_model_load(out, m->gguf_path, &lp, err);
    store_model_free(m);
    store_free(st);
    return rc == DK_OK ? 0 : cli_error(cmd, "%s", err);
}
