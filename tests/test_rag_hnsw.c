/*
 * test_rag_hnsw.c: the HNSW index of rag/ (hnsw.c) against the exact search of the same
 * store: recall@10 on random 384-dimensional vectors for every metric and store type,
 * extending an index, a build on several threads against the one-thread build, the byte
 * round trip and hostile bytes, filters, edge cases (k above n, an empty store) and
 * concurrent searches.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "rag/rag.h"
#include "test.h"

#define HT_DIM 384
#define HT_K 10

static uint64_t ht_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Uniform in [-1, 1). */
static float ht_uniform(uint64_t *s) { return (float)((double)(ht_rand(s) >> 11) / 4503599627370496.0 - 1.0); }

/* n random vectors (n, HT_DIM), like embeddings: around one of 100 fixed random centres
 * (uniform in [-1, 1) per element, the same for every seed) plus uniform noise of the same
 * size, so that neighbourhoods mean something. clustered 0: uniform, no structure, the hard
 * case where every vector is nearly as far as any other. The caller frees with free(). */
static float *ht_vectors(size_t n, uint64_t seed, int clustered)
{
    float *x = malloc(n * HT_DIM * sizeof(float));
    float *centres = malloc(100 * HT_DIM * sizeof(float));
    uint64_t s = 0x5eed, c = 0;
    for (size_t i = 0; centres && i < 100 * HT_DIM; i++) centres[i] = ht_uniform(&s);
    s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; x && centres && i < n; i++) {
        if (clustered) c = ht_rand(&s) % 100;
        for (size_t j = 0; j < HT_DIM; j++)
            x[i * HT_DIM + j] = (clustered ? centres[c * HT_DIM + j] : 0.0f) + ht_uniform(&s);
    }
    free(centres);
    return x;
}

static float *ht_random(size_t n, uint64_t seed) { return ht_vectors(n, seed, 1); }

static rag_vectors *ht_store_of(size_t n, rag_vtype type, rag_metric metric, uint64_t seed, int clustered)
{
    char err[DK_ERRLEN];
    rag_vectors *v = NULL;
    float *x = ht_vectors(n, seed, clustered);
    if (!x || rag_vectors_new(&v, HT_DIM, type, metric, err) != DK_OK || rag_vectors_add(v, x, n, err) != DK_OK) {
        rag_vectors_free(v);
        v = NULL;
    }
    free(x);
    return v;
}

static rag_vectors *ht_store(size_t n, rag_vtype type, rag_metric metric, uint64_t seed)
{
    return ht_store_of(n, type, metric, seed, 1);
}

/* Mean recall@HT_K of the index over n_queries random queries (against the exact search of
 * the same store, with the same filter); -1 on an error. */
static double ht_recall_of(const rag_hnsw *h, const rag_vectors *v, size_t n_queries, size_t ef, const uint8_t *allow,
                           uint64_t seed, int clustered) {
    char err[DK_ERRLEN];
    float *q = ht_vectors(n_queries, seed, clustered);
    size_t hits = 0, total = 0;
    int bad = !q;
    for (size_t i = 0; i < n_queries && !bad; i++) {
        rag_hit exact[HT_K], approx[HT_K];
        size_t n_exact, n_approx;
        if (rag_exact_search(v, q + i * HT_DIM, HT_K, allow, 1, exact, &n_exact, err) != DK_OK ||
            rag_hnsw_search(h, q + i * HT_DIM, HT_K, ef, allow, approx, &n_approx, err) != DK_OK) {
            bad = 1;
            break;
        }
        for (size_t a = 0; a < n_approx; a++) {
            if (allow && !((allow[approx[a].id / 8] >> (approx[a].id % 8)) & 1)) bad = 1;
            for (size_t e = 0; e < n_exact; e++) hits += approx[a].id == exact[e].id;
        }
        total += n_exact;
    }
    free(q);
    return bad ? -1.0 : total ? (double)hits / (double)total : 1.0;
}

static double ht_recall(const rag_hnsw *h, const rag_vectors *v, size_t n_queries, size_t ef, const uint8_t *allow,
                        uint64_t seed) {
    return ht_recall_of(h, v, n_queries, ef, allow, seed, 1);
}

static void ht_check_recall(rag_vtype type, rag_metric metric, size_t n, const char *name)
{
    char err[DK_ERRLEN];
    rag_vectors *v = ht_store(n, type, metric, 1);
    REQUIRE(v);
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = 16, .ef_construction = 64, .seed = 7};
    int rc = rag_hnsw_build(&h, v, &params, err);
    CHECK_MSG(rc == DK_OK, "build: %s", err);
    if (rc == DK_OK) {
        double recall = ht_recall(h, v, 100, 64, NULL, 99);
        test_log("hnsw %s: %zu vectors, recall@10 at ef 64 = %.3f", name, n, recall);
        CHECK_MSG(recall >= 0.95, "%s recall %.3f", name, recall);
    }
    rag_hnsw_free(h);
    rag_vectors_free(v);
}

TEST(rag_hnsw, recall_cosine_f32) { ht_check_recall(RAG_VTYPE_F32, RAG_METRIC_COSINE, 4000, "cosine f32"); }
TEST(rag_hnsw, recall_dot_f32) { ht_check_recall(RAG_VTYPE_F32, RAG_METRIC_DOT, 3000, "dot f32"); }
TEST(rag_hnsw, recall_l2_f32) { ht_check_recall(RAG_VTYPE_F32, RAG_METRIC_L2, 3000, "l2 f32"); }
TEST(rag_hnsw, recall_cosine_f16) { ht_check_recall(RAG_VTYPE_F16, RAG_METRIC_COSINE, 3000, "cosine f16"); }
TEST(rag_hnsw, recall_cosine_i8) { ht_check_recall(RAG_VTYPE_I8, RAG_METRIC_COSINE, 3000, "cosine i8"); }
TEST(rag_hnsw, recall_l2_i8) { ht_check_recall(RAG_VTYPE_I8, RAG_METRIC_L2, 3000, "l2 i8"); }

/* Uniform vectors have no neighbourhoods (the exact top 10 are barely closer than the rest),
 * which is the worst case for any graph index: ef 64 finds only part of them (0.79 when
 * written; below 0.6 means the graph got worse), and a wider beam must still converge on the
 * exact answer. */
TEST(rag_hnsw, recall_uniform_needs_wider_beam)
{
    struct { rag_vtype type; rag_metric metric; const char *name; } cases[] = {
        {RAG_VTYPE_F32, RAG_METRIC_COSINE, "cosine f32"}, {RAG_VTYPE_I8, RAG_METRIC_L2, "l2 i8"},
        {RAG_VTYPE_F16, RAG_METRIC_DOT, "dot f16"}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char err[DK_ERRLEN];
        rag_vectors *v = ht_store_of(2000, cases[c].type, cases[c].metric, 17, 0);
        REQUIRE(v);
        rag_hnsw *h = NULL;
        rag_hnsw_params params = {.m = 16, .ef_construction = 64, .seed = 7};
        CHECK(rag_hnsw_build(&h, v, &params, err) == DK_OK);
        double at64 = h ? ht_recall_of(h, v, 50, 64, NULL, 18, 0) : -1, at400 = h ? ht_recall_of(h, v, 50, 400, NULL, 18, 0) : -1;
        test_log("hnsw uniform %s: 2000 vectors, recall@10 at ef 64 = %.3f, at ef 400 = %.3f", cases[c].name, at64, at400);
        CHECK_MSG(at400 >= 0.95 && at400 >= at64 && at64 >= 0.6, "uniform %s recall %.3f at ef 400, %.3f at ef 64",
                  cases[c].name, at400, at64);
        rag_hnsw_free(h);
        rag_vectors_free(v);
    }
}

/* Two indexes give the same answers to n_queries queries. */
static int ht_same_results(const rag_hnsw *a, const rag_hnsw *b, size_t n_queries, uint64_t seed)
{
    char err[DK_ERRLEN];
    float *q = ht_random(n_queries, seed);
    int same = q != NULL;
    for (size_t i = 0; i < n_queries && same; i++) {
        rag_hit ha[HT_K], hb[HT_K];
        size_t na, nb;
        if (rag_hnsw_search(a, q + i * HT_DIM, HT_K, 32, NULL, ha, &na, err) != DK_OK ||
            rag_hnsw_search(b, q + i * HT_DIM, HT_K, 32, NULL, hb, &nb, err) != DK_OK || na != nb)
            same = 0;
        for (size_t j = 0; same && j < na; j++) same = ha[j].id == hb[j].id && ha[j].score == hb[j].score;
    }
    free(q);
    return same;
}

TEST(rag_hnsw, extend_after_build)
{
    char err[DK_ERRLEN];
    rag_vectors *v = NULL;
    float *x = ht_random(4000, 2);
    REQUIRE(x);
    REQUIRE(rag_vectors_new(&v, HT_DIM, RAG_VTYPE_F32, RAG_METRIC_COSINE, err) == DK_OK);
    REQUIRE(rag_vectors_add(v, x, 1000, err) == DK_OK);
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = 16, .ef_construction = 64, .seed = 3, .n_threads = 3}; /* extends too */
    REQUIRE(rag_hnsw_build(&h, v, &params, err) == DK_OK);
    CHECK(rag_hnsw_extend(h, err) == DK_OK); /* nothing new: a no-op */
    REQUIRE(rag_vectors_add(v, x + 1000 * HT_DIM, 3000, err) == DK_OK);
    CHECK(rag_hnsw_extend(h, err) == DK_OK);
    double recall = ht_recall(h, v, 100, 64, NULL, 5);
    test_log("hnsw extended 1000 -> 4000: recall@10 at ef 64 = %.3f", recall);
    CHECK_MSG(recall >= 0.95, "recall after extend %.3f", recall);
    /* every vector is reachable: each one finds itself */
    size_t found_self = 0;
    for (uint32_t id = 0; id < 4000; id += 97) {
        rag_hit hit[1];
        size_t n;
        CHECK(rag_hnsw_search(h, x + (size_t)id * HT_DIM, 1, 64, NULL, hit, &n, err) == DK_OK);
        found_self += n == 1 && hit[0].id == id;
    }
    CHECK_EQ_INT(found_self, (4000 + 96) / 97);
    rag_hnsw_free(h);
    rag_vectors_free(v);
    free(x);
}

TEST(rag_hnsw, save_load_round_trip)
{
    char err[DK_ERRLEN];
    rag_vectors *v = ht_store(2000, RAG_VTYPE_F32, RAG_METRIC_DOT, 4);
    REQUIRE(v);
    rag_hnsw *h = NULL, *back = NULL;
    rag_hnsw_params params = {.m = 8, .ef_construction = 64, .seed = 11};
    REQUIRE(rag_hnsw_build(&h, v, &params, err) == DK_OK);
    dk_buf bytes = {0};
    REQUIRE(rag_hnsw_save(h, &bytes, err) == DK_OK);
    CHECK(bytes.len > 8 && memcmp(bytes.data, "DKHNSW1", 8) == 0);
    CHECK_MSG(rag_hnsw_load(&back, v, bytes.data, bytes.len, err) == DK_OK, "load: %s", err);
    if (back) {
        CHECK(ht_same_results(h, back, 50, 8));
        CHECK_EQ_INT(rag_hnsw_memory(back), rag_hnsw_memory(h));
        dk_buf again = {0};
        CHECK(rag_hnsw_save(back, &again, err) == DK_OK);
        CHECK(again.len == bytes.len && memcmp(again.data, bytes.data, bytes.len) == 0);
        dk_buf_free(&again);
    }
    rag_hnsw_free(back);
    rag_hnsw_free(h);
    dk_buf_free(&bytes);
    rag_vectors_free(v);
}

static int ht_load_code(const rag_vectors *v, const uint8_t *data, size_t n)
{
    char err[DK_ERRLEN];
    rag_hnsw *h = NULL;
    int rc = rag_hnsw_load(&h, v, data, n, err);
    rag_hnsw_free(h);
    return rc;
}

static void ht_put_u32(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}

TEST(rag_hnsw, corrupt_bytes_are_format_errors)
{
    char err[DK_ERRLEN];
    rag_vectors *v = ht_store(300, RAG_VTYPE_F32, RAG_METRIC_L2, 6);
    REQUIRE(v);
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = 4, .ef_construction = 32, .seed = 1};
    REQUIRE(rag_hnsw_build(&h, v, &params, err) == DK_OK);
    dk_buf bytes = {0};
    REQUIRE(rag_hnsw_save(h, &bytes, err) == DK_OK);
    uint8_t *b = (uint8_t *)bytes.data;
    size_t n = bytes.len;
    uint8_t *copy = malloc(n);
    REQUIRE(copy);
    /* every truncation */
    size_t bad_truncations = 0;
    for (size_t len = 0; len < n; len++) bad_truncations += ht_load_code(v, b, len) != DK_ERR_FORMAT;
    CHECK_EQ_INT(bad_truncations, 0);
    /* header fields: magic, m, node count above the store, entry, max level */
    struct { size_t at; uint32_t value; } fields[] = {{0, 0x484e4b44u ^ 1}, {8, 0}, {8, 100000}, {16, 301},
                                                       {20, 300}, {24, 40}, {24, 0xffffffffu}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        memcpy(copy, b, n);
        ht_put_u32(copy + fields[i].at, fields[i].value);
        CHECK_MSG(ht_load_code(v, copy, n) == DK_ERR_FORMAT, "field at %zu = %u", fields[i].at, fields[i].value);
    }
    /* node 0: level byte at 36, then its layer-0 count and first link */
    memcpy(copy, b, n);
    copy[36] = 200;
    CHECK(ht_load_code(v, copy, n) == DK_ERR_FORMAT);
    memcpy(copy, b, n);
    ht_put_u32(copy + 37, 9); /* more than 2m = 8 links */
    CHECK(ht_load_code(v, copy, n) == DK_ERR_FORMAT);
    memcpy(copy, b, n);
    ht_put_u32(copy + 41, 300); /* a link out of range */
    CHECK(ht_load_code(v, copy, n) == DK_ERR_FORMAT);
    memcpy(copy, b, n);
    ht_put_u32(copy + 41, 0); /* a self link */
    CHECK(ht_load_code(v, copy, n) == DK_ERR_FORMAT);
    /* trailing bytes */
    dk_buf longer = {0};
    CHECK(dk_buf_append(&longer, b, n) == DK_OK && dk_buf_putc(&longer, 0) == DK_OK);
    CHECK(ht_load_code(v, (const uint8_t *)longer.data, longer.len) == DK_ERR_FORMAT);
    /* random byte flips never crash, and either load or fail as a format error */
    uint64_t s = 77;
    size_t odd = 0;
    for (int i = 0; i < 2000; i++) {
        memcpy(copy, b, n);
        for (int f = 0; f < 3; f++) copy[ht_rand(&s) % n] ^= (uint8_t)(1u << (ht_rand(&s) % 8));
        int rc = ht_load_code(v, copy, n);
        odd += rc != DK_OK && rc != DK_ERR_FORMAT;
    }
    CHECK_EQ_INT(odd, 0);
    /* a graph over more vectors than the store holds */
    rag_vectors *small = ht_store(100, RAG_VTYPE_F32, RAG_METRIC_L2, 6);
    CHECK(small && ht_load_code(small, b, n) == DK_ERR_FORMAT);
    rag_vectors_free(small);
    dk_buf_free(&longer);
    free(copy);
    dk_buf_free(&bytes);
    rag_hnsw_free(h);
    rag_vectors_free(v);
}

TEST(rag_hnsw, filters)
{
    char err[DK_ERRLEN];
    size_t n = 3000;
    rag_vectors *v = ht_store(n, RAG_VTYPE_F32, RAG_METRIC_COSINE, 9);
    REQUIRE(v);
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = 16, .ef_construction = 64, .seed = 2};
    REQUIRE(rag_hnsw_build(&h, v, &params, err) == DK_OK);
    uint8_t allow[(3000 + 7) / 8];
    /* half of the ids, then one in a hundred, then exactly 3 */
    size_t steps[] = {2, 100};
    for (size_t t = 0; t < 2; t++) {
        memset(allow, 0, sizeof(allow));
        for (size_t id = 0; id < n; id += steps[t]) allow[id / 8] |= (uint8_t)(1u << (id % 8));
        double recall = ht_recall(h, v, 50, 64, allow, 21 + t);
        test_log("hnsw filter 1/%zu: recall@10 at ef 64 = %.3f", steps[t], recall);
        CHECK_MSG(recall >= 0.9, "filter 1/%zu recall %.3f (-1: a filtered id came back)", steps[t], recall);
    }
    memset(allow, 0, sizeof(allow));
    uint32_t only[3] = {5, 1234, 2999};
    for (int i = 0; i < 3; i++) allow[only[i] / 8] |= (uint8_t)(1u << (only[i] % 8));
    float *q = ht_random(1, 123);
    rag_hit hits[HT_K];
    size_t n_hits = 0;
    CHECK(rag_hnsw_search(h, q, HT_K, 16, allow, hits, &n_hits, err) == DK_OK);
    CHECK_EQ_INT(n_hits, 3);
    for (size_t i = 0; i < n_hits; i++) CHECK(hits[i].id == 5 || hits[i].id == 1234 || hits[i].id == 2999);
    for (size_t i = 1; i < n_hits; i++) CHECK(hits[i - 1].score >= hits[i].score);
    memset(allow, 0, sizeof(allow));
    CHECK(rag_hnsw_search(h, q, HT_K, 16, allow, hits, &n_hits, err) == DK_OK);
    CHECK_EQ_INT(n_hits, 0);
    free(q);
    rag_hnsw_free(h);
    rag_vectors_free(v);
}

TEST(rag_hnsw, k_above_n_and_empty)
{
    char err[DK_ERRLEN];
    rag_vectors *v = ht_store(20, RAG_VTYPE_F32, RAG_METRIC_L2, 12);
    REQUIRE(v);
    rag_hnsw *h = NULL;
    REQUIRE(rag_hnsw_build(&h, v, NULL, err) == DK_OK);
    float *q = ht_random(1, 5);
    rag_hit hits[50], exact[50];
    size_t n_hits = 0, n_exact = 0;
    CHECK(rag_hnsw_search(h, q, 50, 0, NULL, hits, &n_hits, err) == DK_OK);
    CHECK(rag_exact_search(v, q, 50, NULL, 1, exact, &n_exact, err) == DK_OK);
    CHECK_EQ_INT(n_hits, 20);
    for (size_t i = 0; i < n_hits && i < n_exact; i++) CHECK_EQ_INT(hits[i].id, exact[i].id);
    CHECK(rag_hnsw_search(h, q, 0, 10, NULL, hits, &n_hits, err) == DK_OK);
    CHECK_EQ_INT(n_hits, 0);
    rag_hnsw_free(h);
    rag_vectors_free(v);

    /* an empty store: builds, searches to nothing, round-trips, then grows */
    REQUIRE(rag_vectors_new(&v, HT_DIM, RAG_VTYPE_F16, RAG_METRIC_COSINE, err) == DK_OK);
    REQUIRE(rag_hnsw_build(&h, v, NULL, err) == DK_OK);
    CHECK(rag_hnsw_search(h, q, 5, 10, NULL, hits, &n_hits, err) == DK_OK);
    CHECK_EQ_INT(n_hits, 0);
    dk_buf bytes = {0};
    CHECK(rag_hnsw_save(h, &bytes, err) == DK_OK);
    rag_hnsw *back = NULL;
    CHECK_MSG(rag_hnsw_load(&back, v, bytes.data, bytes.len, err) == DK_OK, "%s", err);
    CHECK(rag_vectors_add(v, q, 1, err) == DK_OK);
    CHECK(back && rag_hnsw_extend(back, err) == DK_OK);
    CHECK(back && rag_hnsw_search(back, q, 5, 10, NULL, hits, &n_hits, err) == DK_OK && n_hits == 1 && hits[0].id == 0);
    CHECK(rag_hnsw_memory(h) > 0);
    rag_hnsw_params bad = {.m = 1};
    rag_hnsw *none = NULL;
    CHECK(rag_hnsw_build(&none, v, &bad, err) == DK_ERR_ARG && none == NULL);
    dk_buf_free(&bytes);
    rag_hnsw_free(back);
    rag_hnsw_free(h);
    rag_vectors_free(v);
    free(q);
}

/* Walks the bytes of a saved graph (the layout at the top of hnsw.c): counts lists with a
 * self link or a neighbour twice, and into *unreachable the nodes no walk along the links
 * from the entry reaches; -1 when the bytes do not parse. */
static long ht_check_graph(const uint8_t *b, size_t n, long *unreachable)
{
    size_t at = 36;
    long bad = 0;
    uint32_t n_nodes, entry;
    memcpy(&n_nodes, b + 16, 4); /* little-endian host assumed, as on every target */
    memcpy(&entry, b + 20, 4);
    size_t *start = calloc(n_nodes + 1, sizeof(size_t)); /* offset of each node's level byte */
    uint32_t *queue = calloc(n_nodes + 1, sizeof(uint32_t));
    uint8_t *seen = calloc(n_nodes + 1, 1);
    if (!start || !queue || !seen) bad = -1;
    for (uint32_t id = 0; id < n_nodes && bad >= 0; id++) {
        if (at >= n) bad = -1;
        start[id] = at;
        int level = bad < 0 ? -1 : b[at++];
        for (int l = 0; l <= level && bad >= 0; l++) {
            uint32_t count, ids[256];
            if (at + 4 > n) bad = -1;
            if (bad >= 0) memcpy(&count, b + at, 4);
            if (bad < 0 || count > 256 || (at += 4) + 4 * (size_t)count > n) {
                bad = -1;
                break;
            }
            memcpy(ids, b + at, 4 * (size_t)count);
            at += 4 * (size_t)count;
            int dup = 0;
            for (uint32_t i = 0; i < count; i++) {
                dup |= ids[i] == id || ids[i] >= n_nodes;
                for (uint32_t j = 0; j < i; j++) dup |= ids[i] == ids[j];
            }
            bad += dup;
        }
    }
    if (bad >= 0 && at != n) bad = -1;
    size_t head = 0, tail = 0;
    if (bad >= 0 && n_nodes) {
        queue[tail++] = entry;
        seen[entry] = 1;
    }
    while (bad >= 0 && head < tail) { /* every layer's links */
        size_t p = start[queue[head++]];
        int level = b[p++];
        for (int l = 0; l <= level; l++) {
            uint32_t count, to;
            memcpy(&count, b + p, 4);
            for (uint32_t i = 0; i < count; i++) {
                memcpy(&to, b + p + 4 + 4 * (size_t)i, 4);
                if (!seen[to]) {
                    seen[to] = 1;
                    queue[tail++] = to;
                }
            }
            p += 4 + 4 * (size_t)count;
        }
    }
    *unreachable = (long)n_nodes - (long)tail;
    free(start);
    free(queue);
    free(seen);
    return bad;
}

/* How many of the vectors x (n, HT_DIM) with ids 0, step, 2 step, ... find themselves first
 * at ef 64. */
static size_t ht_self_found(const rag_hnsw *h, const float *x, size_t n, size_t step)
{
    char err[DK_ERRLEN];
    size_t found = 0;
    for (size_t id = 0; h && x && id < n; id += step) {
        rag_hit hit[1];
        size_t got;
        found += rag_hnsw_search(h, x + id * HT_DIM, 1, 64, NULL, hit, &got, err) == DK_OK && got == 1 && hit[0].id == id;
    }
    return found;
}

/* A graph built on 4 threads is about as good as the one-thread graph of the same vectors
 * (the hard uniform case, where a worse graph shows at once): recall, and vectors that find
 * themselves (with a little slack: on uniform vectors a search at ef 64 may miss one); it is
 * valid (it saves, loads back through every check, has no self or repeated links, every node
 * is reachable from the entry); one thread gives the same bytes every time. */
TEST(rag_hnsw, parallel_build)
{
    char err[DK_ERRLEN];
    size_t n = 2000;
    rag_vectors *v = ht_store_of(n, RAG_VTYPE_F32, RAG_METRIC_COSINE, 41, 0);
    REQUIRE(v);
    rag_hnsw *one = NULL, *four = NULL, *back = NULL;
    rag_hnsw_params params = {.m = 16, .ef_construction = 64, .seed = 5};
    REQUIRE(rag_hnsw_build(&one, v, &params, err) == DK_OK);
    params.n_threads = 4;
    REQUIRE_MSG(rag_hnsw_build(&four, v, &params, err) == DK_OK, "build: %s", err);
    dk_buf b1 = {0}, b4 = {0};
    CHECK(rag_hnsw_save(one, &b1, err) == DK_OK);
    REQUIRE(rag_hnsw_save(four, &b4, err) == DK_OK);
    CHECK_MSG(rag_hnsw_load(&back, v, b4.data, b4.len, err) == DK_OK, "load: %s", err);
    long lost1 = -1, lost4 = -1;
    CHECK_EQ_INT(ht_check_graph((const uint8_t *)b1.data, b1.len, &lost1), 0);
    CHECK_EQ_INT(ht_check_graph((const uint8_t *)b4.data, b4.len, &lost4), 0);
    CHECK_EQ_INT(lost1, 0);
    CHECK_EQ_INT(lost4, 0);
    double r1 = ht_recall_of(one, v, 200, 64, NULL, 42, 0), r4 = ht_recall_of(four, v, 200, 64, NULL, 42, 0);
    test_log("hnsw uniform, 2000 vectors: recall@10 at ef 64 = %.3f built on 1 thread, %.3f on 4", r1, r4);
    CHECK_MSG(r1 > 0.5 && r4 >= r1 - 0.02, "recall %.3f on 4 threads, %.3f on 1", r4, r1);
    float *x = ht_vectors(n, 41, 0);
    size_t self1 = ht_self_found(one, x, n, 4), self4 = ht_self_found(back, x, n, 4), tried = (n + 3) / 4;
    test_log("hnsw uniform, 2000 vectors: %zu of %zu found themselves at ef 64 built on 1 thread, %zu on 4", self1,
             tried, self4);
    CHECK_MSG(self4 + tried / 100 >= self1 && self4 + tried / 50 >= tried, "%zu and %zu of %zu found themselves", self1,
              self4, tried);
    free(x);
    dk_buf_free(&b1);
    dk_buf_free(&b4);
    rag_hnsw_free(back);
    rag_hnsw_free(four);
    rag_hnsw_free(one);
    rag_vectors_free(v);

    /* one thread: the same bytes every time (a smaller store: the point is the sameness) */
    rag_vectors *small = ht_store_of(600, RAG_VTYPE_F16, RAG_METRIC_DOT, 43, 0);
    REQUIRE(small);
    dk_buf first = {0}, second = {0};
    params.n_threads = 1;
    for (int i = 0; i < 2; i++) {
        rag_hnsw *h = NULL;
        CHECK(rag_hnsw_build(&h, small, &params, err) == DK_OK && rag_hnsw_save(h, i ? &second : &first, err) == DK_OK);
        rag_hnsw_free(h);
    }
    CHECK(first.len > 36 && first.len == second.len && memcmp(first.data, second.data, first.len) == 0);
    dk_buf_free(&first);
    dk_buf_free(&second);
    /* more threads than vectors */
    rag_vectors *tiny = ht_store(5, RAG_VTYPE_F32, RAG_METRIC_L2, 3);
    rag_hnsw *th = NULL;
    params.n_threads = 16;
    CHECK(tiny && rag_hnsw_build(&th, tiny, &params, err) == DK_OK);
    float *q = ht_random(1, 44);
    rag_hit hits[HT_K];
    size_t n_hits = 0;
    CHECK(th && q && rag_hnsw_search(th, q, HT_K, 16, NULL, hits, &n_hits, err) == DK_OK && n_hits == 5);
    free(q);
    rag_hnsw_free(th);
    rag_vectors_free(tiny);
    rag_vectors_free(small);
}

typedef struct ht_job {
    const rag_hnsw *h;
    const float *queries; /* (n_queries, HT_DIM) */
    size_t n_queries;
    rag_hit *out;         /* (n_queries, HT_K) */
    int failed;
} ht_job;

static void *ht_search_all(void *arg)
{
    ht_job *j = arg;
    char err[DK_ERRLEN];
    for (size_t i = 0; i < j->n_queries; i++) {
        size_t n;
        if (rag_hnsw_search(j->h, j->queries + i * HT_DIM, HT_K, 48, NULL, j->out + i * HT_K, &n, err) != DK_OK ||
            n != HT_K)
            j->failed = 1;
    }
    return NULL;
}

TEST(rag_hnsw, concurrent_searches)
{
    char err[DK_ERRLEN];
    rag_vectors *v = ht_store(2000, RAG_VTYPE_I8, RAG_METRIC_DOT, 13);
    REQUIRE(v);
    rag_hnsw *h = NULL;
    rag_hnsw_params params = {.m = 12, .ef_construction = 64, .seed = 4};
    REQUIRE(rag_hnsw_build(&h, v, &params, err) == DK_OK);
    size_t n_queries = 200;
    float *q = ht_random(n_queries, 31);
    rag_hit *one = calloc(n_queries * HT_K, sizeof(rag_hit));
    rag_hit *many[4];
    REQUIRE(q && one);
    ht_job solo = {h, q, n_queries, one, 0};
    ht_search_all(&solo);
    CHECK(!solo.failed);
    pthread_t threads[4];
    ht_job jobs[4];
    for (int t = 0; t < 4; t++) {
        many[t] = calloc(n_queries * HT_K, sizeof(rag_hit));
        jobs[t] = (ht_job){h, q, n_queries, many[t], 0};
        CHECK(pthread_create(&threads[t], NULL, ht_search_all, &jobs[t]) == 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        CHECK(!jobs[t].failed);
        size_t differ = 0;
        for (size_t i = 0; i < n_queries * HT_K; i++) differ += many[t][i].id != one[i].id || many[t][i].score != one[i].score;
        CHECK_EQ_INT(differ, 0);
        free(many[t]);
    }
    free(one);
    free(q);
    rag_hnsw_free(h);
    rag_vectors_free(v);
}
