/*
 * bench/hnsw.c: what the HNSW index of rag/ costs and how well it finds neighbours (issue 7).
 * Builds a store of N random 384-dimensional vectors (cosine, F32 by default): gaussian
 * (every component N(0, 1), what "random vectors" means, and the hard case for any graph
 * index), -u uniform in [-1, 1), or -c embedding-like (around one of 1000 random centres plus
 * noise). Builds the index on T threads (time, rag_hnsw_memory beside the vectors' memory),
 * then runs Q queries of the same distribution: recall@10 against rag_exact_search and
 * queries per second on one thread for each ef of the list, beside the exact search's queries
 * per second on one and two threads; the first ef reaching recall 0.95 is marked. Last, the
 * vectors and the graph go as BLOBs into a DuckDB file (table index(name, data)), the
 * database is closed and reopened, both are loaded back and must answer exactly as before
 * (save and load times reported). -w PREFIX also writes the raw float32 vectors to
 * PREFIX.base and PREFIX.query (row-major) to compare with another implementation.
 * Not a test: built as $(BUILD)/bench-hnsw.
 *
 *   build/bench-hnsw [-n N (100000)] [-q Q (200)] [-m M (16)] [-e EF_CONSTRUCTION (200)]
 *                    [-T BUILD_THREADS (1)] [-E EF,EF,... (64,128,256,512)] [-t f32|f16|i8]
 *                    [-u | -c] [-s SEED] [-d DB_FILE (bench-hnsw.duckdb in $TMPDIR or /tmp)]
 *                    [-w PREFIX]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "rag/rag.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <duckdb.h>
#pragma GCC diagnostic pop

#define BENCH_DIM 384
#define BENCH_K 10
#define BENCH_CENTRES 1000
#define BENCH_MAX_EFS 16
#define BENCH_TARGET 0.95

enum bench_data { BENCH_GAUSSIAN = 0, BENCH_UNIFORM, BENCH_CLUSTERED };

typedef struct bench_opts {
    size_t n, n_queries;
    int m, efc, build_threads;
    size_t efs[BENCH_MAX_EFS];
    size_t n_efs;
    rag_vtype type;
    enum bench_data data;
    uint64_t seed;
    const char *db_path, *write_prefix;
} bench_opts;

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t bench_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [-1, 1). */
static float bench_uniform(uint64_t *s) { return (float)((double)(bench_rand(s) >> 11) / 4503599627370496.0 - 1.0); }

/* N(0, 1) by Box-Muller (one of the pair; simple rather than fast). */
static float bench_gaussian(uint64_t *s)
{
    double u = ((double)(bench_rand(s) >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
    double w = (double)(bench_rand(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * w));
}

/* n vectors (n, BENCH_DIM) of the chosen distribution; centres (BENCH_CENTRES, BENCH_DIM)
 * for the clustered one. */
static void bench_fill(float *x, size_t n, const float *centres, enum bench_data data, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        float *row = x + i * BENCH_DIM;
        if (data == BENCH_GAUSSIAN) {
            for (size_t j = 0; j < BENCH_DIM; j++) row[j] = bench_gaussian(s);
        } else if (data == BENCH_UNIFORM) {
            for (size_t j = 0; j < BENCH_DIM; j++) row[j] = bench_uniform(s);
        } else {
            const float *c = centres + (bench_rand(s) % BENCH_CENTRES) * BENCH_DIM;
            for (size_t j = 0; j < BENCH_DIM; j++) row[j] = c[j] + bench_uniform(s);
        }
    }
}

static int bench_write(const char *prefix, const char *ext, const float *x, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t put = fwrite(x, sizeof(float) * BENCH_DIM, n, f);
    return fclose(f) == 0 && put == n ? 0 : -1;
}

static int bench_usage(void)
{
    fprintf(stderr, "usage: bench-hnsw [-n N] [-q Q] [-m M] [-e EF_CONSTRUCTION] [-T BUILD_THREADS] [-E EF,EF,...]\n"
                    "                  [-t f32|f16|i8] [-u | -c] [-s SEED] [-d DB_FILE] [-w PREFIX]\n");
    return 2;
}

static int bench_parse_efs(const char *val, bench_opts *o)
{
    o->n_efs = 0;
    for (const char *p = val; *p;) {
        char *end;
        unsigned long long ef = strtoull(p, &end, 10);
        if (end == p || ef == 0 || o->n_efs == BENCH_MAX_EFS) return -1;
        o->efs[o->n_efs++] = (size_t)ef;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return o->n_efs ? 0 : -1;
}

static int bench_parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.n = 100000, .n_queries = 200, .m = 16, .efc = 200, .build_threads = 1,
                      .efs = {64, 128, 256, 512}, .n_efs = 4, .type = RAG_VTYPE_F32, .seed = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-u")) { o->data = BENCH_UNIFORM; continue; }
        if (!strcmp(a, "-c")) { o->data = BENCH_CLUSTERED; continue; }
        if (!val) return -1;
        i++;
        if (!strcmp(a, "-n")) o->n = strtoull(val, NULL, 10);
        else if (!strcmp(a, "-q")) o->n_queries = strtoull(val, NULL, 10);
        else if (!strcmp(a, "-m")) o->m = atoi(val);
        else if (!strcmp(a, "-e")) o->efc = atoi(val);
        else if (!strcmp(a, "-T")) o->build_threads = atoi(val);
        else if (!strcmp(a, "-E")) { if (bench_parse_efs(val, o) != 0) return -1; }
        else if (!strcmp(a, "-s")) o->seed = strtoull(val, NULL, 10);
        else if (!strcmp(a, "-d")) o->db_path = val;
        else if (!strcmp(a, "-w")) o->write_prefix = val;
        else if (!strcmp(a, "-t")) o->type = !strcmp(val, "f16") ? RAG_VTYPE_F16 : !strcmp(val, "i8") ? RAG_VTYPE_I8 : RAG_VTYPE_F32;
        else return -1;
    }
    return o->n >= BENCH_K && o->n_queries > 0 && o->build_threads >= 1 ? 0 : -1;
}

/* Fraction of the exact top-10 ids that approx holds (n_queries lists of BENCH_K). */
static double bench_recall(const rag_hit *approx, const size_t *n_approx, const rag_hit *exact, const size_t *n_exact,
                           size_t n_queries)
{
    size_t hits = 0, total = 0;
    for (size_t i = 0; i < n_queries; i++) {
        for (size_t a = 0; a < n_approx[i]; a++)
            for (size_t b = 0; b < n_exact[i]; b++) hits += approx[i * BENCH_K + a].id == exact[i * BENCH_K + b].id;
        total += n_exact[i];
    }
    return total ? (double)hits / (double)total : 1.0;
}

/* Queries per second of the exact search on n_threads over the first n_queries queries;
 * the hits go to out. -1 on error. */
static double bench_exact(const rag_vectors *v, const float *q, size_t n_queries, int n_threads, rag_hit *out,
                          size_t *n_out)
{
    char err[DK_ERRLEN];
    double t0 = bench_now();
    for (size_t i = 0; i < n_queries; i++)
        if (rag_exact_search(v, q + i * BENCH_DIM, BENCH_K, NULL, n_threads, out + i * BENCH_K, &n_out[i], err) != DK_OK) {
            fprintf(stderr, "exact: %s\n", err);
            return -1;
        }
    return (double)n_queries / (bench_now() - t0);
}

/* HNSW searches of every query at ef into out; queries per second (one thread), -1 on error. */
static double bench_hnsw(const rag_hnsw *h, const float *q, size_t n_queries, size_t ef, rag_hit *out, size_t *n_out)
{
    char err[DK_ERRLEN];
    double t0 = bench_now();
    for (size_t i = 0; i < n_queries; i++)
        if (rag_hnsw_search(h, q + i * BENCH_DIM, BENCH_K, ef, NULL, out + i * BENCH_K, &n_out[i], err) != DK_OK) {
            fprintf(stderr, "hnsw: %s\n", err);
            return -1;
        }
    return (double)n_queries / (bench_now() - t0);
}

/* ---- persistence through a DuckDB file ---- */

static int bench_db_fail(const char *what, const char *detail)
{
    fprintf(stderr, "duckdb: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return -1;
}

static int bench_db_exec(duckdb_connection con, const char *sql)
{
    duckdb_result res;
    int rc = duckdb_query(con, sql, &res) == DuckDBSuccess ? 0 : bench_db_fail(sql, duckdb_result_error(&res));
    duckdb_destroy_result(&res);
    return rc;
}

static int bench_db_put(duckdb_connection con, const char *name, const dk_buf *blob)
{
    duckdb_prepared_statement st;
    if (duckdb_prepare(con, "INSERT INTO \"index\" VALUES ($1, $2)", &st) != DuckDBSuccess) {
        int rc = bench_db_fail("prepare", duckdb_prepare_error(st));
        duckdb_destroy_prepare(&st);
        return rc;
    }
    duckdb_result res;
    int rc = duckdb_bind_varchar(st, 1, name) == DuckDBSuccess && duckdb_bind_blob(st, 2, blob->data, blob->len) == DuckDBSuccess
                 ? 0 : bench_db_fail("bind", name);
    if (rc == 0) {
        rc = duckdb_execute_prepared(st, &res) == DuckDBSuccess ? 0 : bench_db_fail("insert", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
    }
    duckdb_destroy_prepare(&st);
    return rc;
}

/* Writes vectors and graph into a fresh database at path and closes it; seconds in *secs. */
static int bench_db_save(const char *path, const rag_vectors *v, const rag_hnsw *h, double *secs, size_t *n_bytes)
{
    char err[DK_ERRLEN];
    double t0 = bench_now();
    dk_buf vb = {0}, gb = {0};
    if (rag_vectors_save(v, &vb, err) != DK_OK || rag_hnsw_save(h, &gb, err) != DK_OK) {
        dk_buf_free(&vb);
        dk_buf_free(&gb);
        return bench_db_fail("serialise", err);
    }
    duckdb_database db;
    duckdb_connection con;
    int rc = -1;
    unlink(path);
    if (duckdb_open(path, &db) != DuckDBSuccess) {
        dk_buf_free(&vb);
        dk_buf_free(&gb);
        return bench_db_fail("open", path);
    }
    if (duckdb_connect(db, &con) == DuckDBSuccess) {
        rc = bench_db_exec(con, "CREATE TABLE \"index\" (name VARCHAR, data BLOB)");
        if (rc == 0) rc = bench_db_put(con, "vectors", &vb);
        if (rc == 0) rc = bench_db_put(con, "hnsw", &gb);
        duckdb_disconnect(&con);
    }
    duckdb_close(&db);
    *secs = bench_now() - t0;
    *n_bytes = vb.len + gb.len;
    dk_buf_free(&vb);
    dk_buf_free(&gb);
    return rc;
}

/* The BLOB called name of the table; the caller frees blob->data with duckdb_free. */
static int bench_db_get(duckdb_connection con, const char *name, duckdb_blob *blob)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT data FROM \"index\" WHERE name = '%s'", name);
    duckdb_result res;
    blob->data = NULL;
    blob->size = 0;
    int rc = duckdb_query(con, sql, &res) == DuckDBSuccess ? 0 : bench_db_fail(sql, duckdb_result_error(&res));
    if (rc == 0 && duckdb_row_count(&res) != 1) rc = bench_db_fail("no row for", name);
    if (rc == 0) *blob = duckdb_value_blob(&res, 0, 0);
    duckdb_destroy_result(&res);
    return rc;
}

/* Opens the database again, reads both BLOBs and loads them; seconds in *secs. */
static int bench_db_load(const char *path, rag_vectors **v, rag_hnsw **h, double *secs)
{
    char err[DK_ERRLEN];
    double t0 = bench_now();
    duckdb_database db;
    duckdb_connection con;
    duckdb_blob vb = {0}, gb = {0};
    int rc = -1;
    *v = NULL;
    *h = NULL;
    if (duckdb_open(path, &db) != DuckDBSuccess) return bench_db_fail("reopen", path);
    if (duckdb_connect(db, &con) == DuckDBSuccess) {
        rc = bench_db_get(con, "vectors", &vb);
        if (rc == 0) rc = bench_db_get(con, "hnsw", &gb);
        duckdb_disconnect(&con);
    }
    duckdb_close(&db);
    if (rc == 0 && (rag_vectors_load(v, vb.data, vb.size, err) != DK_OK || rag_hnsw_load(h, *v, gb.data, gb.size, err) != DK_OK))
        rc = bench_db_fail("load", err);
    if (vb.data) duckdb_free(vb.data);
    if (gb.data) duckdb_free(gb.data);
    *secs = bench_now() - t0;
    return rc;
}

/* ---- the run ---- */

static const char *bench_data_name(enum bench_data d)
{
    return d == BENCH_GAUSSIAN ? "gaussian" : d == BENCH_UNIFORM ? "uniform" : "clustered";
}

static const char *bench_type_name(rag_vtype t) { return t == RAG_VTYPE_F32 ? "f32" : t == RAG_VTYPE_F16 ? "f16" : "i8"; }

/* Bytes the store's rows take (the store keeps one float scale per I8 row). */
static double bench_vector_mib(const rag_vectors *v)
{
    rag_vtype t = rag_vectors_type(v);
    double row = (double)rag_vectors_dim(v) * (t == RAG_VTYPE_F32 ? 4 : t == RAG_VTYPE_F16 ? 2 : 1) + (t == RAG_VTYPE_I8 ? 4 : 0);
    return row * (double)rag_vectors_count(v) / (1024.0 * 1024.0);
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (bench_parse(argc, argv, &o) != 0) return bench_usage();
    setvbuf(stdout, NULL, _IOLBF, 0); /* each line as it comes, also into a file */
    char err[DK_ERRLEN], db_default[4096];
    if (!o.db_path) {
        const char *tmp = getenv("TMPDIR");
        snprintf(db_default, sizeof(db_default), "%s/bench-hnsw-%d.duckdb", tmp && *tmp ? tmp : "/tmp", (int)getpid());
        o.db_path = db_default;
    }
    size_t nq = o.n_queries;
    uint64_t s = o.seed * 0x9e3779b97f4a7c15ull + 1;
    float *centres = malloc((size_t)BENCH_CENTRES * BENCH_DIM * sizeof(float));
    float *x = malloc(o.n * BENCH_DIM * sizeof(float));
    float *q = malloc(nq * BENCH_DIM * sizeof(float));
    rag_hit *exact = malloc(nq * BENCH_K * sizeof(rag_hit)), *approx = malloc(nq * BENCH_K * sizeof(rag_hit));
    rag_hit *again = malloc(nq * BENCH_K * sizeof(rag_hit));
    size_t *n_exact = malloc(nq * sizeof(size_t)), *n_approx = malloc(nq * sizeof(size_t));
    size_t *n_again = malloc(nq * sizeof(size_t));
    if (!centres || !x || !q || !exact || !approx || !again || !n_exact || !n_approx || !n_again)
        return fprintf(stderr, "out of memory\n"), 1;
    for (size_t i = 0; i < (size_t)BENCH_CENTRES * BENCH_DIM; i++) centres[i] = bench_uniform(&s);
    bench_fill(x, o.n, centres, o.data, &s);
    bench_fill(q, nq, centres, o.data, &s);
    if (o.write_prefix && (bench_write(o.write_prefix, "base", x, o.n) != 0 || bench_write(o.write_prefix, "query", q, nq) != 0))
        return fprintf(stderr, "cannot write %s.base/.query\n", o.write_prefix), 1;

    rag_vectors *v = NULL;
    if (rag_vectors_new(&v, BENCH_DIM, o.type, RAG_METRIC_COSINE, err) != DK_OK || rag_vectors_add(v, x, o.n, err) != DK_OK)
        return fprintf(stderr, "store: %s\n", err), 1;
    free(x);
    printf("N %zu, dim %d, %s, cosine, %s vectors; m %d, ef_construction %d; %zu queries, top-%d\n", o.n, BENCH_DIM,
           bench_type_name(o.type), bench_data_name(o.data), o.m, o.efc, nq, BENCH_K);

    double t0 = bench_now();
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = o.m, .ef_construction = o.efc, .seed = o.seed, .n_threads = o.build_threads};
    if (rag_hnsw_build(&h, v, &params, err) != DK_OK) return fprintf(stderr, "build: %s\n", err), 1;
    double build_s = bench_now() - t0;
    double graph_mib = (double)rag_hnsw_memory(h) / (1024.0 * 1024.0);
    printf("build: %.1f s on %d thread%s (%.0f vectors/s)\n", build_s, o.build_threads, o.build_threads == 1 ? "" : "s",
           (double)o.n / build_s);
    printf("memory: index %.1f MiB (%.1f bytes/vector), vectors %.1f MiB\n", graph_mib,
           (double)rag_hnsw_memory(h) / (double)o.n, bench_vector_mib(v));

    /* the truth on two threads (also timed); one thread timed on at most 50 queries */
    double exact2 = bench_exact(v, q, nq, 2, exact, n_exact);
    size_t nq1 = nq < 50 ? nq : 50;
    double exact1 = bench_exact(v, q, nq1, 1, approx, n_approx);
    if (exact1 < 0 || exact2 < 0) return 1;
    printf("exact search: %.1f queries/s on 1 thread, %.1f on 2 threads\n", exact1, exact2);

    size_t ef_ok = 0;
    for (size_t e = 0; e < o.n_efs; e++) {
        double qps = bench_hnsw(h, q, nq, o.efs[e], approx, n_approx);
        if (qps < 0) return 1;
        double recall = bench_recall(approx, n_approx, exact, n_exact, nq);
        int first = !ef_ok && recall >= BENCH_TARGET;
        if (first) ef_ok = o.efs[e];
        printf("hnsw ef %4zu: recall@10 %.3f, %8.0f queries/s on 1 thread (%.1fx exact)%s\n", o.efs[e], recall, qps,
               qps / exact1, first ? "   <== first ef with recall >= 0.95" : "");
    }
    if (!ef_ok) printf("no ef of the list reaches recall 0.95 (try -E with larger values, or -m / -e)\n");

    /* persistence: approx holds the results of the last ef; they must come back the same */
    size_t ef_last = o.efs[o.n_efs - 1], n_bytes = 0, differ = 0;
    double save_s = 0, load_s = 0;
    rag_vectors *v2 = NULL;
    rag_hnsw *h2 = NULL;
    if (bench_db_save(o.db_path, v, h, &save_s, &n_bytes) != 0 || bench_db_load(o.db_path, &v2, &h2, &load_s) != 0) return 1;
    if (bench_hnsw(h2, q, nq, ef_last, again, n_again) < 0) return 1;
    for (size_t i = 0; i < nq; i++) {
        differ += n_again[i] != n_approx[i];
        for (size_t a = 0; a < n_again[i] && a < n_approx[i]; a++)
            differ += again[i * BENCH_K + a].id != approx[i * BENCH_K + a].id ||
                      again[i * BENCH_K + a].score != approx[i * BENCH_K + a].score;
    }
    printf("persistence (%s): %.1f MiB of BLOBs, save %.2f s, close, reopen + load %.2f s; ef %zu after reopen: %s\n",
           o.db_path, (double)n_bytes / (1024.0 * 1024.0), save_s, load_s, ef_last,
           differ ? "RESULTS DIFFER" : "identical results");
    unlink(o.db_path);
    char wal[4200];
    snprintf(wal, sizeof(wal), "%s.wal", o.db_path);
    unlink(wal);
    rag_hnsw_free(h2);
    rag_vectors_free(v2);
    rag_hnsw_free(h);
    rag_vectors_free(v);
    free(centres);
    free(q);
    free(exact);
    free(approx);
    free(again);
    free(n_exact);
    free(n_approx);
    free(n_again);
    return differ ? 1 : 0;
}
