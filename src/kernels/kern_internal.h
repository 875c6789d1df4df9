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

/* Q4_K/Q5_K: the float scale d * sc_j and offset -dmin * m_j of the 8 sub-blocks. */
static inline void kern_k4_sub_scales(const uint8_t *scales, float d, float dmin, float *ws, float *mw)
{
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kern_scale_min_k4(j, scales, &sc, &m);
        ws[j] = d * (float)sc;
        mw[j] = -dmin * (float)m;
    }
}

/* A row dot product: sum_i dequant(row)[i] * x[i], n a multiple of the block size. */
typedef float (*kern_dot_fn)(const void *row, const float *x, int64_t n);

/* ---- the fast path: integer weights against quantized activations ----
 *
 * Every quantized weight type is read as super-blocks of sbk values (its own block: 32 for
 * the legacy types, 256 for the K-quants), each made of sub-blocks of bk values (16 or 32)
 * that share a float scale ws and offset mw:   w_i = ws * u_i + mw,   u_i an unsigned byte.
 * (Q4_0: u = nibble, ws = d, mw = -8d; Q8_0: u = q + 128, mw = -128d; Q4_K: ws = d*sc_j,
 * mw = -dmin*m_j; Q6_K: u = 6-bit value, mw = -32*ws; ...)
 *
 * Activations are quantized per super-block to int8 with one float scale (kern_act_sb):
 * x_i ~= d * q_i, and carry the float sums S_j of q over each sub-block. Then
 *     sum_i w_i x_i ~= sum_sb d * sum_j (ws_j * I_j + mw_j * S_j),   I_j = sum_{i in j} u_i q_i
 * where I_j is an exact integer dot product (u8 x s8, what VNNI's vpdpbusd computes).
 * This is ggml's scheme (Q8_0 / Q8_K activations), with float rather than fp16 activation
 * scales. The scalar reference (quants_fast.c) defines the numbers; the ISA variants only
 * change the order of the float additions. */
typedef struct kern_qgeom {
    int sbk;       /* values per super-block: the weight type's block size (32 or 256) */
    int bk;        /* values per sub-block sharing ws/mw: 16 or 32 */
    int u_max;     /* largest unsigned weight value (AVX2's 16-bit pair sums need u <= 127) */
} kern_qgeom;

/* Activation row for super-blocks of sbk values with sub-blocks of bk: per super-block
 *     float d; float s[sbk / bk]; int8_t q[sbk];
 * (kern_act_sb_bytes(g) bytes each, q 4-byte aligned). */
static inline size_t kern_act_sb_bytes(const kern_qgeom *g) { return 4 + 4 * (size_t)(g->sbk / g->bk) + (size_t)g->sbk; }
static inline size_t kern_act_q_offset(const kern_qgeom *g) { return 4 + 4 * (size_t)(g->sbk / g->bk); }

/* Geometry of a weight type on the fast path, NULL for F32/F16/BF16 (which stay float). */
const kern_qgeom *kern_qgeom_of(enum gguf_tensor_type type);

/* Panel: 32 weight rows unpacked for the GEMM micro-kernels. For each sub-block (k0 = 0, bk,
 * 2bk, ... < n_in), KERN_PANEL_ROWS rows:
 *     uint8_t u[bk / 4][32][4];   u of row r, values k0+4g .. k0+4g+3 at [g][r][0..3]
 *     float ws[32], mw[32];
 * Rows past the matrix end are zero (ws = mw = 0). */
#define KERN_PANEL_ROWS 32
static inline size_t kern_panel_sub_bytes(const kern_qgeom *g) { return (size_t)g->bk * KERN_PANEL_ROWS + 2 * 4 * KERN_PANEL_ROWS; }
static inline size_t kern_panel_bytes(const kern_qgeom *g, int64_t n_in) { return (size_t)(n_in / g->bk) * kern_panel_sub_bytes(g); }

/* Quantizes n activations (n a multiple of g->sbk) into kern_act rows. */
typedef void (*kern_act_quant_fn)(const kern_qgeom *g, const float *x, void *dst, int64_t n);
/* Fast dot of one weight row with one quantized activation row. */
typedef float (*kern_qdot_fn)(const void *row, const void *xa, int64_t n);
/* y[t * y_stride + r] = sum over the panel's n_in values of row r with activation row t
 * (xa + t * xa_stride), for t < n_tok and r < n_rows (<= 32). */
typedef void (*kern_gemm_q_fn)(const kern_qgeom *g, const uint8_t *panel, int64_t n_in, const uint8_t *xa,
                               size_t xa_stride, int64_t n_tok, float *y, int64_t y_stride, int n_rows);
/* Float panel: n_in values of 32 rows, value k of row r at [k][r]. Same contract, float x
 * (x + t * x_stride); accumulate adds to y instead of storing (for chunks of n_in). */
typedef void (*kern_gemm_f_fn)(const float *panel, int64_t n_in, const float *x, int64_t x_stride, int64_t n_tok,
                               float *y, int64_t y_stride, int n_rows, bool accumulate);

/* The two attention products (contracts in kernels.h: kern_attn_scores, kern_attn_values). */
typedef void (*kern_attn_scores_fn)(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1,
                                    float *sc, int64_t sc_stride);
typedef void (*kern_attn_values_fn)(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16,
                                    int64_t p0, int64_t p1, float *out, int64_t out_stride);
void kern_ref_attn_scores(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1, float *sc,
                          int64_t sc_stride);
void kern_ref_attn_values(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16, int64_t p0,
                          int64_t p1, float *out, int64_t out_stride);

/* packed.c: weights repacked in groups of 16 rows (layout at the top of packed.c). */
struct kern_packed {
    enum gguf_tensor_type type;
    int64_t n_in, n_out;
    int group_rows;      /* 16 (quantized types) or 32 (F32, F16, BF16) */
    int64_t n_groups;    /* ceil(n_out / group_rows) */
    int64_t n_sb;        /* super-blocks per row (float types: values per row) */
    size_t gsb_bytes;    /* bytes per (group, super-block) */
    uint8_t *data;       /* (n_groups, n_sb) group-super-blocks */
};
int kern_packed_group_sb_bytes(enum gguf_tensor_type type); /* 0 if not packable */
/* y[t * y_stride + r] for t < n_tok, r < n_rows (<= group_rows) = row group_rows * group + r
 * of p times activation row t (xa + t * xa_stride bytes): quantized in the
 * kern_qgeom_of(p->type) format, or floats for F32/F16/BF16 weights. */
typedef void (*kern_gemm_p_fn)(const kern_packed *p, int64_t group, const uint8_t *xa, size_t xa_stride, int64_t n_tok,
                               float *y, int64_t y_stride, int n_rows);
void kern_ref_gemm_packed(const kern_packed *p, int64_t group, const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                          int64_t y_stride, int n_rows);

/* The micro-kernels are specialised per number of tokens MR (a constant at each call, so
 * their accumulators stay in registers): runs TILE(MAX) over tokens t = t0, t0 + MAX, ...
 * of n_tok and the tail with its own constant MR (< MAX <= 8). TILE reads t. */
#define KERN_TOKEN_TILES(t, n_tok, MAX, TILE)                                     \
    do {                                                                           \
        for (; (t) + (MAX) <= (n_tok); (t) += (MAX)) TILE(MAX);                    \
        switch ((n_tok) - (t)) {                                                   \
        case 7: TILE(7); break;                                                    \
        case 6: TILE(6); break;                                                    \
        case 5: TILE(5); break;                                                    \
        case 4: TILE(4); break;                                                    \
        case 3: TILE(3); break;                                                    \
        case 2: TILE(2); break;                                                    \
        case 1: TILE(1); break;                                                    \
        default: break;                                                            \
        }                                                                          \
    } while (0)

/* Defines gemm_p_<type> for the packed types of an ISA file from its generic kernels
 * INT(T, ...) and FLOAT(T, ...) (always-inline, specialised by the constant type T), and
 * KERN_SET_PACKED_GEMMS(ops) fills them into a table. */
#define KERN_DEF_PACKED_GEMM(name, T, FN)                                                                          \
    static void gemm_p_##name(const kern_packed *p, int64_t group, const uint8_t *xa, size_t xa_stride, int64_t n_tok, \
                              float *y, int64_t y_stride, int n_rows)                                                \
    {                                                                                                            \
        FN(T, p, group, xa, xa_stride, n_tok, y, y_stride, n_rows);                                              \
    }
#define KERN_DEF_PACKED_GEMMS(INT, FLOAT)                   \
    KERN_DEF_PACKED_GEMM(q8_0, GGUF_TYPE_Q8_0, INT)         \
    KERN_DEF_PACKED_GEMM(q4_0, GGUF_TYPE_Q4_0, INT)         \
    KERN_DEF_PACKED_GEMM(q4_1, GGUF_TYPE_Q4_1, INT)         \
    KERN_DEF_PACKED_GEMM(q5_0, GGUF_TYPE_Q5_0, INT)         \
    KERN_DEF_PACKED_GEMM(q5_1, GGUF_TYPE_Q5_1, INT)         \
    KERN_DEF_PACKED_GEMM(q4_k, GGUF_TYPE_Q4_K, INT)         \
    KERN_DEF_PACKED_GEMM(q5_k, GGUF_TYPE_Q5_K, INT)         \
    KERN_DEF_PACKED_GEMM(q6_k, GGUF_TYPE_Q6_K, INT)         \
    KERN_DEF_PACKED_GEMM(q2_k, GGUF_TYPE_Q2_K, INT)         \
    KERN_DEF_PACKED_GEMM(q3_k, GGUF_TYPE_Q3_K, INT)         \
    KERN_DEF_PACKED_GEMM(f32, GGUF_TYPE_F32, FLOAT)         \
    KERN_DEF_PACKED_GEMM(f16, GGUF_TYPE_F16, FLOAT)         \
    KERN_DEF_PACKED_GEMM(bf16, GGUF_TYPE_BF16, FLOAT)
#define KERN_SET_PACKED_GEMMS(ops)                          \
    do {                                                    \
        (ops)->gemm_p[GGUF_TYPE_Q8_0] = gemm_p_q8_0;        \
        (ops)->gemm_p[GGUF_TYPE_Q4_0] = gemm_p_q4_0;        \
        (ops)->gemm_p[GGUF_TYPE_Q4_1] = gemm_p_q4_1;        \
        (ops)->gemm_p[GGUF_TYPE_Q5_0] = gemm_p_q5_0;        \
        (ops)->gemm_p[GGUF_TYPE_Q5_1] = gemm_p_q5_1;        \
        (ops)->gemm_p[GGUF_TYPE_Q4_K] = gemm_p_q4_k;        \
        (ops)->gemm_p[GGUF_TYPE_Q5_K] = gemm_p_q5_k;        \
        (ops)->gemm_p[GGUF_TYPE_Q6_K] = gemm_p_q6_k;        \
        (ops)->gemm_p[GGUF_TYPE_Q2_K] = gemm_p_q2_k;        \
        (ops)->gemm_p[GGUF_TYPE_Q3_K] = gemm_p_q3_k;        \
        (ops)->gemm_p[GGUF_TYPE_F32] = gemm_p_f32;          \
        (ops)->gemm_p[GGUF_TYPE_F16] = gemm_p_f16;          \
        (ops)->gemm_p[GGUF_TYPE_BF16] = gemm_p_bf16;        \
    } while (0)

/* What an instruction-set variant provides; NULL entries fall back to the reference. */
typedef struct kern_isa_ops {
    kern_dot_fn dot[GGUF_TYPE_COUNT];
    kern_qdot_fn qdot[GGUF_TYPE_COUNT];
    kern_act_quant_fn act_quant;
    kern_gemm_q_fn gemm_q;
    kern_gemm_f_fn gemm_f;
    kern_gemm_p_fn gemm_p[GGUF_TYPE_COUNT];
    double (*softmax)(float *x, int64_t n, float *max); /* kern_softmax_stats */
    void (*silu)(float *x, int64_t n);
    kern_attn_scores_fn attn_scores;
    kern_attn_values_fn attn_values;
} kern_isa_ops;

/* kernels_ref.c: references of the vectorised row kernels. */
double kern_ref_softmax(float *x, int64_t n, float *max);
void kern_ref_silu(float *x, int64_t n);

/* quants_fast.c: the reference of the fast path. */
void kern_ref_act_quant(const kern_qgeom *g, const float *x, void *dst, int64_t n);
/* One super-block i_sb of a weight row: u (sbk bytes), ws and mw (sbk / bk floats). */
void kern_ref_unpack_sb(enum gguf_tensor_type type, const void *row, int64_t i_sb, uint8_t *u, float *ws, float *mw);
/* Packs rows [r0, r0 + n_rows) (n_rows <= 32) of a matrix into a panel. */
void kern_panel_pack(const kern_matrix *w, int64_t r0, int n_rows, uint8_t *panel);
/* Float panel of rows [r0, r0+n_rows), values [k0, k0+n_k): dst[(k - k0) * 32 + r]. */
void kern_panel_pack_f(const kern_matrix *w, int64_t r0, int n_rows, int64_t k0, int64_t n_k, float *dst);
void kern_ref_fill_fast_ops(kern_isa_ops *ops);

/* quants_ref.c */
void kern_ref_dequantize_row(enum gguf_tensor_type type, const void *src, float *dst, int64_t n);
void kern_ref_quantize_row(enum gguf_tensor_type type, const float *src, void *dst, int64_t n);
void kern_ref_fill_ops(kern_isa_ops *ops);  /* every weight type's reference dot */

/* arch/x86 (only built on x86-64); each overrides the entries it implements. */
void kern_avx2_fill_ops(kern_isa_ops *ops);
void kern_avx512_fill_ops(kern_isa_ops *ops);
void kern_avx2_fill_fast_ops(kern_isa_ops *ops);
void kern_avx512_fill_fast_ops(kern_isa_ops *ops);
/* vector distances of rag/'s search (vec.c dispatches to them per call) */
float kern_vec_avx2_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n);
float kern_vec_avx2_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n);
float kern_vec_avx512_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n);
float kern_vec_avx512_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n);

/* kernels.c: the table of the active variant. */
const kern_isa_ops *kern_ops(void);

#endif
