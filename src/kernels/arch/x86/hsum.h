/*
 * hsum.h: the horizontal sum of eight floats, shared by the x86 kernel files that are built
 * with AVX2 or AVX-512 flags (never include it from a file built without them).
 */
#ifndef DK_KERN_HSUM_H
#define DK_KERN_HSUM_H

#include <immintrin.h>

static inline float kern_hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
