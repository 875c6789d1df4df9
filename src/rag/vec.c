/*
 * vec.c: the flat vector store of rag.h and its exact search. Vectors live in one contiguous
 * buffer in the store's type (F32, F16, or I8 with one float scale per row in a second
 * buffer) and are scored with the distance kernels of kernels/. The exact search keeps a
 * bounded min-heap of the k best per thread over a range of ids and merges the heaps; the
 * serialised form is a little-endian header ("DKVEC1", dim, count, type, metric) followed by
 * the scales (I8) and the rows.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "rag/rag_internal.h"

#define MAX_DIM 65536
#define MAX_THREADS 64

struct rag_vectors {
    size_t dim;
    rag_vtype type;
    rag_metric metric;
    size_t count, cap;    /* rows stored, rows of room */
    size_t row_bytes;     /* bytes per stored row */
    uint8_t *rows;        /* cap * row_bytes bytes */
    float *scales;        /* I8 only: cap floats */
};

static size_t type_bytes(rag_vtype t) { return t == RAG_VTYPE_F32 ? 4 : t == RAG_VTYPE_F16 ? 2 : 1; }

static enum kern_vtype kern_type(rag_vtype t)
{
    return t == RAG_VTYPE_F16 ? KERN_VTYPE_F16 : t == RAG_VTYPE_I8 ? KERN_VTYPE_I8 : KERN_VTYPE_F32;
}

static int store_new(rag_vectors **out, size_t dim, rag_vtype type, rag_metric metric, char *err)
{
    *out = NULL;
    if (dim < 1 || dim > MAX_DIM) return dk_fail(err, DK_ERR_ARG, "vector dimension %zu not in 1..%d", dim, MAX_DIM);
    if ((unsigned)type > RAG_VTYPE_I8) return dk_fail(err, DK_ERR_ARG, "unknown vector type %d", (int)type);
    if ((unsigned)metric > RAG_METRIC_L2) return dk_fail(err, DK_ERR_ARG, "unknown metric %d", (int)metric);
    rag_vectors *v = dk_calloc(1, sizeof(*v));
    if (!v) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    v->dim = dim;
    v->type = type;
    v->metric = metric;
    v->row_bytes = dim * type_bytes(type);
    *out = v;
    return DK_OK;
}

int rag_vectors_new(rag_vectors **out, size_t dim, rag_vtype type, rag_metric metric, char *err)
{
    return store_new(out, dim, type, metric, err);
}

void rag_vectors_free(rag_vectors *v)
{
    if (!v) return;
    dk_free(v->rows);
    dk_free(v->scales);
    dk_free(v);
}

size_t rag_vectors_count(const rag_vectors *v) { return v->count; }
size_t rag_vectors_dim(const rag_vectors *v) { return v->dim; }
rag_metric rag_vectors_metric(const rag_vectors *v) { return v->metric; }
rag_vtype rag_vectors_type(const rag_vectors *v) { return v->type; }

/* Room for at least need rows (doubling). */
static int reserve_rows(rag_vectors *v, size_t need, char *err)
{
    if (need <= v->cap) return DK_OK;
    size_t cap = v->cap ? v->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > SIZE_MAX / v->row_bytes) return dk_fail(err, DK_ERR_NOMEM, "vector store too large");
    uint8_t *rows = dk_realloc(v->rows, cap * v->row_bytes);
    if (!rows) return dk_fail(err, DK_ERR_NOMEM, "out of memory for %zu vectors", cap);
    v->rows = rows;
    if (v->type == RAG_VTYPE_I8) {
        float *scales = dk_realloc(v->scales, cap * sizeof(float));
        if (!scales) return dk_fail(err, DK_ERR_NOMEM, "out of memory for %zu vectors", cap);
        v->scales = scales;
    }
    v->cap = cap;
    return DK_OK;
}

/* x scaled to unit length (in double; a zero vector stays zero), into out (may equal x). */
static void normalise(const float *x, float *out, size_t dim)
{
    double ss = 0;
    for (size_t i = 0; i < dim; i++) ss += (double)x[i] * x[i];
    double inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
    for (size_t i = 0; i < dim; i++) out[i] = (float)(x[i] * inv);
}

/* Stores x (dim floats, already normalised if needed) as row id. */
static void store_row(rag_vectors *v, size_t id, const float *x)
{
    uint8_t *row = v->rows + id * v->row_bytes;
    if (v->type == RAG_VTYPE_F32) {
        memcpy(row, x, v->row_bytes);
    } else if (v->type == RAG_VTYPE_F16) {
        uint16_t *h = (uint16_t *)row;
        for (size_t i = 0; i < v->dim; i++) h[i] = kern_fp32_to_fp16(x[i]);
    } else {
        float amax = 0;
        for (size_t i = 0; i < v->dim; i++) amax = fmaxf(amax, fabsf(x[i]));
        /* in double: 127 / amax overflows float for subnormal amax */
        float scale = amax / 127.0f;
        double inv = amax > 0 ? 127.0 / amax : 0.0;
        int8_t *q = (int8_t *)row;
        for (size_t i = 0; i < v->dim; i++) {
            double r = round(x[i] * inv);
            q[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
        }
        v->scales[id] = scale;
    }
}

int rag_vectors_add(rag_vectors *v, const float *x, size_t n, char *err)
{
    if (n == 0) return DK_OK;
    if (!x) return dk_fail(err, DK_ERR_ARG, "no vectors given");
    if (n > UINT32_MAX - v->count) return dk_fail(err, DK_ERR_LIMIT, "more than %u vectors", (unsigned)UINT32_MAX);
    if (n > SIZE_MAX / v->dim) return dk_fail(err, DK_ERR_NOMEM, "too many values");
    for (size_t i = 0; i < n * v->dim; i++)
        if (!isfinite(x[i])) return dk_fail(err, DK_ERR_ARG, "vector %zu has a non-finite value", i / v->dim);
    int rc = reserve_rows(v, v->count + n, err);
    if (rc) return rc;
    float *tmp = dk_malloc_array(v->dim, sizeof(float));
    if (!tmp) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t r = 0; r < n; r++) {
        const float *src = x + r * v->dim;
        if (v->metric == RAG_METRIC_COSINE) {
            normalise(src, tmp, v->dim);
            src = tmp;
        }
        store_row(v, v->count + r, src);
    }
    dk_free(tmp);
    v->count += n;
    return DK_OK;
}

void rag_vectors_prepare_query(const rag_vectors *v, const float *query, float *qprep)
{
    if (v->metric == RAG_METRIC_COSINE) normalise(query, qprep, v->dim);
    else memcpy(qprep, query, v->dim * sizeof(float));
}

float rag_vectors_score_prepared(const rag_vectors *v, const float *qprep, uint32_t id)
{
    const void *row = v->rows + (size_t)id * v->row_bytes;
    float scale = v->type == RAG_VTYPE_I8 ? v->scales[id] : 1.0f;
    if (v->metric == RAG_METRIC_L2) return -kern_vec_l2sq(kern_type(v->type), row, scale, qprep, (int64_t)v->dim);
    return kern_vec_dot(kern_type(v->type), row, scale, qprep, (int64_t)v->dim);
}

float rag_vectors_score(const rag_vectors *v, const float *query, uint32_t id)
{
    if (v->metric != RAG_METRIC_COSINE) return rag_vectors_score_prepared(v, query, id);
    float stack[1024];
    float *q = v->dim <= 1024 ? stack : dk_malloc_array(v->dim, sizeof(float));
    if (!q) return NAN;
    rag_vectors_prepare_query(v, query, q);
    float s = rag_vectors_score_prepared(v, q, id);
    if (q != stack) dk_free(q);
    return s;
}

struct rag_query {
    float *q; /* dim floats */
};

int rag_query_new(const rag_vectors *v, rag_query **out)
{
    *out = NULL;
    rag_query *q = dk_calloc(1, sizeof(*q));
    if (!q) return DK_ERR_NOMEM;
    q->q = dk_malloc_array(v->dim, sizeof(float));
    if (!q->q) {
        dk_free(q);
        return DK_ERR_NOMEM;
    }
    *out = q;
    return DK_OK;
}

int rag_query_prepare(const rag_vectors *v, const float *query, rag_query *q)
{
    for (size_t i = 0; i < v->dim; i++)
        if (!isfinite(query[i])) return DK_ERR_ARG;
    rag_vectors_prepare_query(v, query, q->q);
    return DK_OK;
}

float rag_query_score(const rag_vectors *v, const rag_query *q, uint32_t id)
{
    return rag_vectors_score_prepared(v, q->q, id);
}

void rag_query_free(rag_query *q)
{
    if (!q) return;
    dk_free(q->q);
    dk_free(q);
}

void rag_vectors_get(const rag_vectors *v, uint32_t id, float *out)
{
    const uint8_t *row = v->rows + (size_t)id * v->row_bytes;
    if (v->type == RAG_VTYPE_F32) {
        memcpy(out, row, v->row_bytes);
    } else if (v->type == RAG_VTYPE_F16) {
        const uint16_t *h = (const uint16_t *)row;
        for (size_t i = 0; i < v->dim; i++) out[i] = kern_fp16_to_fp32(h[i]);
    } else {
        const int8_t *b = (const int8_t *)row;
        for (size_t i = 0; i < v->dim; i++) out[i] = (float)b[i] * v->scales[id];
    }
}

/* ------------------------------------------------------------------ exact search */

/* Whether hit a ranks before b: higher score, then lower id (NaN never ranks first). */
static inline int hit_before(rag_hit a, rag_hit b)
{
    if (a.score != b.score) return a.score > b.score;
    return a.id < b.id;
}

/* A bounded heap of the best k hits seen, its root the worst of them. */
typedef struct top_k {
    rag_hit *h;
    size_t n, k;
} top_k;

static void heap_down(top_k *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < t->n && hit_before(t->h[w], t->h[l])) w = l;
        if (r < t->n && hit_before(t->h[w], t->h[r])) w = r;
        if (w == i) return;
        rag_hit tmp = t->h[i];
        t->h[i] = t->h[w];
        t->h[w] = tmp;
        i = w;
    }
}

static void heap_offer(top_k *t, rag_hit x)
{
    if (t->n < t->k) {
        size_t i = t->n++;
        t->h[i] = x;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!hit_before(t->h[p], t->h[i])) break;
            rag_hit tmp = t->h[i];
            t->h[i] = t->h[p];
            t->h[p] = tmp;
            i = p;
        }
    } else if (hit_before(x, t->h[0])) {
        t->h[0] = x;
        heap_down(t, 0);
    }
}

typedef struct search_job {
    const rag_vectors *v;
    const float *q;        /* prepared query */
    const uint8_t *allow;
    size_t lo, hi;         /* ids [lo, hi) */
    top_k top;
} search_job;

static void search_range(search_job *j)
{
    for (size_t id = j->lo; id < j->hi; id++) {
        if (j->allow && !(j->allow[id >> 3] & (1u << (id & 7)))) continue;
        rag_hit x = {(uint32_t)id, rag_vectors_score_prepared(j->v, j->q, (uint32_t)id)};
        heap_offer(&j->top, x);
    }
}

static void *search_thread(void *arg)
{
    search_job *j = arg;
    search_range(j);
    return NULL;
}

static int cmp_hits(const void *a, const void *b)
{
    rag_hit x = *(const rag_hit *)a, y = *(const rag_hit *)b;
    return hit_before(x, y) ? -1 : hit_before(y, x) ? 1 : 0;
}

int rag_exact_search(const rag_vectors *v, const float *query, size_t k, const uint8_t *allow, int n_threads,
                     rag_hit *out, size_t *n_out, char *err)
{
    *n_out = 0;
    if (!query) return dk_fail(err, DK_ERR_ARG, "no query");
    for (size_t i = 0; i < v->dim; i++)
        if (!isfinite(query[i])) return dk_fail(err, DK_ERR_ARG, "query has a non-finite value");
    if (k == 0 || v->count == 0) return DK_OK;
    if (!out) return dk_fail(err, DK_ERR_ARG, "no room for hits");
    if (k > v->count) k = v->count;
    size_t nt = n_threads < 1 ? 1 : n_threads > MAX_THREADS ? MAX_THREADS : (size_t)n_threads;
    if (nt > v->count) nt = v->count;

    float *q = dk_malloc_array(v->dim, sizeof(float));
    search_job *jobs = dk_calloc(nt, sizeof(*jobs));
    rag_hit *heaps = dk_malloc_array(nt * k, sizeof(rag_hit)); /* nt * k <= 64 * count fits */
    pthread_t *tids = dk_calloc(nt, sizeof(pthread_t));
    bool *started = dk_calloc(nt, sizeof(bool));
    int rc = DK_OK;
    if (!q || !jobs || !heaps || !tids || !started) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory for the search");
        goto done;
    }
    rag_vectors_prepare_query(v, query, q);
    for (size_t t = 0; t < nt; t++) {
        jobs[t] = (search_job){v, q, allow, v->count * t / nt, v->count * (t + 1) / nt, {heaps + t * k, 0, k}};
    }
    /* thread 0's range runs here; a thread that cannot start runs here too */
    for (size_t t = 1; t < nt; t++) started[t] = pthread_create(&tids[t], NULL, search_thread, &jobs[t]) == 0;
    search_range(&jobs[0]);
    for (size_t t = 1; t < nt; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else search_range(&jobs[t]);
    }
    /* merge: compact the heaps, sort, keep the k best */
    size_t m = 0;
    for (size_t t = 0; t < nt; t++) {
        memmove(heaps + m, jobs[t].top.h, jobs[t].top.n * sizeof(rag_hit));
        m += jobs[t].top.n;
    }
    qsort(heaps, m, sizeof(rag_hit), cmp_hits);
    *n_out = m < k ? m : k;
    memcpy(out, heaps, *n_out * sizeof(rag_hit));
done:
    dk_free(q);
    dk_free(jobs);
    dk_free(heaps);
    dk_free(tids);
    dk_free(started);
    return rc;
}

/* ------------------------------------------------------------------ bytes */

#define HEADER_BYTES 32   /* "DKVEC1" u16 0, u32 dim, u64 count, u32 type, u32 metric, u32 0 */

static void put_u32(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(x >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(x >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

/* n values of 1, 2 or 4 bytes each, host order <-> little-endian, from src to dst. */
static void copy_le(uint8_t *dst, const uint8_t *src, size_t n, size_t width)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, src, n * width);
#else
    for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < width; b++) dst[i * width + b] = src[i * width + width - 1 - b];
#endif
}

int rag_vectors_save(const rag_vectors *v, dk_buf *out, char *err)
{
    uint8_t h[HEADER_BYTES] = {'D', 'K', 'V', 'E', 'C', '1', 0, 0};
    put_u32(h + 8, (uint32_t)v->dim);
    put_u64(h + 12, v->count);
    put_u32(h + 20, (uint32_t)v->type);
    put_u32(h + 24, (uint32_t)v->metric);
    size_t scale_bytes = v->type == RAG_VTYPE_I8 ? v->count * 4 : 0, data_bytes = v->count * v->row_bytes;
    if (dk_buf_reserve(out, HEADER_BYTES + scale_bytes + data_bytes) != DK_OK || dk_buf_append(out, h, sizeof(h)) != DK_OK)
        return dk_fail(err, DK_ERR_NOMEM, "out of memory saving vectors");
    /* reserved above: the appends below only copy */
    if (v->count == 0) return DK_OK;
    if (scale_bytes) {
        copy_le((uint8_t *)out->data + out->len, (const uint8_t *)v->scales, v->count, 4);
        out->len += scale_bytes;
    }
    copy_le((uint8_t *)out->data + out->len, v->rows, v->count * v->dim, type_bytes(v->type));
    out->len += data_bytes;
    out->data[out->len] = 0;
    return DK_OK;
}

/* Every stored value finite (a file's rows are checked as rag_vectors_add checks input). */
static int check_values(const rag_vectors *v, char *err)
{
    size_t n = v->count * v->dim;
    if (v->type == RAG_VTYPE_F32) {
        const float *f = (const float *)v->rows;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(f[i])) return dk_fail(err, DK_ERR_FORMAT, "vector %zu has a non-finite value", i / v->dim);
    } else if (v->type == RAG_VTYPE_F16) {
        const uint16_t *h = (const uint16_t *)v->rows;
        for (size_t i = 0; i < n; i++)
            if ((h[i] & 0x7C00) == 0x7C00) return dk_fail(err, DK_ERR_FORMAT, "vector %zu has a non-finite value", i / v->dim);
    } else {
        for (size_t i = 0; i < v->count; i++)
            if (!isfinite(v->scales[i]) || v->scales[i] < 0) return dk_fail(err, DK_ERR_FORMAT, "vector %zu has a bad scale", i);
        const int8_t *q = (const int8_t *)v->rows;
        for (size_t i = 0; i < n; i++)
            if (q[i] == -128) return dk_fail(err, DK_ERR_FORMAT, "vector %zu has an out-of-range value", i / v->dim);
    }
    return DK_OK;
}

int rag_vectors_load(rag_vectors **out, const void *data, size_t n_bytes, char *err)
{
    *out = NULL;
    const uint8_t *p = data;
    if (!p || n_bytes < HEADER_BYTES) return dk_fail(err, DK_ERR_FORMAT, "vector store truncated (%zu bytes)", n_bytes);
    if (memcmp(p, "DKVEC1\0\0", 8) != 0) return dk_fail(err, DK_ERR_FORMAT, "not a vector store (bad magic)");
    uint32_t dim = get_u32(p + 8), type = get_u32(p + 20), metric = get_u32(p + 24);
    uint64_t count = get_u64(p + 12);
    if (get_u32(p + 28) != 0) return dk_fail(err, DK_ERR_FORMAT, "vector store: reserved field not zero");
    if (dim < 1 || dim > MAX_DIM) return dk_fail(err, DK_ERR_FORMAT, "vector store: dimension %u", dim);
    if (type > RAG_VTYPE_I8) return dk_fail(err, DK_ERR_FORMAT, "vector store: unknown type %u", type);
    if (metric > RAG_METRIC_L2) return dk_fail(err, DK_ERR_FORMAT, "vector store: unknown metric %u", metric);
    if (count > UINT32_MAX) return dk_fail(err, DK_ERR_FORMAT, "vector store: %llu vectors", (unsigned long long)count);
    size_t row_bytes = (size_t)dim * type_bytes(type), per_row = row_bytes + (type == RAG_VTYPE_I8 ? 4 : 0);
    if (count > (SIZE_MAX - HEADER_BYTES) / per_row || n_bytes != HEADER_BYTES + count * per_row)
        return dk_fail(err, DK_ERR_FORMAT, "vector store: %zu bytes for %llu vectors of %u", n_bytes,
                       (unsigned long long)count, dim);
    rag_vectors *v;
    int rc = store_new(&v, dim, (rag_vtype)type, (rag_metric)metric, err);
    if (rc) return rc == DK_ERR_ARG ? DK_ERR_FORMAT : rc;
    rc = reserve_rows(v, (size_t)count, err);
    if (rc) {
        rag_vectors_free(v);
        return rc;
    }
    v->count = (size_t)count;
    const uint8_t *src = p + HEADER_BYTES;
    if (type == RAG_VTYPE_I8 && v->count) {
        copy_le((uint8_t *)v->scales, src, v->count, 4);
        src += v->count * 4;
    }
    if (v->count) copy_le(v->rows, src, v->count * dim, type_bytes(v->type));
    rc = check_values(v, err);
    if (rc) {
        rag_vectors_free(v);
        return rc;
    }
    *out = v;
    return DK_OK;
}
