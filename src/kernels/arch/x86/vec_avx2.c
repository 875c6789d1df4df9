/*
 * vec_avx2.c: AVX2 + FMA + F16C variants of the vector distances of vec.c (dot product and
 * squared L2 of a float query against an F32, F16 or scaled I8 row). Same numbers as the
 * reference up to the order of the float additions. Built with -mavx2 -mfma -mf16c; used
 * only after CPUID said so (kern_isa_active).
 */
#include <immintrin.h>

#include "kernels/kern_internal.h"
#include "kernels/arch/x86/hsum.h"

/* 8 stored values from i on, as floats (I8 unscaled: the callers apply the scale). */
static inline __m256 load8(enum kern_vtype t, const void *row, int64_t i)
{
    switch (t) {
    case KERN_VTYPE_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    case KERN_VTYPE_I8: return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)row + i))));
    default: return _mm256_loadu_ps((const float *)row + i);
    }
}

static inline float value1(enum kern_vtype t, const void *row, int64_t i)
{
    switch (t) {
    case KERN_VTYPE_F16: return _cvtsh_ss(((const uint16_t *)row)[i]);
    case KERN_VTYPE_I8: return (float)((const int8_t *)row)[i];
    default: return ((const float *)row)[i];
    }
}

/* Specialised per type (t is a constant at each call site) so the loads inline. */
static inline __attribute__((always_inline)) float dot_t(enum kern_vtype t, const void *row, const float *q, int64_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(load8(t, row, i), _mm256_loadu_ps(q + i), a0);
        a1 = _mm256_fmadd_ps(load8(t, row, i + 8), _mm256_loadu_ps(q + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load8(t, row, i), _mm256_loadu_ps(q + i), a0);
    float s = kern_hsum8(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += value1(t, row, i) * q[i];
    return s;
}

static inline __attribute__((always_inline)) float l2sq_t(enum kern_vtype t, const void *row, float scale, const float *q,
                                                          int64_t n)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 vs = _mm256_set1_ps(t == KERN_VTYPE_I8 ? scale : 1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_fmsub_ps(load8(t, row, i), vs, _mm256_loadu_ps(q + i));
        __m256 d1 = _mm256_fmsub_ps(load8(t, row, i + 8), vs, _mm256_loadu_ps(q + i + 8));
        a0 = _mm256_fmadd_ps(d0, d0, a0);
        a1 = _mm256_fmadd_ps(d1, d1, a1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d0 = _mm256_fmsub_ps(load8(t, row, i), vs, _mm256_loadu_ps(q + i));
        a0 = _mm256_fmadd_ps(d0, d0, a0);
    }
    float s = kern_hsum8(_mm256_add_ps(a0, a1));
    float sc = t == KERN_VTYPE_I8 ? scale : 1.0f;
    for (; i < n; i++) {
        float d = value1(t, row, i) * sc - q[i];
        s += d * d;
    }
    return s;
}

float kern_vec_avx2_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
    switch (t) {
    case KERN_VTYPE_F16: return dot_t(KERN_VTYPE_F16, row, q, n);
    case KERN_VTYPE_I8: return dot_t(KERN_VTYPE_I8, row, q, n) * scale;
    default: return dot_t(KERN_VTYPE_F32, row, q, n);
    }
}

float kern_vec_avx2_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
    switch (t) {
    case KERN_VTYPE_F16: return l2sq_t(KERN_VTYPE_F16, row, scale, q, n);
    case KERN_VTYPE_I8: return l2sq_t(KERN_VTYPE_I8, row, scale, q, n);
    default: return l2sq_t(KERN_VTYPE_F32, row, scale, q, n);
    }
}
