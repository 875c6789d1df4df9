/*
 * bench/hnsw.c: what the HNSW index of rag/ costs and how well it finds neighbours. Builds a
 * store of N random 384-dimensional vectors (cosine, F32 by default; embedding-like: around
 * one of 1000 random centres plus noise, or -u for uniform vectors, the worst case), builds
 * the index (time, rag_hnsw_memory), then runs Q queries of the same distribution at a few
 * ef values: recall@10 against rag_exact_search and queries per second on one thread,
 * beside the exact search's queries per second (one thread). Last, a save/load round trip
 * of the graph must give the same results. Not a test: built as $(BUILD)/bench-hnsw.
 *
 *   build/bench-hnsw [-n N (100000)] [-q Q (200)] [-m M (16)] [-e EF_CONSTRUCTION (200)]
 *                    [-t f32|f16|i8] [-u] [-s SEED]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "rag/rag.h"

#define BENCH_DIM 384
#define BENCH_K 10
#define BENCH_CENTRES 1000

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

static float bench_uniform(uint64_t *s) { return (float)((double)(bench_rand(s) >> 11) / 4503599627370496.0 - 1.0); }

/* n vectors (n, BENCH_DIM) around the centres (BENCH_CENTRES, BENCH_DIM), or uniform. */
static void bench_fill(float *x, size_t n, const float *centres, int uniform, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        const float *c = centres + (bench_rand(s) % BENCH_CENTRES) * BENCH_DIM;
        for (size_t j = 0; j < BENCH_DIM; j++) x[i * BENCH_DIM + j] = (uniform ? 0.0f : c[j]) + bench_uniform(s);
    }
}

static int bench_usage(void)
{
    fprintf(stderr, "usage: bench-hnsw [-n N] [-q Q] [-m M] [-e EF_CONSTRUCTION] [-t f32|f16|i8] [-u] [-s SEED]\n");
    return 2;
}

int main(int argc, char **argv)
{
    size_t n = 100000, n_queries = 200;
    int m = 16, efc = 200, uniform = 0;
    uint64_t seed = 1;
    rag_vtype type = RAG_VTYPE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-u")) { uniform = 1; continue; }
        if (!val) return bench_usage();
        i++;
        if (!strcmp(a, "-n")) n = strtoull(val, NULL, 10);
        else if (!strcmp(a, "-q")) n_queries = strtoull(val, NULL, 10);
        else if (!strcmp(a, "-m")) m = atoi(val);
        else if (!strcmp(a, "-e")) efc = atoi(val);
        else if (!strcmp(a, "-s")) seed = strtoull(val, NULL, 10);
        else if (!strcmp(a, "-t")) type = !strcmp(val, "f16") ? RAG_VTYPE_F16 : !strcmp(val, "i8") ? RAG_VTYPE_I8 : RAG_VTYPE_F32;
        else return bench_usage();
    }
    if (n == 0 || n_queries == 0) return bench_usage();

    char err[DK_ERRLEN];
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    float *centres = malloc((size_t)BENCH_CENTRES * BENCH_DIM * sizeof(float));
    float *x = malloc(n * BENCH_DIM * sizeof(float));
    float *q = malloc(n_queries * BENCH_DIM * sizeof(float));
    rag_hit *exact = malloc(n_queries * BENCH_K * sizeof(rag_hit)), *approx = malloc(n_queries * BENCH_K * sizeof(rag_hit));
    size_t *n_exact = malloc(n_queries * sizeof(size_t));
    if (!centres || !x || !q || !exact || !approx || !n_exact) return fprintf(stderr, "out of memory\n"), 1;
    for (size_t i = 0; i < (size_t)BENCH_CENTRES * BENCH_DIM; i++) centres[i] = bench_uniform(&s);
    bench_fill(x, n, centres, uniform, &s);
    bench_fill(q, n_queries, centres, uniform, &s);

    rag_vectors *v = NULL;
    if (rag_vectors_new(&v, BENCH_DIM, type, RAG_METRIC_COSINE, err) != DK_OK || rag_vectors_add(v, x, n, err) != DK_OK)
        return fprintf(stderr, "store: %s\n", err), 1;
    free(x);
    printf("%zu x %d %s cosine vectors (%s), m %d, ef_construction %d, %zu queries\n", n, BENCH_DIM,
           type == RAG_VTYPE_F32 ? "f32" : type == RAG_VTYPE_F16 ? "f16" : "i8", uniform ? "uniform" : "clustered", m,
           efc, n_queries);

    double t0 = bench_now();
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = m, .ef_construction = efc, .seed = seed};
    if (rag_hnsw_build(&h, v, &params, err) != DK_OK) return fprintf(stderr, "build: %s\n", err), 1;
    double build_s = bench_now() - t0;
    printf("build: %.1f s (%.0f vectors/s, one thread), graph memory %.1f MiB (%.1f bytes/vector)\n", build_s,
           (double)n / build_s, (double)rag_hnsw_memory(h) / (1024.0 * 1024.0), (double)rag_hnsw_memory(h) / (double)n);

    t0 = bench_now();
    for (size_t i = 0; i < n_queries; i++)
        if (rag_exact_search(v, q + i * BENCH_DIM, BENCH_K, NULL, 1, exact + i * BENCH_K, &n_exact[i], err) != DK_OK)
            return fprintf(stderr, "exact: %s\n", err), 1;
    double exact_qps = (double)n_queries / (bench_now() - t0);
    printf("exact search: %.0f queries/s (one thread)\n", exact_qps);

    size_t efs[] = {16, 32, 64, 128, 256};
    for (size_t e = 0; e < sizeof(efs) / sizeof(efs[0]); e++) {
        size_t hits = 0, total = 0, got;
        t0 = bench_now();
        for (size_t i = 0; i < n_queries; i++)
            if (rag_hnsw_search(h, q + i * BENCH_DIM, BENCH_K, efs[e], NULL, approx + i * BENCH_K, &got, err) != DK_OK)
                return fprintf(stderr, "hnsw: %s\n", err), 1;
        double qps = (double)n_queries / (bench_now() - t0);
        for (size_t i = 0; i < n_queries; i++) {
            for (size_t a = 0; a < BENCH_K; a++)
                for (size_t b = 0; b < n_exact[i]; b++) hits += approx[i * BENCH_K + a].id == exact[i * BENCH_K + b].id;
            total += n_exact[i];
        }
        printf("hnsw ef %4zu: recall@10 %.3f, %8.0f queries/s (%.0fx exact)\n", efs[e], (double)hits / (double)total, qps,
               qps / exact_qps);
    }

    /* round trip: the loaded graph answers exactly as the built one (approx holds ef 256) */
    dk_buf bytes = {0};
    rag_hnsw *back = NULL;
    if (rag_hnsw_save(h, &bytes, err) != DK_OK || rag_hnsw_load(&back, v, bytes.data, bytes.len, err) != DK_OK)
        return fprintf(stderr, "save/load: %s\n", err), 1;
    size_t differ = 0;
    for (size_t i = 0; i < n_queries; i++) {
        rag_hit again[BENCH_K];
        size_t got;
        if (rag_hnsw_search(back, q + i * BENCH_DIM, BENCH_K, 256, NULL, again, &got, err) != DK_OK) return 1;
        for (size_t a = 0; a < got; a++) differ += again[a].id != approx[i * BENCH_K + a].id;
    }
    printf("save/load: %zu bytes, %s\n", bytes.len, differ ? "RESULTS DIFFER" : "same results");
    dk_buf_free(&bytes);
    rag_hnsw_free(back);
    rag_hnsw_free(h);
    rag_vectors_free(v);
    free(centres);
    free(q);
    free(exact);
    free(approx);
    free(n_exact);
    return differ ? 1 : 0;
}
