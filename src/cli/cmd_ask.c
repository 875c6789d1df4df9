/*
 * cmd_ask.c: `duckling ask --db FILE [--model M] [--escalate-to M2] QUESTION`: the SQL agent
 * (agent/) on the command line. It opens the data read-only (a .duckdb file, or CSV / Parquet /
 * JSON files as views named after them), makes the models (a local GGUF or store name loaded
 * here, or an OpenAI-compatible endpoint URL[#MODEL]), asks, and prints the SQL that ran, its
 * result and the answer, or with --json the whole agent_ask object.
 *
 * `--docs STORE.duckdb` adds a retrieval store (rag/, filled by `duckling ingest`): alone it
 * answers from the documents (agent_ask_docs), with --db the SQL agent gets the search_docs
 * tool too. The store's embedding model (the one recorded at ingest, or --embed-model) is
 * loaded here; -k, --source, --path, --after, --before, --mode, --exact and --rerank-model
 * shape the search. The text output ends with the cited sources, "[n] path § heading
 * (start-end)". Finding no passage is an answer (exit status 0), not an error.
 */
#include "cli/cli.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "sql/sql.h"

#define CMD "ask"
#define ASK_MAX_DATA_FILES 32
#define ASK_DEFAULT_CTX 4096

/* One model the agent may ask: an endpoint, or a model loaded here with its session. */
typedef struct ask_model {
    engine_model *model;
    engine_session *session;
    agent_llm *llm;
} ask_model;

typedef struct ask_opts {
    const char *data[ASK_MAX_DATA_FILES];
    size_t n_data;
    const char *model, *escalate_to, *api_key, *question;
    bool escalate_now, json, verbose;
    long max_repairs, max_rows, timeout_ms, n_ctx, n_threads, num_predict, seed;
    float temperature, min_confidence; /* min_confidence < 0: the agent's default */
    /* documents */
    const char *docs, *embed_model, *rerank_model, *source, *path_glob;
    long k;
    int64_t after, before;             /* Unix seconds; 0: no bound */
    rag_mode mode;
    bool exact;
} ask_opts;

/* The document store and the models its search needs. */
typedef struct ask_docs {
    rag_store *store;
    engine_model *embedder, *reranker;
} ask_docs;

static void ask_model_close(ask_model *m)
{
    agent_llm_free(m->llm);
    engine_session_free(m->session);
    engine_model_free(m->model);
    memset(m, 0, sizeof *m);
}

/* Opens spec: a URL is an endpoint, anything else a model loaded here. 0 or 1 (reported). */
static int ask_model_open(const ask_opts *o, const char *spec, ask_model *m)
{
    char err[DK_ERRLEN];
    memset(m, 0, sizeof *m);
    if (agent_spec_is_url(spec)) {
        if (agent_llm_openai(&m->llm, spec, o->api_key, err) != DK_OK) return cli_error(CMD, "%s", err);
        return 0;
    }
    if (cli_load_model(CMD, spec, false, (int)o->n_threads, false, &m->model)) return 1;
    if (engine_is_embedding(m->model)) {
        ask_model_close(m);
        return cli_error(CMD, "%s is an embedding model; the agent needs a chat model", spec);
    }
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = (size_t)o->n_ctx;
    sp.n_threads = (int)o->n_threads;
    if (engine_session_new(&m->session, m->model, &sp, err) != DK_OK ||
        agent_llm_local(&m->llm, m->session, spec, err) != DK_OK) {
        ask_model_close(m);
        return cli_error(CMD, "%s", err);
    }
    return 0;
}

static void ask_docs_close(ask_docs *d)
{
    engine_model_free(d->reranker);
    engine_model_free(d->embedder);
    rag_store_close(d->store);
    memset(d, 0, sizeof *d);
}

/* Opens the store read-only and loads its embedding model (unless the search is by keyword
 * only) and the reranker. 0 or 1 (reported). */
static int ask_docs_open(const ask_opts *o, ask_docs *d)
{
    char err[DK_ERRLEN];
    memset(d, 0, sizeof *d);
    if (rag_store_open(&d->store, o->docs, false, err) != DK_OK) return cli_error(CMD, "%s", err);
    if (o->mode != RAG_MODE_KEYWORD) {
        const char *name = o->embed_model ? o->embed_model : rag_store_embed_model(d->store);
        if (!name) return cli_error(CMD, "%s has no embedding model recorded (is it empty?); give --embed-model M", o->docs);
        if (cli_load_model(CMD, name, false, (int)o->n_threads, false, &d->embedder)) return 1;
        if (!engine_is_embedding(d->embedder) || engine_is_reranker(d->embedder))
            return cli_error(CMD, "%s is not an embedding model", name);
        if (rag_store_dim(d->store) && engine_n_embd(d->embedder) != rag_store_dim(d->store))
            return cli_error(CMD, "%s makes vectors of %zu dimensions, the store's have %zu", name,
                             engine_n_embd(d->embedder), rag_store_dim(d->store));
    }
    if (o->rerank_model) {
        if (cli_load_model(CMD, o->rerank_model, false, (int)o->n_threads, false, &d->reranker)) return 1;
        if (!engine_is_reranker(d->reranker)) return cli_error(CMD, "%s is not a reranker (a cross-encoder)", o->rerank_model);
    }
    return 0;
}

static void ask_search_opts(const ask_opts *o, const ask_docs *d, rag_search_opts *s)
{
    memset(s, 0, sizeof *s);
    s->k = (size_t)o->k;
    s->mode = o->mode;
    s->exact = o->exact;
    s->reranker = d->reranker;
    s->filter.source = o->source;
    s->filter.path_glob = o->path_glob;
    s->filter.after = o->after;
    s->filter.before = o->before;
}

static int ask_open_data(const ask_opts *o, sql_db **db)
{
    char err[DK_ERRLEN];
    if (sql_db_open_data(db, o->data, o->n_data, err) != DK_OK) return cli_error(CMD, "%s", err);
    return 0;
}

/* ---- options ---- */

static int parse_number_opt(int argc, char **argv, int *i, const char *name, long lo, long hi, long *out, int *r)
{
    const char *v = NULL;
    *r = cli_opt_value(CMD, argc, argv, i, name, &v);
    if (*r == 0) return 0;
    if (*r < 0 || cli_parse_long(CMD, name, v, lo, hi, out)) *r = -1;
    return 1;
}

/* "YYYY-MM-DD" as Unix seconds at 00:00 UTC. 0 or 1 (reported). */
static int parse_date_opt(const char *option, const char *v, int64_t *out)
{
    int y, m, d, n = 0;
    if (sscanf(v, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || v[n] != 0 || strlen(v) != 10 || y < 1970 || m < 1 ||
        m > 12 || d < 1 || d > 31)
        return cli_error(CMD, "%s: '%s' is not a date YYYY-MM-DD", option, v);
    struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    struct tm back;
    if (t == (time_t)-1 || !gmtime_r(&t, &back) || back.tm_mday != d || back.tm_mon != m - 1)
        return cli_error(CMD, "%s: '%s' is not a date YYYY-MM-DD", option, v);
    *out = (int64_t)t;
    return 0;
}

/* The document options; 1 when a[i] was one of them (r: 0 fine, -1 reported). */
static int parse_docs_opt(int argc, char **argv, int *i, ask_opts *o, int *r)
{
    static const struct { const char *name; size_t offset; } strings[] = {
        {"--docs", offsetof(ask_opts, docs)},
        {"--embed-model", offsetof(ask_opts, embed_model)},
        {"--rerank-model", offsetof(ask_opts, rerank_model)},
        {"--source", offsetof(ask_opts, source)},
        {"--path", offsetof(ask_opts, path_glob)},
    };
    const char *v = NULL;
    *r = 0;
    if (strcmp(argv[*i], "--exact") == 0) {
        o->exact = true;
        return 1;
    }
    for (size_t s = 0; s < sizeof strings / sizeof strings[0]; s++) {
        if ((*r = cli_opt_value(CMD, argc, argv, i, strings[s].name, &v)) == 0) continue;
        if (*r > 0) *(const char **)((char *)o + strings[s].offset) = v;
        return 1;
    }
    if ((*r = cli_opt_value(CMD, argc, argv, i, "--after", &v)) != 0) {
        if (*r > 0 && parse_date_opt("--after", v, &o->after)) *r = -1;
        return 1;
    }
    if ((*r = cli_opt_value(CMD, argc, argv, i, "--before", &v)) != 0) {
        if (*r > 0 && parse_date_opt("--before", v, &o->before)) *r = -1;
        return 1;
    }
    if ((*r = cli_opt_value(CMD, argc, argv, i, "--mode", &v)) != 0) {
        if (*r < 0) return 1;
        if (strcmp(v, "hybrid") == 0) o->mode = RAG_MODE_HYBRID;
        else if (strcmp(v, "vector") == 0) o->mode = RAG_MODE_VECTOR;
        else if (strcmp(v, "keyword") == 0) o->mode = RAG_MODE_KEYWORD;
        else {
            cli_error(CMD, "--mode: '%s' is not hybrid, vector or keyword", v);
            *r = -1;
        }
        return 1;
    }
    return parse_number_opt(argc, argv, i, "-k", 1, 100, &o->k, r);
}

static int parse_args(int argc, char **argv, ask_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_repairs = 2;
    o->min_confidence = -1;
    o->n_ctx = ASK_DEFAULT_CTX;
    o->num_predict = 512;
    o->model = getenv("DUCKLING_ASK_MODEL");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (a[0] != '-' || a[1] == 0) {
            if (o->question) return cli_error(CMD, "one QUESTION only (quote it): '%s'", a);
            o->question = a;
            continue;
        }
        if (strcmp(a, "--json") == 0) { o->json = true; continue; }
        if (strcmp(a, "--verbose") == 0) { o->verbose = true; continue; }
        if (strcmp(a, "--escalate") == 0) { o->escalate_now = true; continue; }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--db", &v)) != 0) {
            if (r < 0) return 1;
            if (o->n_data == ASK_MAX_DATA_FILES) return cli_error(CMD, "at most %d --db files", ASK_MAX_DATA_FILES);
            o->data[o->n_data++] = v;
            continue;
        }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--model", &v)) != 0) {
            if (r < 0) return 1;
            o->model = v;
            continue;
        }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--escalate-to", &v)) != 0) {
            if (r < 0) return 1;
            o->escalate_to = v;
            continue;
        }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--api-key", &v)) != 0) {
            if (r < 0) return 1;
            o->api_key = v;
            continue;
        }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--temperature", &v)) != 0) {
            if (r < 0 || cli_parse_float(CMD, "--temperature", v, 0, 10, &o->temperature)) return 1;
            continue;
        }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--min-confidence", &v)) != 0) {
            if (r < 0 || cli_parse_float(CMD, "--min-confidence", v, 0, 1, &o->min_confidence)) return 1;
            continue;
        }
        if (parse_docs_opt(argc, argv, &i, o, &r)) {
            if (r < 0) return 1;
            continue;
        }
        if (parse_number_opt(argc, argv, &i, "--max-repairs", 0, 20, &o->max_repairs, &r) ||
            parse_number_opt(argc, argv, &i, "--max-rows", 1, 100000, &o->max_rows, &r) ||
            parse_number_opt(argc, argv, &i, "--timeout", 1, 3600000, &o->timeout_ms, &r) ||
            parse_number_opt(argc, argv, &i, "--ctx", 64, 1 << 20, &o->n_ctx, &r) ||
            parse_number_opt(argc, argv, &i, "--threads", 1, 1024, &o->n_threads, &r) ||
            parse_number_opt(argc, argv, &i, "--seed", 0, 0x7fffffff, &o->seed, &r) ||
            parse_number_opt(argc, argv, &i, "--num-predict", 1, 1 << 20, &o->num_predict, &r) ||
            parse_number_opt(argc, argv, &i, "-n", 1, 1 << 20, &o->num_predict, &r)) {
            if (r < 0) return 1;
            continue;
        }
        return cli_error(CMD, "unknown option '%s' (see duckling help ask)", a);
    }
    if (o->n_data == 0 && !o->docs)
        return cli_error(CMD, "no data: give --db FILE.duckdb (or CSV / Parquet / JSON files) or --docs STORE.duckdb");
    if (!o->question || !o->question[0]) return cli_error(CMD, "no question (usage: duckling ask --db FILE QUESTION)");
    if (!o->model || !o->model[0]) return cli_error(CMD, "no model: give --model M (or set DUCKLING_ASK_MODEL)");
    if (o->escalate_now && !o->escalate_to) return cli_error(CMD, "--escalate needs --escalate-to");
    if (o->escalate_to && !o->n_data) return cli_error(CMD, "--escalate-to works with --db (the SQL agent) only");
    bool search_opts = o->k || o->source || o->path_glob || o->after || o->before || o->exact || o->rerank_model ||
                       o->embed_model || o->mode != RAG_MODE_HYBRID;
    if (search_opts && !o->docs) return cli_error(CMD, "the search options (-k, --source, --path, ...) need --docs STORE.duckdb");
    return 0;
}

/* ---- output ---- */

static void print_step(void *user, const json_t *step)
{
    (void)user;
    const char *kind = json_string_value(json_object_get(step, "kind"));
    const char *model = json_string_value(json_object_get(step, "model"));
    if (kind && strcmp(kind, "sql") == 0) {
        const char *error = json_string_value(json_object_get(step, "error"));
        fprintf(stderr, "[%s] run_sql: %s\n", model, json_string_value(json_object_get(step, "sql")));
        if (error) fprintf(stderr, "[%s]   error: %s\n", model, error);
        else fprintf(stderr, "[%s]   %lld rows\n", model, (long long)json_integer_value(json_object_get(step, "rows")));
    } else if (kind && strcmp(kind, "describe") == 0) {
        fprintf(stderr, "[%s] describe_table: %s\n", model, json_string_value(json_object_get(step, "table")));
    } else if (kind && strcmp(kind, "search") == 0) {
        const char *error = json_string_value(json_object_get(step, "error"));
        fprintf(stderr, "[%s] search_docs: %s\n", model ? model : "docs", json_string_value(json_object_get(step, "query")));
        if (error) fprintf(stderr, "[%s]   error: %s\n", model ? model : "docs", error);
        else {
            long long n = (long long)json_integer_value(json_object_get(step, "passages"));
            fprintf(stderr, "[%s]   %lld passage%s\n", model ? model : "docs", n, n == 1 ? "" : "s");
        }
    } else if (kind && strcmp(kind, "error") == 0) {
        fprintf(stderr, "[%s] error: %s\n", model, json_string_value(json_object_get(step, "error")));
    } else {
        fprintf(stderr, "[%s] answer\n", model);
    }
}

/* The result rows as a compact table (JSON values as text). */
static void print_rows(const json_t *answer)
{
    const json_t *cols = json_object_get(answer, "columns"), *rows = json_object_get(answer, "rows");
    size_t i;
    const json_t *c;
    json_array_foreach(cols, i, c) printf("%s%s", i ? " | " : "", json_string_value(json_object_get(c, "name")));
    printf("\n");
    const json_t *row;
    json_array_foreach(rows, i, row) {
        size_t j;
        const json_t *v;
        json_array_foreach(row, j, v) {
            if (j) printf(" | ");
            if (json_is_string(v)) printf("%s", json_string_value(v));
            else {
                char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
                printf("%s", s ? s : "?");
                free(s);
            }
        }
        printf("\n");
    }
    if (json_is_true(json_object_get(answer, "truncated"))) printf("(more rows were cut)\n");
}

/* "[n] path § heading (start-end)" for the cited sources, or for all of them when none is
 * cited. */
static void print_sources(const json_t *answer)
{
    const json_t *sources = json_object_get(answer, "sources"), *cited = json_object_get(answer, "citations");
    if (!json_array_size(sources)) return;
    bool all = json_array_size(cited) == 0;
    printf("\n%s\n", all ? "Sources (none cited):" : "Sources:");
    size_t i;
    const json_t *x;
    json_array_foreach(all ? sources : cited, i, x) {
        const json_t *src = all ? x : json_array_get(sources, (size_t)json_integer_value(x) - 1);
        const char *heading = json_string_value(json_object_get(src, "heading"));
        printf("[%lld] %s", (long long)json_integer_value(json_object_get(src, "n")),
               json_string_value(json_object_get(src, "path")));
        if (heading && heading[0]) printf(" \xc2\xa7 %s", heading);
        const char *unit = json_string_value(json_object_get(src, "unit"));
        printf(" (%s%lld-%lld)\n", unit && strcmp(unit, "row") == 0 ? "rows " : "",
               (long long)json_integer_value(json_object_get(src, "start")),
               (long long)json_integer_value(json_object_get(src, "end")));
    }
    const json_t *bad = json_object_get(answer, "invalid_citations");
    if (json_array_size(bad)) {
        printf("(cited but not a source:");
        json_array_foreach(bad, i, x) printf(" [%lld]", (long long)json_integer_value(x));
        printf(")\n");
    }
}

static void print_text(const json_t *answer)
{
    const char *sql = json_string_value(json_object_get(answer, "sql"));
    if (sql) {
        printf("SQL: %s\n\n", sql);
        print_rows(answer);
        printf("\n");
    }
    printf("%s\n", json_string_value(json_object_get(answer, "answer")));
    print_sources(answer);
    const char *reason = json_string_value(json_object_get(answer, "escalation_reason"));
    const char *model = json_string_value(json_object_get(answer, "model"));
    if (!model) return; /* nothing matched: no model was asked */
    printf("\n(model: %s", model);
    if (reason) printf(", escalated: %s", reason);
    printf(")\n");
}

static int print_answer(const ask_opts *o, const json_t *answer)
{
    if (o->json) {
        char *s = json_dumps(answer, JSON_COMPACT | JSON_REAL_PRECISION(10));
        if (!s) return cli_error(CMD, "out of memory");
        printf("%s\n", s);
        free(s);
    } else {
        print_text(answer);
    }
    fflush(stdout);
    if (!o->n_data) return 0; /* documents only: finding nothing is an answer too */
    /* an answer from passages alone has no SQL; a failed attempt has an "error" */
    if (o->docs && !json_object_get(answer, "error")) return 0;
    if (json_is_null(json_object_get(answer, "sql")))
        return cli_error(CMD, "no query worked: %s",
                         json_string_value(json_object_get(answer, "error")) ? json_string_value(json_object_get(answer, "error"))
                                                                              : "the model did not run one");
    return 0;
}

static int ask_with_docs_only(const ask_opts *o, const ask_model *m, const ask_docs *d)
{
    agent_docs_config cfg;
    agent_docs_config_default(&cfg);
    cfg.model = m->llm;
    cfg.store = d->store;
    cfg.store_name = o->docs;
    cfg.embedder = d->embedder;
    ask_search_opts(o, d, &cfg.search);
    cfg.max_tokens = o->num_predict;
    cfg.temperature = o->temperature;
    cfg.seed = (uint64_t)o->seed;
    if (o->verbose) cfg.on_step = print_step;
    json_t *answer = NULL;
    char err[DK_ERRLEN];
    if (agent_ask_docs(&cfg, o->question, &answer, err) != DK_OK) return cli_error(CMD, "%s", err);
    int status = print_answer(o, answer);
    json_decref(answer);
    return status;
}

static int ask_with_data(const ask_opts *o, sql_db *db, const ask_model *small, const ask_model *large,
                         const ask_docs *d)
{
    agent_config cfg;
    agent_config_default(&cfg);
    cfg.model = small->llm;
    cfg.escalate_to = large->llm;
    cfg.escalate_now = o->escalate_now;
    cfg.max_repairs = (int)o->max_repairs;
    cfg.min_confidence = o->min_confidence;
    cfg.limits.max_rows = (size_t)o->max_rows;
    cfg.limits.timeout_ms = (uint32_t)o->timeout_ms;
    cfg.max_tokens = o->num_predict;
    cfg.temperature = o->temperature;
    cfg.seed = (uint64_t)o->seed;
    if (o->verbose) cfg.on_step = print_step;
    if (d->store) {
        cfg.docs = d->store;
        cfg.embedder = d->embedder;
        ask_search_opts(o, d, &cfg.docs_search);
    }
    json_t *answer = NULL;
    char err[DK_ERRLEN];
    if (agent_ask(&cfg, db, o->question, &answer, err) != DK_OK) return cli_error(CMD, "%s", err);
    int status = print_answer(o, answer);
    json_decref(answer);
    return status;
}

int cli_ask(int argc, char **argv)
{
    ask_opts o;
    if (parse_args(argc, argv, &o)) return 1;
    sql_db *db = NULL;
    ask_model small = {0}, large = {0};
    ask_docs docs = {0};
    int status = 1;
    if (o.n_data && ask_open_data(&o, &db)) goto done;
    if (o.docs && ask_docs_open(&o, &docs)) goto done;
    if (ask_model_open(&o, o.model, &small)) goto done;
    if (o.escalate_to && ask_model_open(&o, o.escalate_to, &large)) goto done;
    status = db ? ask_with_data(&o, db, &small, &large, &docs) : ask_with_docs_only(&o, &small, &docs);
done:
    ask_model_close(&large);
    ask_model_close(&small);
    ask_docs_close(&docs);
    sql_db_free(db);
    return status;
}
