/*
 * vec_avx512.c: AVX-512 variants of the vector distances of vec.c (dot product and squared
 * L2 of a float query against an F32, F16 or scaled I8 row), 16 values a step, the tail
 * through a mask. Same numbers as the reference up to the order of the float additions.
 * Built with the AVX-512 flags of the Makefile; used only after CPUID said so.
 */
#include <immintrin.h>

#include "kernels/kern_internal.h"

/* 16 stored values from i on (lanes outside mask m are 0), as floats; I8 unscaled. */
static inline __m512 load16(enum kern_vtype t, const void *row, int64_t i, __mmask16 m)
{
    switch (t) {
    case KERN_VTYPE_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + i));
    case KERN_VTYPE_I8: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, (const int8_t *)row + i)));
    default: return _mm512_maskz_loadu_ps(m, (const float *)row + i);
    }
}

static inline __attribute__((always_inline)) float dot_t(enum kern_vtype t, const void *row, const float *q, int64_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load16(t, row, i, 0xFFFF), _mm512_loadu_ps(q + i), a0);
        a1 = _mm512_fmadd_ps(load16(t, row, i + 16, 0xFFFF), _mm512_loadu_ps(q + i + 16), a1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        a0 = _mm512_fmadd_ps(load16(t, row, i, m), _mm512_maskz_loadu_ps(m, q + i), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static inline __attribute__((always_inline)) float l2sq_t(enum kern_vtype t, const void *row, float scale, const float *q,
                                                          int64_t n)
{
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 vs = _mm512_set1_ps(t == KERN_VTYPE_I8 ? scale : 1.0f);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 d0 = _mm512_fmsub_ps(load16(t, row, i, 0xFFFF), vs, _mm512_loadu_ps(q + i));
        __m512 d1 = _mm512_fmsub_ps(load16(t, row, i + 16, 0xFFFF), vs, _mm512_loadu_ps(q + i + 16));
        a0 = _mm512_fmadd_ps(d0, d0, a0);
        a1 = _mm512_fmadd_ps(d1, d1, a1);
    }
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 d0 = _mm512_fmsub_ps(load16(t, row, i, m), vs, _mm512_maskz_loadu_ps(m, q + i));
        a0 = _mm512_fmadd_ps(d0, d0, a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

float kern_vec_avx512_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
    switch (t) {
    case KERN_VTYPE_F16: return dot_t(KERN_VTYPE_F16, row, q, n);
    case KERN_VTYPE_I8: return dot_t(KERN_VTYPE_I8, row, q, n) * scale;
    default: return dot_t(KERN_VTYPE_F32, row, q, n);
    }
}

float kern_vec_avx512_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
    switch (t) {
    case KERN_VTYPE_F16: return l2sq_t(KERN_VTYPE_F16, row, scale, q, n);
    case KERN_VTYPE_I8: return l2sq_t(KERN_VTYPE_I8, row, scale, q, n);
    default: return l2sq_t(KERN_VTYPE_F32, row, scale, q, n);
    }
}
