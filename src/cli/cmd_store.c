/*
 * cmd_store.c: the model store commands: pull (with a progress bar on stderr), list, show, rm,
 * cp and create. Each opens the store ($DUCKLING_MODELS, and Ollama's read-only), does one
 * thing through store/store.h, prints its result on stdout (progress on stderr) and reports
 * a failure as one line on stderr. Sizes and ages are printed as Ollama prints them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "store/store.h"

static int open_store(const char *cmd, store **st)
{
    char err[DK_ERRLEN];
    if (store_open(st, NULL, NULL, err) != DK_OK) return cli_error(cmd, "%s", err);
    return 0;
}

/* "1.2 GB": Ollama's format.HumanBytes (powers of 1000). */
static void human_bytes(uint64_t b, char *buf, size_t n)
{
    static const char *const units[] = {"KB", "MB", "GB", "TB"};
    if (b < 1000) {
        snprintf(buf, n, "%llu B", (unsigned long long)b);
        return;
    }
    double v = (double)b / 1000;
    int u = 0;
    while (v >= 1000 && u < 3) {
        v /= 1000;
        u++;
    }
    if (v >= 10 || v == (double)(uint64_t)v) snprintf(buf, n, "%llu %s", (unsigned long long)v, units[u]);
    else snprintf(buf, n, "%.1f %s", v, units[u]);
}

/* "3 minutes ago": Ollama's format.HumanTime. */
static void human_ago(int64_t then, char *buf, size_t n)
{
    int64_t s = (int64_t)time(NULL) - then;
    if (s < 0) s = 0;
    int64_t m = s / 60, h = s / 3600;
    if (s < 1) snprintf(buf, n, "Less than a second ago");
    else if (s == 1) snprintf(buf, n, "1 second ago");
    else if (s < 60) snprintf(buf, n, "%lld seconds ago", (long long)s);
    else if (m == 1) snprintf(buf, n, "About a minute ago");
    else if (m < 60) snprintf(buf, n, "%lld minutes ago", (long long)m);
    else if (h == 1) snprintf(buf, n, "About an hour ago");
    else if (h < 48) snprintf(buf, n, "%lld hours ago", (long long)h);
    else if (h < 24 * 14) snprintf(buf, n, "%lld days ago", (long long)(h / 24));
    else if (h < 24 * 60) snprintf(buf, n, "%lld weeks ago", (long long)(h / (24 * 7)));
    else if (h < 24 * 730) snprintf(buf, n, "%lld months ago", (long long)(h / (24 * 30)));
    else snprintf(buf, n, "%lld years ago", (long long)(h / (24 * 365)));
}

/* ------------------------------------------------------------------ progress */

typedef struct progress_view {
    bool tty;
    bool line_open;    /* a tty line without its newline yet */
    char status[160];  /* the last status shown */
} progress_view;

static void progress_end_line(progress_view *v)
{
    if (v->line_open) fputc('\n', stderr);
    v->line_open = false;
}

static int progress_show(void *user, const char *status, const char *digest, uint64_t total, uint64_t completed)
{
    (void)digest;
    progress_view *v = user;
    bool same = strcmp(v->status, status) == 0;
    if (!same) {
        progress_end_line(v);
        snprintf(v->status, sizeof v->status, "%s", status);
    }
    if (!v->tty) {
        /* plain lines: a status once, a transfer once more when it is complete */
        char size[32];
        human_bytes(total, size, sizeof size);
        if (total == 0 && !same) fprintf(stderr, "%s\n", status);
        else if (total > 0 && !same) fprintf(stderr, "%s: %s\n", status, size);
        fflush(stderr);
        return 0;
    }
    if (total == 0) {
        if (!same) fprintf(stderr, "%s", status);
    } else {
        int pct = (int)(completed * 100 / total);
        int filled = (int)(completed * 25 / total);
        char bar[26 * 3 + 1];
        size_t k = 0;
        for (int i = 0; i < 25; i++) {
            const char *cell = i < filled ? "\xe2\x96\x88" : " "; /* U+2588 */
            for (const char *c = cell; *c; c++) bar[k++] = *c;
        }
        bar[k] = 0;
        char done[32], all[32];
        human_bytes(completed, done, sizeof done);
        human_bytes(total, all, sizeof all);
        fprintf(stderr, "\r\033[K%s: %3d%% \xe2\x96\x95%s\xe2\x96\x8f %s/%s", status, pct, bar, done, all);
    }
    v->line_open = true;
    fflush(stderr);
    return 0;
}

/* ------------------------------------------------------------------ pull */

int cli_pull(int argc, char **argv)
{
    const char *name = NULL;
    bool insecure = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--insecure") == 0) insecure = true;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_error("pull", "unknown option %s", argv[i]);
        else if (!name) name = argv[i];
        else return cli_error("pull", "one model at a time (got '%s' and '%s')", name, argv[i]);
    }
    if (!name) return cli_error("pull", "usage: duckling pull NAME [--insecure]");
    store *st = NULL;
    if (open_store("pull", &st)) return 1;
    progress_view view = {.tty = isatty(STDERR_FILENO)};
    store_pull_params pp = {.insecure = insecure, .progress = progress_show, .user = &view};
    char err[DK_ERRLEN];
    int rc = store_pull(st, name, &pp, err);
    progress_end_line(&view);
    store_free(st);
    return rc == DK_OK ? 0 : cli_error("pull", "%s", err);
}

/* ------------------------------------------------------------------ list */

int cli_list(int argc, char **argv)
{
    if (argc > 1) return cli_error("list", "unexpected argument '%s'", argv[1]);
    store *st = NULL;
    if (open_store("list", &st)) return 1;
    store_model **models = NULL;
    size_t n = 0;
    char err[DK_ERRLEN];
    if (store_list(st, &models, &n, err) != DK_OK) {
        store_free(st);
        return cli_error("list", "%s", err);
    }
    size_t w_name = 4, w_size = 4;
    char (*sizes)[32] = dk_calloc(n ? n : 1, sizeof(*sizes));
    for (size_t i = 0; sizes && i < n; i++) {
        human_bytes(models[i]->size, sizes[i], sizeof sizes[i]);
        if (strlen(models[i]->name) > w_name) w_name = strlen(models[i]->name);
        if (strlen(sizes[i]) > w_size) w_size = strlen(sizes[i]);
    }
    printf("%-*s    %-12s    %-*s    %s\n", (int)w_name, "NAME", "ID", (int)w_size, "SIZE", "MODIFIED");
    for (size_t i = 0; sizes && i < n; i++) {
        char ago[64];
        human_ago(models[i]->modified, ago, sizeof ago);
        printf("%-*s    %.12s    %-*s    %s\n", (int)w_name, models[i]->name, models[i]->digest + 7, (int)w_size,
               sizes[i], ago);
    }
    for (size_t i = 0; i < n; i++) store_model_free(models[i]);
    dk_free(models);
    store_free(st);
    if (!sizes) return cli_error("list", "out of memory");
    dk_free(sizes);
    return 0;
}

/* ------------------------------------------------------------------ show */

static void print_param_value(const json_t *v)
{
    if (json_is_string(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY);
        printf("%s", s ? s : "");
        free(s);
    } else if (json_is_integer(v)) {
        printf("%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        printf("%g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        printf("%s", json_is_true(v) ? "true" : "false");
    }
}

/* One "name value" line per parameter (stop: one per string), as `ollama show --parameters`. */
static void print_params(const json_t *params, const char *indent)
{
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)params, key, value) {
        size_t n = json_is_array(value) ? json_array_size(value) : 1;
        for (size_t i = 0; i < n; i++) {
            printf("%s%-30s ", indent, key);
            print_param_value(json_is_array(value) ? json_array_get(value, i) : value);
            printf("\n");
        }
    }
}

static void print_block(const char *title, const char *text)
{
    printf("  %s\n", title);
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        printf("    %.*s\n", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
    printf("\n");
}

static void show_summary(const store_model *m, const store_gguf_info *info)
{
    printf("  Model\n");
    printf("    %-20s%s\n", "architecture", info->arch);
    printf("    %-20s%s\n", "parameters", info->parameter_size);
    if (info->context_length) printf("    %-20s%llu\n", "context length", (unsigned long long)info->context_length);
    if (info->embedding_length) printf("    %-20s%llu\n", "embedding length", (unsigned long long)info->embedding_length);
    if (info->file_type[0]) printf("    %-20s%s\n", "quantization", info->file_type);
    printf("\n  Capabilities\n");
    const char *tmpl = m->template_text ? m->template_text : info->chat_template;
    printf("    %s\n", info->embedding ? "embedding" : "completion");
    if (!info->embedding && tmpl && strstr(tmpl, "tools")) printf("    tools\n");
    if (!info->embedding && tmpl && (strstr(tmpl, "<think>") || strstr(tmpl, "enable_thinking"))) printf("    thinking\n");
    printf("\n");
    if (json_object_size(m->params)) {
        printf("  Parameters\n");
        print_params(m->params, "    ");
        printf("\n");
    }
    if (m->system) print_block("System", m->system);
    if (m->license) print_block("License", m->license);
}

int cli_show(int argc, char **argv)
{
    const char *name = NULL, *part = NULL;
    static const char *const parts[] = {"--modelfile", "--template", "--parameters", "--system", "--license"};
    for (int i = 1; i < argc; i++) {
        bool known = false;
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++)
            if (strcmp(argv[i], parts[k]) == 0) known = true;
        if (known && part) return cli_error("show", "one of %s and %s", part, argv[i]);
        if (known) part = argv[i];
        else if (argv[i][0] == '-' && argv[i][1]) return cli_error("show", "unknown option %s", argv[i]);
        else if (!name) name = argv[i];
        else return cli_error("show", "unexpected argument '%s'", argv[i]);
    }
    if (!name) return cli_error("show", "usage: duckling show MODEL [--modelfile | --template | --parameters | --system | --license]");
    store *st = NULL;
    if (open_store("show", &st)) return 1;
    char err[DK_ERRLEN];
    store_model *m = NULL;
    store_gguf_info info = {0};
    int rc = store_resolve(st, name, &m, err);
    if (rc == DK_OK) rc = store_gguf_info_read(m->gguf_path, &info, err);
    store_free(st);
    if (rc != DK_OK) {
        store_model_free(m);
        return cli_error("show", "%s", err);
    }
    if (!part) {
        show_summary(m, &info);
    } else if (strcmp(part, "--modelfile") == 0) {
        char *text = store_modelfile_text(m);
        if (text) fputs(text, stdout);
        else rc = DK_ERR_NOMEM;
        dk_free(text);
    } else if (strcmp(part, "--template") == 0) {
        const char *t = m->template_text ? m->template_text : info.chat_template;
        if (t) printf("%s\n", t);
    } else if (strcmp(part, "--parameters") == 0) {
        if (m->params) print_params(m->params, "");
    } else if (strcmp(part, "--system") == 0) {
        if (m->system) printf("%s\n", m->system);
    } else if (m->license) {
        printf("%s\n", m->license);
    }
    store_gguf_info_free(&info);
    store_model_free(m);
    return rc == DK_OK ? 0 : cli_error("show", "out of memory");
}

/* ------------------------------------------------------------------ rm, cp */

int cli_rm(int argc, char **argv)
{
    if (argc < 2) return cli_error("rm", "usage: duckling rm MODEL...");
    store *st = NULL;
    if (open_store("rm", &st)) return 1;
    char err[DK_ERRLEN];
    int status = 0;
    for (int i = 1; i < argc && status == 0; i++) {
        if (store_remove(st, argv[i], err) != DK_OK) status = cli_error("rm", "%s", err);
        else printf("deleted '%s'\n", argv[i]);
    }
    store_free(st);
    return status;
}

int cli_cp(int argc, char **argv)
{
    if (argc != 3) return cli_error("cp", "usage: duckling cp SOURCE DESTINATION");
    store *st = NULL;
    if (open_store("cp", &st)) return 1;
    char err[DK_ERRLEN];
    int rc = store_copy(st, argv[1], argv[2], err);
    store_free(st);
    if (rc != DK_OK) return cli_error("cp", "%s", err);
    printf("copied '%s' to '%s'\n", argv[1], argv[2]);
    return 0;
}

/* ------------------------------------------------------------------ create */

/* A relative FROM path in a Modelfile is relative to the Modelfile's directory (as Ollama reads
 * it); names and absolute paths are left alone. Returns a new string or NULL when unchanged. */
static char *from_beside(const char *from, const char *modelfile_path)
{
    size_t n = strlen(from);
    bool pathlike = strncmp(from, "./", 2) == 0 || strncmp(from, "../", 3) == 0 ||
                    (n > 5 && strcasecmp(from + n - 5, ".gguf") == 0);
    const char *slash = strrchr(modelfile_path, '/');
    if (from[0] == '/' || from[0] == '~' || !pathlike || !slash) return NULL;
    dk_buf b = {0};
    dk_buf_printf(&b, "%.*s/%s", (int)(slash - modelfile_path), modelfile_path, from);
    return dk_buf_detach(&b);
}

int cli_create(int argc, char **argv)
{
    const char *name = NULL, *file = "Modelfile", *quantize = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int got = cli_opt_value("create", argc, argv, &i, "-f", &v);
        if (got == 0) got = cli_opt_value("create", argc, argv, &i, "--file", &v);
        if (got < 0) return 1;
        if (got) {
            file = v;
            continue;
        }
        got = cli_opt_value("create", argc, argv, &i, "--quantize", &v);
        if (got == 0) got = cli_opt_value("create", argc, argv, &i, "-q", &v);
        if (got < 0) return 1;
        if (got) quantize = v;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_error("create", "unknown option %s", argv[i]);
        else if (!name) name = argv[i];
        else return cli_error("create", "unexpected argument '%s'", argv[i]);
    }
    if (!name) return cli_error("create", "usage: duckling create NAME [-f Modelfile] [--quantize TYPE]");
    char err[DK_ERRLEN];
    char *text = NULL;
    size_t n_text = 0;
    if (dk_file_read(file, 1 << 24, &text, &n_text, err) != DK_OK) return cli_error("create", "%s", err);
    store_modelfile mf;
    int rc = store_modelfile_parse(text, &mf, err);
    dk_free(text);
    if (rc != DK_OK) return cli_error("create", "%s: %s", file, err);
    char *beside = from_beside(mf.from, file);
    if (beside) {
        dk_free(mf.from);
        mf.from = beside;
    }
    store *st = NULL;
    if (open_store("create", &st)) {
        store_modelfile_free(&mf);
        return 1;
    }
    progress_view view = {.tty = false}; /* create's steps are short: plain lines */
    store_create_params cp = {.quantize = quantize, .progress = progress_show, .user = &view};
    rc = store_create(st, name, &mf, &cp, err);
    store_modelfile_free(&mf);
    store_free(st);
    return rc == DK_OK ? 0 : cli_error("create", "%s", err);
}
