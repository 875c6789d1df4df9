/*
 * engine_internal.h: the structures behind engine.h's opaque types, shared by the files of the
 * engine module (engine.c: models, sessions, generation; chat.c: chat turns). Nothing outside
 * src/engine/ includes it.
 */
#ifndef DK_ENGINE_INTERNAL_H
#define DK_ENGINE_INTERNAL_H

#include <pthread.h>

#include "engine/engine.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenize/tokenize.h"

struct engine_model {
    gguf_file *gguf;      /* the open file, owned; net and vocab point into it */
    tok_vocab *vocab;
    model_weights *net;   /* NULL when vocab_only */
    char *arch;           /* owned copy of general.architecture */
    char *chat_template;  /* owned copy or NULL */
    size_t n_vocab, n_embd, n_ctx_train;
    int n_threads;
    enum model_numerics numerics;
    double load_ms;
    pthread_mutex_t sample_vocab_lock; /* guards the lazy build of sample_vocab */
    sample_vocab *sample_vocab;        /* NULL until engine_sample_vocab is first called */
    pthread_mutex_t chat_lock;         /* guards the lazy build of the chat fields below */
    chat_template *chat_tmpl;          /* parsed template (or the built-in one); NULL until used */
    char *bos_text, *eos_text;         /* owned; "" when the vocab has no such token */
    enum chat_format chat_format;
};

struct engine_session {
    engine_model *model;
    engine_batcher *batcher; /* NULL, or the batcher its evals go through (borrowed) */
    model_ctx *ctx;       /* KV cache and scratch (KV cache only with a batcher) */
    size_t n_ctx, n_past;
    float *logits;        /* (n_vocab) last position */
    bool have_logits;
    int32_t *history;     /* (n_past) the tokens in the KV cache, for prefix re-use */
    size_t history_cap;
};

/* batch.c: an eval of session through its batcher (the checks of engine_session_eval done);
 * returns when its tokens are in the KV cache and session->logits holds the last logits.
 * cancel (may be NULL): a chunk not yet started is abandoned, DK_ERR_LIMIT "cancelled". */
int engine_batcher_eval(engine_batcher *b, engine_session *session, const int32_t *tokens, size_t n_tokens,
                        const atomic_int *cancel, char *err);
/* Sessions inside engine_generate: a step waits for the tokens of all of them (briefly). */
void engine_batcher_enter(engine_batcher *b);
void engine_batcher_leave(engine_batcher *b);
size_t engine_batcher_n_ctx(const engine_batcher *b);
engine_model *engine_batcher_model(const engine_batcher *b);

#endif
