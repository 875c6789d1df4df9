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
 *   engine_embed    embeddings of an embedding model (bert): pooled as the model says, L2-normalised;
 *                   engine_embed_batch packs many texts into shared forward passes.
 *   engine_rerank   relevance scores of documents for a query with a cross-encoder (bert with a
 *                   classification head).
 *   engine_chat     one assistant turn of a conversation: the model's chat template renders the
 *                   messages and tools, the KV cache keeps the prefix the conversation shares
 *                   with the last turn, grammars enforce format and tool_choice, and the output
 *                   is split into content, reasoning and tool calls (chat/).
 *
 *   Under a grammar (sample_grammar) generation is constrained so that the output always
 *   parses; a thinking model may first write a free <think>...</think> section.
 *
 * Not for: chat templates and tool-call formats (chat/), the model store (store/), HTTP.
 * Thread safety: an engine_model may be used by many threads at once (tokenize, piece, info);
 * an engine_session belongs to one thread at a time.
 */
#ifndef DK_ENGINE_H
#define DK_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"
#include "chat/chat.h"
#include "sample/sample.h"

typedef struct engine_model engine_model;
typedef struct engine_session engine_session;
typedef struct engine_batcher engine_batcher;

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
bool engine_is_embedding(const engine_model *model);  /* an encoder (bert-like): no generation; an
                                                         embedding model or a reranker, see below */
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
/* Appends the bytes of a token's text to out (control tokens such as <|python_tag|> or
 * [TOOL_CALLS] as their text, so that tool-call markers reach the parsers; unused tokens add
 * nothing; may be a partial UTF-8 sequence). DK_ERR_ARG for an id out of range. */
int engine_token_piece(const engine_model *model, int32_t token, dk_buf *out, char *err);
bool engine_token_is_eog(const engine_model *model, int32_t token); /* EOS, EOT, <|im_end|>, ... */
/* Id of the token whose stored text is exactly text (e.g. "<think>"), or -1. */
int32_t engine_token_find(const engine_model *model, const char *text);
/* The model's vocabulary prepared for grammar matching (the pieces engine_token_piece gives),
 * built on first use (thread-safe) and owned by the model. */
int engine_sample_vocab(engine_model *model, const sample_vocab **out, char *err);

/* ---- sessions ---- */
typedef struct engine_session_params {
    size_t n_ctx;  /* KV cache positions; 0: min(n_ctx_train, 4096), or 2048 if unknown */
    int n_threads; /* <= 0: the model's */
    /* NULL, or the batcher through which this session evaluates (continuous batching): the
     * session then holds only its KV cache, and every eval runs in the batcher's forward pass
     * together with the evals other sessions of the batcher ask for at the same moment.
     * n_ctx must not exceed the batcher's. Borrowed: the batcher must outlive the session. */
    engine_batcher *batcher;
} engine_session_params;

void engine_session_params_default(engine_session_params *params);

/* Creates a session of a model with weights. Free with engine_session_free. */
int engine_session_new(engine_session **out, engine_model *model, const engine_session_params *params, char *err);
void engine_session_free(engine_session *session); /* NULL is fine */
size_t engine_session_n_ctx(const engine_session *session);
size_t engine_session_n_past(const engine_session *session); /* positions filled in the KV cache */
void engine_session_clear(engine_session *session);          /* empties the KV cache */
/* Keeps the first n_keep positions of the KV cache (n_keep <= n_past), so a conversation can
 * re-use the prefix its next prompt shares with the last one. No logits are valid after it
 * until the next eval. */
int engine_session_truncate(engine_session *session, size_t n_keep, char *err);

/* Evaluates tokens[0..n_tokens) at positions n_past.. in one batch and appends them to the KV
 * cache. logits: NULL, or (n_tokens, n_vocab) row-major for the logits of every position.
 * Afterwards engine_session_logits gives those of the last position. DK_ERR_LIMIT when the
 * context would overflow, DK_ERR_ARG for an id out of range (nothing is evaluated then). */
int engine_session_eval(engine_session *session, const int32_t *tokens, size_t n_tokens, float *logits, char *err);
/* (n_vocab) logits of the last evaluated position, owned by the session, valid until the next
 * eval; NULL before any. */
const float *engine_session_logits(const engine_session *session);

/* ---- continuous batching ---- */
/* A batcher runs the evals of many sessions of one model as shared forward passes: each
 * step takes what every waiting session asked for (one token of a generation, or the next
 * chunk of a prompt) and evaluates it as one batch, so the weights are read once for all of
 * them. Sessions stay independent (own KV cache, own positions); each thread that calls
 * engine_session_eval / engine_generate on one of them blocks until its part is done. A step
 * waits briefly for the sessions that are generating so that their tokens share it.
 * n_ctx: the largest n_ctx of its sessions (0: as engine_session_new's default);
 * max_tokens: most rows of one forward pass (0: 512); n_threads <= 0: the model's.
 * Free with engine_batcher_free after all its sessions. Thread-safe. */
int engine_batcher_new(engine_batcher **out, engine_model *model, size_t n_ctx, size_t max_tokens, int n_threads,
                       char *err);
void engine_batcher_free(engine_batcher *batcher); /* NULL is fine */

typedef struct engine_batcher_stats {
    uint64_t steps;        /* forward passes run */
    uint64_t rows;         /* tokens evaluated in them */
    uint64_t max_rows;     /* most rows in one pass */
} engine_batcher_stats;
void engine_batcher_get_stats(engine_batcher *batcher, engine_batcher_stats *out);

/* ---- generation ---- */
/* Receives the next piece of text (complete UTF-8, stop strings removed). Return 0 to go on,
 * non-zero to stop generating. */
typedef int (*engine_text_fn)(void *user, const char *text, size_t n_bytes);

typedef struct engine_logprob {
    int32_t token;
    float logprob; /* natural log of the token's probability under the model (softmax of the
                      raw logits, before sampling options and grammars) */
} engine_logprob;
#define ENGINE_MAX_TOP_LOGPROBS 20
/* Receives every generated token as it is sampled (also a final EOG token), with its log
 * probability and, when top_logprobs > 0, the n_top most likely tokens, best first. Return 0
 * to go on, non-zero to stop generating. */
typedef int (*engine_token_fn)(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top);

typedef struct engine_generate_params {
    sample_params sampling;
    long num_predict;         /* tokens to generate at most; < 0: until EOG or context full */
    const char *const *stops; /* (n_stops) stop strings; not included in the output */
    size_t n_stops;
    engine_text_fn on_text;   /* may be NULL */
    void *user;
    /* Constrained decoding: every token must be allowed by the grammar, generation ends when
     * the grammar is complete, and an end-of-generation token only comes where the grammar
     * has matched a whole sentence. NULL: free text. Borrowed. */
    const sample_grammar *grammar;
    /* The output may begin with a reasoning section <think>...</think> (when the vocabulary has
     * a <think> token) that the grammar does not constrain; the grammar applies after it. */
    bool grammar_after_reasoning;
    /* The prompt itself opened <think>: the output starts inside the reasoning section. */
    bool in_reasoning;
    /* > 0: after this many tokens of reasoning the section is closed ("</think>" forced, when
     * the vocabulary has it as one token), so a grammar's answer always comes; 0: no limit. */
    long max_reasoning_tokens;
    /* A lazy grammar: the output is free until the model writes the token grammar_trigger
     * (e.g. <tool_call>); from that token on (its text included) the grammar holds. */
    bool grammar_lazy;
    int32_t grammar_trigger;
    /* Tokens never to generate (e.g. the marker that opens a tool call when tool_choice is
     * "none"). Borrowed. */
    const int32_t *banned;
    size_t n_banned;
    /* Every sampled token with its log probability (NULL: none are computed); top_logprobs
     * (0 .. ENGINE_MAX_TOP_LOGPROBS) alternatives each. Receives user. */
    engine_token_fn on_token;
    int top_logprobs;
    /* NULL, or a flag another thread may set (non-zero) to stop this generation at its next
     * step, the prompt's evaluation included (in chunks): it ends with ENGINE_DONE_CANCEL. */
    const atomic_int *cancel;
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
/* Encoders (bert family) come in two kinds: embedding models, whose pooling (mean, CLS, last)
 * gives a vector per text, and rerankers (cross-encoders: pooling_type 4 "rank" and a
 * classification head, as llama.cpp's converter writes a BertForSequenceClassification such as
 * ms-marco-MiniLM), which score a (query, document) pair. engine_is_embedding is true for
 * both (an encoder: no generation, no session); engine_is_reranker tells them apart. The
 * embed functions refuse a reranker and the rerank functions anything else
 * (DK_ERR_UNSUPPORTED). */
bool engine_is_reranker(const engine_model *model);

/* Embeds text (tokenized with add_special) with an embedding model: out (n_embd) receives the
 * pooled vector, L2-normalised when normalize. Uses its own scratch session. */
int engine_embed(engine_model *model, const char *text, size_t n_bytes, bool normalize, float *out, char *err);

/* Embeds n texts with an embedding model into out (n * dim floats, dim = dimensions when
 * 0 < dimensions < engine_n_embd, else engine_n_embd): pooled as the model says,
 * L2-normalised (again after a Matryoshka cut to dimensions). A text longer than the model's
 * context is cut at a token boundary when truncate (its first tokens, the closing [SEP] kept),
 * else DK_ERR_ARG naming its index; an empty text is DK_ERR_ARG. n_tokens (may be NULL)
 * receives the tokens evaluated in all. Several texts are evaluated per forward pass when the
 * model allows it: they are packed into passes of up to 512 rows in which each attends only
 * to itself, so a vector equals engine_embed's of the same tokens (up to float rounding).
 * The model's context: min(context_length, rows of the position table). Thread-safe per
 * model (each call has its own scratch). */
int engine_embed_batch(engine_model *model, const char *const *texts, size_t n, bool truncate, size_t dimensions, float *out,
                       size_t *n_tokens, char *err);

/* Scores docs[0..n) against query with a reranker: scores (n) receives the raw relevance
 * (the classification head's first output, no sigmoid; higher is more relevant). Each pair
 * is read as the model was trained, [CLS] query [SEP] document [SEP]; a document is cut (at a
 * token boundary) so that the pair fits the context; a query that leaves no room is
 * DK_ERR_ARG, and so is an empty one. Pairs share forward passes as in engine_embed_batch.
 * engine_rerank_count also gives the tokens evaluated in all (n_tokens may be NULL). */
int engine_rerank(engine_model *model, const char *query, const char *const *docs, size_t n, float *scores, char *err);
int engine_rerank_count(engine_model *model, const char *query, const char *const *docs, size_t n, float *scores,
                        size_t *n_tokens, char *err);

/* ---- chat ---- */
enum engine_tool_choice {
    ENGINE_TOOL_AUTO = 0,  /* the model decides; a call it starts is held to the tools' schemas */
    ENGINE_TOOL_NONE,      /* no call: tools are not shown and the call marker is barred */
    ENGINE_TOOL_REQUIRED,  /* at least one call, to any of the tools */
    ENGINE_TOOL_NAMED,     /* one call to the tool named tool_name */
};

typedef struct engine_chat_params {
    const json_t *messages;       /* array of {role, content, tool_calls, ...} (borrowed) */
    const json_t *tools;          /* array of tools, or NULL (borrowed) */
    enum engine_tool_choice tool_choice;
    const char *tool_name;        /* for ENGINE_TOOL_NAMED */
    bool parallel_tool_calls;     /* several calls in one turn (not with ENGINE_TOOL_NAMED, which
                                     asks for one); default true */
    const json_t *format;         /* NULL, the string "json" (JSON mode) or a JSON schema */
    int think;                    /* -1: the template's default, 0: off, 1: on (enable_thinking) */
    const json_t *template_vars;  /* extra template variables, or NULL */
    const char *template_text;    /* a Jinja chat template that replaces the model's (e.g. a
                                     Modelfile's TEMPLATE), parsed per call; NULL: the model's.
                                     Its markers also pick the tool-call format. */
    const char *grammar_extra;    /* GBNF rules appended to the turn's grammar when it has one:
                                     the rules that "x-gbnf" strings of the tools' schemas name
                                     (sample.h), e.g. SQL for an argument; NULL: none */
    engine_generate_params gen;   /* sampling, num_predict, stops; gen.on_text receives content
                                     only (reasoning and call text are kept out) */
    engine_text_fn on_reasoning;  /* receives reasoning text as it streams (may be NULL) */
} engine_chat_params;

void engine_chat_params_default(engine_chat_params *params);

typedef struct engine_chat_result {
    dk_buf content;            /* the answer, without reasoning or tool-call text */
    dk_buf reasoning;          /* the <think> section's text, if any */
    json_t *tool_calls;        /* array of {"id","type":"function","function":{"name","arguments":{}}};
                                  owned, never NULL after success (may be empty) */
    dk_buf prompt;             /* the rendered prompt */
    size_t n_prompt_reused;    /* prompt tokens found in the KV cache already */
    engine_timings timings;
} engine_chat_result;

/* Runs one assistant turn on session. The session must only be used for one conversation
 * through engine_chat (it keeps the evaluated tokens to re-use their prefix). Errors: the
 * template's (DK_ERR_FORMAT with its position), the grammar's, generation's. The caller frees
 * result with engine_chat_result_free, also after a failure. */
int engine_chat(engine_session *session, const engine_chat_params *params, engine_chat_result *result, char *err);
void engine_chat_result_free(engine_chat_result *result);

/* The grammar of a `format` as engine_chat understands it ("json": JSON mode; an object: a
 * JSON schema), for generation without a chat (engine_generate_params.grammar). The caller
 * frees *out with sample_grammar_free. Errors: DK_ERR_ARG for another value, the schema
 * converter's errors. */
int engine_format_grammar(const json_t *format, sample_grammar **out, char *err);

/* The chat-template parts of a model: its parsed template (the built-in ChatML when the file
 * has none), the texts of its BOS and EOS tokens ("" when none) and its tool-call format.
 * Built on first use (thread-safe), owned by the model. */
int engine_chat_template_get(engine_model *model, const chat_template **tmpl, char *err);
const char *engine_bos_text(const engine_model *model);
const char *engine_eos_text(const engine_model *model);
enum chat_format engine_chat_format(const engine_model *model);

#endif
