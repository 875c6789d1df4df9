/*
 * kern_internal.h: private to src/kernels/. The byte layouts of ggml's block formats (they
 * must stay bit-exact with ggml-common.h, since the weights come straight from GGUF files),
 * the scalar reference entry points, and the per-ISA dispatch table that kernels.c fills
 * at start-up. Nothing outside src/kernels/ includes this file; kernels.h is the interface.
 */
#ifndef DK_KERN_INTERNAL_H
#define DK_KERN_INTERNAL_H

#include <stdint.h>

#include "kernels/kernels.h"

#define KERN_QK 32     /* values per legacy block */
#define KERN_QK_K 256  /* values per K-quant super-block */

/* Legacy blocks: d (and m) are fp16; value i of the block is (nibble or byte) * d (+ m). */
typedef struct { uint16_t d; uint8_t qs[16]; } kern_block_q4_0;              /* lo nibbles: 0..15, hi: 16..31; q - 8 */
typedef struct { uint16_t d, m; uint8_t qs[16]; } kern_block_q4_1;           /* q * d + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } kern_block_q5_0; /* 5th bit of value j in bit j of qh (LE u32); q - 16 */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } kern_block_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } kern_block_q8_0;

/* K-quants: super-blocks of 256 values with per-sub-block scales. */
typedef struct {
    uint8_t scales[16];  /* sub-block (16 values) j: low nibble scale, high nibble min */
    uint8_t qs[64];      /* value 128n + 32j + l: bits 2j..2j+1 of qs[32n + l] */
    uint16_t d, dmin;    /* fp16 super-scales for scales and mins */
} kern_block_q2_k;
typedef struct {
    uint8_t hmask[32];   /* value 128n + 32j + l: high bit = bit 4n+j of hmask[l]; clear means -4 */
    uint8_t qs[64];      /* low 2 bits as in Q2_K */
    uint8_t scales[12];  /* 16 6-bit scales (biased by 32): low 4 bits in bytes 0..7, high 2 in 8..11 */
    uint16_t d;
} kern_block_q3_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];  /* 8 6-bit scales and 8 6-bit mins, packed (see get_scale_min) */
    uint8_t qs[128];     /* chunk k of 64 values: lo nibbles of qs[32k..] = first 32, hi = next 32 */
} kern_block_q4_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];      /* 5th bit of value 64k + l in bit 2k of qh[l], of 64k + 32 + l in bit 2k+1 */
    uint8_t qs[128];
} kern_block_q5_k;
typedef struct {
    uint8_t ql[128];     /* low 4 bits */
    uint8_t qh[64];      /* high 2 bits */
    int8_t scales[16];   /* one per 16 values */
    uint16_t d;
} kern_block_q6_k;
typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];   /* sums of each 16 qs */
} kern_block_q8_k;

_Static_assert(sizeof(kern_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(kern_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(kern_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(kern_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(kern_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(kern_block_q2_k) == 84, "q2_k layout");
_Static_assert(sizeof(kern_block_q3_k) == 110, "q3_k layout");
_Static_assert(sizeof(kern_block_q4_k) == 144, "q4_k layout");
_Static_assert(sizeof(kern_block_q5_k) == 176, "q5_k layout");
_Static_assert(sizeof(kern_block_q6_k) == 210, "q6_k layout");
_Static_assert(sizeof(kern_block_q8_k) == 292, "q8_k layout");

/* Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the packed 12 bytes. */
static inline void kern_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* A row dot product: sum_i dequant(row)[i] * x[i], n a multiple of the block size. */
typedef float (*kern_dot_fn)(const void *row, const float *x, int64_t n);

/* What an instruction-set variant provides; NULL entries fall back to the reference. */
typedef struct kern_isa_ops {
    kern_dot_fn dot[GGUF_TYPE_COUNT];
} kern_isa_ops;

/* quants_ref.c */
void kern_ref_dequantize_row(enum gguf_tensor_type type, const void *src, float *dst, int64_t n);
void kern_ref_quantize_row(enum gguf_tensor_type type, const float *src, void *dst, int64_t n);
void kern_ref_fill_ops(kern_isa_ops *ops);  /* every weight type's reference dot */

/* arch/x86 (only built on x86-64); each overrides the entries it implements. */
void kern_avx2_fill_ops(kern_isa_ops *ops);
void kern_avx512_fill_ops(kern_isa_ops *ops);

/* kernels.c: the table of the active variant. */
const kern_isa_ops *kern_ops(void);

#endif
