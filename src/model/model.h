/*
 * model: the architectures duckling runs, their weights bound in place, a KV cache and the
 * forward pass.
 *
 * model_load reads general.architecture and the <arch>.* hyperparameters of a GGUF file,
 * binds every tensor as a kern_matrix (weights stay in their file blocks; only small 1-D
 * norm/bias vectors are converted to float at load) and validates every shape against the
 * hyperparameters. Families: llama (Llama 2/3.x, TinyLlama, SmolLM2, Mistral), qwen2, qwen3,
 * gemma2, gemma3, phi3 (causal decoders) and bert (encoder for embeddings, and with a
 * classification head for reranking). The semantics follow llama.cpp exactly (see
 * kit/README.md section 4).
 *
 * A model_ctx is one sequence being evaluated: a KV cache of n_ctx positions (F32, or F16
 * with MODEL_NUMERICS_FAST) per layer and kv head, keys in transposed blocks of 16
 * positions and values row-major (kernels.h, "attention over a KV cache"), a thread pool,
 * and scratch memory sized up front for n_batch tokens.
 *
 * Not for: tokenization (tokenize/), sampling (sample/), chat templates. Several sequences
 * share one forward pass through model_decode_batch (causal, each its own context) or
 * model_encode_batch (encoders, packed into one context).
 * Thread safety: a model is immutable after model_load and may be shared by any number of
 * contexts in any threads; a model_ctx belongs to one thread at a time.
 */
#ifndef DK_MODEL_H
#define DK_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "gguf/gguf.h"

enum model_arch {
    MODEL_ARCH_LLAMA = 0,
    MODEL_ARCH_QWEN2,
    MODEL_ARCH_QWEN3,
    MODEL_ARCH_GEMMA2,
    MODEL_ARCH_GEMMA3,
    MODEL_ARCH_PHI3,
    MODEL_ARCH_BERT,
    MODEL_ARCH_COUNT
};

/* Pooling of an encoder's per-token hidden states (numbered as llama.cpp's pooling_type). */
enum model_pooling {
    MODEL_POOLING_UNSPECIFIED = -1, /* in model_encode: use the model's own */
    MODEL_POOLING_NONE = 0,
    MODEL_POOLING_MEAN = 1,
    MODEL_POOLING_CLS = 2,
    MODEL_POOLING_LAST = 3,
    MODEL_POOLING_RANK = 4, /* a cross-encoder: the [CLS] state through the classification head
                               (cls.weight/bias + tanh, then cls.output.weight/bias, each optional
                               as in llama.cpp), n_cls_out scores per sequence */
};

/* Hyperparameters as read (and defaulted) from the file. */
typedef struct model_hparams {
    enum model_arch arch;
    const char *arch_name;   /* "llama", "qwen2", ...; static string */
    int64_t n_vocab;
    int64_t n_ctx_train;     /* <arch>.context_length; 0 if absent */
    int64_t n_embd;
    int64_t n_layer;
    int64_t n_ff;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t head_dim_k;      /* attention.key_length, default n_embd / n_head */
    int64_t head_dim_v;      /* attention.value_length, default head_dim_k */
    int64_t n_rot;           /* rope.dimension_count, default head_dim_k */
    float norm_eps;          /* layer_norm_rms_epsilon (or layer_norm_epsilon for bert) */
    float rope_base;         /* rope.freq_base (global layers) */
    float rope_base_swa;     /* rope.freq_base_swa (gemma3 SWA layers) */
    float rope_scale_linear; /* rope.scaling.factor for type "linear", else 1 */
    bool rope_neox;          /* NEOX pairs (i, i+n_rot/2) rather than (2i, 2i+1) */
    int64_t n_swa;           /* attention.sliding_window; 0 = none */
    int64_t swa_period;      /* layer il is SWA when n_swa > 0 and il % period < period - 1;
                                0 when the file gives per-layer flags (an array) instead */
    float attn_softcap;      /* 0 = none */
    float final_softcap;     /* 0 = none */
    float attn_scale;        /* kq scale, 1/sqrt(head_dim_k) (gemma 27B: 1/sqrt(n_embd/n_head)) */
    bool causal;             /* false for bert */
    enum model_pooling pooling; /* encoders: <arch>.pooling_type; NONE for decoders */
    int64_t n_pos_embd;      /* bert: rows of position_embd (max tokens per sequence) */
    int64_t n_cls_out;       /* bert: outputs of the classification head (classifier.output_labels
                                entries, default 1); what MODEL_POOLING_RANK gives per sequence */
    bool has_cls_head;       /* bert: cls.weight or cls.output.weight is present */
} model_hparams;

typedef struct model_weights model_weights;

/* Loads the model of an open GGUF file. The model borrows f (its weights point into the
 * mapping): f must stay open until model_free, unless take_file is true, in which case the
 * model owns f (also on failure: then f is closed). Free the model with model_free.
 * Errors: DK_ERR_UNSUPPORTED (unknown architecture or feature), DK_ERR_FORMAT (missing key
 * or tensor, wrong shape; the message names the tensor and expected/actual shapes),
 * DK_ERR_NOMEM. */
int model_load_gguf(model_weights **out, gguf_file *f, bool take_file, char *err);
/* Opens path and loads it; the model owns the file. */
int model_load(model_weights **out, const char *path, char *err);
void model_free(model_weights *m); /* NULL is fine; all contexts of m must be freed first */

/* Repacks the weight matrices for MODEL_NUMERICS_FAST contexts (row-interleaved groups that
 * both decode and prefill kernels read; same bytes per weight as the file, which may then
 * be paged out). Optional: FAST contexts of an unprepared model use slower kernels with the
 * same numerics. Call once, before creating contexts; not thread-safe. Idempotent.
 * DK_ERR_NOMEM (the model stays usable, unprepared). */
int model_prepare_fast(model_weights *m, int n_threads, char *err);

const model_hparams *model_get_hparams(const model_weights *m);   /* owned by m */
const gguf_file *model_get_file(const model_weights *m);          /* owned by m or borrowed, see above */

typedef struct model_ctx model_ctx;

/* How the matrix products and the KV cache compute (see kernels.h, enum kern_precision). */
enum model_numerics {
    MODEL_NUMERICS_EXACT = 0, /* F32 math on the dequantized weights, F32 KV cache: the kit's exact refs */
    MODEL_NUMERICS_FAST = 1,  /* llama.cpp's numerics: int8-quantized activations against integer
                                 weights, F16 KV cache for causal models (encoders keep F32) */
};

typedef struct model_ctx_params {
    int64_t n_ctx;     /* KV cache positions; <= 0: min(n_ctx_train, 4096) (512 if unknown) */
    int64_t n_batch;   /* most tokens per forward step (scratch size); <= 0: min(n_ctx, 512) */
    int n_threads;     /* <= 0: number of online CPUs */
    enum model_numerics numerics; /* default EXACT */
    enum model_ctx_kind {
        MODEL_CTX_FULL = 0,     /* KV cache and scratch: model_decode / model_encode */
        MODEL_CTX_KV_ONLY,      /* only the KV cache (and n_past): a sequence of model_decode_batch */
        MODEL_CTX_SCRATCH_ONLY, /* only scratch for n_batch rows and threads: the scratch of
                                   model_decode_batch; n_ctx bounds the sequences it serves */
    } kind;
} model_ctx_params;

model_ctx_params model_ctx_default_params(void);

/* Creates a context of m (borrowed: m must outlive it). Free with model_ctx_free. Allocates
 * the KV cache and all scratch memory now. */
int model_ctx_new(model_ctx **out, const model_weights *m, const model_ctx_params *params, char *err);
void model_ctx_free(model_ctx *c); /* NULL is fine */

int64_t model_ctx_n_ctx(const model_ctx *c);
int64_t model_ctx_n_past(const model_ctx *c);     /* positions held in the KV cache */
/* Forgets every position >= n_keep (0 clears the cache). DK_ERR_ARG if n_keep > n_past. */
int model_ctx_truncate(model_ctx *c, int64_t n_keep, char *err);

/* Causal models: evaluates tokens[0..n_tok) at positions n_past .. n_past+n_tok-1 (in steps
 * of at most n_batch tokens, so a whole prompt goes through as one batch when it fits) and
 * appends them to the KV cache. logits, if not NULL, receives (n_tok, n_vocab) floats when
 * all_logits, else (1, n_vocab) for the last token only. Errors: DK_ERR_LIMIT when the tokens
 * would not fit in n_ctx (nothing is evaluated), DK_ERR_ARG for a token id out of range or an
 * encoder model. */
int model_decode(model_ctx *c, const int32_t *tokens, int64_t n_tok, bool all_logits,
                 float *logits, char *err);

/* One sequence's part of a shared forward pass: n_tok tokens appended to ctx's KV cache at
 * positions n_past.. (ctx: MODEL_CTX_KV_ONLY or FULL, of the same model and numerics). */
typedef struct model_seq {
    model_ctx *ctx;
    const int32_t *tokens;
    int64_t n_tok;
    bool no_logits;   /* a prompt chunk that is not the last: its row of logits is not computed
                         (its contents are unspecified afterwards) */
} model_seq;

/* Causal models: evaluates several sequences in one forward pass, with scratch's buffers
 * and threads (scratch: MODEL_CTX_SCRATCH_ONLY or FULL): the matrix products see all rows
 * at once, so the weights are read once for every sequence; each row attends to its own
 * sequence's cache. logits (n_seqs, n_vocab) receives the logits of each sequence's last
 * token. Errors (nothing is evaluated): DK_ERR_LIMIT if the rows exceed scratch's n_batch or a
 * sequence would overflow its n_ctx, DK_ERR_ARG for a bad token, an empty or repeated
 * sequence, a sequence whose n_ctx exceeds scratch's, a context without a KV cache. */
int model_decode_batch(model_ctx *scratch, const model_seq *seqs, int64_t n_seqs, float *logits, char *err);

/* Encoders (bert): one sequence tokens[0..n_tok), evaluated non-causally from position 0
 * (the KV cache is cleared first). pooling MODEL_POOLING_UNSPECIFIED means the model's own.
 * With pooling NONE, out receives (n_tok, n_embd) hidden states; RANK (n_cls_out) scores of
 * the classification head; otherwise (n_embd) pooled. normalize: divide each output vector by
 * its L2 norm (sum of squares in double; never for RANK scores).
 * DK_ERR_LIMIT if n_tok > n_batch or > the position embeddings; DK_ERR_ARG for a causal model,
 * RANK without a classification head. */
int model_encode(model_ctx *c, const int32_t *tokens, int64_t n_tok, enum model_pooling pooling,
                 bool normalize, float *out, char *err);

/* Values model_encode gives per sequence for pooling (resolved as there): n_cls_out for RANK,
 * n_embd otherwise (NONE: per token). */
int64_t model_pooled_size(const model_weights *m, enum model_pooling pooling);

/* Encoders: n_seqs sequences (tokens[i][0..n_tok[i])) packed into one forward pass: the rows
 * of all of them go through the matrix products together, each attends only to the rows of
 * its own sequence (a block-diagonal mask), positions restart at 0 for each, and each is
 * pooled on its own. out receives, one after the other, what model_encode would give for each
 * sequence alone ((n_tok[i], n_embd) rows for NONE, else model_pooled_size values), equal to
 * it up to float rounding. Errors (nothing is evaluated): DK_ERR_LIMIT when the rows exceed
 * n_batch or a sequence exceeds the position embeddings; DK_ERR_ARG as model_encode, and for
 * an empty sequence or none at all. */
int model_encode_batch(model_ctx *c, const int32_t *const *tokens, const int64_t *n_tok, int64_t n_seqs,
                       enum model_pooling pooling, bool normalize, float *out, char *err);

#endif
