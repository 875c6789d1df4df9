/*
 * test_rag_vec.c: the flat vector store and exact search of rag/vec.c. Exact top-10 against
 * a double-precision brute force (over the values as the store keeps them: F16-rounded, or
 * I8-quantised with a per-vector scale, after cosine normalisation) for every metric and
 * type; filters; k larger than the store; 1 vs 4 threads; save/load round trips; truncated
 * and corrupt bytes; invalid arguments.
 */
#include <stdlib.h>

#include "base/base.h"
#include "kernels/kernels.h"
#include "rag/rag.h"
#include "test.h"

#define DIM 384
#define N_VEC 5000
#define K 10

static uint64_t rng = 88172645463325252ull;
static float frand(void) /* in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = frand();
}

/* The vector as the store keeps it, in double (the spec of rag.h, rewritten here). */
static void stored_values(const float *x, rag_vtype type, rag_metric metric, double *out)
{
    float tmp[DIM];
    double ss = 0;
    for (int i = 0; i < DIM; i++) ss += (double)x[i] * x[i];
    double inv = metric == RAG_METRIC_COSINE ? (ss > 0 ? 1.0 / sqrt(ss) : 0) : 1.0;
    for (int i = 0; i < DIM; i++) tmp[i] = (float)(x[i] * inv);
    float amax = 0;
    for (int i = 0; i < DIM; i++) amax = fmaxf(amax, fabsf(tmp[i]));
    for (int i = 0; i < DIM; i++) {
        if (type == RAG_VTYPE_F32) out[i] = tmp[i];
        else if (type == RAG_VTYPE_F16) out[i] = kern_fp16_to_fp32(kern_fp32_to_fp16(tmp[i]));
        else out[i] = amax > 0 ? round(tmp[i] * (127.0 / amax)) * (amax / 127.0f) : 0.0;
    }
}

static double score_d(const double *s, const float *q, rag_metric metric)
{
    double qn = 1;
    if (metric == RAG_METRIC_COSINE) {
        double ss = 0;
        for (int i = 0; i < DIM; i++) ss += (double)q[i] * q[i];
        qn = ss > 0 ? 1.0 / sqrt(ss) : 0;
    }
    double acc = 0;
    for (int i = 0; i < DIM; i++) {
        double qi = q[i] * qn;
        acc += metric == RAG_METRIC_L2 ? -(s[i] - qi) * (s[i] - qi) : s[i] * qi;
    }
    return acc;
}

/* The brute-force top-k over stored values sv (n rows), only ids with allow bit set (if allow). */
static size_t brute_top(const double *sv, size_t n, const float *q, rag_metric metric, const uint8_t *allow, size_t k,
                        uint32_t *ids, double *scores)
{
    size_t m = 0;
    for (size_t id = 0; id < n; id++) {
        if (allow && !(allow[id / 8] & (1u << (id % 8)))) continue;
        double s = score_d(sv + id * DIM, q, metric);
        size_t pos = m < k ? m++ : k;
        while (pos > 0 && scores[pos - 1] < s) {
            if (pos < k) {
                scores[pos] = scores[pos - 1];
                ids[pos] = ids[pos - 1];
            }
            pos--;
        }
        if (pos < k) {
            scores[pos] = s;
            ids[pos] = (uint32_t)id;
        }
    }
    return m;
}

/* Checks hits against the brute force: same ids in order, except swaps of scores closer than
 * float rounding can tell apart. Returns the number of exact id matches. */
static size_t check_hits(const rag_hit *hits, size_t n_hits, const uint32_t *ids, const double *scores, size_t n_ref,
                         const double *sv, const float *q, rag_metric metric, const char *what)
{
    CHECK_MSG(n_hits == n_ref, "%s: %zu hits, expected %zu", what, n_hits, n_ref);
    size_t same = 0;
    for (size_t i = 0; i < n_hits && i < n_ref; i++) {
        if (hits[i].id == ids[i]) {
            same++;
        } else {
            double s = score_d(sv + (size_t)hits[i].id * DIM, q, metric);
            CHECK_MSG(fabs(s - scores[i]) < 1e-4 * (1 + fabs(scores[i])), "%s: rank %zu id %u (%g), expected %u (%g)", what,
                      i, hits[i].id, s, ids[i], scores[i]);
        }
        CHECK_MSG(fabs(hits[i].score - scores[i]) < 1e-3 * (1 + fabs(scores[i])), "%s: rank %zu score %g vs %g", what, i,
                  hits[i].score, scores[i]);
        if (i > 0) CHECK(hits[i - 1].score >= hits[i].score);
    }
    return same;
}

static const char *const type_names[] = {"f32", "f16", "i8"};
static const char *const metric_names[] = {"cosine", "dot", "l2"};

TEST(rag_vec, exact_top10_all_metrics_and_types)
{
    float *x = dk_malloc_array((size_t)N_VEC * DIM, sizeof(float));
    double *sv = dk_malloc_array((size_t)N_VEC * DIM, sizeof(double));
    REQUIRE(x && sv);
    fill(x, (size_t)N_VEC * DIM);
    float q[3][DIM];
    for (int j = 0; j < 3; j++) fill(q[j], DIM);
    char err[DK_ERRLEN];
    size_t total_same = 0, total = 0;
    for (int m = 0; m < 3; m++) {
        for (int t = 0; t < 3; t++) {
            rag_vectors *v;
            REQUIRE(rag_vectors_new(&v, DIM, (rag_vtype)t, (rag_metric)m, err) == DK_OK);
            REQUIRE(rag_vectors_add(v, x, N_VEC / 2, err) == DK_OK); /* two appends: growth */
            REQUIRE(rag_vectors_add(v, x + (size_t)(N_VEC / 2) * DIM, N_VEC - N_VEC / 2, err) == DK_OK);
            CHECK_EQ_INT(rag_vectors_count(v), N_VEC);
            for (size_t i = 0; i < N_VEC; i++) stored_values(x + i * DIM, (rag_vtype)t, (rag_metric)m, sv + i * DIM);
            for (int j = 0; j < 3; j++) {
                rag_hit hits[K];
                size_t n_hits;
                uint32_t ids[K];
                double scores[K];
                REQUIRE(rag_exact_search(v, q[j], K, NULL, 1, hits, &n_hits, err) == DK_OK);
                size_t n_ref = brute_top(sv, N_VEC, q[j], (rag_metric)m, NULL, K, ids, scores);
                char what[64];
                snprintf(what, sizeof(what), "%s/%s q%d", metric_names[m], type_names[t], j);
                total_same += check_hits(hits, n_hits, ids, scores, n_ref, sv, q[j], (rag_metric)m, what);
                total += n_ref;
                for (size_t i = 0; i < n_hits; i++) CHECK(rag_vectors_score(v, q[j], hits[i].id) == hits[i].score);
            }
            rag_vectors_free(v);
        }
    }
    test_log("exact top-%d: %zu of %zu ids identical to the double brute force", K, total_same, total);
    CHECK(total_same == total);
    dk_free(x);
    dk_free(sv);
}

/* A store of n random vectors. */
static rag_vectors *random_store(size_t n, size_t dim, rag_vtype t, rag_metric m, float *x)
{
    char err[DK_ERRLEN];
    rag_vectors *v = NULL;
    fill(x, n * dim);
    if (rag_vectors_new(&v, dim, t, m, err) != DK_OK) return NULL;
    if (rag_vectors_add(v, x, n, err) != DK_OK) {
        rag_vectors_free(v);
        return NULL;
    }
    return v;
}

TEST(rag_vec, filter_threads_and_k_beyond_count)
{
    enum { N = 3001 };
    float *x = dk_malloc_array((size_t)N * DIM, sizeof(float));
    double *sv = dk_malloc_array((size_t)N * DIM, sizeof(double));
    REQUIRE(x && sv);
    rag_vectors *v = random_store(N, DIM, RAG_VTYPE_F32, RAG_METRIC_DOT, x);
    REQUIRE(v);
    for (size_t i = 0; i < N; i++) stored_values(x + i * DIM, RAG_VTYPE_F32, RAG_METRIC_DOT, sv + i * DIM);
    float q[DIM];
    fill(q, DIM);
    char err[DK_ERRLEN];
    /* allow: multiples of 3 only */
    uint8_t allow[(N + 7) / 8] = {0};
    for (size_t id = 0; id < N; id += 3) allow[id / 8] |= (uint8_t)(1u << (id % 8));
    rag_hit h1[K], h4[K];
    size_t n1, n4;
    REQUIRE(rag_exact_search(v, q, K, allow, 1, h1, &n1, err) == DK_OK);
    uint32_t ids[K];
    double scores[K];
    size_t n_ref = brute_top(sv, N, q, RAG_METRIC_DOT, allow, K, ids, scores);
    CHECK(check_hits(h1, n1, ids, scores, n_ref, sv, q, RAG_METRIC_DOT, "filtered") == n_ref);
    for (size_t i = 0; i < n1; i++) CHECK(h1[i].id % 3 == 0);
    /* threads: identical results, with and without the filter */
    REQUIRE(rag_exact_search(v, q, K, allow, 4, h4, &n4, err) == DK_OK);
    CHECK(n1 == n4 && memcmp(h1, h4, n1 * sizeof(rag_hit)) == 0);
    REQUIRE(rag_exact_search(v, q, K, NULL, 1, h1, &n1, err) == DK_OK);
    REQUIRE(rag_exact_search(v, q, K, NULL, 4, h4, &n4, err) == DK_OK);
    CHECK(n1 == K && n1 == n4 && memcmp(h1, h4, n1 * sizeof(rag_hit)) == 0);
    /* a filter that allows 4 ids: 4 hits, from any number of threads */
    uint8_t few[(N + 7) / 8] = {0};
    const uint32_t few_ids[4] = {0, 17, 1500, N - 1};
    for (int i = 0; i < 4; i++) few[few_ids[i] / 8] |= (uint8_t)(1u << (few_ids[i] % 8));
    REQUIRE(rag_exact_search(v, q, K, few, 3, h4, &n4, err) == DK_OK);
    CHECK_EQ_INT(n4, 4);
    /* k 0 */
    REQUIRE(rag_exact_search(v, q, 0, NULL, 1, h1, &n1, err) == DK_OK);
    CHECK_EQ_INT(n1, 0);
    rag_vectors_free(v);

    /* k beyond the count: everything, best first, each id once; more threads than vectors */
    rag_vectors *s = random_store(20, 8, RAG_VTYPE_I8, RAG_METRIC_L2, x);
    REQUIRE(s);
    rag_hit all[50];
    size_t n_all;
    REQUIRE(rag_exact_search(s, q, 50, NULL, 8, all, &n_all, err) == DK_OK);
    CHECK_EQ_INT(n_all, 20);
    unsigned seen = 0;
    for (size_t i = 0; i < n_all; i++) {
        seen |= 1u << all[i].id;
        if (i) CHECK(all[i - 1].score > all[i].score || (all[i - 1].score == all[i].score && all[i - 1].id < all[i].id));
    }
    CHECK(seen == (1u << 20) - 1);
    rag_vectors_free(s);
    dk_free(x);
    dk_free(sv);
}

TEST(rag_vec, ties_lower_id_first_and_zero_vector)
{
    char err[DK_ERRLEN];
    rag_vectors *v;
    REQUIRE(rag_vectors_new(&v, 4, RAG_VTYPE_F32, RAG_METRIC_COSINE, err) == DK_OK);
    const float x[5 * 4] = {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 5, 0, 0, 0};
    REQUIRE(rag_vectors_add(v, x, 5, err) == DK_OK);
    const float q[4] = {3, 0, 0, 0};
    rag_hit h[5];
    size_t n;
    REQUIRE(rag_exact_search(v, q, 5, NULL, 2, h, &n, err) == DK_OK);
    REQUIRE(n == 5);
    CHECK(h[0].id == 0 && h[1].id == 2 && h[2].id == 4); /* all cosine 1: by id */
    CHECK_NEAR(h[0].score, 1, 1e-6);
    CHECK(h[3].id == 1 && h[4].id == 3); /* zero vector and orthogonal: 0, by id */
    CHECK(h[3].score == 0 && h[4].score == 0);
    rag_vectors_free(v);
}

/* Searches every combination once with a fixed query and compares. */
static void same_results(const rag_vectors *a, const rag_vectors *b, const float *q)
{
    char err[DK_ERRLEN];
    rag_hit ha[K], hb[K];
    size_t na, nb;
    CHECK(rag_exact_search(a, q, K, NULL, 1, ha, &na, err) == DK_OK);
    CHECK(rag_exact_search(b, q, K, NULL, 1, hb, &nb, err) == DK_OK);
    CHECK(na == nb && memcmp(ha, hb, na * sizeof(rag_hit)) == 0);
}

TEST(rag_vec, save_load_round_trip)
{
    enum { N = 500 };
    float *x = dk_malloc_array((size_t)N * DIM, sizeof(float));
    REQUIRE(x);
    float q[DIM];
    fill(q, DIM);
    char err[DK_ERRLEN];
    for (int m = 0; m < 3; m++) {
        for (int t = 0; t < 3; t++) {
            rag_vectors *v = random_store(N, DIM, (rag_vtype)t, (rag_metric)m, x);
            REQUIRE(v);
            dk_buf b = {0}, b2 = {0};
            REQUIRE(rag_vectors_save(v, &b, err) == DK_OK);
            CHECK(memcmp(b.data, "DKVEC1", 6) == 0);
            rag_vectors *w;
            REQUIRE_MSG(rag_vectors_load(&w, b.data, b.len, err) == DK_OK, "%s", err);
            CHECK(rag_vectors_count(w) == N && rag_vectors_dim(w) == DIM);
            CHECK(rag_vectors_type(w) == (rag_vtype)t && rag_vectors_metric(w) == (rag_metric)m);
            same_results(v, w, q);
            REQUIRE(rag_vectors_save(w, &b2, err) == DK_OK);
            CHECK(b.len == b2.len && memcmp(b.data, b2.data, b.len) == 0);
            rag_vectors_free(w);
            rag_vectors_free(v);
            dk_buf_free(&b);
            dk_buf_free(&b2);
        }
    }
    /* an empty store too */
    rag_vectors *e, *e2;
    REQUIRE(rag_vectors_new(&e, 3, RAG_VTYPE_I8, RAG_METRIC_L2, err) == DK_OK);
    dk_buf b = {0};
    REQUIRE(rag_vectors_save(e, &b, err) == DK_OK);
    REQUIRE(rag_vectors_load(&e2, b.data, b.len, err) == DK_OK);
    CHECK(rag_vectors_count(e2) == 0 && rag_vectors_dim(e2) == 3);
    rag_vectors_free(e);
    rag_vectors_free(e2);
    dk_buf_free(&b);
    dk_free(x);
}

TEST(rag_vec, truncated_and_corrupt_bytes_are_format_errors)
{
    float x[3 * 5];
    char err[DK_ERRLEN];
    int n_checked = 0;
    for (int t = 0; t < 3; t++) {
        rag_vectors *v = random_store(3, 5, (rag_vtype)t, RAG_METRIC_L2, x);
        REQUIRE(v);
        dk_buf b = {0};
        REQUIRE(rag_vectors_save(v, &b, err) == DK_OK);
        rag_vectors *w = (rag_vectors *)1;
        for (size_t len = 0; len < b.len; len++) {
            uint8_t *copy = dk_malloc(len ? len : 1); /* exact size: ASan sees any overread */
            REQUIRE(copy);
            memcpy(copy, b.data, len);
            CHECK_MSG(rag_vectors_load(&w, copy, len, err) == DK_ERR_FORMAT, "type %d, %zu of %zu bytes", t, len, b.len);
            CHECK(w == NULL);
            dk_free(copy);
            n_checked++;
        }
        /* longer than the header says */
        uint8_t *longer = dk_malloc(b.len + 1);
        REQUIRE(longer);
        memcpy(longer, b.data, b.len);
        longer[b.len] = 0;
        CHECK(rag_vectors_load(&w, longer, b.len + 1, err) == DK_ERR_FORMAT);
        /* every header byte set to 0xFF */
        for (size_t i = 0; i < 32; i++) {
            memcpy(longer, b.data, b.len);
            longer[i] = 0xFF;
            CHECK_MSG(rag_vectors_load(&w, longer, b.len, err) == DK_ERR_FORMAT, "type %d, byte %zu", t, i);
            n_checked++;
        }
        /* a non-finite value in the data (F32, F16) or a bad scale / -128 (I8) */
        memcpy(longer, b.data, b.len);
        if (t == RAG_VTYPE_F32) memcpy(longer + 32, &(float){NAN}, 4);
        else if (t == RAG_VTYPE_F16) memcpy(longer + 32, &(uint16_t){0x7C00}, 2);
        else longer[b.len - 1] = 0x80;
        CHECK(rag_vectors_load(&w, longer, b.len, err) == DK_ERR_FORMAT);
        if (t == RAG_VTYPE_I8) {
            memcpy(longer, b.data, b.len);
            memcpy(longer + 32, &(float){-1.0f}, 4);
            CHECK(rag_vectors_load(&w, longer, b.len, err) == DK_ERR_FORMAT);
        }
        dk_free(longer);
        dk_buf_free(&b);
        rag_vectors_free(v);
    }
    /* random garbage of many lengths, with a valid magic: never a crash */
    for (int r = 0; r < 200; r++) {
        size_t len = (size_t)(r * 7 % 300);
        uint8_t *g = dk_malloc(len + 1);
        REQUIRE(g);
        for (size_t i = 0; i < len; i++) g[i] = (uint8_t)(frand() * 128 + 128);
        if (len >= 8) memcpy(g, "DKVEC1\0\0", 8);
        rag_vectors *w = NULL;
        int rc = rag_vectors_load(&w, g, len, err);
        CHECK(rc == DK_ERR_FORMAT || rc == DK_OK);
        rag_vectors_free(w);
        dk_free(g);
    }
    test_log("%d truncated/corrupt inputs rejected", n_checked);
}

TEST(rag_vec, bad_arguments)
{
    char err[DK_ERRLEN];
    rag_vectors *v = (rag_vectors *)1;
    CHECK(rag_vectors_new(&v, 0, RAG_VTYPE_F32, RAG_METRIC_L2, err) == DK_ERR_ARG);
    CHECK(v == NULL);
    CHECK(rag_vectors_new(&v, 65537, RAG_VTYPE_F32, RAG_METRIC_L2, err) == DK_ERR_ARG);
    CHECK(rag_vectors_new(&v, 4, (rag_vtype)7, RAG_METRIC_L2, err) == DK_ERR_ARG);
    CHECK(rag_vectors_new(&v, 4, RAG_VTYPE_F32, (rag_metric)9, err) == DK_ERR_ARG);
    REQUIRE(rag_vectors_new(&v, 4, RAG_VTYPE_F16, RAG_METRIC_DOT, err) == DK_OK);
    float x[8] = {1, 2, 3, 4, 5, 6, NAN, 8};
    CHECK(rag_vectors_add(v, x, 2, err) == DK_ERR_ARG);
    CHECK_EQ_INT(rag_vectors_count(v), 0); /* nothing added */
    x[6] = INFINITY;
    CHECK(rag_vectors_add(v, x, 2, err) == DK_ERR_ARG);
    x[6] = 7;
    CHECK(rag_vectors_add(v, x, 2, err) == DK_OK);
    CHECK_EQ_INT(rag_vectors_count(v), 2);
    const float bad_q[4] = {1, NAN, 0, 0};
    rag_hit h[2];
    size_t n = 99;
    CHECK(rag_exact_search(v, bad_q, 2, NULL, 1, h, &n, err) == DK_ERR_ARG);
    CHECK_EQ_INT(n, 0);
    rag_vectors_free(v);
    rag_vectors_free(NULL);

    /* I8 of a vector of subnormals: quantised like any other (-127..127), no overflow */
    REQUIRE(rag_vectors_new(&v, 4, RAG_VTYPE_I8, RAG_METRIC_DOT, err) == DK_OK);
    const float tiny[4] = {1e-40f, -1e-40f, 0, 5e-41f};
    REQUIRE(rag_vectors_add(v, tiny, 1, err) == DK_OK);
    const float q1[4] = {1e30f, 0, 0, 0};
    float s = rag_vectors_score(v, q1, 0);
    CHECK_MSG(isfinite(s) && fabs(s - 1e-10) < 1e-12, "score %g", s);
    rag_vectors_free(v);
}
