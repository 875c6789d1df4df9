/*
 * bench/sql.c: throughput of prompt() inside SQL. A table of R synthetic reviews in an
 * in-memory DuckDB; `SELECT count(prompt('Classify ...' || review)) FROM reviews` runs with
 * the model functions of sql.h (their rows decoded together through one engine_batcher, P
 * sessions), once per P given. Prints rows/s, generated tokens/s and how full the shared
 * forward passes were. Greedy, at most N tokens per answer. Not a test: never timed by
 * `make test`.
 *
 *   build/bench-sql MODEL.gguf [-r 1000] [-n 16] [-t THREADS] [-p 1,8,16]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "sql/sql.h"

typedef struct bench_opts {
    const char *model;
    long n_rows, n_predict;
    int n_threads;
    int parallel[8];
    int n_parallel;
} bench_opts;

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end = NULL;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 256) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static int parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.n_rows = 1000, .n_predict = 16, .n_threads = 0, .parallel = {8}, .n_parallel = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-r") == 0 && v) o->n_rows = atol(v), i++;
        else if (strcmp(a, "-n") == 0 && v) o->n_predict = atol(v), i++;
        else if (strcmp(a, "-t") == 0 && v) o->n_threads = atoi(v), i++;
        else if (strcmp(a, "-p") == 0 && v) {
            if ((o->n_parallel = parse_list(v, o->parallel, 8)) <= 0) return -1;
            i++;
        } else if (a[0] != '-' && !o->model) o->model = a;
        else return -1;
    }
    return o->model && o->n_rows > 0 && o->n_predict > 0 ? 0 : -1;
}

static int read_count(void *user, size_t i_statement, const sql_result *res, char *err)
{
    (void)i_statement;
    (void)err;
    *(long *)user = atol(sql_result_value(res, 0, 0));
    return DK_OK;
}

/* One run with `parallel` sessions: a fresh database (so the batcher's counts are this
 * run's). 0 or -1. */
static int bench_run(engine_model *model, const bench_opts *o, int parallel)
{
    char err[DK_ERRLEN];
    sql_db *db = NULL;
    if (sql_db_open_shell(&db, NULL, 0, err) != DK_OK) {
        fprintf(stderr, "bench-sql: %s\n", err);
        return -1;
    }
    sql_functions_config cfg;
    sql_functions_config_default(&cfg);
    cfg.model = model;
    cfg.n_threads = o->n_threads;
    cfg.parallel = parallel;
    cfg.num_predict = o->n_predict;
    cfg.n_ctx = 512;
    sql_functions *fns = NULL;
    char setup[512];
    snprintf(setup, sizeof setup,
             "CREATE TABLE reviews AS SELECT range AS id, 'the product number ' || range || "
             "' arrived ' || (range %% 7) || ' days late and works ' || (CASE WHEN range %% 3 = 0 THEN 'badly' ELSE 'well' END) "
             "AS review FROM range(%ld)",
             o->n_rows);
    long counted = 0;
    int rc = sql_functions_register(db, &cfg, &fns, err);
    if (rc == DK_OK) rc = sql_exec(db, setup, 0, NULL, NULL, err);
    uint64_t t0 = dk_now_ns();
    if (rc == DK_OK)
        rc = sql_exec(db, "SELECT count(prompt('Classify this review as positive or negative: ' || review)) FROM reviews", 0,
                      read_count, &counted, err);
    double s = (double)(dk_now_ns() - t0) / 1e9;
    if (rc != DK_OK) {
        fprintf(stderr, "bench-sql: %s\n", err);
        sql_db_free(db);
        return -1;
    }
    sql_functions_stats st;
    sql_functions_get_stats(fns, &st);
    printf("parallel %3d: %ld rows in %6.2f s: %7.1f rows/s, %7.1f generated tokens/s (%llu tokens), "
           "%llu passes, %.1f rows per pass (max %llu)\n",
           parallel, counted, s, (double)counted / s, (double)st.n_generated / s, (unsigned long long)st.n_generated,
           (unsigned long long)st.n_steps, st.n_steps ? (double)st.n_rows / (double)st.n_steps : 0.0,
           (unsigned long long)st.max_rows);
    fflush(stdout);
    sql_db_free(db);
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: bench-sql MODEL.gguf [-r ROWS] [-n TOKENS] [-t THREADS] [-p 1,8,16]\n");
        return 1;
    }
    char err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = o.n_threads;
    engine_model *model = NULL;
    if (engine_model_load(&model, o.model, &lp, err) != DK_OK) {
        fprintf(stderr, "bench-sql: %s\n", err);
        return 1;
    }
    printf("%s: %ld rows, at most %ld tokens each, greedy\n", o.model, o.n_rows, o.n_predict);
    int status = 0;
    for (int i = 0; i < o.n_parallel && status == 0; i++)
        if (bench_run(model, &o, o.parallel[i]) != 0) status = 1;
    engine_model_free(model);
    return status;
}
