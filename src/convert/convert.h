/*
 * convert: conversions into GGUF. Re-quantizing a GGUF model to another tensor type,
 * writing random-weight models with the true shapes of known models (for tests and
 * benchmarks; the weights mean nothing), and turning a Hugging Face tokenizer.json (plus
 * tokenizer_config.json) into a vocabulary-only GGUF. Not a loader or a forward pass: the
 * files written here are read back by the gguf and model layers like any other.
 *
 * All functions stream tensor data through the gguf writer's fill callback, one tensor at
 * a time, so a model is never held in memory twice. Errors: DK_OK or a negative DK_ERR_*
 * with one line in err (DK_ERRLEN bytes).
 */
#ifndef DK_CONVERT_H
#define DK_CONVERT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/base.h"
#include "gguf/gguf.h"

/* ---- quantize ---- */

/* Target of a re-quantization: a plain tensor type name ("Q4_K", "F16", ...) or a mix
 * ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q3_K_M"). Returns the file_type number written
 * to general.file_type (llama.cpp's LLAMA_FTYPE numbering) or -1 if unknown; *base gets the
 * type used for most 2-D weights. */
int convert_ftype_from_name(const char *name, enum gguf_tensor_type *base);
/* The name of a general.file_type number ("Q4_K_M"), NULL if unknown. Static string. */
const char *convert_ftype_name(int ftype);

/* Type chosen for one tensor: 1-D tensors stay F32, 2-D+ weights get the type's (plain
 * names: that type for every weight) or the mix's type for their name and layer (mixes follow
 * llama.cpp's rules: the output matrix, i.e. output.weight or token_embd.weight when the model
 * has no output.weight (has_output false), is Q6_K, ...), and a row length that is not a whole
 * number of blocks falls back (K types -> Q4_0/Q5_0/Q5_1/Q8_0 -> F16). *fallback is set when
 * the fallback applied. */
enum gguf_tensor_type convert_pick_type(const char *mix, const char *tensor_name, uint32_t n_dims,
                                        int64_t ne0, int n_layers, bool has_output, bool *fallback);

/* Reads in_path, writes out_path with every weight converted (dequantize + quantize per
 * row, threads from n_threads, <= 0: online cores). Metadata is copied, general.file_type
 * updated. Progress and fallbacks are reported on log (may be NULL). */
int convert_quantize(const char *in_path, const char *out_path, const char *type_name,
                     int n_threads, FILE *log, char *err);

/* ---- synth ---- */

typedef struct convert_preset {
    const char *name;        /* "smollm2-135m" */
    const char *arch;        /* general.architecture: "llama", "qwen2", ... */
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    float rope_base, norm_eps;
    bool tied;               /* no output.weight (the embedding is reused) */
    const char *vocab_note;  /* where the vocabulary comes from */
    int pooling;             /* bert: pooling_type written (1 mean, 2 CLS; 4 rank: a cross-encoder,
                                with the classification head cls.* of one output) */
} convert_preset;

/* The presets, terminated by an entry with name NULL. */
const convert_preset *convert_presets(void);
const convert_preset *convert_find_preset(const char *name);

typedef struct convert_synth_opts {
    const char *preset;       /* preset name */
    const char *quant;        /* type or mix name, as for convert_quantize */
    const char *out_path;
    uint64_t seed;
    int n_layers;             /* > 0: override the preset's layer count (tests) */
    const char *vocab_from;   /* NULL or a GGUF whose tokenizer.* keys are copied */
    int n_threads;            /* <= 0: online cores */
} convert_synth_opts;

int convert_synth(const convert_synth_opts *o, FILE *log, char *err);

/* ---- tokenizer ---- */

typedef struct convert_tok_opts {
    const char *tokenizer_json;    /* path of tokenizer.json */
    const char *config_json;       /* NULL or path of tokenizer_config.json */
    const char *out_path;
    const char *arch;              /* NULL: "llama" (general.architecture of the vocab file) */
    int64_t pad_vocab_to;          /* > 0: pad the vocabulary with [PADn] UNUSED tokens */
} convert_tok_opts;

/* HF tokenizer.json (model BPE) -> vocab-only GGUF. Byte-level BPE becomes model "gpt2"
 * with the pre-tokenizer named from its regex (llama-bpe, qwen2, gpt2, ...); BPE with
 * byte_fallback becomes model "llama" (SentencePiece) with scores from merge ranks. */
int convert_tokenizer(const convert_tok_opts *o, FILE *log, char *err);

#endif
