/*
 * cmd_ingest.c: `duckling ingest --into STORE.duckdb [--model EMBED] PATH...`: fills a
 * retrieval store (rag/) with the chunks and vectors of files, directories and DuckDB tables,
 * for `duckling ask --docs`. The embedding model is --model, else the one the store was built
 * with, else $DUCKLING_EMBED_MODEL. A progress bar goes to stderr when it is a terminal (a
 * line per file otherwise); skipped files are named there with the reason; the summary goes to
 * stdout (--json: one object). Ctrl-C stops after the current batch, leaving the store as it
 * was before the file in progress; the exit status is then 130. Skipped files do not make
 * the exit status non-zero: they are reported, and the rest is ingested.
 */
#include "cli/cli.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rag/rag.h"

#define CMD "ingest"
#define BAR_WIDTH 24

static volatile int ingest_interrupted;

static void ingest_on_sigint(int sig)
{
    (void)sig;
    ingest_interrupted = 1;
}

typedef struct ingest_ui {
    bool tty, quiet;
    size_t last_file; /* the file the last line was about, + 1 */
} ingest_ui;

static void ui_progress(void *ud, const rag_progress *p)
{
    ingest_ui *ui = ud;
    if (ui->quiet) return;
    if (!ui->tty) {
        if (ui->last_file != p->i_file + 1) fprintf(stderr, "[%zu/%zu] %s\n", p->i_file + 1, p->n_files, p->path);
        ui->last_file = p->i_file + 1;
        return;
    }
    char bar[BAR_WIDTH + 1];
    size_t filled = p->chunks_total ? p->chunks_done * BAR_WIDTH / p->chunks_total : 0;
    for (size_t i = 0; i < BAR_WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    fprintf(stderr, "\r\033[K[%zu/%zu] [%s] %zu/%zu chunks  %s", p->i_file + 1, p->n_files, bar, p->chunks_done,
            p->chunks_total, p->path);
    fflush(stderr);
    ui->last_file = p->i_file + 1;
}

static void ui_skip(void *ud, const char *path, const char *why)
{
    ingest_ui *ui = ud;
    if (ui->tty && ui->last_file) fputs("\r\033[K", stderr);
    fprintf(stderr, "duckling ingest: skipped %s: %s\n", path, why);
}

static void ui_done(const ingest_ui *ui)
{
    if (ui->tty && ui->last_file && !ui->quiet) fputs("\r\033[K", stderr);
}

static int print_stats(const rag_ingest_stats *st, const rag_store *store, double seconds, bool as_json)
{
    if (as_json) {
        json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:I}", "files", (json_int_t)st->files, "added",
                              (json_int_t)st->added, "updated", (json_int_t)st->updated, "unchanged",
                              (json_int_t)st->unchanged, "skipped", (json_int_t)st->skipped, "chunks",
                              (json_int_t)st->chunks, "embedded", (json_int_t)st->embedded, "reused",
                              (json_int_t)st->reused, "embed_tokens", (json_int_t)st->embed_tokens, "embed_ms", st->embed_ms, "seconds", seconds, "store_sources",
                              (json_int_t)rag_store_n_sources(store), "store_chunks", (json_int_t)rag_store_n_chunks(store));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!s) return cli_error(CMD, "out of memory");
        puts(s);
        free(s); /* allocated by jansson */
    } else {
        printf("%zu files: %zu added, %zu updated, %zu unchanged, %zu skipped; %zu chunks written (%zu embedded, %zu reused)"
               " in %.1f s; the store has %zu sources, %zu chunks\n",
               st->files, st->added, st->updated, st->unchanged, st->skipped, st->chunks, st->embedded, st->reused,
               seconds, rag_store_n_sources(store), rag_store_n_chunks(store));
    }
    return fflush(stdout) == 0 ? 0 : cli_error(CMD, "cannot write the output");
}

typedef struct ingest_args {
    const char *into, *model;
    const char **paths;
    size_t n_paths;
    long chunk_tokens, overlap, batch, threads;
    bool json, quiet;
} ingest_args;

static int parse_args(int argc, char **argv, ingest_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *v = NULL;
        int r;
        if (arg[0] != '-' || arg[1] == 0) {
            a->paths[a->n_paths++] = arg;
            continue;
        }
        if (strcmp(arg, "--json") == 0) { a->json = true; continue; }
        if (strcmp(arg, "--quiet") == 0 || strcmp(arg, "-q") == 0) { a->quiet = true; continue; }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--into", &v)) != 0) {
            if (r < 0) return 1;
            a->into = v;
            continue;
        }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) return 1;
            a->model = v;
            continue;
        }
        struct { const char *name; long min, max; long *out; } nums[] = {
            {"--chunk-tokens", 16, 8192, &a->chunk_tokens}, {"--overlap", 1, 4096, &a->overlap},
            {"--batch", 1, 4096, &a->batch}, {"--threads", 1, 1024, &a->threads},
        };
        bool matched = false;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0] && !matched; k++) {
            if ((r = cli_opt_value(CMD, argc, argv, &i, nums[k].name, &v)) == 0) continue;
            if (r < 0 || cli_parse_long(CMD, nums[k].name, v, nums[k].min, nums[k].max, nums[k].out)) return 1;
            matched = true;
        }
        if (matched) continue;
        return cli_error(CMD, "unknown option '%s' (see duckling help ingest)", arg);
    }
    if (!a->into || a->n_paths == 0) return cli_error(CMD, "usage: duckling ingest --into STORE.duckdb [--model EMBED] PATH...");
    return 0;
}

/* The model named on the command line, else the store's, else $DUCKLING_EMBED_MODEL. */
static const char *pick_model(const ingest_args *a, const rag_store *store)
{
    if (a->model) return a->model;
    if (rag_store_embed_model(store)) return rag_store_embed_model(store);
    const char *env = getenv("DUCKLING_EMBED_MODEL");
    return env && env[0] ? env : NULL;
}

static int run_ingest(const ingest_args *a, rag_store *store, engine_model *model, const char *model_name)
{
    ingest_ui ui = {.tty = isatty(STDERR_FILENO) == 1, .quiet = a->quiet};
    rag_ingest_opts o = {0};
    o.embedder = model;
    o.model_name = model_name;
    o.chunk_tokens = (size_t)a->chunk_tokens;
    o.overlap_tokens = (size_t)a->overlap;
    o.batch = (size_t)a->batch;
    o.n_threads = a->threads ? (int)a->threads : 2;
    o.on_progress = ui_progress;
    o.on_skip = ui_skip;
    o.ud = &ui;
    o.cancel = &ingest_interrupted;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ingest_on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    rag_ingest_stats st;
    char err[DK_ERRLEN];
    uint64_t t0 = dk_now_ns();
    int rc = rag_ingest(store, a->paths, a->n_paths, &o, &st, err);
    double seconds = (double)(dk_now_ns() - t0) / 1e9;
    sigaction(SIGINT, &old, NULL);
    ui_done(&ui);
    if (rc == DK_ERR_CANCELLED) {
        fprintf(stderr, "duckling ingest: interrupted; the file in progress was rolled back\n");
        print_stats(&st, store, seconds, a->json);
        return 130;
    }
    if (rc != DK_OK) return cli_error(CMD, "%s", err);
    if (print_stats(&st, store, seconds, a->json)) return 1;
    return 0;
}

int cli_ingest(int argc, char **argv)
{
    ingest_args a = {0};
    a.paths = dk_calloc((size_t)argc, sizeof *a.paths);
    if (!a.paths) return cli_error(CMD, "out of memory");
    int status = 1;
    rag_store *store = NULL;
    engine_model *model = NULL;
    char err[DK_ERRLEN];
    if (parse_args(argc, argv, &a)) goto done;
    if (rag_store_open(&store, a.into, true, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    const char *name = pick_model(&a, store);
    if (!name) {
        cli_error(CMD, "no embedding model: give --model (a .gguf path or a store name) or set $DUCKLING_EMBED_MODEL");
        goto done;
    }
    if (cli_load_model(CMD, name, false, (int)a.threads, false, &model)) goto done;
    if (!engine_is_embedding(model)) {
        cli_error(CMD, "%s is not an embedding model (ingest needs a bert-family model such as bge or all-MiniLM)", name);
        goto done;
    }
    status = run_ingest(&a, store, model, name);
done:
    engine_model_free(model);
    rag_store_close(store);
    dk_free(a.paths);
    return status;
}
