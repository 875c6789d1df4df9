/*
 * dot_avx2.c: AVX2 + FMA + F16C row dot products. Dequantized in registers for F32, F16,
 * BF16, Q8_0, Q4_0, Q2_K..Q6_K; through the reference block dequantizer and a vector
 * multiply-add for Q4_1, Q5_0 and Q5_1. Same numerics as the reference (weights dequantized
 * to float, multiplied with the float activations; no activation quantization), only the
 * order of the float additions differs. Built with -mavx2 -mfma -mf16c; used only after
 * CPUID said so (kernels.c).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels/kern_internal.h"
#include "kernels/arch/x86/hsum.h"

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* 8 signed bytes (the low 8 of v) to 8 floats */
static inline __m256 i8x8_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

static float dot_f32(const void *row, const float *x, int64_t n)
{
    const float *w = row;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = kern_hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const void *row, const float *x, int64_t n)
{
    const uint16_t *w = row;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8))), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i))), _mm256_loadu_ps(x + i), a0);
    float s = kern_hsum8(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += h2f(w[i]) * x[i];
    return s;
}

static float dot_bf16(const void *row, const float *x, int64_t n)
{
    const uint16_t *w = row;
    __m256 a0 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + i))), 16);
        a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(v), _mm256_loadu_ps(x + i), a0);
    }
    float s = kern_hsum8(a0);
    for (; i < n; i++) s += kern_bf16_to_fp32(w[i]) * x[i];
    return s;
}

static float dot_q8_0(const void *row, const float *x, int64_t n)
{
    const kern_block_q8_0 *b = row;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK; i++, b++, x += KERN_QK) {
        __m256 s = _mm256_mul_ps(i8x8_ps(_mm_loadl_epi64((const __m128i *)(b->qs + 0))), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8_ps(_mm_loadl_epi64((const __m128i *)(b->qs + 8))), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8_ps(_mm_loadl_epi64((const __m128i *)(b->qs + 16))), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8_ps(_mm_loadl_epi64((const __m128i *)(b->qs + 24))), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b->d)), s, acc);
    }
    return kern_hsum8(acc);
}

static float dot_q4_0(const void *row, const float *x, int64_t n)
{
    const kern_block_q4_0 *b = row;
    const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK; i++, b++, x += KERN_QK) {
        __m128i v = _mm_loadu_si128((const __m128i *)b->qs);
        __m128i lo = _mm_sub_epi8(_mm_and_si128(v, m4), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m4), eight);
        __m256 s = _mm256_mul_ps(i8x8_ps(lo), _mm256_loadu_ps(x));
        s = _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), s);
        s = _mm256_fmadd_ps(i8x8_ps(hi), _mm256_loadu_ps(x + 16), s);
        s = _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(b->d)), s, acc);
    }
    return kern_hsum8(acc);
}

/* 16 unsigned bytes (0..15 each) times 16 floats, summed into 8 lanes */
static inline __m256 u8x16_dot(__m128i q, const float *x, __m256 acc)
{
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), _mm256_loadu_ps(x), acc);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(q, 8))), _mm256_loadu_ps(x + 8), acc);
}

static inline __m256 i8x16_dot(__m128i q, const float *x, __m256 acc)
{
    acc = _mm256_fmadd_ps(i8x8_ps(q), _mm256_loadu_ps(x), acc);
    return _mm256_fmadd_ps(i8x8_ps(_mm_srli_si128(q, 8)), _mm256_loadu_ps(x + 8), acc);
}

static inline __m256 sum16(const float *x, __m256 acc)
{
    return _mm256_add_ps(acc, _mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8)));
}

static float dot_q4_k(const void *row, const float *x, int64_t n)
{
    const kern_block_q4_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK_K; i++, b++, x += KERN_QK_K) {
        float d = h2f(b->d), dmin = h2f(b->dmin);
        for (int k = 0; k < 4; k++) {
            uint8_t sc0, m0, sc1, m1;
            kern_scale_min_k4(2 * k, b->scales, &sc0, &m0);
            kern_scale_min_k4(2 * k + 1, b->scales, &sc1, &m1);
            __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            const float *xx = x + 64 * k;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), x0 = _mm256_setzero_ps(), x1 = _mm256_setzero_ps();
            s0 = u8x16_dot(_mm256_castsi256_si128(lo), xx, s0);
            s0 = u8x16_dot(_mm256_extracti128_si256(lo, 1), xx + 16, s0);
            s1 = u8x16_dot(_mm256_castsi256_si128(hi), xx + 32, s1);
            s1 = u8x16_dot(_mm256_extracti128_si256(hi, 1), xx + 48, s1);
            x0 = sum16(xx + 16, sum16(xx, x0));
            x1 = sum16(xx + 48, sum16(xx + 32, x1));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc0), s0, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1), s1, acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin * m0), x0, accm);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin * m1), x1, accm);
        }
    }
    return kern_hsum8(acc) - kern_hsum8(accm);
}

static float dot_q6_k(const void *row, const float *x, int64_t n)
{
    const kern_block_q6_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK_K; i++, b++, x += KERN_QK_K) {
        float d = h2f(b->d);
        for (int c = 0; c < 2; c++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * c));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * c + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * c));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m3), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m3), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m3), 4));
            const int8_t *sc = b->scales + 8 * c;
            const float *xc = x + 128 * c;
            for (int k = 0; k < 4; k++) {
                __m256i v = _mm256_sub_epi8(q[k], off);
                __m256 s0 = i8x16_dot(_mm256_castsi256_si128(v), xc + 32 * k, _mm256_setzero_ps());
                __m256 s1 = i8x16_dot(_mm256_extracti128_si256(v, 1), xc + 32 * k + 16, _mm256_setzero_ps());
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[2 * k]), s0, acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)sc[2 * k + 1]), s1, acc);
            }
        }
    }
    return kern_hsum8(acc);
}

static float dot_q5_k(const void *row, const float *x, int64_t n)
{
    const kern_block_q5_k *b = row;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK_K; i++, b++, x += KERN_QK_K) {
        float d = h2f(b->d), dmin = h2f(b->dmin);
        __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);  /* shifted right 2 per chunk */
        for (int k = 0; k < 4; k++, qh = _mm256_srli_epi16(qh, 2)) {
            uint8_t sc0, m0, sc1, m1;
            kern_scale_min_k4(2 * k, b->scales, &sc0, &m0);
            kern_scale_min_k4(2 * k + 1, b->scales, &sc1, &m1);
            __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
            __m256i lo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
            const float *xx = x + 64 * k;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), x0 = _mm256_setzero_ps(), x1 = _mm256_setzero_ps();
            s0 = u8x16_dot(_mm256_castsi256_si128(lo), xx, s0);
            s0 = u8x16_dot(_mm256_extracti128_si256(lo, 1), xx + 16, s0);
            s1 = u8x16_dot(_mm256_castsi256_si128(hi), xx + 32, s1);
            s1 = u8x16_dot(_mm256_extracti128_si256(hi, 1), xx + 48, s1);
            x0 = sum16(xx + 16, sum16(xx, x0));
            x1 = sum16(xx + 48, sum16(xx + 32, x1));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc0), s0, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc1), s1, acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin * m0), x0, accm);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin * m1), x1, accm);
        }
    }
    return kern_hsum8(acc) - kern_hsum8(accm);
}

/* The remaining block types: the reference dequantizes one block into a buffer, then the
 * multiply-add runs 8 lanes wide. */
static float dot_via_block(enum gguf_tensor_type type, const void *row, const float *x, int64_t n)
{
    const int bs = (int)gguf_type_block_size(type);
    const size_t bb = gguf_type_block_bytes(type);
    const uint8_t *p = row;
    float tmp[KERN_QK_K];
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i + bs <= n; i += bs, p += bb, x += bs) {
        kern_ref_dequantize_row(type, p, tmp, bs);
        for (int j = 0; j < bs; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(tmp + j), _mm256_loadu_ps(x + j), acc);
    }
    return kern_hsum8(acc);
}

static float dot_q4_1(const void *r, const float *x, int64_t n) { return dot_via_block(GGUF_TYPE_Q4_1, r, x, n); }
static float dot_q5_0(const void *r, const float *x, int64_t n) { return dot_via_block(GGUF_TYPE_Q5_0, r, x, n); }
static float dot_q5_1(const void *r, const float *x, int64_t n) { return dot_via_block(GGUF_TYPE_Q5_1, r, x, n); }

static float dot_q2_k(const void *row, const float *x, int64_t n)
{
    const kern_block_q2_k *b = row;
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK_K; i++, b++, x += KERN_QK_K) {
        float d = h2f(b->d), dmin = h2f(b->dmin);
        for (int c = 0; c < 2; c++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));  /* shifted right 2 per j */
            for (int j = 0; j < 4; j++, qs = _mm256_srli_epi16(qs, 2)) {
                __m256i q = _mm256_and_si256(qs, m3);
                const float *xx = x + 128 * c + 32 * j;
                uint8_t sc0 = b->scales[8 * c + 2 * j], sc1 = b->scales[8 * c + 2 * j + 1];
                __m256 s0 = u8x16_dot(_mm256_castsi256_si128(q), xx, _mm256_setzero_ps());
                __m256 s1 = u8x16_dot(_mm256_extracti128_si256(q, 1), xx + 16, _mm256_setzero_ps());
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)(sc0 & 0xF)), s0, acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * (float)(sc1 & 0xF)), s1, acc);
                accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin * (float)(sc0 >> 4)), sum16(xx, _mm256_setzero_ps()), accm);
                accm = _mm256_fmadd_ps(_mm256_set1_ps(dmin * (float)(sc1 >> 4)), sum16(xx + 16, _mm256_setzero_ps()), accm);
            }
        }
    }
    return kern_hsum8(acc) - kern_hsum8(accm);
}

static float dot_q3_k(const void *row, const float *x, int64_t n)
{
    const kern_block_q3_k *b = row;
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / KERN_QK_K; i++, b++, x += KERN_QK_K) {
        float d = h2f(b->d);
        float sc[16];
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? (b->scales[j] & 0xF) : (b->scales[j - 8] >> 4);
            int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = d * (float)((lo | hi << 4) - 32);
        }
        __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask);  /* shifted right 1 per (c, j) */
        for (int c = 0; c < 2; c++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
            for (int j = 0; j < 4; j++, qs = _mm256_srli_epi16(qs, 2), hm = _mm256_srli_epi16(hm, 1)) {
                __m256i q = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(qs, m3),
                                                            _mm256_slli_epi16(_mm256_and_si256(hm, one), 2)), four);
                const float *xx = x + 128 * c + 32 * j;
                __m256 s0 = i8x16_dot(_mm256_castsi256_si128(q), xx, _mm256_setzero_ps());
                __m256 s1 = i8x16_dot(_mm256_extracti128_si256(q, 1), xx + 16, _mm256_setzero_ps());
                acc = _mm256_fmadd_ps(_mm256_set1_ps(sc[8 * c + 2 * j]), s0, acc);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(sc[8 * c + 2 * j + 1]), s1, acc);
            }
        }
    }
    return kern_hsum8(acc);
}

void kern_avx2_fill_ops(kern_isa_ops *ops)
{
    ops->dot[GGUF_TYPE_F32] = dot_f32;
    ops->dot[GGUF_TYPE_F16] = dot_f16;
    ops->dot[GGUF_TYPE_BF16] = dot_bf16;
    ops->dot[GGUF_TYPE_Q8_0] = dot_q8_0;
    ops->dot[GGUF_TYPE_Q4_0] = dot_q4_0;
    ops->dot[GGUF_TYPE_Q4_K] = dot_q4_k;
    ops->dot[GGUF_TYPE_Q6_K] = dot_q6_k;
    ops->dot[GGUF_TYPE_Q5_K] = dot_q5_k;
    ops->dot[GGUF_TYPE_Q4_1] = dot_q4_1;
    ops->dot[GGUF_TYPE_Q5_0] = dot_q5_0;
    ops->dot[GGUF_TYPE_Q5_1] = dot_q5_1;
    ops->dot[GGUF_TYPE_Q2_K] = dot_q2_k;
    ops->dot[GGUF_TYPE_Q3_K] = dot_q3_k;
}
