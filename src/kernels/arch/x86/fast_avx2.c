/*
 * fast_avx2.c: the fast path on AVX2 + FMA for CPUs without AVX-512 (see kern_internal.h):
 * activation quantization, the micro-kernels over packed weights (each 64-byte group of 16
 * rows as two 8-row halves), the float panels, exp/softmax/SiLU and the attention products.
 * AVX2 has no vpdpbusd: integer sums of 4 products come from vpmaddubsw (u8 x s8 pairs to
 * s16) and vpmaddwd with ones; the pairs cannot saturate because every unsigned weight is
 * below 64, except Q8_0's, which goes through its signed values and vpsignb instead.
 * Compiled with -mavx2 -mfma -mf16c.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kern_internal.h"

static void act_quant(const kern_qgeom *g, const float *x, void *dst, int64_t n)
{
    uint8_t *out = dst;
    const int n_sub = g->sbk / g->bk, n_vec = g->sbk / 8;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127);
    for (int64_t i = 0; i + g->sbk <= n; i += g->sbk, x += g->sbk, out += kern_act_sb_bytes(g)) {
        __m256 m = _mm256_setzero_ps();
        for (int v = 0; v < n_vec; v++) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * v)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        int8_t *q = (int8_t *)(out + kern_act_q_offset(g));
        float s[16];
        int per_sub = g->bk / 8;
        for (int j = 0; j < n_sub; j++) {
            __m256i sum = _mm256_setzero_si256();
            for (int v = j * per_sub; v < (j + 1) * per_sub; v++) {
                __m256i iv = _mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * v), vid)), lo);
                int32_t tmp[8];
                _mm256_storeu_si256((__m256i *)tmp, iv);
                for (int k = 0; k < 8; k++) q[8 * v + k] = (int8_t)(tmp[k] > 127 ? 127 : tmp[k]);
                sum = _mm256_add_epi32(sum, iv);
            }
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            s[j] = (float)_mm_cvtsi128_si32(s4);
        }
        memcpy(out, &d, 4);
        memcpy(out + 4, s, 4 * (size_t)n_sub);
    }
}

static inline float load_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

/* ------------------------------------------------------------------ packed weights */

/* Half h (rows 8h .. 8h+7) of the unsigned bytes of k-group c (packed.c's layout). For
 * Q8_0 the signed values q = u - 128 instead. */
static inline __attribute__((always_inline)) __m256i pk_w(const enum gguf_tensor_type T, const uint8_t *o, const int c,
                                                          const int h)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const int off = 32 * h;
#define LD(p) _mm256_loadu_si256((const __m256i *)(p))
    switch (T) {
    case GGUF_TYPE_Q8_0: return _mm256_xor_si256(LD(o + 32 + 64 * c + off), _mm256_set1_epi8((char)0x80));
    case GGUF_TYPE_Q4_0:
    case GGUF_TYPE_Q4_1:
    case GGUF_TYPE_Q5_0:
    case GGUF_TYPE_Q5_1: {
        const uint8_t *nib = o + (T == GGUF_TYPE_Q4_1 || T == GGUF_TYPE_Q5_1 ? 64 : 32);
        __m256i v = LD(nib + 64 * (c & 3) + off);
        __m256i w = c < 4 ? _mm256_and_si256(v, m4) : _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (T == GGUF_TYPE_Q4_0 || T == GGUF_TYPE_Q4_1) return w;
        __m256i hb = LD(nib + 256 + off);
        hb = c <= 4 ? _mm256_slli_epi16(hb, 4 - c) : _mm256_srli_epi16(hb, c - 4);
        return _mm256_or_si256(w, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
    }
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        const int kk = c / 16, e = c % 16;
        __m256i v = LD(o + 320 + 64 * (8 * kk + e % 8) + off);
        __m256i w = e < 8 ? _mm256_and_si256(v, m4) : _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (T == GGUF_TYPE_Q4_K) return w;
        const int b = c % 8;
        __m256i hb = LD(o + 2368 + 64 * (c / 8) + off);
        hb = b <= 4 ? _mm256_slli_epi16(hb, 4 - b) : _mm256_srli_epi16(hb, b - 4);
        return _mm256_or_si256(w, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
    }
    case GGUF_TYPE_Q6_K: {
        __m256i v = LD(o + 288 + 64 * (c & 31) + off);
        __m256i w = c < 32 ? _mm256_and_si256(v, m4) : _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        const int e2 = 2 * (c >> 4);
        __m256i hb = LD(o + 2336 + 64 * (c & 15) + off);
        hb = e2 <= 4 ? _mm256_slli_epi16(hb, 4 - e2) : _mm256_srli_epi16(hb, e2 - 4);
        return _mm256_or_si256(w, _mm256_and_si256(hb, _mm256_set1_epi8(0x30)));
    }
    case GGUF_TYPE_Q2_K:
    case GGUF_TYPE_Q3_K: {
        __m256i v = LD(o + (T == GGUF_TYPE_Q2_K ? 320 : 288) + 64 * (c & 15) + off);
        __m256i w = _mm256_and_si256(_mm256_srli_epi16(v, 2 * (c >> 4)), _mm256_set1_epi8(3));
        if (T == GGUF_TYPE_Q2_K) return w;
        const int b = c % 8;
        __m256i hb = LD(o + 1312 + 64 * (c / 8) + off);
        hb = b <= 2 ? _mm256_slli_epi16(hb, 2 - b) : _mm256_srli_epi16(hb, b - 2);
        return _mm256_or_si256(w, _mm256_and_si256(hb, _mm256_set1_epi8(0x04)));
    }
    default: return _mm256_setzero_si256();
    }
#undef LD
}

/* ws and mw of rows 8h .. 8h+7 for sub-block j (Q8_0: mw = 0, its dots use signed values) */
static inline __attribute__((always_inline)) void pk_scales(const enum gguf_tensor_type T, const uint8_t *o, const int j,
                                                            const int h, __m256 *ws, __m256 *mw)
{
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 16 * h)));
    switch (T) {
    case GGUF_TYPE_Q8_0: *ws = d, *mw = _mm256_setzero_ps(); break;
    case GGUF_TYPE_Q4_0: *ws = d, *mw = _mm256_mul_ps(d, _mm256_set1_ps(-8.0f)); break;
    case GGUF_TYPE_Q5_0: *ws = d, *mw = _mm256_mul_ps(d, _mm256_set1_ps(-16.0f)); break;
    case GGUF_TYPE_Q4_1:
    case GGUF_TYPE_Q5_1: *ws = d, *mw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 32 + 16 * h))); break;
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(o + 64 + 16 * j + 8 * h))));
        __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(o + 192 + 16 * j + 8 * h))));
        __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 32 + 16 * h)));
        *ws = _mm256_mul_ps(d, sc);
        *mw = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), dmin), mn);
        break;
    }
    case GGUF_TYPE_Q6_K:
    case GGUF_TYPE_Q3_K: {
        __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(o + 32 + 16 * j + 8 * h))));
        *ws = _mm256_mul_ps(d, sc);
        *mw = _mm256_mul_ps(*ws, _mm256_set1_ps(T == GGUF_TYPE_Q6_K ? -32.0f : -4.0f));
        break;
    }
    case GGUF_TYPE_Q2_K: {
        __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(o + 64 + 16 * j + 8 * h)));
        __m256 sc = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(0xF)));
        __m256 mn = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
        __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(o + 32 + 16 * h)));
        *ws = _mm256_mul_ps(d, sc);
        *mw = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), dmin), mn);
        break;
    }
    default: *ws = *mw = _mm256_setzero_ps(); break;
    }
}

/* sum of 4 products per 32-bit lane, accumulated into acc */
static inline __attribute__((always_inline)) __m256i dot4(const enum gguf_tensor_type T, __m256i acc, __m256i w, __m256i x)
{
    __m256i p;
    if (T == GGUF_TYPE_Q8_0) p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    else p = _mm256_maddubs_epi16(w, x);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

static inline int pk_sbk(const enum gguf_tensor_type T) { return T == GGUF_TYPE_Q4_K || T == GGUF_TYPE_Q5_K || T == GGUF_TYPE_Q6_K || T == GGUF_TYPE_Q2_K || T == GGUF_TYPE_Q3_K ? 256 : 32; }
static inline int pk_bk(const enum gguf_tensor_type T) { return T == GGUF_TYPE_Q6_K || T == GGUF_TYPE_Q2_K || T == GGUF_TYPE_Q3_K ? 16 : 32; }

/* MR tokens x the 16 rows of one group (two halves of 8). */
static inline __attribute__((always_inline)) void pk_tile(const enum gguf_tensor_type T, const uint8_t *gbase, size_t gsb_bytes,
                                                          int64_t n_sb, const uint8_t *xa, size_t xa_stride, float *y,
                                                          int64_t y_stride, int n_rows, const int MR)
{
    const int sbk = pk_sbk(T), bk = pk_bk(T), n_sub = sbk / bk, per_sub = bk / 4;
    const size_t a_sb = 4 + 4 * (size_t)n_sub + (size_t)sbk, q_off = 4 + 4 * (size_t)n_sub;
    __m256 acc[8][2];
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < n_sb; sb++) {
        const uint8_t *o = gbase + (size_t)sb * gsb_bytes;
        const uint8_t *a = xa + (size_t)sb * a_sb;
        __m256 tmp[8][2];
#pragma GCC unroll 8
        for (int t = 0; t < MR; t++) tmp[t][0] = tmp[t][1] = _mm256_setzero_ps();
        for (int j = 0; j < n_sub; j++) {
            __m256i I[8][2];
#pragma GCC unroll 8
            for (int t = 0; t < MR; t++) I[t][0] = I[t][1] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int cc = 0; cc < per_sub; cc++) {
                const int c = j * per_sub + cc;
                __m256i w0 = pk_w(T, o, c, 0), w1 = pk_w(T, o, c, 1);
#pragma GCC unroll 8
                for (int t = 0; t < MR; t++) {
                    int32_t xv;
                    memcpy(&xv, a + (size_t)t * xa_stride + q_off + 4 * (size_t)c, 4);
                    __m256i xb = _mm256_set1_epi32(xv);
                    I[t][0] = dot4(T, I[t][0], w0, xb);
                    I[t][1] = dot4(T, I[t][1], w1, xb);
                }
            }
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256 ws, mw;
                pk_scales(T, o, j, h, &ws, &mw);
#pragma GCC unroll 8
                for (int t = 0; t < MR; t++) {
                    __m256 S = _mm256_set1_ps(load_f32(a + (size_t)t * xa_stride + 4 + 4 * (size_t)j));
                    tmp[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I[t][h]), ws, tmp[t][h]);
                    tmp[t][h] = _mm256_fmadd_ps(mw, S, tmp[t][h]);
                }
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < MR; t++) {
            __m256 d = _mm256_set1_ps(load_f32(a + (size_t)t * xa_stride));
            acc[t][0] = _mm256_fmadd_ps(tmp[t][0], d, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(tmp[t][1], d, acc[t][1]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) {
        float out[16];
        _mm256_storeu_ps(out, acc[t][0]);
        _mm256_storeu_ps(out + 8, acc[t][1]);
        memcpy(y + t * y_stride, out, (size_t)n_rows * sizeof(float));
    }
}

static inline __attribute__((always_inline)) void pk_gemm(const enum gguf_tensor_type T, const kern_packed *p, int64_t group,
                                                          const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                                                          int64_t y_stride, int n_rows)
{
    const uint8_t *g = p->data + (size_t)(group * p->n_sb) * p->gsb_bytes;
    int64_t t = 0;
#define PK(MR) pk_tile(T, g, p->gsb_bytes, p->n_sb, xa + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, MR)
    KERN_TOKEN_TILES(t, n_tok, 3, PK);
#undef PK
}

/* Float weights, value-major groups of 32 rows: MR tokens x 32 rows (4 vectors). */
static inline __attribute__((always_inline)) __m256 pf_load(const enum gguf_tensor_type T, const uint8_t *e, const int q)
{
    if (T == GGUF_TYPE_F32) return _mm256_loadu_ps((const float *)e + 8 * q);
    __m128i h = _mm_loadu_si128((const __m128i *)(e + 16 * q));
    if (T == GGUF_TYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void pf_tile(const enum gguf_tensor_type T, const uint8_t *g, size_t gsb_bytes,
                                                          int64_t n_in, const uint8_t *xa, size_t xa_stride, float *y,
                                                          int64_t y_stride, int n_rows, bool accumulate, const int MR)
{
    __m256 acc[8][4];
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++)
#pragma GCC unroll 8
        for (int v = 0; v < 4; v++) acc[t][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n_in; k++) {
        const uint8_t *e = g + (size_t)k * gsb_bytes;
        __m256 w[4];
#pragma GCC unroll 8
        for (int v = 0; v < 4; v++) w[v] = pf_load(T, e, v);
#pragma GCC unroll 8
        for (int t = 0; t < MR; t++) {
            __m256 xb = _mm256_set1_ps(((const float *)(xa + (size_t)t * xa_stride))[k]);
#pragma GCC unroll 8
            for (int v = 0; v < 4; v++) acc[t][v] = _mm256_fmadd_ps(w[v], xb, acc[t][v]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < MR; t++) {
        float out[32];
#pragma GCC unroll 8
        for (int v = 0; v < 4; v++) _mm256_storeu_ps(out + 8 * v, acc[t][v]);
        float *yt = y + t * y_stride;
        for (int r = 0; r < n_rows; r++) yt[r] = accumulate ? yt[r] + out[r] : out[r];
    }
}

/* Panels of unrepacked float weights (kern_panel_pack_f) have the packed F32 layout. */
static void gemm_f(const float *panel, int64_t n_in, const float *x, int64_t x_stride, int64_t n_tok, float *y,
                   int64_t y_stride, int n_rows, bool accumulate)
{
    const uint8_t *xa = (const uint8_t *)x, *g = (const uint8_t *)panel;
    size_t xa_stride = (size_t)x_stride * sizeof(float);
    int64_t t = 0;
#define F_TILE(MR) pf_tile(GGUF_TYPE_F32, g, 4 * KERN_PANEL_ROWS, n_in, xa + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, accumulate, MR)
    KERN_TOKEN_TILES(t, n_tok, 3, F_TILE);
#undef F_TILE
}

static inline __attribute__((always_inline)) void pf_gemm(const enum gguf_tensor_type T, const kern_packed *p, int64_t group,
                                                          const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                                                          int64_t y_stride, int n_rows)
{
    const uint8_t *g = p->data + (size_t)(group * p->n_sb) * p->gsb_bytes;
    int64_t t = 0;
#define PF(MR) pf_tile(T, g, p->gsb_bytes, p->n_in, xa + (size_t)t * xa_stride, xa_stride, y + t * y_stride, y_stride, n_rows, false, MR)
    KERN_TOKEN_TILES(t, n_tok, 3, PF);
#undef PF
}

KERN_DEF_PACKED_GEMMS(pk_gemm, pf_gemm)

/* ------------------------------------------------------------------ exp, softmax, silu */

/* e^x to about 1 ulp (the AVX-512 variant's polynomial; 2^n built in the exponent bits). */
static inline __m256 exp8(__m256 x)
{
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3f)), _mm256_set1_ps(-87.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static double softmax(float *x, int64_t n, float *max_out)
{
    if (max_out) *max_out = -INFINITY;
    if (n <= 0) return 0.0;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    if (max_out) *max_out = max;
    if (max == -INFINITY) {
        for (int64_t i = 0; i < n; i++) x[i] = 0.0f;
        return 0.0;
    }
    __m256 vmax = _mm256_set1_ps(max);
    double sum = 0.0;
    int64_t i = 0;
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), vmax);
        /* below -87 the polynomial's exponent trick would wrap: those are zeros */
        __m256 e = _mm256_and_ps(exp8(v), _mm256_cmp_ps(v, _mm256_set1_ps(-87.3f), _CMP_GE_OQ));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double part[4];
    _mm256_storeu_pd(part, _mm256_add_pd(s0, s1));
    sum = part[0] + part[1] + part[2] + part[3];
    for (; i < n; i++) {
        float e = x[i] - max < -87.3f ? 0.0f : expf(x[i] - max);
        x[i] = e;
        sum += e;
    }
    float inv = sum > 0.0 ? (float)(1.0 / sum) : 0.0f;
    for (i = 0; i < n; i++) x[i] *= inv;
    return sum;
}

static void silu(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(x + i, _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
    }
    for (; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

/* ------------------------------------------------------------------ attention */

static inline __m256 kv_load8(const void *base, bool f16, size_t i)
{
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    return _mm256_loadu_ps((const float *)base + i);
}

static void attn_scores(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1, float *sc,
                        int64_t sc_stride)
{
    for (int h0 = 0; h0 < n_head; h0 += 2) {
        int nh = n_head - h0 >= 2 ? 2 : 1;
        for (int64_t b = p0 / KERN_KV_BLOCK; b <= p1 / KERN_KV_BLOCK; b++) {
            __m256 a[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
            size_t base = (size_t)b * (size_t)dim * KERN_KV_BLOCK;
            for (int d = 0; d < dim; d++) {
                __m256 k0 = kv_load8(kt, f16, base + (size_t)d * KERN_KV_BLOCK), k1 = kv_load8(kt, f16, base + (size_t)d * KERN_KV_BLOCK + 8);
                for (int h = 0; h < nh; h++) {
                    __m256 qb = _mm256_set1_ps(q[(h0 + h) * dim + d]);
                    a[h][0] = _mm256_fmadd_ps(qb, k0, a[h][0]);
                    a[h][1] = _mm256_fmadd_ps(qb, k1, a[h][1]);
                }
            }
            int64_t first = b * KERN_KV_BLOCK, lo = first < p0 ? p0 : first;
            int64_t hi = first + KERN_KV_BLOCK - 1 > p1 ? p1 : first + KERN_KV_BLOCK - 1;
            for (int h = 0; h < nh; h++) {
                float tmp[KERN_KV_BLOCK];
                _mm256_storeu_ps(tmp, a[h][0]);
                _mm256_storeu_ps(tmp + 8, a[h][1]);
                memcpy(sc + (h0 + h) * sc_stride + (lo - p0), tmp + (lo - first), (size_t)(hi - lo + 1) * sizeof(float));
            }
        }
    }
}

static void attn_values(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16, int64_t p0,
                        int64_t p1, float *out, int64_t out_stride)
{
    for (int h = 0; h < n_head; h++) {
        float *o = out + h * out_stride;
        int d = 0;
        for (; d + 32 <= dim; d += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t p = p0; p <= p1; p++) {
                __m256 wb = _mm256_set1_ps(w[h * w_stride + (p - p0)]);
                size_t base = (size_t)p * (size_t)dim + (size_t)d;
                a0 = _mm256_fmadd_ps(wb, kv_load8(v, f16, base), a0);
                a1 = _mm256_fmadd_ps(wb, kv_load8(v, f16, base + 8), a1);
                a2 = _mm256_fmadd_ps(wb, kv_load8(v, f16, base + 16), a2);
                a3 = _mm256_fmadd_ps(wb, kv_load8(v, f16, base + 24), a3);
            }
            _mm256_storeu_ps(o + d, a0);
            _mm256_storeu_ps(o + d + 8, a1);
            _mm256_storeu_ps(o + d + 16, a2);
            _mm256_storeu_ps(o + d + 24, a3);
        }
        for (; d + 8 <= dim; d += 8) {
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t p = p0; p <= p1; p++)
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[h * w_stride + (p - p0)]), kv_load8(v, f16, (size_t)p * (size_t)dim + (size_t)d), a0);
            _mm256_storeu_ps(o + d, a0);
        }
        for (; d < dim; d++) {
            float s = 0.0f;
            for (int64_t p = p0; p <= p1; p++) {
                size_t i = (size_t)p * (size_t)dim + (size_t)d;
                s += w[h * w_stride + (p - p0)] * (f16 ? _cvtsh_ss(((const uint16_t *)v)[i]) : ((const float *)v)[i]);
            }
            o[d] = s;
        }
    }
}

void kern_avx2_fill_fast_ops(kern_isa_ops *ops)
{
    ops->act_quant = act_quant;
    ops->gemm_f = gemm_f;
    KERN_SET_PACKED_GEMMS(ops);
    ops->softmax = softmax;
    ops->silu = silu;
    ops->attn_scores = attn_scores;
    ops->attn_values = attn_values;
}
