/*
 * kernels: the numeric building blocks of the forward pass, on weights that stay in their
 * GGUF block formats (no dequantization of whole tensors at load).
 *
 * For each block type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K,
 * Q6_K, plus the activation formats Q8_0/Q8_K): dequantize a row, quantize a row, and the
 * dot product of a weight row with float activations. On top of them: a matmul over a
 * batch of activation rows, RMSNorm, LayerNorm, RoPE (normal and NeoX, with Llama-3
 * frequency factors), softmax, SiLU and GELU, and a thread pool.
 *
 * Every kernel has a portable scalar reference (kernels_ref.c). Instruction-set variants live
 * in src/kernels/arch/<isa>/ and are chosen once at start-up from the CPU's features;
 * kern_isa_force() lets tests run each variant against the reference.
 *
 * Numerics: the reference dot product dequantizes each block to float and accumulates in
 * float, i.e. "F32 math on the dequantized weights" (what the kit calls the exact
 * reference). Faster variants may quantize activations (as ggml does) only where the result
 * stays within the tolerances the tests state.
 *
 * Thread safety: all kernels are pure functions of their arguments; a kern_pool is driven by
 * one thread at a time.
 */
#ifndef DK_KERNELS_H
#define DK_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

/* ---- instruction sets ---- */
enum kern_isa {
    KERN_ISA_SCALAR = 0,
    KERN_ISA_AVX2 = 1,
    KERN_ISA_AVX512 = 2,
    KERN_ISA_NEON = 3,
    KERN_ISA_COUNT
};
enum kern_isa kern_isa_best(void);          /* best the CPU and this build support */
enum kern_isa kern_isa_active(void);        /* the one in use */
bool kern_isa_supported(enum kern_isa isa);
/* Selects a variant (tests, DUCKLING_ISA=scalar|avx2|avx512|neon); DK_ERR_UNSUPPORTED if the
 * CPU or build lacks it. Not thread-safe: call before any kernel runs. */
int kern_isa_force(enum kern_isa isa);
const char *kern_isa_name(enum kern_isa isa);

/* ---- scalar conversions ---- */
float kern_fp16_to_fp32(uint16_t h);
uint16_t kern_fp32_to_fp16(float f);   /* round to nearest even */
float kern_bf16_to_fp32(uint16_t h);
uint16_t kern_fp32_to_bf16(float f);   /* round to nearest even, NaN preserved */

/* ---- rows of block types ----
 * n is the number of values in the row and must be a multiple of the type's block size.
 * Supported types: every weight type above; Q8_K only for quantize/dequantize. */
void kern_dequantize_row(enum gguf_tensor_type type, const void *src, float *dst, int64_t n);
/* Reference quantizer (round-to-nearest for legacy types, an error-minimising search of
 * scales for K-quants). dst holds gguf_row_bytes(type, n) bytes. */
void kern_quantize_row(enum gguf_tensor_type type, const float *src, void *dst, int64_t n);
/* sum_i dequant(row)[i] * x[i] */
float kern_dot_row(enum gguf_tensor_type type, const void *row, const float *x, int64_t n);

typedef struct kern_pool kern_pool;

/* Weights repacked for the fast path (rows interleaved in groups of 16; see packed.c). */
typedef struct kern_packed kern_packed;

/* The fast path's dot product of one row with x (KERN_PRECISION_FAST, see below): x is
 * quantized as the fast matmuls quantize it and multiplied with the row's integers; F32,
 * F16 and BF16 rows give kern_dot_row. 0 for lengths that are not whole blocks or when out
 * of memory. For tests and tools; the matmuls do not call it. */
float kern_dot_row_fast(enum gguf_tensor_type type, const void *row, const float *x, int64_t n);

/* ---- a weight matrix as stored in the file: n_out rows of n_in values ---- */
typedef struct kern_matrix {
    enum gguf_tensor_type type;
    int64_t n_in;        /* values per row (ne[0]) */
    int64_t n_out;       /* rows (ne[1]) */
    size_t row_bytes;    /* bytes per row */
    const void *data;    /* n_out * row_bytes bytes, usually inside the mapped file */
} kern_matrix;

/* Whether kern_pack handles a type (F32, F16, BF16 and every quantized weight type). */
bool kern_packable(enum gguf_tensor_type type);
/* Repacks m (spread over pool's threads; pool may be NULL) into *out, which the caller
 * frees with kern_packed_free; same bytes per weight as the file (K-quants: +4 per 256).
 * DK_ERR_UNSUPPORTED for other types, DK_ERR_NOMEM. */
int kern_pack(const kern_matrix *m, kern_packed **out, kern_pool *pool);
void kern_packed_free(kern_packed *p); /* NULL is fine */

/* Fills m from a 2-D (or 1-D, n_out = 1) GGUF tensor. */
int kern_matrix_from_tensor(kern_matrix *m, const gguf_tensor *t, char *err);

/* Y[t][o] = sum_i W[o][i] * X[t][i] for t < n_tok.
 * X: (n_tok, n_in) row-major floats; Y: (n_tok, n_out). pool may be NULL (single-threaded). */
void kern_matmul(const kern_matrix *w, const float *x, int64_t n_tok, float *y, kern_pool *pool);

/* ---- precision of matrix products ----
 * EXACT: F32 math on the dequantized weights (kern_matmul; the kit's "exact" references).
 * FAST: what llama.cpp computes, faster: activations are quantized to int8 per block (a
 * float scale per 32 values for the legacy types, per 256 for the K-quants, as ggml's
 * Q8_0/Q8_K but with float scales) and multiplied with the weights' integers exactly;
 * F32/F16/BF16 weights keep F32 activations. Prefill batches go through packed panels and
 * register-blocked micro-kernels (VNNI where the CPU has it). */
enum kern_precision {
    KERN_PRECISION_EXACT = 0,
    KERN_PRECISION_FAST = 1,
};

/* Scratch of kern_matmul_many: quantized activations and per-thread panels, sized for up
 * to max_tok rows of up to max_in values and n_threads threads. Free with
 * kern_workspace_free. NULL when out of memory. */
typedef struct kern_workspace kern_workspace;
kern_workspace *kern_workspace_new(int64_t max_tok, int64_t max_in, int n_threads);
void kern_workspace_free(kern_workspace *ws); /* NULL is fine */

/* One product of a kern_matmul_many call: y (n_tok, w->n_out) = x w^T. packed: NULL, or
 * kern_pack's copy of w, which FAST then reads instead. */
typedef struct kern_mm {
    const kern_matrix *w;
    const kern_packed *packed;
    float *y;
} kern_mm;

/* Computes every product of mm[0..n_mm) for the same input x (n_tok, n_in) (all w with the
 * same n_in <= the workspace's max_in, n_tok <= max_tok) in one parallel run. EXACT gives
 * exactly kern_matmul's results. n_mm <= KERN_MM_MAX. */
#define KERN_MM_MAX 4
void kern_matmul_many(const kern_mm *mm, int n_mm, const float *x, int64_t n_tok, enum kern_precision prec,
                      kern_workspace *ws, kern_pool *pool);

/* ---- element-wise and row kernels (out may equal x) ---- */
void kern_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps); /* w may be NULL */
void kern_layernorm(float *out, const float *x, const float *w, const float *b, int64_t n, float eps);
void kern_softmax(float *x, int64_t n);             /* in place, max-subtracted, exp in float, sum in double (as ggml) */
/* kern_softmax that also gives what a split softmax needs to be merged: *max (may be NULL)
 * receives max(x) (-inf when n == 0 or all are -inf) and it returns sum(exp(x - max))
 * before normalisation (0 then). */
double kern_softmax_stats(float *x, int64_t n, float *max);
void kern_silu(float *x, int64_t n);                /* x * sigmoid(x), in place */
/* GELU (tanh form) as ggml's CPU backend computes it: through a table indexed by the fp16
 * value of x for -10 < x < 10, 0 below, x above. Matching it matters for gemma/bert refs. */
void kern_gelu(float *x, int64_t n);
void kern_gelu_exact_tanh(float *x, int64_t n);     /* the same formula in float, no table */
void kern_mul(float *out, const float *a, const float *b, int64_t n);   /* out = a * b */
void kern_add(float *out, const float *a, const float *b, int64_t n);   /* out = a + b */
void kern_scale(float *x, float s, int64_t n);
void kern_softcap(float *x, float cap, int64_t n);  /* x = cap * tanh(x / cap) */

/* RoPE on one token's heads, in place. x: (n_head, head_dim); the first n_rot dimensions of
 * each head are rotated by theta_i = pos * base^(-2i/n_rot) / freq_factors[i] (freq_factors
 * may be NULL). neox = false rotates pairs (2i, 2i+1) (llama); neox = true rotates pairs
 * (i, i + n_rot/2) (qwen2/3, gemma, phi3). */
void kern_rope(float *x, int n_head, int head_dim, int n_rot, int64_t pos, float base,
               const float *freq_factors, bool neox);

/* ---- attention over a KV cache ----
 * One kv head's cache holds keys in blocks of KERN_KV_BLOCK positions, transposed: the
 * key of position p, dimension d is element (p / 16) * dim * 16 + d * 16 + p % 16 (allocate
 * whole blocks); values are row-major: element p * dim + d. Elements are F32 or, with f16,
 * IEEE half floats. */
#define KERN_KV_BLOCK 16
void kern_kv_store_k(void *kt, bool f16, int dim, int64_t pos, const float *k);  /* k: (dim) */
void kern_kv_store_v(void *v, bool f16, int dim, int64_t pos, const float *x);   /* x: (dim) */
/* sc[h * sc_stride + p - p0] = q_h . k_p for heads h < n_head (q: (n_head, dim)) and
 * positions p0 <= p <= p1 of one kv head. */
void kern_attn_scores(const float *q, int n_head, int dim, const void *kt, bool f16, int64_t p0, int64_t p1, float *sc,
                      int64_t sc_stride);
/* out[h * out_stride + d] = sum_{p0 <= p <= p1} w[h * w_stride + p - p0] * v_p[d]. */
void kern_attn_values(const float *w, int64_t w_stride, int n_head, int dim, const void *v, bool f16, int64_t p0,
                      int64_t p1, float *out, int64_t out_stride);

/* ---- vector distances (vec.c; for rag/'s vector search) ----
 * A float query q against one stored vector row of n values: F32 floats, F16 IEEE halves,
 * or I8 int8 values that stand for value * scale (scale is ignored for F32 and F16).
 * kern_vec_dot: sum_i row_i * q_i; kern_vec_l2sq: sum_i (row_i - q_i)^2. Float sums; the
 * ISA variants differ from the reference (arch/x86/vec_*.c) only in the order of additions. */
enum kern_vtype { KERN_VTYPE_F32 = 0, KERN_VTYPE_F16 = 1, KERN_VTYPE_I8 = 2 };
float kern_vec_dot(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n);
float kern_vec_l2sq(enum kern_vtype t, const void *row, float scale, const float *q, int64_t n);

/* ---- thread pool ----
 * kern_pool_run calls fn(ctx, i_task, n_tasks) for every i_task in [0, n_tasks) spread over
 * the pool's threads (the caller's thread works too) and returns when all are done. */
kern_pool *kern_pool_new(int n_threads);   /* n_threads >= 1; NULL on failure */
/* As kern_pool_run, and fn also learns which thread runs it: i_thread in [0, n_threads),
 * the caller being 0, so tasks can use per-thread scratch. */
void kern_pool_run_threads(kern_pool *p, void (*fn)(void *ctx, int i_task, int n_tasks, int i_thread), void *ctx,
                           int n_tasks);
void kern_pool_free(kern_pool *p);         /* NULL is fine */
int kern_pool_threads(const kern_pool *p); /* 1 for NULL */
void kern_pool_run(kern_pool *p, void (*fn)(void *ctx, int i_task, int n_tasks), void *ctx, int n_tasks);

#endif
