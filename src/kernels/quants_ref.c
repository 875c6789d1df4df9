/*
 * quants_ref.c: scalar reference for the block formats: dequantize a row, quantize a row
 * (round-to-nearest for the legacy types, as ggml's reference quantizers do; a search over
 * candidate scales that minimises the squared error for the K-quants), and the reference
 * dot product "dequantize each block, multiply-add in float". The layouts are ggml's
 * (see kern_internal.h). Not for speed: the ISA variants in arch/ are.
 */
#include <math.h>
#include <string.h>

#include "kernels/kern_internal.h"

static inline int nearest_int(float f) { return (int)lrintf(f); }
static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
#define H2F kern_fp16_to_fp32
#define F2H kern_fp32_to_fp16

/* ------------------------------------------------------------------ dequantize blocks */

static void deq_q4_0(const kern_block_q4_0 *b, float *y)
{
    float d = H2F(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b->qs[j] & 0xF) - 8) * d;
        y[j + 16] = (float)((b->qs[j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const kern_block_q4_1 *b, float *y)
{
    float d = H2F(b->d), m = H2F(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b->qs[j] & 0xF) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}

static uint32_t load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void deq_q5_0(const kern_block_q5_0 *b, float *y)
{
    float d = H2F(b->d);
    uint32_t qh = load_u32le(b->qh);
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)(((b->qs[j] & 0xF) | h0) - 16) * d;
        y[j + 16] = (float)(((b->qs[j] >> 4) | h1) - 16) * d;
    }
}

static void deq_q5_1(const kern_block_q5_1 *b, float *y)
{
    float d = H2F(b->d), m = H2F(b->m);
    uint32_t qh = load_u32le(b->qh);
    for (int j = 0; j < 16; j++) {
        int h0 = (int)((qh >> j) & 1) << 4, h1 = (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = (float)((b->qs[j] & 0xF) | h0) * d + m;
        y[j + 16] = (float)((b->qs[j] >> 4) | h1) * d + m;
    }
}

static void deq_q8_0(const kern_block_q8_0 *b, float *y)
{
    float d = H2F(b->d);
    for (int j = 0; j < 32; j++) y[j] = (float)b->qs[j] * d;
}

static void deq_q2_k(const kern_block_q2_k *b, float *y)
{
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int n = 0; n < 2; n++) {
        const uint8_t *q = b->qs + 32 * n;
        for (int j = 0; j < 4; j++) {
            for (int h = 0; h < 2; h++) {  /* two sub-blocks of 16 per 32 values */
                uint8_t sc = b->scales[8 * n + 2 * j + h];
                float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
                for (int l = 16 * h; l < 16 * h + 16; l++) *y++ = dl * (float)((q[l] >> (2 * j)) & 3) - ml;
            }
        }
    }
}

static int q3_k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

static void deq_q3_k(const kern_block_q3_k *b, float *y)
{
    float d = H2F(b->d);
    for (int n = 0; n < 2; n++) {
        const uint8_t *q = b->qs + 32 * n;
        for (int j = 0; j < 4; j++) {
            uint8_t m = (uint8_t)(1u << (4 * n + j));
            for (int h = 0; h < 2; h++) {
                float dl = d * (float)q3_k_scale(b->scales, 8 * n + 2 * j + h);
                for (int l = 16 * h; l < 16 * h + 16; l++)
                    *y++ = dl * (float)(((q[l] >> (2 * j)) & 3) - ((b->hmask[l] & m) ? 0 : 4));
            }
        }
    }
}

static void deq_q4_k(const kern_block_q4_k *b, float *y)
{
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int k = 0; k < 4; k++) {
        uint8_t sc0, m0, sc1, m1;
        kern_scale_min_k4(2 * k, b->scales, &sc0, &m0);
        kern_scale_min_k4(2 * k + 1, b->scales, &sc1, &m1);
        float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
        const uint8_t *q = b->qs + 32 * k;
        for (int l = 0; l < 32; l++) {
            y[64 * k + l] = d0 * (float)(q[l] & 0xF) - mm0;
            y[64 * k + 32 + l] = d1 * (float)(q[l] >> 4) - mm1;
        }
    }
}

static void deq_q5_k(const kern_block_q5_k *b, float *y)
{
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int k = 0; k < 4; k++) {
        uint8_t sc0, m0, sc1, m1;
        kern_scale_min_k4(2 * k, b->scales, &sc0, &m0);
        kern_scale_min_k4(2 * k + 1, b->scales, &sc1, &m1);
        float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
        const uint8_t *q = b->qs + 32 * k;
        for (int l = 0; l < 32; l++) {
            int h0 = (b->qh[l] >> (2 * k)) & 1, h1 = (b->qh[l] >> (2 * k + 1)) & 1;
            y[64 * k + l] = d0 * (float)((q[l] & 0xF) + 16 * h0) - mm0;
            y[64 * k + 32 + l] = d1 * (float)((q[l] >> 4) + 16 * h1) - mm1;
        }
    }
}

static void deq_q6_k(const kern_block_q6_k *b, float *y)
{
    float d = H2F(b->d);
    for (int n = 0; n < 2; n++) {
        const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
        const int8_t *sc = b->scales + 8 * n;
        float *yy = y + 128 * n;
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            yy[l] = d * (float)sc[is] * (float)q1;
            yy[l + 32] = d * (float)sc[is + 2] * (float)q2;
            yy[l + 64] = d * (float)sc[is + 4] * (float)q3;
            yy[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

static void deq_q8_k(const kern_block_q8_k *b, float *y)
{
    for (int j = 0; j < KERN_QK_K; j++) y[j] = b->d * (float)b->qs[j];
}

/* Dequantizes one block of `type` (block_size values). */
static void deq_block(enum gguf_tensor_type type, const void *blk, float *y)
{
    switch (type) {
    case GGUF_TYPE_F32: memcpy(y, blk, sizeof(float)); break;
    case GGUF_TYPE_F16: { uint16_t h; memcpy(&h, blk, 2); y[0] = kern_fp16_to_fp32(h); break; }
    case GGUF_TYPE_BF16: { uint16_t h; memcpy(&h, blk, 2); y[0] = kern_bf16_to_fp32(h); break; }
    case GGUF_TYPE_Q4_0: deq_q4_0(blk, y); break;
    case GGUF_TYPE_Q4_1: deq_q4_1(blk, y); break;
    case GGUF_TYPE_Q5_0: deq_q5_0(blk, y); break;
    case GGUF_TYPE_Q5_1: deq_q5_1(blk, y); break;
    case GGUF_TYPE_Q8_0: deq_q8_0(blk, y); break;
    case GGUF_TYPE_Q2_K: deq_q2_k(blk, y); break;
    case GGUF_TYPE_Q3_K: deq_q3_k(blk, y); break;
    case GGUF_TYPE_Q4_K: deq_q4_k(blk, y); break;
    case GGUF_TYPE_Q5_K: deq_q5_k(blk, y); break;
    case GGUF_TYPE_Q6_K: deq_q6_k(blk, y); break;
    case GGUF_TYPE_Q8_K: deq_q8_k(blk, y); break;
    default: memset(y, 0, gguf_type_block_size(type) * sizeof(float)); break;
    }
}

void kern_ref_dequantize_row(enum gguf_tensor_type type, const void *src, float *dst, int64_t n)
{
    size_t bs = gguf_type_block_size(type), bb = gguf_type_block_bytes(type);
    if (bs == 0 || n <= 0) return;
    if (type == GGUF_TYPE_F32) { memcpy(dst, src, (size_t)n * sizeof(float)); return; }
    const uint8_t *p = src;
    for (int64_t i = 0; i + (int64_t)bs <= n; i += (int64_t)bs, p += bb) deq_block(type, p, dst + i);
}

/* ------------------------------------------------------------------ reference dots */

/* The sums are taken in double: a scalar loop adds one product at a time, so in float its
 * rounding error would grow with n faster than that of the SIMD variants' many lanes (and
 * gemma's GELU table turns such differences into visible flips). */
#define DEF_DOT(name, type, bs)                                                  \
    static float dot_ref_##name(const void *row, const float *x, int64_t n)      \
    {                                                                            \
        const uint8_t *p = row;                                                  \
        size_t bb = gguf_type_block_bytes(type);                                 \
        double sum = 0.0;                                                        \
        float tmp[bs];                                                           \
        for (int64_t i = 0; i + (bs) <= n; i += (bs), p += bb) {                 \
            deq_block(type, p, tmp);                                             \
            for (int j = 0; j < (bs); j++) sum += (double)tmp[j] * x[i + j];     \
        }                                                                        \
        return (float)sum;                                                       \
    }

DEF_DOT(q4_0, GGUF_TYPE_Q4_0, 32)
DEF_DOT(q4_1, GGUF_TYPE_Q4_1, 32)
DEF_DOT(q5_0, GGUF_TYPE_Q5_0, 32)
DEF_DOT(q5_1, GGUF_TYPE_Q5_1, 32)
DEF_DOT(q8_0, GGUF_TYPE_Q8_0, 32)
DEF_DOT(q2_k, GGUF_TYPE_Q2_K, 256)
DEF_DOT(q3_k, GGUF_TYPE_Q3_K, 256)
DEF_DOT(q4_k, GGUF_TYPE_Q4_K, 256)
DEF_DOT(q5_k, GGUF_TYPE_Q5_K, 256)
DEF_DOT(q6_k, GGUF_TYPE_Q6_K, 256)
DEF_DOT(q8_k, GGUF_TYPE_Q8_K, 256)

static float dot_ref_f32(const void *row, const float *x, int64_t n)
{
    const float *w = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)w[i] * x[i];
    return (float)sum;
}

static float dot_ref_f16(const void *row, const float *x, int64_t n)
{
    const uint16_t *w = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)kern_fp16_to_fp32(w[i]) * x[i];
    return (float)sum;
}

static float dot_ref_bf16(const void *row, const float *x, int64_t n)
{
    const uint16_t *w = row;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)kern_bf16_to_fp32(w[i]) * x[i];
    return (float)sum;
}

void kern_ref_fill_ops(kern_isa_ops *ops)
{
    memset(ops, 0, sizeof(*ops));
    ops->dot[GGUF_TYPE_F32] = dot_ref_f32;
    ops->dot[GGUF_TYPE_F16] = dot_ref_f16;
    ops->dot[GGUF_TYPE_BF16] = dot_ref_bf16;
    ops->dot[GGUF_TYPE_Q4_0] = dot_ref_q4_0;
    ops->dot[GGUF_TYPE_Q4_1] = dot_ref_q4_1;
    ops->dot[GGUF_TYPE_Q5_0] = dot_ref_q5_0;
    ops->dot[GGUF_TYPE_Q5_1] = dot_ref_q5_1;
    ops->dot[GGUF_TYPE_Q8_0] = dot_ref_q8_0;
    ops->dot[GGUF_TYPE_Q2_K] = dot_ref_q2_k;
    ops->dot[GGUF_TYPE_Q3_K] = dot_ref_q3_k;
    ops->dot[GGUF_TYPE_Q4_K] = dot_ref_q4_k;
    ops->dot[GGUF_TYPE_Q5_K] = dot_ref_q5_k;
    ops->dot[GGUF_TYPE_Q6_K] = dot_ref_q6_k;
    ops->dot[GGUF_TYPE_Q8_K] = dot_ref_q8_k;
}

/* ------------------------------------------------------------------ legacy quantizers */

/* The value of largest magnitude, with its sign. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
    }
    return max;
}

static void q_q4_0(const float *x, kern_block_q4_0 *b)
{
    float max = signed_absmax(x, 32);
    float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = F2H(d);
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)(x[j] * id + 8.5f), 0, 15);
        int q1 = clampi((int)(x[j + 16] * id + 8.5f), 0, 15);
        b->qs[j] = (uint8_t)(q0 | q1 << 4);
    }
}

static void minmax(const float *x, int n, float *mn, float *mx)
{
    *mn = x[0];
    *mx = x[0];
    for (int j = 1; j < n; j++) {
        if (x[j] < *mn) *mn = x[j];
        if (x[j] > *mx) *mx = x[j];
    }
}

static void q_q4_1(const float *x, kern_block_q4_1 *b)
{
    float mn, mx;
    minmax(x, 32, &mn, &mx);
    float d = (mx - mn) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = F2H(d);
    b->m = F2H(mn);
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)((x[j] - mn) * id + 0.5f), 0, 15);
        int q1 = clampi((int)((x[j + 16] - mn) * id + 0.5f), 0, 15);
        b->qs[j] = (uint8_t)(q0 | q1 << 4);
    }
}

static void store_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void q_q5_0(const float *x, kern_block_q5_0 *b)
{
    float max = signed_absmax(x, 32);
    float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = F2H(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)(x[j] * id + 16.5f), 0, 31);
        int q1 = clampi((int)(x[j + 16] * id + 16.5f), 0, 31);
        b->qs[j] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
    }
    store_u32le(b->qh, qh);
}

static void q_q5_1(const float *x, kern_block_q5_1 *b)
{
    float mn, mx;
    minmax(x, 32, &mn, &mx);
    float d = (mx - mn) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = F2H(d);
    b->m = F2H(mn);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)((x[j] - mn) * id + 0.5f), 0, 31);
        int q1 = clampi((int)((x[j + 16] - mn) * id + 0.5f), 0, 31);
        b->qs[j] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
        qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
    }
    store_u32le(b->qh, qh);
}

static void q_q8_0(const float *x, kern_block_q8_0 *b)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = F2H(d);
    for (int j = 0; j < 32; j++) b->qs[j] = (int8_t)clampi((int)roundf(x[j] * id), -127, 127);
}

static void q_q8_k(const float *x, kern_block_q8_k *b)
{
    float max = signed_absmax(x, KERN_QK_K);
    if (max == 0.0f) {
        memset(b, 0, sizeof(*b));
        return;
    }
    float iscale = -128.0f / max;
    for (int j = 0; j < KERN_QK_K; j++) b->qs[j] = (int8_t)clampi(nearest_int(iscale * x[j]), -128, 127);
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += b->qs[16 * j + l];
        b->bsums[j] = (int16_t)s;
    }
    b->d = 1.0f / iscale;
}

/* ------------------------------------------------------------------ K-quant scale search */

/* Fits x[0..n) ~ scale * L - mmin with L in [0, nmax], scale >= 0, mmin >= 0, minimising the
 * squared error: tries a range of candidate scales, and for each the least-squares
 * (scale, min) given the rounded L. Writes the best L. */
static void fit_affine(const float *x, int n, int nmax, float *out_scale, float *out_min, uint8_t *L)
{
    float mn, mx;
    minmax(x, n, &mn, &mx);
    if (mn > 0.0f) mn = 0.0f;
    if (mx <= mn) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *out_scale = 0.0f;
        *out_min = -mn;
        return;
    }
    float best_err = INFINITY, best_scale = (mx - mn) / (float)nmax, best_min = -mn;
    uint8_t Lt[32];
    for (int is = -10; is <= 10; is++) {
        float iscale = ((float)nmax + 0.1f * (float)is) / (mx - mn);
        double sl = 0, sll = 0, sx = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
            Lt[i] = (uint8_t)l;
            sl += l;
            sll += (double)l * l;
            sx += x[i];
            sxl += (double)x[i] * l;
        }
        double det = n * sll - sl * sl;
        double scale, off;  /* x ~ scale * L + off */
        if (det > 0) {
            scale = (n * sxl - sl * sx) / det;
            off = (sll * sx - sl * sxl) / det;
        } else {
            continue;
        }
        if (off > 0) {  /* the min must be <= 0: refit with off = 0 */
            off = 0;
            scale = sll > 0 ? sxl / sll : 0;
        }
        if (scale < 0) continue;
        double err = 0;
        for (int i = 0; i < n; i++) {
            double e = scale * Lt[i] + off - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = (float)err;
            best_scale = (float)scale;
            best_min = (float)-off;
            memcpy(L, Lt, (size_t)n);
        }
    }
    if (best_err == INFINITY) {
        float id = (float)nmax / (mx - mn);
        for (int i = 0; i < n; i++) L[i] = (uint8_t)clampi(nearest_int(id * (x[i] - mn)), 0, nmax);
    }
    *out_scale = best_scale;
    *out_min = best_min;
}

/* Fits x[0..n) ~ scale * L with L in [-nneg, nneg - 1] (scale of either sign). */
static float fit_symmetric(const float *x, int n, int nneg)
{
    float max = signed_absmax(x, n);
    if (max == 0.0f) return 0.0f;
    float best_err = INFINITY, best_scale = 0.0f;
    for (int is = -9; is <= 9; is++) {
        float iscale = -((float)nneg + 0.1f * (float)is) / max;
        double sxl = 0, sll = 0;
        int Lt[32];
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * x[i]), -nneg, nneg - 1);
            Lt[i] = l;
            sxl += (double)x[i] * l;
            sll += (double)l * l;
        }
        if (sll <= 0) continue;
        double scale = sxl / sll, err = 0;
        for (int i = 0; i < n; i++) {
            double e = scale * Lt[i] - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = (float)err;
            best_scale = (float)scale;
        }
    }
    return best_scale;
}

/* Quantizes the sub-block scales/mins of an affine K-quant to `bits` bits under fp16 super
 * scales, then re-rounds every value against the final scales. n_sub sub-blocks of sub_n. */
static void affine_superblock(const float *x, int n_sub, int sub_n, int nmax, int scale_max,
                              uint16_t *d_out, uint16_t *dmin_out, uint8_t *ls, uint8_t *lm, uint8_t *L)
{
    float scales[16], mins[16], max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < n_sub; j++) {
        fit_affine(x + j * sub_n, sub_n, nmax, &scales[j], &mins[j], L + j * sub_n);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float d = max_scale / (float)scale_max, dmin = max_min / (float)scale_max;
    *d_out = F2H(d);
    *dmin_out = F2H(dmin);
    d = H2F(*d_out);
    dmin = H2F(*dmin_out);
    for (int j = 0; j < n_sub; j++) {
        ls[j] = (uint8_t)(d > 0 ? clampi(nearest_int(scales[j] / d), 0, scale_max) : 0);
        lm[j] = (uint8_t)(dmin > 0 ? clampi(nearest_int(mins[j] / dmin), 0, scale_max) : 0);
        float sc = d * ls[j], m = dmin * lm[j];
        for (int i = 0; i < sub_n; i++) {
            int idx = j * sub_n + i;
            L[idx] = (uint8_t)(sc > 0 ? clampi(nearest_int((x[idx] + m) / sc), 0, nmax) : 0);
        }
    }
}

/* Symmetric: sub-block scales as signed integers in [-smax, smax-1] times an fp16 d; the
 * values L in [-nneg, nneg-1] after re-rounding. Returns d's fp16 bits. */
static uint16_t symmetric_superblock(const float *x, int nneg, int smax, int8_t *ls, int *L)
{
    float scales[16], max = 0.0f, amax = 0.0f;
    for (int j = 0; j < 16; j++) {
        scales[j] = fit_symmetric(x + 16 * j, 16, nneg);
        if (fabsf(scales[j]) > amax) { amax = fabsf(scales[j]); max = scales[j]; }
    }
    uint16_t dh = 0;
    float d = 0.0f;
    if (max != 0.0f) {
        float iscale = -(float)smax / max;
        dh = F2H(1.0f / iscale);
        d = H2F(dh);
    }
    for (int j = 0; j < 16; j++) {
        ls[j] = (int8_t)(d != 0.0f ? clampi(nearest_int(scales[j] / d), -smax, smax - 1) : 0);
        float sc = d * ls[j];
        for (int i = 0; i < 16; i++) {
            int idx = 16 * j + i;
            L[idx] = sc != 0.0f ? clampi(nearest_int(x[idx] / sc), -nneg, nneg - 1) : 0;
        }
    }
    return dh;
}

static void pack_scales_k4(uint8_t *s, const uint8_t *ls, const uint8_t *lm)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= ls[j];
            s[j + 4] |= lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | (lm[j] & 0xF) << 4);
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static void q_q2_k(const float *x, kern_block_q2_k *b)
{
    uint8_t ls[16], lm[16], L[256];
    affine_superblock(x, 16, 16, 3, 15, &b->d, &b->dmin, ls, lm, L);
    for (int j = 0; j < 16; j++) b->scales[j] = (uint8_t)(ls[j] | lm[j] << 4);
    memset(b->qs, 0, sizeof(b->qs));
    for (int e = 0; e < KERN_QK_K; e++) {
        int n = e / 128, j = (e % 128) / 32, l = e % 32;
        b->qs[32 * n + l] |= (uint8_t)(L[e] << (2 * j));
    }
}

static void q_q3_k(const float *x, kern_block_q3_k *b)
{
    int8_t ls[16];
    int L[256];
    b->d = symmetric_superblock(x, 4, 32, ls, L);
    memset(b->scales, 0, sizeof(b->scales));
    for (int j = 0; j < 16; j++) {
        int v = ls[j] + 32;
        if (j < 8) b->scales[j] |= (uint8_t)(v & 0xF);
        else b->scales[j - 8] |= (uint8_t)((v & 0xF) << 4);
        b->scales[8 + j % 4] |= (uint8_t)((v >> 4) << (2 * (j / 4)));
    }
    memset(b->qs, 0, sizeof(b->qs));
    memset(b->hmask, 0, sizeof(b->hmask));
    for (int e = 0; e < KERN_QK_K; e++) {
        int n = e / 128, j = (e % 128) / 32, l = e % 32;
        int q = L[e] + 4;  /* 0..7 */
        b->qs[32 * n + l] |= (uint8_t)((q & 3) << (2 * j));
        if (q & 4) b->hmask[l] |= (uint8_t)(1u << (4 * n + j));
    }
}

static void q_q4_k(const float *x, kern_block_q4_k *b)
{
    uint8_t ls[8], lm[8], L[256];
    affine_superblock(x, 8, 32, 15, 63, &b->d, &b->dmin, ls, lm, L);
    pack_scales_k4(b->scales, ls, lm);
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 32; l++) b->qs[32 * k + l] = (uint8_t)(L[64 * k + l] | L[64 * k + 32 + l] << 4);
}

static void q_q5_k(const float *x, kern_block_q5_k *b)
{
    uint8_t ls[8], lm[8], L[256];
    affine_superblock(x, 8, 32, 31, 63, &b->d, &b->dmin, ls, lm, L);
    pack_scales_k4(b->scales, ls, lm);
    memset(b->qh, 0, sizeof(b->qh));
    for (int k = 0; k < 4; k++) {
        for (int l = 0; l < 32; l++) {
            int q0 = L[64 * k + l], q1 = L[64 * k + 32 + l];
            b->qs[32 * k + l] = (uint8_t)((q0 & 0xF) | (q1 & 0xF) << 4);
            b->qh[l] |= (uint8_t)((q0 >> 4) << (2 * k) | (q1 >> 4) << (2 * k + 1));
        }
    }
}

static void q_q6_k(const float *x, kern_block_q6_k *b)
{
    int L[256];
    b->d = symmetric_superblock(x, 32, 128, b->scales, L);
    for (int n = 0; n < 2; n++) {
        const int *q = L + 128 * n;
        for (int l = 0; l < 32; l++) {
            int q1 = q[l] + 32, q2 = q[l + 32] + 32, q3 = q[l + 64] + 32, q4 = q[l + 96] + 32;
            b->ql[64 * n + l] = (uint8_t)((q1 & 0xF) | (q3 & 0xF) << 4);
            b->ql[64 * n + l + 32] = (uint8_t)((q2 & 0xF) | (q4 & 0xF) << 4);
            b->qh[32 * n + l] = (uint8_t)((q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6);
        }
    }
}

void kern_ref_quantize_row(enum gguf_tensor_type type, const float *src, void *dst, int64_t n)
{
    size_t bs = gguf_type_block_size(type), bb = gguf_type_block_bytes(type);
    if (bs == 0 || n <= 0) return;
    uint8_t *p = dst;
    if (type == GGUF_TYPE_F32) { memcpy(dst, src, (size_t)n * sizeof(float)); return; }
    for (int64_t i = 0; i + (int64_t)bs <= n; i += (int64_t)bs, p += bb) {
        const float *x = src + i;
        switch (type) {
        case GGUF_TYPE_F16: { uint16_t h = kern_fp32_to_fp16(x[0]); memcpy(p, &h, 2); break; }
        case GGUF_TYPE_BF16: { uint16_t h = kern_fp32_to_bf16(x[0]); memcpy(p, &h, 2); break; }
        case GGUF_TYPE_Q4_0: q_q4_0(x, (kern_block_q4_0 *)p); break;
        case GGUF_TYPE_Q4_1: q_q4_1(x, (kern_block_q4_1 *)p); break;
        case GGUF_TYPE_Q5_0: q_q5_0(x, (kern_block_q5_0 *)p); break;
        case GGUF_TYPE_Q5_1: q_q5_1(x, (kern_block_q5_1 *)p); break;
        case GGUF_TYPE_Q8_0: q_q8_0(x, (kern_block_q8_0 *)p); break;
        case GGUF_TYPE_Q2_K: q_q2_k(x, (kern_block_q2_k *)p); break;
        case GGUF_TYPE_Q3_K: q_q3_k(x, (kern_block_q3_k *)p); break;
        case GGUF_TYPE_Q4_K: q_q4_k(x, (kern_block_q4_k *)p); break;
        case GGUF_TYPE_Q5_K: q_q5_k(x, (kern_block_q5_k *)p); break;
        case GGUF_TYPE_Q6_K: q_q6_k(x, (kern_block_q6_k *)p); break;
        case GGUF_TYPE_Q8_K: q_q8_k(x, (kern_block_q8_k *)p); break;
        default: memset(p, 0, bb); break;
        }
    }
}
