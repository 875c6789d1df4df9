/*
 * bench/vectors.c: throughput of rag's exact vector search. N random 384-dimensional
 * vectors (uniform in [-1, 1)), stored as F32, F16 and I8; Q random queries each, top-10, on
 * each thread count given; prints queries/s per type and thread count, and how many of the
 * top-10 ids agree with a double-precision brute force over the original F32 values on S
 * of the queries (F32 should agree fully, or miss only ids within rounding of the 10th
 * score; F16/I8 show what quantisation costs), with how far below the true 10th score a
 * wrongly returned id scores. Works up to 4M vectors (1M: 1.5 GB of F32 values plus the
 * store). Not a test: never timed by `make test`.
 *
 *   build/bench-vectors [-n 100000] [-q 50] [-t 1,2] [-s 5] [-m cosine|dot|l2]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "rag/rag.h"

#define DIM 384
#define K 10

typedef struct bench_opts {
    long n, n_queries, n_sample;
    int threads[8];
    int n_threads;
    rag_metric metric;
} bench_opts;

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){100000, 50, 5, {1, 2}, 2, RAG_METRIC_COSINE};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) return -1;
        i++;
        if (!strcmp(a, "-n")) o->n = atol(val);
        else if (!strcmp(a, "-q")) o->n_queries = atol(val);
        else if (!strcmp(a, "-s")) o->n_sample = atol(val);
        else if (!strcmp(a, "-m")) {
            if (!strcmp(val, "cosine")) o->metric = RAG_METRIC_COSINE;
            else if (!strcmp(val, "dot")) o->metric = RAG_METRIC_DOT;
            else if (!strcmp(val, "l2")) o->metric = RAG_METRIC_L2;
            else return -1;
        } else if (!strcmp(a, "-t")) {
            o->n_threads = 0;
            for (const char *s = val; *s && o->n_threads < 8;) {
                char *end;
                long t = strtol(s, &end, 10);
                if (end == s || t < 1 || t > 64) return -1;
                o->threads[o->n_threads++] = (int)t;
                s = *end == ',' ? end + 1 : end;
            }
        } else return -1;
    }
    if (o->n < K || o->n > 4000000 || o->n_queries < 1 || o->n_sample < 0 || o->n_sample > o->n_queries) return -1;
    return 0;
}

/* The score of row r for query q in double precision over the original values. */
static double double_score(const float *r, const float *q, rag_metric m)
{
    double qn = 1;
    if (m == RAG_METRIC_COSINE) {
        double ss = 0;
        for (int i = 0; i < DIM; i++) ss += (double)q[i] * q[i];
        qn = ss > 0 ? 1 / sqrt(ss) : 0;
    }
    double dot = 0, l2 = 0, rr = 0;
    for (int i = 0; i < DIM; i++) {
        double qi = q[i] * qn, d = r[i] - qi;
        dot += r[i] * qi;
        l2 += d * d;
        rr += (double)r[i] * r[i];
    }
    return m == RAG_METRIC_L2 ? -l2 : m == RAG_METRIC_DOT ? dot : (rr > 0 ? dot / sqrt(rr) : 0);
}

/* Top-K ids by a double-precision score over the original values, best first; kth: the
 * K-th best score. */
static void brute_top(const float *x, long n, const float *q, rag_metric m, uint32_t *ids, double *kth)
{
    double best[K];
    int have = 0;
    for (long id = 0; id < n; id++) {
        double s = double_score(x + id * DIM, q, m);
        int pos = have < K ? have++ : K;
        while (pos > 0 && best[pos - 1] < s) {
            if (pos < K) {
                best[pos] = best[pos - 1];
                ids[pos] = ids[pos - 1];
            }
            pos--;
        }
        if (pos < K) {
            best[pos] = s;
            ids[pos] = (uint32_t)id;
        }
    }
    *kth = best[have - 1];
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (parse(argc, argv, &o) != 0) {
        fprintf(stderr, "usage: %s [-n 100000] [-q 50] [-t 1,2] [-s 5] [-m cosine|dot|l2]\n", argv[0]);
        return 2;
    }
    float *x = malloc((size_t)o.n * DIM * sizeof(float));
    float *qs = malloc((size_t)o.n_queries * DIM * sizeof(float));
    uint32_t *truth = malloc((size_t)(o.n_sample ? o.n_sample : 1) * K * sizeof(uint32_t));
    double *kth = malloc((size_t)(o.n_sample ? o.n_sample : 1) * sizeof(double));
    if (!x || !qs || !truth || !kth) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)o.n * DIM; i++) x[i] = frand();
    for (size_t i = 0; i < (size_t)o.n_queries * DIM; i++) qs[i] = frand();
    static const char *const metric_names[] = {"cosine", "dot", "l2"};
    printf("vectors: %ld x %d, metric %s, %ld queries, top-%d, isa %s\n", o.n, DIM, metric_names[o.metric], o.n_queries,
           K, kern_isa_name(kern_isa_active()));
    double t0 = now_s();
    for (long j = 0; j < o.n_sample; j++) brute_top(x, o.n, qs + j * DIM, o.metric, truth + j * K, kth + j);
    printf("double brute force: %.1f ms/query (%ld sample queries)\n", (now_s() - t0) * 1e3 / (o.n_sample ? o.n_sample : 1),
           o.n_sample);
    static const char *const type_names[] = {"f32", "f16", "i8"};
    char err[DK_ERRLEN];
    for (int t = 0; t < 3; t++) {
        rag_vectors *v;
        if (rag_vectors_new(&v, DIM, (rag_vtype)t, o.metric, err) != DK_OK || rag_vectors_add(v, x, (size_t)o.n, err) != DK_OK) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        rag_hit hits[K];
        size_t n_hits;
        long agree = 0;
        double worst = 0; /* how far below the true K-th score a returned id scores, at most */
        for (long j = 0; j < o.n_sample; j++) {
            if (rag_exact_search(v, qs + j * DIM, K, NULL, 2, hits, &n_hits, err) != DK_OK) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            for (size_t a = 0; a < n_hits; a++) {
                int found = 0;
                for (int b = 0; b < K; b++) found |= hits[a].id == truth[j * K + b];
                agree += found;
                double gap = kth[j] - double_score(x + (size_t)hits[a].id * DIM, qs + j * DIM, o.metric);
                if (!found && gap > worst) worst = gap;
            }
        }
        printf("%-4s agreement with the brute force: %ld/%ld top-%d ids (a missed id scores at most %.2g below the "
               "true %dth)\n", type_names[t], agree, o.n_sample * K, K, worst, K);
        for (int ti = 0; ti < o.n_threads; ti++) {
            double s0 = now_s();
            for (long j = 0; j < o.n_queries; j++)
                if (rag_exact_search(v, qs + j * DIM, K, NULL, o.threads[ti], hits, &n_hits, err) != DK_OK) {
                    fprintf(stderr, "%s\n", err);
                    return 1;
                }
            double dt = now_s() - s0;
            printf("%-4s threads %2d: %8.1f queries/s  (%.2f ms/query, %.2f G vector-values/s)\n", type_names[t],
                   o.threads[ti], o.n_queries / dt, dt * 1e3 / o.n_queries, (double)o.n * DIM * o.n_queries / dt * 1e-9);
        }
        rag_vectors_free(v);
    }
    free(x);
    free(qs);
    free(truth);
    free(kth);
    return 0;
}
