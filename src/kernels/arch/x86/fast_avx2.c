/*
 * fast_avx2.c: the fast path on AVX2 + FMA (see kern_internal.h): activation quantization
 * and the float-panel GEMM micro-kernel. The integer dots and GEMMs use 16-bit pair sums
 * (vpmaddubsw) where the weights' unsigned values stay below 128, and the reference where
 * they do not (Q8_0). Compiled with -mavx2 -mfma -mf16c.
 */
#include <immintrin.h>
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

static inline __attribute__((always_inline)) void gemm_f_tile(const float *panel, int64_t n_in, const float *x,
                                                              int64_t x_stride, float *y, int64_t y_stride, int n_rows,
                                                              bool accumulate, const int MR)
{
    __m256 acc[3][4];
    #pragma GCC unroll 8
    for (int t = 0; t < MR; t++)
        #pragma GCC unroll 8
        for (int v = 0; v < 4; v++) acc[t][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n_in; k++) {
        const float *pk = panel + k * KERN_PANEL_ROWS;
        __m256 w0 = _mm256_loadu_ps(pk), w1 = _mm256_loadu_ps(pk + 8), w2 = _mm256_loadu_ps(pk + 16), w3 = _mm256_loadu_ps(pk + 24);
        #pragma GCC unroll 8
        for (int t = 0; t < MR; t++) {
            __m256 xb = _mm256_broadcast_ss(x + t * x_stride + k);
            acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
            acc[t][2] = _mm256_fmadd_ps(w2, xb, acc[t][2]);
            acc[t][3] = _mm256_fmadd_ps(w3, xb, acc[t][3]);
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

static void gemm_f(const float *panel, int64_t n_in, const float *x, int64_t x_stride, int64_t n_tok, float *y,
                   int64_t y_stride, int n_rows, bool accumulate)
{
    int64_t t = 0;
#define F_TILE(MR) gemm_f_tile(panel, n_in, x + t * x_stride, x_stride, y + t * y_stride, y_stride, n_rows, accumulate, MR)
    for (; t + 3 <= n_tok; t += 3) F_TILE(3);
    if (n_tok - t == 2) F_TILE(2);
    else if (n_tok - t == 1) F_TILE(1);
#undef F_TILE
}

void kern_avx2_fill_fast_ops(kern_isa_ops *ops)
{
    ops->act_quant = act_quant;
    ops->gemm_f = gemm_f;
}
