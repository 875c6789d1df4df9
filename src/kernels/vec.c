/*
 * vec.c: distances between a float query and one stored vector (F32, F16 or scaled I8), the
 * kernels of rag/'s vector search. The scalar reference lives here; the AVX2 and AVX-512
 * variants (arch/x86/vec_avx2.c, vec_avx512.c) are chosen per call from kern_isa_active(),
 * so kern_isa_force() switches them as it switches the other kernels.
 */
#include "kernels/kern_internal.h"

/* The stored value i of row as a float. */
static inline float row_value(enum kern_vtype t, const void *row, float scale, int64_t i)
{
    switch (t) {
    case KERN_VTYPE_F16: return kern_fp16_to_fp32(((const uint16_t *)row)[i]);
    case KERN_VTYPE_I8: return (float)((const int8_t *)row)[i] * scale;
    default: return ((const float *)row)[i];
    }
}

static float ref_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
    float s = 0;
    if (t == KERN_VTYPE_I8) {
        /* the scale is common to the row: multiply once at the end, as the SIMD variants do */
        const int8_t *r = row;
        for (int64_t i = 0; i < n; i++) s += (float)r[i] * q[i];
        return s * scale;
    }
    for (int64_t i = 0; i < n; i++) s += row_value(t, row, scale, i) * q[i];
    return s;
}

static float ref_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
    float s = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = row_value(t, row, scale, i) - q[i];
        s += d * d;
    }
    return s;
}

float kern_vec_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
#if defined(__x86_64__)
    switch (kern_isa_active()) {
    case KERN_ISA_AVX512: return kern_vec_avx512_dot(t, row, scale, q, n);
    case KERN_ISA_AVX2: return kern_vec_avx2_dot(t, row, scale, q, n);
    default: break;
    }
#endif
    return ref_dot(t, row, scale, q, n);
}

float kern_vec_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n)
{
#if defined(__x86_64__)
    switch (kern_isa_active()) {
    case KERN_ISA_AVX512: return kern_vec_avx512_l2sq(t, row, scale, q, n);
    case KERN_ISA_AVX2: return kern_vec_avx2_l2sq(t, row, scale, q, n);
    default: break;
    }
#endif
    return ref_l2sq(t, row, scale, q, n);
}
