/*
 * sample: choosing the next token from a vector of logits, and cutting streamed text at stop
 * strings.
 *
 * Three layers, usable separately:
 * - sample_rng: a seeded xoshiro256** generator (seeded through splitmix64), so one seed gives
 *   the same draws on every run and machine.
 * - Filters over a candidate list (sample_cands): penalties, top-k, top-p, min-p, temperature,
 *   each with llama.cpp's semantics, then greedy or random selection. Tests call them one by one.
 * - sample_chain: the whole sampler as llama.cpp and Ollama chain it: penalties -> top-k ->
 *   top-p -> min-p -> temperature -> dist. Temperature <= 0 means greedy (penalties still
 *   apply first; argmax with the lowest id on ties). The chain keeps the history of accepted
 *   tokens for the penalties.
 * - sample_stop: a matcher for stop strings over streamed text: it holds back text that could
 *   be the beginning of a stop string and cuts the output where a stop string starts.
 *
 * - Grammars (grammar.c, json_schema.c): GBNF grammars, JSON schemas turned into GBNF, and
 *   sample_matcher, which follows a grammar over generated text and says which tokens of a
 *   vocabulary may come next, so that constrained output always parses.
 *
 * Not for: tokenization, logit computation, deciding when a grammar applies (engine/ does).
 * Thread safety: every object belongs to one thread at a time; the free functions are pure.
 */
#ifndef DK_SAMPLE_H
#define DK_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"

/* ---- random numbers ---- */
typedef struct sample_rng {
    uint64_t s[4]; /* xoshiro256** state; never all zero after sample_rng_seed */
} sample_rng;

void sample_rng_seed(sample_rng *rng, uint64_t seed);
uint64_t sample_rng_next(sample_rng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
double sample_rng_uniform(sample_rng *rng);

/* ---- candidates ---- */
typedef struct sample_cand {
    int32_t id;  /* token id */
    float logit; /* current (filtered) logit */
    float p;     /* probability, valid after sample_cands_softmax */
} sample_cand;

/* A list of candidates. Filters shrink n and may reorder data; `sorted` says data is sorted by
 * descending logit (ties: lower id first). The caller owns data (capacity >= n). */
typedef struct sample_cands {
    sample_cand *data; /* (n) */
    size_t n;
    bool sorted;
} sample_cands;

/* Fills cands->data[0..n_vocab) from logits (n_vocab) with id = index; not sorted. */
void sample_cands_from_logits(sample_cands *cands, const float *logits, size_t n_vocab);
/* Sorts by descending logit, lower id first on ties (stable and deterministic). */
void sample_cands_sort(sample_cands *cands);
/* Sorts, then sets p = softmax(logit) (max-subtracted, sum in double). */
void sample_cands_softmax(sample_cands *cands);

/* Repeat, frequency and presence penalties over the history last[0..n_last) (the caller passes
 * the last N tokens). For each distinct token with count c in the history: a positive logit is
 * divided by `repeat`, a non-positive one multiplied by it (llama.cpp), then
 * logit -= c * frequency + (c > 0) * presence. repeat == 1, frequency == presence == 0 is a no-op.
 * Ids outside the candidate list are ignored. */
void sample_penalties(sample_cands *cands, const int32_t *last, size_t n_last, float repeat,
                      float frequency, float presence);
/* Keeps the k highest (k <= 0: no-op; k >= n: only sorts). Leaves the list sorted. */
void sample_top_k(sample_cands *cands, int k);
/* Keeps the smallest prefix (by descending probability) whose mass reaches p, at least
 * min_keep tokens. p >= 1: no-op. Leaves the list sorted with p set. */
void sample_top_p(sample_cands *cands, float p, size_t min_keep);
/* Keeps tokens whose probability is at least min_p times the highest one (at least min_keep).
 * min_p <= 0: no-op. */
void sample_min_p(sample_cands *cands, float min_p, size_t min_keep);
/* Divides logits by t (t > 0; t <= 0 keeps only the best token, as llama.cpp's temp sampler). */
void sample_temperature(sample_cands *cands, float t);
/* The id with the highest logit, lowest id on ties; -1 for an empty list. */
int32_t sample_greedy(const sample_cands *cands);
/* Same over a raw logit vector (n >= 1); -1 when n == 0. */
int32_t sample_argmax(const float *logits, size_t n);
/* Draws from softmax(logits) with one uniform number from rng; -1 for an empty list. */
int32_t sample_dist(sample_cands *cands, sample_rng *rng);

/* ---- the chain ---- */
typedef struct sample_params {
    float temperature;       /* <= 0: greedy. default 0.8 */
    int top_k;               /* <= 0: off. default 40 */
    float top_p;             /* >= 1: off. default 0.9 */
    float min_p;             /* <= 0: off. default 0.0 */
    float repeat_penalty;    /* 1: off. default 1.0 (llama.cpp's default; Ollama uses 1.1) */
    int repeat_last_n;       /* history length for all penalties; 0: off, -1: whole context. default 64 */
    float presence_penalty;  /* default 0 */
    float frequency_penalty; /* default 0 */
    uint64_t seed;           /* default 0; callers wanting randomness pass their own */
} sample_params;

void sample_params_default(sample_params *params);

typedef struct sample_chain sample_chain;

/* Creates a chain for vocabularies of n_vocab tokens. Free with sample_chain_free. */
int sample_chain_new(sample_chain **out, const sample_params *params, size_t n_vocab, char *err);
void sample_chain_free(sample_chain *chain); /* NULL is fine */
/* Records a token in the penalty history (call for prompt tokens too, if wanted, and for every
 * chosen token). */
void sample_chain_accept(sample_chain *chain, int32_t token);
/* Forgets the history and re-seeds the generator. */
void sample_chain_reset(sample_chain *chain);
/* Picks the next token from logits (n_vocab values, unchanged). Does not accept it. */
int32_t sample_chain_sample(sample_chain *chain, const float *logits);

/* ---- grammars ----
 * GBNF as llama.cpp defines it: `name ::= alternatives` rules; literals "..." with \\ \" \n \r
 * \t \xHH \uHHHH \UHHHHHHHH escapes; character classes [a-z0-9_] and negated [^"\\]; `.` (any
 * character); groups ( ); alternatives |; repetitions * + ? {m} {m,} {m,n}; # comments; rules
 * may be referenced before they are defined. Matching is over Unicode code points decoded from
 * the generated bytes; a token may end in the middle of a UTF-8 sequence. */
typedef struct sample_grammar sample_grammar;

/* Parses gbnf[0..n_bytes) with start rule `root` (NULL: "root"). The caller frees *out with
 * sample_grammar_free. Errors: DK_ERR_FORMAT with "line L, column C: what" (syntax, undefined
 * rule, missing root, left recursion), DK_ERR_LIMIT (too many rules or repetitions). */
int sample_grammar_parse(sample_grammar **out, const char *gbnf, size_t n_bytes, const char *root,
                         char *err);
void sample_grammar_free(sample_grammar *grammar); /* NULL is fine */

/* The GBNF text of JSON mode: one JSON object (any keys and values), as Ollama's and OpenAI's
 * `format: "json"` promise. A static string. */
const char *sample_gbnf_json(void);

/* Appends s[0..n) to b as one GBNF string literal, quotes included (escaping quotes,
 * backslashes and control characters); failures show in b->failed. */
void sample_gbnf_literal(dk_buf *b, const char *s, size_t n);

/* Appends GBNF rules that accept exactly the JSON texts valid under a JSON schema: type
 * (string/number/integer/boolean/null/object/array, or a list of them), properties, required,
 * additionalProperties, enum, const, items/prefixItems, minItems/maxItems, minimum/maximum
 * (integers), minLength/maxLength, pattern (a regular-expression subset), format (date, time,
 * date-time, uuid, email, uri), anyOf/oneOf/allOf (of objects), $ref to #/$defs/... and
 * #/definitions/...; and one extension: a string schema with "x-gbnf": "RULE" takes its
 * content (between the quotes, JSON-escaped) from a rule RULE that the caller appends to the
 * grammar text (a tool argument holding SQL, say). The start rule is named `name` (NULL: "root"); helper rules are named
 * `name-...`, so schemas converted under different names can share one grammar text. Errors:
 * DK_ERR_UNSUPPORTED / DK_ERR_FORMAT naming the JSON pointer of the offending keyword. */
int sample_json_schema_to_gbnf(const json_t *schema, const char *name, dk_buf *out, char *err);

/* The bytes every token of a vocabulary emits, prepared for matching (a byte trie). */
typedef struct sample_vocab sample_vocab;

/* pieces[i][0..piece_bytes[i]) is the text token i produces; a token with no text (control
 * tokens; piece_bytes 0) is never allowed under a grammar, except end-of-generation tokens
 * (is_eog[i]), which are allowed exactly when the grammar has matched a whole sentence. All
 * arrays have n_vocab entries and are copied. The caller frees *out with sample_vocab_free. */
int sample_vocab_new(sample_vocab **out, size_t n_vocab, const char *const *pieces,
                     const size_t *piece_bytes, const bool *is_eog, char *err);
void sample_vocab_free(sample_vocab *vocab); /* NULL is fine */
size_t sample_vocab_n(const sample_vocab *vocab);
/* The bytes token id emits (*n_bytes of them, not NUL-terminated), owned by the vocab; NULL
 * for an id out of range. */
const char *sample_vocab_piece(const sample_vocab *vocab, int32_t id, size_t *n_bytes);
bool sample_vocab_is_eog(const sample_vocab *vocab, int32_t id);
/* The end-of-generation tokens, *n ids in ascending order, owned by the vocab. */
const int32_t *sample_vocab_eog(const sample_vocab *vocab, size_t *n);

/* The state of one generation under a grammar. grammar and vocab are borrowed and must
 * outlive the matcher. The matcher caches token masks by parser state, so the cost of a
 * full-vocabulary check is paid once per distinct state. */
typedef struct sample_matcher sample_matcher;

int sample_matcher_new(sample_matcher **out, const sample_grammar *grammar, const sample_vocab *vocab,
                       char *err);
void sample_matcher_free(sample_matcher *matcher); /* NULL is fine */
void sample_matcher_reset(sample_matcher *matcher); /* back to the start of the grammar */
/* Whether token may come next. */
bool sample_matcher_allows(sample_matcher *matcher, int32_t token);
/* Sets logits[i] = -INFINITY for every token that may not come next (logits: n_vocab).
 * Returns DK_OK, DK_ERR_NOMEM, or DK_ERR_LIMIT when no token at all is allowed. */
int sample_matcher_apply(sample_matcher *matcher, float *logits, char *err);
/* Advances over a token (its text; an end-of-generation token ends the match). DK_ERR_ARG
 * (and no change) when the grammar does not allow it. */
int sample_matcher_accept(sample_matcher *matcher, int32_t token, char *err);
/* Advances over text that was not sampled (a forced prefix). DK_ERR_ARG when not allowed. */
int sample_matcher_accept_bytes(sample_matcher *matcher, const char *text, size_t n_bytes, char *err);
/* The text so far is a whole sentence of the grammar (an end-of-generation token may come). */
bool sample_matcher_accepting(const sample_matcher *matcher);
/* Accepting, and no character can extend it: generation under this grammar is complete. */
bool sample_matcher_finished(const sample_matcher *matcher);

/* Samples from logits restricted to what matcher allows, plus the tokens also[0..n_also)
 * (e.g. the token that opens a reasoning section); the chain's filters then apply as usual.
 * Greedy chains check the best tokens first and compute no mask when one of them is allowed.
 * Does not accept the token (call sample_matcher_accept / sample_chain_accept). logits are not
 * changed. Returns DK_OK with *out_token set, DK_ERR_LIMIT when no token is allowed,
 * DK_ERR_NOMEM. */
int sample_chain_sample_grammar(sample_chain *chain, const float *logits, sample_matcher *matcher,
                                const int32_t *also, size_t n_also, int32_t *out_token, char *err);

/* ---- stop strings over streamed text ---- */
typedef struct sample_stop sample_stop;

/* stops[0..n_stops): NUL-terminated strings, copied; empty strings are ignored. */
int sample_stop_new(sample_stop **out, const char *const *stops, size_t n_stops, char *err);
void sample_stop_free(sample_stop *stop); /* NULL is fine */
/* Feeds the next chunk of text. Appends to `out` the text that can no longer be part of a stop
 * string; holds back a tail that could start one. Returns 1 once a stop string has been seen
 * (the output then ends just before it and later feeds append nothing), 0 otherwise, -1 when
 * `out` failed to grow. */
int sample_stop_feed(sample_stop *stop, const char *text, size_t n_bytes, dk_buf *out);
/* End of stream: appends the held-back text (unless stopped). Returns 0 or -1. */
int sample_stop_flush(sample_stop *stop, dk_buf *out);
/* True once a stop string was found. */
bool sample_stop_hit(const sample_stop *stop);

#endif
