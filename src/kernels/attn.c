/*
 * attn.c: the KV cache layout and the two products of attention, with their scalar
 * references. Keys are kept in blocks of KERN_KV_BLOCK positions stored transposed
 * ([dim][16]), so that the scores of 16 positions come from one vector multiply-add per
 * dimension with no horizontal sums, and several query heads of a GQA group reuse each
 * loaded key vector. Values are row-major ([pos][dim]). Elements are F32 or F16. The
 * softmax between the two products stays in the model. ISA variants come from the table.
 */
#include <string.h>

#include "kernels/kern_internal.h"

static inline float kv_get(const void *base, bool f16, size_t i)
{
    if (f16) return kern_fp16_to_fp32(((const uint16_t *)base)[i]);
    return ((const float *)base)[i];
}

static inline void kv_put(void *base, bool f16, size_t i, float v)
{
    if (f16) ((uint16_t *)base)[i] = kern_fp32_to_fp16(v);
    else ((float *)base)[i] = v;
}

void kern_kv_store_k(void *kt, bool f16, int dim, int64_t pos, const float *k)
{
    size_t base = (size_t)(pos / KERN_KV_BLOCK) * (size_t)dim * KERN_KV_BLOCK + (size_t)(pos % KERN_KV_BLOCK);
    for (int d = 0; d < dim; d++) kv_put(kt, f16, base + (size_t)d * KERN_KV_BLOCK, k[d]);
}

void kern_kv_store_v(void *v, bool f16, int dim, int64_t pos, const float *x)
{
    for (int d = 0; d < dim; d++) kv_put(v, f16, (size_t)pos * (size_t)dim + (size_t)d, x[d]);
}

void kern_ref_attn_scores(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1, float *sc,
                          int64_t sc_stride)
{
    for (int h = 0; h < n_head; h++)
        for (int64_t p = p0; p <= p1; p++) {
            size_t base = (size_t)(p / KERN_KV_BLOCK) * (size_t)dim * KERN_KV_BLOCK + (size_t)(p % KERN_KV_BLOCK);
            double s = 0.0; /* as the reference dots: the scalar loop's sums in double */
            for (int d = 0; d < dim; d++) s += (double)q[h * dim + d] * kv_get(kt, f16, base + (size_t)d * KERN_KV_BLOCK);
            sc[h * sc_stride + (p - p0)] = (float)s;
        }
}

void kern_ref_attn_values(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16, int64_t p0,
                          int64_t p1, float *out, int64_t out_stride)
{
    for (int h = 0; h < n_head; h++) {
        float *o = out + h * out_stride;
        for (int d = 0; d < dim; d++) o[d] = 0.0f;
        for (int64_t p = p0; p <= p1; p++) {
            float wp = w[h * w_stride + (p - p0)];
            for (int d = 0; d < dim; d++) o[d] += wp * kv_get(v, f16, (size_t)p * (size_t)dim + (size_t)d);
        }
    }
}

void kern_softmax(float *x, int64_t n) { kern_ops()->softmax(x, n, NULL); }
double kern_softmax_stats(float *x, int64_t n, float *max) { return kern_ops()->softmax(x, n, max); }
void kern_silu(float *x, int64_t n) { kern_ops()->silu(x, n); }

void kern_attn_scores(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1, float *sc,
                      int64_t sc_stride)
{
    if (p1 < p0 || n_head <= 0) return;
    kern_ops()->attn_scores(q, n_head, dim, kt, f16, p0, p1, sc, sc_stride);
}

void kern_attn_values(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16, int64_t p0,
                      int64_t p1, float *out, int64_t out_stride)
{
    if (p1 < p0 || n_head <= 0) return;
    kern_ops()->attn_values(w, w_stride, n_head, dim, v, f16, p0, p1, out, out_stride);
}
