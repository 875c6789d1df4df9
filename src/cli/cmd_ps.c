/*
 * cmd_ps.c: `duckling ps [--host URL]`: the models a running server has loaded (GET /api/ps),
 * as a table with Ollama's columns: NAME, ID (the first 12 hex digits of the digest), SIZE,
 * PROCESSOR, CONTEXT and UNTIL (when its keep_alive runs out: "4 minutes from now",
 * "Forever"). Not for: loading or unloading models (run, and keep_alive 0 through the API).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define CMD "ps"

/* Bytes as Ollama prints them (decimal units): "532 MB", "1.2 GB", "14 kB". */
static void format_bytes(char *buf, size_t n, uint64_t b)
{
    static const char *const units[] = {"TB", "GB", "MB", "kB"};
    static const double scale[] = {1e12, 1e9, 1e6, 1e3};
    for (size_t i = 0; i < 4; i++) {
        if ((double)b < scale[i]) continue;
        double v = (double)b / scale[i];
        if (v >= 10 || v == (double)(uint64_t)v) snprintf(buf, n, "%llu %s", (unsigned long long)v, units[i]);
        else snprintf(buf, n, "%.1f %s", v, units[i]);
        return;
    }
    snprintf(buf, n, "%llu B", (unsigned long long)b);
}

/* "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" to unix seconds; -1 if it is not that. */
static int parse_rfc3339(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int consumed = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &consumed) != 6)
        return -1;
    const char *p = s + consumed;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) {}
    int64_t offset = 0;
    if (*p == '+' || *p == '-') {
        int hh = 0, mm = 0;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) return -1;
        offset = (int64_t)(hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
    } else if (*p != 'Z' && *p != 'z') {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm) - offset;
    return 0;
}

/* How far away a moment is, in the words of Ollama's `ps` ("4 minutes from now",
 * "About an hour from now", "Forever" for more than ten years, "Never" when unknown). */
static void format_until(char *buf, size_t n, const char *expires_at)
{
    int64_t t;
    if (parse_rfc3339(expires_at, &t) != 0) {
        snprintf(buf, n, "Never");
        return;
    }
    int64_t delta = t - (int64_t)time(NULL);
    const char *suffix = delta >= 0 ? "from now" : "ago";
    int64_t s = delta >= 0 ? delta : -delta;
    if (s > 10LL * 365 * 24 * 3600) snprintf(buf, n, "Forever");
    else if (s < 1) snprintf(buf, n, "Less than a second %s", suffix);
    else if (s == 1) snprintf(buf, n, "1 second %s", suffix);
    else if (s < 60) snprintf(buf, n, "%lld seconds %s", (long long)s, suffix);
    else if (s < 120) snprintf(buf, n, "About a minute %s", suffix);
    else if (s < 3600) snprintf(buf, n, "%lld minutes %s", (long long)(s / 60), suffix);
    else if (s < 7200) snprintf(buf, n, "About an hour %s", suffix);
    else if (s < 48 * 3600) snprintf(buf, n, "%lld hours %s", (long long)(s / 3600), suffix);
    else snprintf(buf, n, "%lld days %s", (long long)(s / 86400), suffix);
}

/* "100% CPU", "100% GPU" or "48%/52% CPU/GPU" from the share of the model in GPU memory. */
static void format_processor(char *buf, size_t n, uint64_t size, uint64_t size_vram)
{
    if (size_vram == 0 || size == 0) snprintf(buf, n, "100%% CPU");
    else if (size_vram >= size) snprintf(buf, n, "100%% GPU");
    else {
        int gpu = (int)((double)size_vram * 100.0 / (double)size + 0.5);
        snprintf(buf, n, "%d%%/%d%% CPU/GPU", 100 - gpu, gpu);
    }
}

/* Columns as wide as their longest cell (name_width for NAME), three spaces apart, as Ollama's. */
static void print_row(int name_width, const char *name, const char *id, const char *size, const char *proc, const char *ctx,
                      const char *until)
{
    printf("%-*s   %-12s   %-9s   %-9s   %-7s   %s\n", name_width, name, id, size, proc, ctx, until);
}

int cli_ps(int argc, char **argv)
{
    const char *host = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int r = cli_opt_value(CMD, argc, argv, &i, "--host", &v);
        if (r < 0) return 1;
        if (r > 0) {
            host = v;
            continue;
        }
        return cli_error(CMD, "unexpected argument '%s' (usage: duckling ps [--host URL])", argv[i]);
    }
    char err[DK_ERRLEN];
    dk_buf url = {0};
    json_t *reply = NULL;
    int status = 1;
    if (cli_host_url(host, &url, err) != DK_OK || cli_client_get(url.data, "/api/ps", &reply, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    const json_t *models = json_object_get(reply, "models");
    if (!json_is_array(models)) {
        cli_error(CMD, "unexpected reply from the server at %s (no models list)", cli_host_name(url.data));
        goto done;
    }
    size_t i;
    const json_t *m;
    int name_width = 4;
    json_array_foreach(models, i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (name && (int)strlen(name) > name_width && strlen(name) < 200) name_width = (int)strlen(name);
    }
    print_row(name_width, "NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL");
    json_array_foreach(models, i, m) {
        const char *name = json_string_value(json_object_get(m, "name"));
        const char *digest = json_string_value(json_object_get(m, "digest"));
        if (!digest) digest = "";
        if (strncmp(digest, "sha256:", 7) == 0) digest += 7;
        char id[13], size[32], proc[32], ctx[32], until[64];
        dk_strlcpy(id, digest, sizeof id);
        uint64_t n_bytes = (uint64_t)json_integer_value(json_object_get(m, "size"));
        format_bytes(size, sizeof size, n_bytes);
        format_processor(proc, sizeof proc, n_bytes, (uint64_t)json_integer_value(json_object_get(m, "size_vram")));
        const json_t *n_ctx = json_object_get(m, "context_length");
        if (json_is_integer(n_ctx)) snprintf(ctx, sizeof ctx, "%lld", (long long)json_integer_value(n_ctx));
        else snprintf(ctx, sizeof ctx, "-");
        format_until(until, sizeof until, json_string_value(json_object_get(m, "expires_at")));
        print_row(name_width, name ? name : "?", id, size, proc, ctx, until);
    }
    status = 0;
done:
    json_decref(reply);
    dk_buf_free(&url);
    return status;
}
