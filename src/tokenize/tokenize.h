/*
 * tokenize: text <-> token ids with the vocabulary stored in a GGUF file, exactly as
 * llama.cpp tokenizes (the kit's vectors are the test).
 *
 * - SentencePiece (tokenizer.ggml.model "llama": Llama 2, TinyLlama, Mistral, Phi-3, Gemma):
 *   score-ordered merges, U+2581 for spaces, optional leading space, byte fallback.
 * - Byte-level BPE ("gpt2"): the pre-tokenizer regexes of tokenizer.ggml.pre (gpt2,
 *   llama-bpe/llama3, qwen2, starcoder, falcon, deepseek-coder, deepseek-llm, ...) run with
 *   PCRE2, then rank-ordered merges over GPT-2's byte characters; NFC first when the vocab
 *   says tokenizer.ggml.normalizer = "nfc" (written by convert-tokenizer from tokenizer.json).
 * - WordPiece ("bert"): NFD, marks and controls dropped, lower-cased, punctuation and CJK
 *   split off, greedy longest match of "▁word"; [CLS] ... [SEP] with add_special.
 * Special tokens: control tokens are recognised in the text only when parse_special is asked;
 * user-defined tokens always (llama.cpp's partition, longest token first).
 *
 * Thread safety: a tok_vocab is immutable after tok_vocab_load; use it from any thread.
 */
#ifndef DK_TOKENIZE_H
#define DK_TOKENIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "gguf/gguf.h"

/* Token types, as tokenizer.ggml.token_type numbers them. */
enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

enum tok_model { TOK_MODEL_SPM, TOK_MODEL_BPE, TOK_MODEL_WPM };

typedef struct tok_vocab tok_vocab;

/* Reads the vocabulary of f (tokenizer.ggml.*). f must outlive the vocab (strings point into
 * it). *out is freed with tok_vocab_free. */
int tok_vocab_load(tok_vocab **out, const gguf_file *f, char *err);
void tok_vocab_free(tok_vocab *v); /* NULL is fine */

enum tok_model tok_vocab_model(const tok_vocab *v);
size_t tok_n_vocab(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v);   /* -1 when the vocab has none */
int32_t tok_eos(const tok_vocab *v);
bool tok_is_eog(const tok_vocab *v, int32_t id); /* eos, eot, eom and the like */
enum tok_type tok_token_type(const tok_vocab *v, int32_t id);
/* The token's text as stored (▁ for spaces in SPM); not NUL-terminated. */
gguf_str tok_token_text(const tok_vocab *v, int32_t id);
/* Id of the token whose stored text is exactly s[0..n), or -1. */
int32_t tok_find(const tok_vocab *v, const char *s, size_t n);

/* Tokenizes text[0..n_bytes). add_special adds BOS/EOS as the vocab says; parse_special lets
 * control tokens written in the text become those tokens. *ids (caller frees with dk_free)
 * receives *n_ids ids. */
int tok_encode(const tok_vocab *v, const char *text, size_t n_bytes, bool add_special,
               bool parse_special, int32_t **ids, size_t *n_ids, char *err);

/* Appends the bytes of one token to out (▁ becomes a space, <0xXX> its byte; control
 * tokens add nothing). DK_ERR_ARG for an id out of range. */
int tok_piece(const tok_vocab *v, int32_t id, dk_buf *out, char *err);

#endif
