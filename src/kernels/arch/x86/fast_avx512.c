/*
 * fast_avx512.c: the fast path on AVX-512 with VNNI (see kern_internal.h for the math):
 * activation quantization; the micro-kernels over repacked weights (packed.c), up to 6
 * tokens x 16 rows with vpdpbusd for the integer types and 8 tokens x 32 rows of FMAs for
 * F32/F16/BF16, which serve decode (1 token, with software prefetch) and prefill alike; row
 * dots and panel GEMMs for weights that are not repacked; exp, softmax and SiLU; and the
 * attention products. Integer results are exact, so they equal the reference's; only the
 * float additions are ordered differently. Compiled with the AVX-512 flags of the Makefile
 * and selected only when CPUID reports all of them.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kern_internal.h"
#include "kernels/arch/x86/hsum.h"

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }
static inline float load_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* ------------------------------------------------------------------ activations */

static void act_quant(const kern_qgeom *g, const float *x, void *dst, int64_t n)
{
    uint8_t *out = dst;
    const int n_sub = g->sbk / g->bk, n_vec = g->sbk / 16;
    const __m512i lo = _mm512_set1_epi32(-127);
    for (int64_t i = 0; i + g->sbk <= n; i += g->sbk, x += g->sbk, out += kern_act_sb_bytes(g)) {
        __m512 m = _mm512_setzero_ps();
        for (int v = 0; v < n_vec; v++) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * v)));
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        int8_t *q = (int8_t *)(out + kern_act_q_offset(g));
        float s[16];
        int per_sub = g->bk / 16;
        for (int j = 0; j < n_sub; j++) {
            __m512i sum = _mm512_setzero_si512();
            for (int v = j * per_sub; v < (j + 1) * per_sub; v++) {
                __m512i iv = _mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * v), vid)), lo);
                _mm_storeu_si128((__m128i *)(q + 16 * v), _mm512_cvtsepi32_epi8(iv));
                sum = _mm512_add_epi32(sum, iv);
            }
            s[j] = (float)_mm512_reduce_add_epi32(sum);
        }
        memcpy(out, &d, 4);
        memcpy(out + 4, s, 4 * (size_t)n_sub);
    }
}

/* ------------------------------------------------------------------ legacy types (32-blocks) */

/* u (32 unsigned values in a ymm) of one block, per type */
static inline __m256i u_q4(const uint8_t *qs)
{
    __m128i v = _mm_loadu_si128((const __m128i *)qs), m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

static inline __m256i u_q5(const uint8_t *qs, const uint8_t *qh4)
{
    uint32_t qh;
    memcpy(&qh, qh4, 4);
    __m256i hi = _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(0x10));
    return _mm256_or_si256(u_q4(qs), hi);
}

/* sum over blocks of dx * (ws * I + mw * S), with mw = off * ws (off_mode) or the block's m */
#define LEGACY_QDOT(name, BLOCK, U_EXPR, WS_EXPR, MW_IS_OFFSET, OFF, MW_EXPR)                  \
    static float qdot_##name(const void *row, const void *xa, int64_t n)                      \
    {                                                                                          \
        const BLOCK *b = row;                                                                  \
        const uint8_t *a = xa;                                                                 \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                         \
        float m0 = 0.0f, m1 = 0.0f;                                                            \
        int64_t nb = n / 32, i = 0;                                                            \
        for (; i + 2 <= nb; i += 2, b += 2, a += 80) {                                         \
            const BLOCK *b0 = b, *b1 = b + 1;                                                  \
            __m256i i0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), U_EXPR(b0),               \
                                             _mm256_loadu_si256((const __m256i *)(a + 8)));     \
            __m256i i1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), U_EXPR(b1),               \
                                             _mm256_loadu_si256((const __m256i *)(a + 48)));    \
            float s0 = load_f32(a) * WS_EXPR(b0), s1 = load_f32(a + 40) * WS_EXPR(b1);         \
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_set1_ps(s0), acc0);          \
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_set1_ps(s1), acc1);          \
            if (MW_IS_OFFSET) {                                                                \
                m0 += s0 * load_f32(a + 4);                                                    \
                m1 += s1 * load_f32(a + 44);                                                   \
            } else {                                                                           \
                m0 += load_f32(a) * MW_EXPR(b0) * load_f32(a + 4);                             \
                m1 += load_f32(a + 40) * MW_EXPR(b1) * load_f32(a + 44);                       \
            }                                                                                  \
        }                                                                                      \
        for (; i < nb; i++, b++, a += 40) {                                                    \
            __m256i i0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), U_EXPR(b),                \
                                             _mm256_loadu_si256((const __m256i *)(a + 8)));     \
            float s0 = load_f32(a) * WS_EXPR(b);                                               \
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_set1_ps(s0), acc0);          \
            if (MW_IS_OFFSET) m0 += s0 * load_f32(a + 4);                                      \
            else m0 += load_f32(a) * MW_EXPR(b) * load_f32(a + 4);                             \
        }                                                                                      \
        float mins = m0 + m1;                                                                  \
        return kern_hsum8(_mm256_add_ps(acc0, acc1)) + (MW_IS_OFFSET ? (OFF) * mins : mins);      \
    }

#define U_Q8_0(b) _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(b)->qs), _mm256_set1_epi8((char)0x80))
#define U_Q4(b) u_q4((b)->qs)
#define U_Q5(b) u_q5((b)->qs, (b)->qh)
#define WS_D(b) h2f((b)->d)
#define MW_M(b) h2f((b)->m)

LEGACY_QDOT(q8_0, kern_block_q8_0, U_Q8_0, WS_D, 1, -128.0f, WS_D)
LEGACY_QDOT(q4_0, kern_block_q4_0, U_Q4, WS_D, 1, -8.0f, WS_D)
LEGACY_QDOT(q4_1, kern_block_q4_1, U_Q4, WS_D, 0, 0.0f, MW_M)
LEGACY_QDOT(q5_0, kern_block_q5_0, U_Q5, WS_D, 1, -16.0f, WS_D)
LEGACY_QDOT(q5_1, kern_block_q5_1, U_Q5, WS_D, 0, 0.0f, MW_M)

/* ------------------------------------------------------------------ K-quants (256-blocks) */

/* Eight int32 vectors to their eight lane sums, in order. */
static inline __m256i reduce8(const __m256i v[8])
{
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* Four int32 vectors, each holding two 16-value sub-blocks (lanes 0-3 and 4-7), to the
 * eight sub-block sums in order. */
static inline __m256i reduce4x2(const __m256i v[4])
{
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm256_permutevar8x32_epi32(a, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* One super-block: u[8] (values 32m .. 32m+31), scales ws/mw of its sub-blocks. */
static inline void unpack_q4_k(const kern_block_q4_k *b, __m256i u[8], float *ws, float *mw)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
        u[2 * k] = _mm256_and_si256(v, m4);
        u[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    kern_k4_sub_scales(b->scales, h2f(b->d), h2f(b->dmin), ws, mw);
}

static inline void unpack_q5_k(const kern_block_q5_k *b, __m256i u[8], float *ws, float *mw)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), h = _mm256_set1_epi8(0x10);
    __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
        __mmask32 b0 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * k))));
        __mmask32 b1 = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << (2 * k + 1))));
        __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        u[2 * k] = _mm256_mask_add_epi8(lo, b0, lo, h);
        u[2 * k + 1] = _mm256_mask_add_epi8(hi, b1, hi, h);
    }
    kern_k4_sub_scales(b->scales, h2f(b->d), h2f(b->dmin), ws, mw);
}

static inline void unpack_q6_k(const kern_block_q6_k *b, __m256i u[8], float *ws, float *mw)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(0x30);
    for (int n = 0; n < 2; n++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * n + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * n));
        u[4 * n + 0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m3));
        u[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m3));
        u[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m3));
        u[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), m3));
    }
    float d = h2f(b->d);
    for (int s = 0; s < 16; s++) {
        ws[s] = d * (float)b->scales[s];
        mw[s] = -32.0f * ws[s];
    }
}

static inline void unpack_q2_k(const kern_block_q2_k *b, __m256i u[8], float *ws, float *mw)
{
    const __m256i m2 = _mm256_set1_epi8(3);
    for (int n = 0; n < 2; n++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * n));
        for (int j = 0; j < 4; j++) u[4 * n + j] = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), m2);
    }
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int s = 0; s < 16; s++) {
        ws[s] = d * (float)(b->scales[s] & 0xF);
        mw[s] = -dmin * (float)(b->scales[s] >> 4);
    }
}

static inline int q3_k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

static inline void unpack_q3_k(const kern_block_q3_k *b, __m256i u[8], float *ws, float *mw)
{
    const __m256i m2 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);
    for (int n = 0; n < 2; n++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * n));
        for (int j = 0; j < 4; j++) {
            __mmask32 h = _mm256_test_epi8_mask(hm, _mm256_set1_epi8((char)(1 << (4 * n + j))));
            __m256i lo = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), m2);
            u[4 * n + j] = _mm256_mask_add_epi8(lo, h, lo, four);
        }
    }
    float d = h2f(b->d);
    for (int s = 0; s < 16; s++) {
        ws[s] = d * (float)q3_k_scale(b->scales, s);
        mw[s] = -4.0f * ws[s];
    }
}

/* The super-block loop shared by the K types: I per sub-block from vpdpbusd, then
 * tmp = cvt(I) * ws + mw * S per sub-block, acc += dx * tmp. */
#define KQUANT_QDOT(name, BLOCK, UNPACK, N_SUB)                                                 \
    static float qdot_##name(const void *row, const void *xa, int64_t n)                       \
    {                                                                                           \
        const BLOCK *b = row;                                                                   \
        const uint8_t *a = xa;                                                                  \
        const size_t sb_bytes = 4 + 4 * (N_SUB) + 256;                                          \
        __m256 acc = _mm256_setzero_ps();                                                       \
        for (int64_t i = 0; i < n / 256; i++, b++, a += sb_bytes) {                             \
            __m256i u[8], dots[8];                                                              \
            float ws[16], mw[16];                                                               \
            UNPACK(b, u, ws, mw);                                                               \
            const uint8_t *q = a + 4 + 4 * (N_SUB);                                             \
            for (int m = 0; m < 8; m++)                                                         \
                dots[m] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), u[m],                     \
                                              _mm256_loadu_si256((const __m256i *)(q + 32 * m))); \
            const float *s = (const float *)(a + 4);                                            \
            __m256 t;                                                                           \
            if ((N_SUB) == 8) {                                                                 \
                __m256 I = _mm256_cvtepi32_ps(reduce8(dots));                                   \
                t = _mm256_fmadd_ps(_mm256_loadu_ps(mw), _mm256_loadu_ps(s), _mm256_mul_ps(I, _mm256_loadu_ps(ws))); \
            } else {                                                                            \
                __m256 I0 = _mm256_cvtepi32_ps(reduce4x2(dots));                                \
                __m256 I1 = _mm256_cvtepi32_ps(reduce4x2(dots + 4));                            \
                t = _mm256_fmadd_ps(_mm256_loadu_ps(mw), _mm256_loadu_ps(s), _mm256_mul_ps(I0, _mm256_loadu_ps(ws))); \
                t = _mm256_fmadd_ps(_mm256_loadu_ps(mw + 8), _mm256_loadu_ps(s + 8), t);        \
                t = _mm256_fmadd_ps(I1, _mm256_loadu_ps(ws + 8), t);                            \
            }                                                                                   \
            acc = _mm256_fmadd_ps(t, _mm256_set1_ps(load_f32(a)), acc);                         \
        }                                                                                       \
        return kern_hsum8(acc);                                                                    \
    }

KQUANT_QDOT(q4_k, kern_block_q4_k, unpack_q4_k, 8)
KQUANT_QDOT(q5_k, kern_block_q5_k, unpack_q5_k, 8)
KQUANT_QDOT(q6_k, kern_block_q6_k, unpack_q6_k, 16)
KQUANT_QDOT(q2_k, kern_block_q2_k, unpack_q2_k, 16)
KQUANT_QDOT(q3_k, kern_block_q3_k, unpack_q3_k, 16)

/* ------------------------------------------------------------------ GEMM micro-kernels */

/* MR tokens x 32 rows over the whole panel. MR is a constant at every call site. */
static inline __attribute__((always_inline)) void gemm_q_tile(const kern_qgeom *g, const uint8_t *panel, int64_t n_in,
                                                              const uint8_t *xa, size_t xa_stride, float *y, int64_t y_stride,
                                                              int n_rows, const int MR)
{
    const int n_sub = g->sbk / g->bk, bk = g->bk;
    const size_t sub_bytes = kern_panel_sub_bytes(g), sb_bytes = kern_act_sb_bytes(g), q_off = kern_act_q_offset(g);
    __m512 acc[8][2];
    #pragma GCC unroll 8
    for (int t = 0; t < MR; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    const uint8_t *p = panel;
    for (int64_t sb = 0; sb < n_in / g->sbk; sb++) {
        const uint8_t *a[8];
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) a[t] = xa + (size_t)t * xa_stride + (size_t)sb * sb_bytes;
        __m512 tmp[8][2];
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) tmp[t][0] = tmp[t][1] = _mm512_setzero_ps();
        for (int j = 0; j < n_sub; j++, p += sub_bytes) {
            __m512i I[8][2];
            #pragma GCC unroll 8
            for (int t = 0; t < MR; t++) I[t][0] = I[t][1] = _mm512_setzero_si512();
            for (int g4 = 0; g4 < bk / 4; g4++) {
                __m512i w0 = _mm512_loadu_si512(p + 128 * g4), w1 = _mm512_loadu_si512(p + 128 * g4 + 64);
                #pragma GCC unroll 8
                for (int t = 0; t < MR; t++) {
                    int32_t xv;
                    memcpy(&xv, a[t] + q_off + (size_t)(j * bk + 4 * g4), 4);
                    __m512i xb = _mm512_set1_epi32(xv);
                    I[t][0] = _mm512_dpbusd_epi32(I[t][0], w0, xb);
                    I[t][1] = _mm512_dpbusd_epi32(I[t][1], w1, xb);
                }
            }
            const float *ws = (const float *)(p + (size_t)bk * KERN_PANEL_ROWS), *mw = ws + KERN_PANEL_ROWS;
            __m512 ws0 = _mm512_loadu_ps(ws), ws1 = _mm512_loadu_ps(ws + 16);
            __m512 mw0 = _mm512_loadu_ps(mw), mw1 = _mm512_loadu_ps(mw + 16);
            #pragma GCC unroll 8
            for (int t = 0; t < MR; t++) {
                __m512 s = _mm512_set1_ps(load_f32(a[t] + 4 + 4 * (size_t)j));
                tmp[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I[t][0]), ws0, tmp[t][0]);
                tmp[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(I[t][1]), ws1, tmp[t][1]);
                tmp[t][0] = _mm512_fmadd_ps(mw0, s, tmp[t][0]);
                tmp[t][1] = _mm512_fmadd_ps(mw1, s, tmp[t][1]);
            }
        }
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) {
            __m512 d = _mm512_set1_ps(load_f32(a[t]));
            acc[t][0] = _mm512_fmadd_ps(tmp[t][0], d, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(tmp[t][1], d, acc[t][1]);
        }
    }
    __mmask16 k0 = n_rows >= 16 ? 0xFFFF : (__mmask16)((1u << n_rows) - 1);
    __mmask16 k1 = n_rows >= 32 ? 0xFFFF : n_rows <= 16 ? 0 : (__mmask16)((1u << (n_rows - 16)) - 1);
    #pragma GCC unroll 8
    for (int t = 0; t < MR; t++) {
        _mm512_mask_storeu_ps(y + t * y_stride, k0, acc[t][0]);
        _mm512_mask_storeu_ps(y + t * y_stride + 16, k1, acc[t][1]);
    }
}

static void gemm_q(const kern_qgeom *g, const uint8_t *panel, int64_t n_in, const uint8_t *xa, size_t xa_stride,
                   int64_t n_tok, float *y, int64_t y_stride, int n_rows)
{
    int64_t t = 0;
#define Q_TILE(MR) gemm_q_tile(g, panel, n_in, xa + t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, MR)
    KERN_TOKEN_TILES(t, n_tok, 4, Q_TILE);
#undef Q_TILE
}

/* ------------------------------------------------------------------ packed weights */

/* The 16 rows x 4 values of k-group c of a group-super-block o (packed.c's layout), as
 * unsigned bytes. T and, after unrolling, c are constants: the switches fold away. */
static inline __attribute__((always_inline)) __m512i pk_w(const enum gguf_tensor_type T, const uint8_t *o, const int c)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    switch (T) {
    case GGUF_TYPE_Q8_0: return _mm512_loadu_si512(o + 32 + 64 * c);
    case GGUF_TYPE_Q4_0:
    case GGUF_TYPE_Q4_1:
    case GGUF_TYPE_Q5_0:
    case GGUF_TYPE_Q5_1: {
        const uint8_t *nib = o + (T == GGUF_TYPE_Q4_1 || T == GGUF_TYPE_Q5_1 ? 64 : 32);
        __m512i v = _mm512_loadu_si512(nib + 64 * (c & 3));
        __m512i w = c < 4 ? _mm512_and_si512(v, m4) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if (T == GGUF_TYPE_Q4_0 || T == GGUF_TYPE_Q4_1) return w;
        __m512i h = _mm512_loadu_si512(nib + 256);
        h = c <= 4 ? _mm512_slli_epi16(h, 4 - c) : _mm512_srli_epi16(h, c - 4);
        return _mm512_ternarylogic_epi32(w, h, _mm512_set1_epi8(0x10), 0xF8); /* w | (h & 0x10) */
    }
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        const int kk = c / 16, e = c % 16;
        __m512i v = _mm512_loadu_si512(o + 320 + 64 * (8 * kk + e % 8));
        __m512i w = e < 8 ? _mm512_and_si512(v, m4) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        if (T == GGUF_TYPE_Q4_K) return w;
        const int b = c % 8;
        __m512i h = _mm512_loadu_si512(o + 2368 + 64 * (c / 8));
        h = b <= 4 ? _mm512_slli_epi16(h, 4 - b) : _mm512_srli_epi16(h, b - 4);
        return _mm512_ternarylogic_epi32(w, h, _mm512_set1_epi8(0x10), 0xF8);
    }
    case GGUF_TYPE_Q6_K: {
        __m512i v = _mm512_loadu_si512(o + 288 + 64 * (c & 31));
        __m512i w = c < 32 ? _mm512_and_si512(v, m4) : _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        const int e2 = 2 * (c >> 4);
        __m512i h = _mm512_loadu_si512(o + 2336 + 64 * (c & 15));
        h = e2 <= 4 ? _mm512_slli_epi16(h, 4 - e2) : _mm512_srli_epi16(h, e2 - 4);
        return _mm512_ternarylogic_epi32(w, h, _mm512_set1_epi8(0x30), 0xF8);
    }
    case GGUF_TYPE_Q2_K:
    case GGUF_TYPE_Q3_K: {
        __m512i v = _mm512_loadu_si512(o + (T == GGUF_TYPE_Q2_K ? 320 : 288) + 64 * (c & 15));
        __m512i w = _mm512_and_si512(_mm512_srli_epi16(v, 2 * (c >> 4)), _mm512_set1_epi8(3));
        if (T == GGUF_TYPE_Q2_K) return w;
        const int b = c % 8;
        __m512i h = _mm512_loadu_si512(o + 1312 + 64 * (c / 8));
        h = b <= 2 ? _mm512_slli_epi16(h, 2 - b) : _mm512_srli_epi16(h, b - 2);
        return _mm512_ternarylogic_epi32(w, h, _mm512_set1_epi8(0x04), 0xF8);
    }
    default: return _mm512_setzero_si512();
    }
}

/* ws and mw of the 16 rows for sub-block j of o */
static inline __attribute__((always_inline)) void pk_scales(const enum gguf_tensor_type T, const uint8_t *o, const int j,
                                                            __m512 *ws, __m512 *mw)
{
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)o));
    switch (T) {
    case GGUF_TYPE_Q8_0: *ws = d, *mw = _mm512_mul_ps(d, _mm512_set1_ps(-128.0f)); break;
    case GGUF_TYPE_Q4_0: *ws = d, *mw = _mm512_mul_ps(d, _mm512_set1_ps(-8.0f)); break;
    case GGUF_TYPE_Q5_0: *ws = d, *mw = _mm512_mul_ps(d, _mm512_set1_ps(-16.0f)); break;
    case GGUF_TYPE_Q4_1:
    case GGUF_TYPE_Q5_1: *ws = d, *mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 32))); break;
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(o + 64 + 16 * j))));
        __m512 mn = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(o + 192 + 16 * j))));
        __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 32)));
        *ws = _mm512_mul_ps(d, sc);
        *mw = _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), dmin), mn);
        break;
    }
    case GGUF_TYPE_Q6_K:
    case GGUF_TYPE_Q3_K: {
        __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(o + 32 + 16 * j))));
        *ws = _mm512_mul_ps(d, sc);
        *mw = _mm512_mul_ps(*ws, _mm512_set1_ps(T == GGUF_TYPE_Q6_K ? -32.0f : -4.0f));
        break;
    }
    case GGUF_TYPE_Q2_K: {
        __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(o + 64 + 16 * j)));
        __m512 sc = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(0xF)));
        __m512 mn = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
        __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(o + 32)));
        *ws = _mm512_mul_ps(d, sc);
        *mw = _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), dmin), mn);
        break;
    }
    default: *ws = *mw = _mm512_setzero_ps(); break;
    }
}

static inline int pk_sbk(const enum gguf_tensor_type T) { return T == GGUF_TYPE_Q4_K || T == GGUF_TYPE_Q5_K || T == GGUF_TYPE_Q6_K || T == GGUF_TYPE_Q2_K || T == GGUF_TYPE_Q3_K ? 256 : 32; }
static inline int pk_bk(const enum gguf_tensor_type T) { return T == GGUF_TYPE_Q6_K || T == GGUF_TYPE_Q2_K || T == GGUF_TYPE_Q3_K ? 16 : 32; }

/* Bytes ahead of the current weights that decode prefetches (about 1.5 us at 20 GB/s). */
#define PK_PREFETCH 2048

/* MR tokens x the 16 rows of one group, over the whole row. vpdpbusd's latency is long
 * (about 8 cycles for 2 per cycle), so each token's integer sums run in two chains (even
 * and odd k-groups), and the sub-blocks' epilogues overlap the next sums. */
static inline __attribute__((always_inline)) void pk_tile(const enum gguf_tensor_type T, const uint8_t *gbase, size_t gsb_bytes,
                                                          int64_t n_sb, const uint8_t *xa, size_t xa_stride, float *y,
                                                          int64_t y_stride, __mmask16 rmask, bool stream, const int MR)
{
    const int sbk = pk_sbk(T), bk = pk_bk(T), n_sub = sbk / bk, per_sub = bk / 4;
    const size_t a_sb = 4 + 4 * (size_t)n_sub + (size_t)sbk, q_off = 4 + 4 * (size_t)n_sub;
    __m512 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) acc[t] = _mm512_setzero_ps();
    for (int64_t sb = 0; sb < n_sb; sb++) {
        const uint8_t *o = gbase + (size_t)sb * gsb_bytes;
        const uint8_t *a = xa + (size_t)sb * a_sb;
        /* decode (one token, or the few rows of a batched decode step) streams the weights
         * once: fetch ahead of the hardware prefetcher */
        if (stream)
            for (size_t l = 0; l < gsb_bytes; l += 64) _mm_prefetch((const char *)(o + PK_PREFETCH + l), _MM_HINT_T0);
        __m512 tmp[8];
#pragma GCC unroll 8
        for (int t = 0; t < MR; t++) tmp[t] = _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int j = 0; j < n_sub; j++) {
            __m512i I[8], I2[8];
            I[1] = I2[1] = _mm512_setzero_si512(); /* the MR = 1 path's extra chains */
#pragma GCC unroll 8
            for (int t = 0; t < MR; t++) I[t] = I2[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int cc = 0; cc < per_sub; cc++) {
                const int c = j * per_sub + cc;
                __m512i w = pk_w(T, o, c);
#pragma GCC unroll 8
                for (int t = 0; t < MR; t++) {
                    int32_t xv;
                    memcpy(&xv, a + (size_t)t * xa_stride + q_off + 4 * (size_t)c, 4);
                    if (MR == 1 && cc % 4 == 2) I[1] = _mm512_dpbusd_epi32(I[1], w, _mm512_set1_epi32(xv));
                    else if (MR == 1 && cc % 4 == 3) I2[1] = _mm512_dpbusd_epi32(I2[1], w, _mm512_set1_epi32(xv));
                    else if (cc & 1) I2[t] = _mm512_dpbusd_epi32(I2[t], w, _mm512_set1_epi32(xv));
                    else I[t] = _mm512_dpbusd_epi32(I[t], w, _mm512_set1_epi32(xv));
                }
            }
            __m512 ws, mw;
            pk_scales(T, o, j, &ws, &mw);
#pragma GCC unroll 8
            for (int t = 0; t < MR; t++) {
                float S;
                memcpy(&S, a + (size_t)t * xa_stride + 4 + 4 * (size_t)j, 4);
                __m512i sum = _mm512_add_epi32(I[t], I2[t]);
                if (MR == 1) sum = _mm512_add_epi32(sum, _mm512_add_epi32(I[1], I2[1]));
                __m512 f = _mm512_cvtepi32_ps(sum);
                tmp[t] = _mm512_fmadd_ps(f, ws, tmp[t]);
                tmp[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(S), tmp[t]);
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < MR; t++) acc[t] = _mm512_fmadd_ps(tmp[t], _mm512_set1_ps(load_f32(a + (size_t)t * xa_stride)), acc[t]);
    }
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) _mm512_mask_storeu_ps(y + t * y_stride, rmask, acc[t]);
}

static inline __attribute__((always_inline)) void pk_gemm(const enum gguf_tensor_type T, const kern_packed *p, int64_t group,
                                                          const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                                                          int64_t y_stride, int n_rows)
{
    const uint8_t *g = p->data + (size_t)(group * p->n_sb) * p->gsb_bytes;
    __mmask16 rm = n_rows >= 16 ? 0xFFFF : (__mmask16)((1u << n_rows) - 1);
    int64_t t = 0;
    const bool stream = n_tok <= 8; /* one or two tiles: each weight is read once */
#define PK(MR) pk_tile(T, g, p->gsb_bytes, p->n_sb, xa + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, rm, stream, MR)
    KERN_TOKEN_TILES(t, n_tok, 6, PK);
#undef PK
}

/* Float weights packed value-major in groups of 32 rows (packed.c): MR tokens x 32 rows,
 * one broadcast activation and two vector multiply-adds per value and token. */
static inline __attribute__((always_inline)) __m512 pf_load(const enum gguf_tensor_type T, const uint8_t *e, const int half)
{
    if (T == GGUF_TYPE_F32) return _mm512_loadu_ps(e + 64 * half);
    __m256i h = _mm256_loadu_si256((const __m256i *)(e + 32 * half));
    if (T == GGUF_TYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void pf_tile(const enum gguf_tensor_type T, const uint8_t *g, size_t gsb_bytes,
                                                          int64_t n_in, const uint8_t *xa, size_t xa_stride, float *y,
                                                          int64_t y_stride, int n_rows, bool accumulate, const int MR)
{
    __m512 acc[8][2];
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    int64_t k = 0;
    if (MR == 1) { /* decode: four chains, so that the multiply-adds' latency overlaps */
        __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
        const float *x = (const float *)xa;
        for (; k + 2 <= n_in; k += 2) {
            const uint8_t *e = g + (size_t)k * gsb_bytes;
            _mm_prefetch((const char *)(e + PK_PREFETCH), _MM_HINT_T0);
            if (T == GGUF_TYPE_F32) _mm_prefetch((const char *)(e + PK_PREFETCH + 64), _MM_HINT_T0);
            __m512 x0 = _mm512_set1_ps(x[k]), x1 = _mm512_set1_ps(x[k + 1]);
            acc[0][0] = _mm512_fmadd_ps(pf_load(T, e, 0), x0, acc[0][0]);
            acc[0][1] = _mm512_fmadd_ps(pf_load(T, e, 1), x0, acc[0][1]);
            b0 = _mm512_fmadd_ps(pf_load(T, e + gsb_bytes, 0), x1, b0);
            b1 = _mm512_fmadd_ps(pf_load(T, e + gsb_bytes, 1), x1, b1);
        }
        acc[0][0] = _mm512_add_ps(acc[0][0], b0);
        acc[0][1] = _mm512_add_ps(acc[0][1], b1);
    }
    for (; k < n_in; k++) {
        const uint8_t *e = g + (size_t)k * gsb_bytes;
        __m512 w0 = pf_load(T, e, 0), w1 = pf_load(T, e, 1);
#pragma GCC unroll 8
        for (int t = 0; t < MR; t++) {
            __m512 xb = _mm512_set1_ps(((const float *)(xa + (size_t)t * xa_stride))[k]);
            acc[t][0] = _mm512_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, xb, acc[t][1]);
        }
    }
    __mmask16 k0 = n_rows >= 16 ? 0xFFFF : (__mmask16)((1u << n_rows) - 1);
    __mmask16 k1 = n_rows >= 32 ? 0xFFFF : n_rows <= 16 ? 0 : (__mmask16)((1u << (n_rows - 16)) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) {
        if (accumulate) {
            acc[t][0] = _mm512_add_ps(acc[t][0], _mm512_maskz_loadu_ps(k0, y + t * y_stride));
            acc[t][1] = _mm512_add_ps(acc[t][1], _mm512_maskz_loadu_ps(k1, y + t * y_stride + 16));
        }
        _mm512_mask_storeu_ps(y + t * y_stride, k0, acc[t][0]);
        _mm512_mask_storeu_ps(y + t * y_stride + 16, k1, acc[t][1]);
    }
}

/* Values per chunk: 32 KB of weights stay in L1 while every token passes over them. */
#define PF_CHUNK_BYTES 32768

/* Panels of unrepacked float weights (kern_panel_pack_f) have the packed F32 layout. */
static void gemm_f(const float *panel, int64_t n_in, const float *x, int64_t x_stride, int64_t n_tok, float *y,
                   int64_t y_stride, int n_rows, bool accumulate)
{
    const uint8_t *xa = (const uint8_t *)x, *g = (const uint8_t *)panel;
    size_t xa_stride = (size_t)x_stride * sizeof(float);
    int64_t t = 0;
#define F_TILE(MR) pf_tile(GGUF_TYPE_F32, g, 4 * KERN_PANEL_ROWS, n_in, xa + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, accumulate, MR)
    KERN_TOKEN_TILES(t, n_tok, 8, F_TILE);
#undef F_TILE
}

static inline __attribute__((always_inline)) void pf_gemm(const enum gguf_tensor_type T, const kern_packed *p, int64_t group,
                                                          const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                                                          int64_t y_stride, int n_rows)
{
    /* A batch converts each chunk of half floats to F32 once, so that its inner loop is
     * multiply-adds only; a single token converts in registers. */
    const bool widen = T != GGUF_TYPE_F32 && n_tok >= 8;
    _Alignas(64) float wide[PF_CHUNK_BYTES / 4];
    int64_t chunk = n_tok == 1 ? p->n_in : (int64_t)(PF_CHUNK_BYTES / 128);
    for (int64_t k0 = 0; k0 < p->n_in; k0 += chunk) {
        int64_t n_k = p->n_in - k0 < chunk ? p->n_in - k0 : chunk;
        const uint8_t *g = p->data + (size_t)(group * p->n_sb + k0) * p->gsb_bytes;
        const uint8_t *xk = xa + (size_t)k0 * sizeof(float);
        bool acc = k0 > 0;
        int64_t t = 0;
        if (widen) {
            for (int64_t k = 0; k < n_k; k++) {
                _mm512_store_ps(wide + 32 * k, pf_load(T, g + (size_t)k * p->gsb_bytes, 0));
                _mm512_store_ps(wide + 32 * k + 16, pf_load(T, g + (size_t)k * p->gsb_bytes, 1));
            }
#define PF(MR) pf_tile(GGUF_TYPE_F32, (const uint8_t *)wide, 128, n_k, xk + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, acc, MR)
            KERN_TOKEN_TILES(t, n_tok, 8, PF);
#undef PF
        } else {
#define PF(MR) pf_tile(T, g, p->gsb_bytes, n_k, xk + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, acc, MR)
            KERN_TOKEN_TILES(t, n_tok, 8, PF);
#undef PF
        }
    }
}

KERN_DEF_PACKED_GEMMS(pk_gemm, pf_gemm)

/* ------------------------------------------------------------------ exp, softmax, silu */

/* e^x to about 1 ulp: x = n ln2 + r with |r| <= ln2/2, a degree-7 polynomial for e^r
 * (Cephes' expf coefficients), then scalef for 2^n (which saturates to 0 and inf). */
static inline __m512 exp16(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.8f)), _mm512_set1_ps(-104.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static double softmax(float *x, int64_t n, float *max_out)
{
    if (max_out) *max_out = -INFINITY;
    if (n <= 0) return 0.0;
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    if (i < n) m = _mm512_mask_max_ps(m, (__mmask16)((1u << (n - i)) - 1), m, _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i));
    float max = _mm512_reduce_max_ps(m);
    if (max_out) *max_out = max;
    if (max == -INFINITY) {
        for (i = 0; i < n; i++) x[i] = 0.0f;
        return 0.0;
    }
    __m512 vmax = _mm512_set1_ps(max);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    for (i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vmax));
        e = _mm512_maskz_mov_ps(k, e);
        _mm512_mask_storeu_ps(x + i, k, e);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
    }
    double sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    __m512 inv = _mm512_set1_ps(sum > 0.0 ? (float)(1.0 / sum) : 0.0f);
    for (i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv));
    }
    return sum;
}

static void silu(float *x, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(x + i, k, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}

/* ------------------------------------------------------------------ attention */

static inline __m512 kv_load16(const void *base, bool f16, size_t i, __mmask16 m)
{
    if (f16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i));
    return _mm512_maskz_loadu_ps(m, (const float *)base + i);
}

/* Scores of NH heads for the 16 positions of block b (dimensions in four chains, so that
 * the multiply-adds' latency overlaps), stored for positions in [p0, p1]. */
static inline __attribute__((always_inline)) void scores_block(const float *q, int dim, const void *kt, bool f16, int64_t b,
                                                               int64_t p0, int64_t p1, float *sc, int64_t sc_stride,
                                                               const int NH)
{
    __m512 acc[4][4];
#pragma GCC unroll 8
    for (int h = 0; h < NH; h++) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = _mm512_setzero_ps();
    size_t base = (size_t)b * (size_t)dim * KERN_KV_BLOCK, elem = f16 ? 2 : 4;
    const char *next = (const char *)kt + (base + 4 * (size_t)dim * KERN_KV_BLOCK) * elem; /* 4 blocks ahead */
    int d = 0;
    for (; d + 4 <= dim; d += 4) {
        _mm_prefetch(next + (size_t)d * KERN_KV_BLOCK * elem, _MM_HINT_T0);
        if (!f16) _mm_prefetch(next + (size_t)(d + 2) * KERN_KV_BLOCK * elem, _MM_HINT_T0);
#pragma GCC unroll 4
        for (int e = 0; e < 4; e++) {
            __m512 k = kv_load16(kt, f16, base + (size_t)(d + e) * KERN_KV_BLOCK, 0xFFFF);
#pragma GCC unroll 8
            for (int h = 0; h < NH; h++) acc[h][e] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * dim + d + e]), k, acc[h][e]);
        }
    }
    for (; d < dim; d++) {
        __m512 k0 = kv_load16(kt, f16, base + (size_t)d * KERN_KV_BLOCK, 0xFFFF);
#pragma GCC unroll 8
        for (int h = 0; h < NH; h++) acc[h][0] = _mm512_fmadd_ps(_mm512_set1_ps(q[h * dim + d]), k0, acc[h][0]);
    }
    int64_t first = b * KERN_KV_BLOCK, lo = first < p0 ? p0 : first;
    int64_t hi = first + KERN_KV_BLOCK - 1 > p1 ? p1 : first + KERN_KV_BLOCK - 1;
#pragma GCC unroll 8
    for (int h = 0; h < NH; h++) {
        __m512 a = _mm512_add_ps(_mm512_add_ps(acc[h][0], acc[h][1]), _mm512_add_ps(acc[h][2], acc[h][3]));
        if (lo == first && hi == first + KERN_KV_BLOCK - 1) {
            _mm512_storeu_ps(sc + h * sc_stride + (first - p0), a);
        } else {
            float tmp[KERN_KV_BLOCK];
            _mm512_storeu_ps(tmp, a);
            memcpy(sc + h * sc_stride + (lo - p0), tmp + (lo - first), (size_t)(hi - lo + 1) * sizeof(float));
        }
    }
}

static inline __attribute__((always_inline)) void scores_heads(const float *q, int dim, const void *kt, bool f16,
                                                               int64_t p0, int64_t p1, float *sc, int64_t sc_stride,
                                                               const int NH)
{
    for (int64_t b = p0 / KERN_KV_BLOCK; b <= p1 / KERN_KV_BLOCK; b++) scores_block(q, dim, kt, f16, b, p0, p1, sc, sc_stride, NH);
}

static void attn_scores(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1, float *sc,
                        int64_t sc_stride)
{
    for (int h0 = 0; h0 < n_head; h0 += 4) {
        const float *qh = q + h0 * dim;
        float *sh = sc + h0 * sc_stride;
        switch (n_head - h0 >= 4 ? 4 : n_head - h0) {
        case 4: scores_heads(qh, dim, kt, f16, p0, p1, sh, sc_stride, 4); break;
        case 3: scores_heads(qh, dim, kt, f16, p0, p1, sh, sc_stride, 3); break;
        case 2: scores_heads(qh, dim, kt, f16, p0, p1, sh, sc_stride, 2); break;
        default: scores_heads(qh, dim, kt, f16, p0, p1, sh, sc_stride, 1); break;
        }
    }
}

/* NH heads x up to 64 dimensions [d0, d0 + 64) of the output */
static inline __attribute__((always_inline)) void values_heads(const float *w, int64_t w_stride, int dim, int d0,
                                                               const void *v, bool f16, int64_t p0, int64_t p1, float *out,
                                                               int64_t out_stride, const int NH)
{
    __mmask16 m[4];
    #pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        int left = dim - d0 - 16 * k;
        m[k] = left >= 16 ? 0xFFFF : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
    __m512 acc[4][4];
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) acc[h][k] = _mm512_setzero_ps();
    for (int64_t p = p0; p <= p1; p++) {
        size_t base = (size_t)p * (size_t)dim + (size_t)d0;
        _mm_prefetch((const char *)v + (base + 8 * (size_t)dim) * (f16 ? 2 : 4), _MM_HINT_T0);
        _mm_prefetch((const char *)v + (base + 8 * (size_t)dim) * (f16 ? 2 : 4) + 64, _MM_HINT_T0);
        __m512 vr[4];
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) vr[k] = kv_load16(v, f16, base + 16 * (size_t)k, m[k]);
        #pragma GCC unroll 8
        for (int h = 0; h < NH; h++) {
            __m512 wb = _mm512_set1_ps(w[h * w_stride + (p - p0)]);
            #pragma GCC unroll 8
            for (int k = 0; k < 4; k++) acc[h][k] = _mm512_fmadd_ps(wb, vr[k], acc[h][k]);
        }
    }
    #pragma GCC unroll 8
    for (int h = 0; h < NH; h++)
        #pragma GCC unroll 8
        for (int k = 0; k < 4; k++) _mm512_mask_storeu_ps(out + h * out_stride + d0 + 16 * k, m[k], acc[h][k]);
}

static void attn_values(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16, int64_t p0,
                        int64_t p1, float *out, int64_t out_stride)
{
    for (int h0 = 0; h0 < n_head; h0 += 4) {
        const float *wh = w + h0 * w_stride;
        float *oh = out + h0 * out_stride;
        for (int d0 = 0; d0 < dim; d0 += 64) {
            switch (n_head - h0 >= 4 ? 4 : n_head - h0) {
            case 4: values_heads(wh, w_stride, dim, d0, v, f16, p0, p1, oh, out_stride, 4); break;
            case 3: values_heads(wh, w_stride, dim, d0, v, f16, p0, p1, oh, out_stride, 3); break;
            case 2: values_heads(wh, w_stride, dim, d0, v, f16, p0, p1, oh, out_stride, 2); break;
            default: values_heads(wh, w_stride, dim, d0, v, f16, p0, p1, oh, out_stride, 1); break;
            }
        }
    }
}

void kern_avx512_fill_fast_ops(kern_isa_ops *ops)
{
    ops->softmax = softmax;
    ops->silu = silu;
    ops->attn_scores = attn_scores;
    ops->attn_values = attn_values;
    ops->act_quant = act_quant;
    ops->qdot[GGUF_TYPE_Q8_0] = qdot_q8_0;
    ops->qdot[GGUF_TYPE_Q4_0] = qdot_q4_0;
    ops->qdot[GGUF_TYPE_Q4_1] = qdot_q4_1;
    ops->qdot[GGUF_TYPE_Q5_0] = qdot_q5_0;
    ops->qdot[GGUF_TYPE_Q5_1] = qdot_q5_1;
    ops->qdot[GGUF_TYPE_Q4_K] = qdot_q4_k;
    ops->qdot[GGUF_TYPE_Q5_K] = qdot_q5_k;
    ops->qdot[GGUF_TYPE_Q6_K] = qdot_q6_k;
    ops->qdot[GGUF_TYPE_Q2_K] = qdot_q2_k;
    ops->qdot[GGUF_TYPE_Q3_K] = qdot_q3_k;
    ops->gemm_q = gemm_q;
    ops->gemm_f = gemm_f;
    KERN_SET_PACKED_GEMMS(ops);
}
