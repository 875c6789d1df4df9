/*
 * engine: the public inference API that every layer above (cli, server, agent, sql, rag) uses.
 * A thin facade over gguf + tokenize + model + sample:
 *
 *   engine_model    a loaded GGUF file: its tokenizer and, unless loaded vocab-only, its weights.
 *                   Immutable after loading; may be shared by several sessions.
 *   engine_session  one conversation: a KV cache of n_ctx positions and the scratch buffers of
 *                   the forward pass. Evaluates a batch of tokens at the current position
 *                   (prompt processing) or one at a time (generation).
 *   engine_generate prompt in one batch, then sampled tokens one by one until an end-of-generation
 *                   token, a stop string, num_predict tokens or a full context; text is streamed
 *                   through a callback in complete UTF-8 pieces with stop strings cut out.
 *   engine_embed    embeddings of an embedding model (bert): pooled as the model says, L2-normalised.
 *
 * Not for: chat templates (chat/), grammars, the model store (store/), HTTP.
 * Thread safety: an engine_model may be used by many threads at once (tokenize, piece, info);
 * an engine_session belongs to one thread at a time.
 */
#ifndef DK_ENGINE_H
#define DK_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "sample/sample.h"

typedef struct engine_model engine_model;
typedef struct engine_session engine_session;

/* ---- models ---- */
typedef struct engine_load_params {
    bool vocab_only; /* tokenizer only (vocab-only GGUFs); sessions cannot be made */
    int n_threads;   /* threads for the forward pass; <= 0: the number of cores */
    bool exact;      /* F32 math on dequantized weights and an F32 KV cache, for this model's
                        sessions and embeddings; default false: llama.cpp's faster numerics
                        (int8 activations, F16 KV cache), see model.h MODEL_NUMERICS_* */
} engine_load_params;

void engine_load_params_default(engine_load_params *params);

/* Opens a GGUF file and builds its tokenizer and model. The caller frees *out with
 * engine_model_free. Errors: DK_ERR_IO, DK_ERR_FORMAT, DK_ERR_UNSUPPORTED (architecture). */
int engine_model_load(engine_model **out, const char *path, const engine_load_params *params, char *err);
void engine_model_free(engine_model *model); /* NULL is fine; all its sessions must be freed first */

size_t engine_n_vocab(const engine_model *model);
size_t engine_n_embd(const engine_model *model);      /* size of engine_embed vectors */
size_t engine_n_ctx_train(const engine_model *model); /* context length trained; 0 if unknown */
const char *engine_arch(const engine_model *model);   /* general.architecture, owned by model */
bool engine_is_embedding(const engine_model *model);  /* bert-like: engine_embed, no generation */
bool engine_has_weights(const engine_model *model);   /* false when loaded vocab-only */
/* The tokenizer.chat_template string, or NULL when the file has none. Owned by model. */
const char *engine_chat_template(const engine_model *model);
double engine_load_ms(const engine_model *model);     /* wall time of engine_model_load */

/* ---- tokens ---- */
/* Tokenizes text[0..n_bytes). add_special: BOS/EOS/CLS/SEP as the vocabulary says;
 * parse_special: control-token texts such as "<|im_start|>" become their tokens. On success
 * *tokens (caller frees with dk_free; may be NULL when *n_tokens == 0) holds the ids. */
int engine_tokenize(const engine_model *model, const char *text, size_t n_bytes, bool add_special,
                    bool parse_special, int32_t **tokens, size_t *n_tokens, char *err);
/* Appends the bytes of a token's text to out (special tokens as their text; may be a partial
 * UTF-8 sequence). DK_ERR_ARG for an id out of range. */
int engine_token_piece(const engine_model *model, int32_t token, dk_buf *out, char *err);
bool engine_token_is_eog(const engine_model *model, int32_t token); /* EOS, EOT, <|im_end|>, ... */

/* ---- sessions ---- */
typedef struct engine_session_params {
    size_t n_ctx;  /* KV cache positions; 0: min(n_ctx_train, 4096), or 2048 if unknown */
    int n_threads; /* <= 0: the model's */
} engine_session_params;

void engine_session_params_default(engine_session_params *params);

/* Creates a session of a model with weights. Free with engine_session_free. */
int engine_session_new(engine_session **out, engine_model *model, const engine_session_params *params, char *err);
void engine_session_free(engine_session *session); /* NULL is fine */
size_t engine_session_n_ctx(const engine_session *session);
size_t engine_session_n_past(const engine_session *session); /* positions filled in the KV cache */
void engine_session_clear(engine_session *session);          /* empties the KV cache */

/* Evaluates tokens[0..n_tokens) at positions n_past.. in one batch and appends them to the KV
 * cache. logits: NULL, or (n_tokens, n_vocab) row-major for the logits of every position.
 * Afterwards engine_session_logits gives those of the last position. DK_ERR_LIMIT when the
 * context would overflow, DK_ERR_ARG for an id out of range (nothing is evaluated then). */
int engine_session_eval(engine_session *session, const int32_t *tokens, size_t n_tokens, float *logits, char *err);
/* (n_vocab) logits of the last evaluated position, owned by the session, valid until the next
 * eval; NULL before any. */
const float *engine_session_logits(const engine_session *session);

/* ---- generation ---- */
/* Receives the next piece of text (complete UTF-8, stop strings removed). Return 0 to go on,
 * non-zero to stop generating. */
typedef int (*engine_text_fn)(void *user, const char *text, size_t n_bytes);

typedef struct engine_generate_params {
    sample_params sampling;
    long num_predict;         /* tokens to generate at most; < 0: until EOG or context full */
    const char *const *stops; /* (n_stops) stop strings; not included in the output */
    size_t n_stops;
    engine_text_fn on_text;   /* may be NULL */
    void *user;
} engine_generate_params;

void engine_generate_params_default(engine_generate_params *params);

enum engine_done {
    ENGINE_DONE_EOG = 0,    /* the model produced an end-of-generation token */
    ENGINE_DONE_STOP = 1,   /* a stop string was found */
    ENGINE_DONE_LENGTH = 2, /* num_predict tokens were generated */
    ENGINE_DONE_CONTEXT = 3,/* the context is full */
    ENGINE_DONE_CANCEL = 4, /* on_text asked to stop */
};

typedef struct engine_timings {
    size_t n_prompt;  /* tokens evaluated for the prompt */
    double prompt_ms; /* wall time of the prompt evaluation */
    size_t n_eval;    /* tokens generated (each one sampled; all but a final EOG are evaluated) */
    double eval_ms;   /* wall time of generation: evaluation and sampling */
    enum engine_done done;
} engine_timings;

/* Appends prompt[0..n_prompt) to the session (one batch), then samples and evaluates tokens one
 * at a time, streaming their text. A final EOG token is not evaluated and not printed; the
 * session's KV cache keeps prompt and generated tokens, so a chat can go on with another call.
 * timings may be NULL. */
int engine_generate(engine_session *session, const int32_t *prompt, size_t n_prompt,
                    const engine_generate_params *params, engine_timings *timings, char *err);

/* ---- embeddings ---- */
/* Embeds text (tokenized with add_special) with an embedding model: out (n_embd) receives the
 * pooled vector, L2-normalised when normalize. Uses its own scratch session. */
int engine_embed(engine_model *model, const char *text, size_t n_bytes, bool normalize, float *out, char *err);

#endif
