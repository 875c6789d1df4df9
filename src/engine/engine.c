/*
 * engine.c: the inference facade declared in engine.h: loads a GGUF file into a tokenizer
 * (tokenize/) and a model (model/), runs sessions with a KV cache, generation with the
 * samplers and stop strings of sample/ (embeddings and reranking: embed.c). No math lives here: the forward pass
 * is model/'s, token handling tokenize/'s.
 */
#include "engine/engine.h"
#include "engine/engine_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenize/tokenize.h"

/* ---- models ---- */

void engine_load_params_default(engine_load_params *params)
{
    params->vocab_only = false;
    params->n_threads = 0;
    params->exact = false;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static char *gguf_strdup_key(const gguf_file *f, const char *key)
{
    gguf_str s;
    if (gguf_get_str(f, key, &s) != DK_OK) return NULL;
    return dk_strndup(s.ptr, s.len);
}
/* ---- UTF-8: streamed bytes to complete, valid text ---- */

/* Length of a valid UTF-8 sequence starting at s[0..n): >0 when complete and valid, 0 when it
 * is a valid but incomplete prefix (more bytes may complete it), -k when its first k bytes are
 * a maximal ill-formed subpart (to be replaced by one U+FFFD). */
static int utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    int len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char b = s[i];
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) return -i;
    }
    return len;
}

/* Moves the complete part of raw (all of it when final) to out as valid UTF-8 (ill-formed
 * subparts become U+FFFD); keeps an incomplete tail in raw. */
static int utf8_drain(dk_buf *raw, dk_buf *out, bool final)
{
    const unsigned char *s = (const unsigned char *)raw->data;
    size_t n = raw->len, i = 0;
    while (i < n) {
        int k = utf8_seq(s + i, n - i);
        if (k > 0) {
            dk_buf_append(out, s + i, (size_t)k);
            i += (size_t)k;
        } else if (k == 0 && !final) {
            break;
        } else {
            dk_buf_puts(out, "\xEF\xBF\xBD");
            i += k == 0 ? n - i : (size_t)-k;
        }
    }
    if (i && i < n) memmove(raw->data, raw->data + i, n - i);
    raw->len = n - i;
    if (raw->data) raw->data[raw->len] = 0;
    return out->failed ? -1 : 0;
}
int engine_model_load(engine_model **out, const char *path, const engine_load_params *params, char *err)
{
    *out = NULL;
    uint64_t t0 = dk_now_ns();
    engine_model *m = dk_calloc(1, sizeof(*m));
    if (!m) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&m->sample_vocab_lock, NULL);
    pthread_mutex_init(&m->chat_lock, NULL);
    int rc = gguf_open(&m->gguf, path, err);
    if (rc != DK_OK) goto fail;
    m->arch = gguf_strdup_key(m->gguf, "general.architecture");
    if (!m->arch) {
        rc = dk_fail(err, DK_ERR_FORMAT, "%s: no general.architecture", path);
        goto fail;
    }
    m->chat_template = gguf_strdup_key(m->gguf, "tokenizer.chat_template");
    m->n_threads = params->n_threads > 0 ? params->n_threads : default_threads();
    m->numerics = params->exact ? MODEL_NUMERICS_EXACT : MODEL_NUMERICS_FAST;
    rc = tok_vocab_load(&m->vocab, m->gguf, err);
    if (rc != DK_OK) goto fail;
    m->n_vocab = tok_n_vocab(m->vocab);
    if (!params->vocab_only) {
        rc = model_load_gguf(&m->net, m->gguf, false, err);
        if (rc != DK_OK) goto fail;
        if (m->numerics == MODEL_NUMERICS_FAST && (rc = model_prepare_fast(m->net, m->n_threads, err)) != DK_OK) goto fail;
        const model_hparams *hp = model_get_hparams(m->net);
        m->n_embd = (size_t)hp->n_embd;
        m->n_ctx_train = hp->n_ctx_train > 0 ? (size_t)hp->n_ctx_train : 0;
        if ((size_t)hp->n_vocab != m->n_vocab) {
            rc = dk_fail(err, DK_ERR_FORMAT, "%s: the model has %lld tokens, its vocabulary %zu", path,
                         (long long)hp->n_vocab, m->n_vocab);
            goto fail;
        }
    }
    m->load_ms = (double)(dk_now_ns() - t0) / 1e6;
    *out = m;
    return DK_OK;
fail:
    engine_model_free(m);
    return rc;
}

void engine_model_free(engine_model *model)
{
    if (!model) return;
    sample_vocab_free(model->sample_vocab);
    pthread_mutex_destroy(&model->sample_vocab_lock);
    chat_template_free(model->chat_tmpl);
    dk_free(model->bos_text);
    dk_free(model->eos_text);
    pthread_mutex_destroy(&model->chat_lock);
    model_free(model->net);
    tok_vocab_free(model->vocab);
    dk_free(model->arch);
    dk_free(model->chat_template);
    gguf_close(model->gguf);
    dk_free(model);
}

size_t engine_n_vocab(const engine_model *model) { return model->n_vocab; }
size_t engine_n_embd(const engine_model *model) { return model->n_embd; }
size_t engine_n_ctx_train(const engine_model *model) { return model->n_ctx_train; }
const char *engine_arch(const engine_model *model) { return model->arch; }
bool engine_is_embedding(const engine_model *model) { return model->net && !model_get_hparams(model->net)->causal; }
bool engine_has_weights(const engine_model *model) { return model->net != NULL; }
const char *engine_chat_template(const engine_model *model) { return model->chat_template; }
double engine_load_ms(const engine_model *model) { return model->load_ms; }

int engine_tokenize(const engine_model *model, const char *text, size_t n_bytes, bool add_special,
                    bool parse_special, int32_t **tokens, size_t *n_tokens, char *err)
{
    return tok_encode(model->vocab, text, n_bytes, add_special, parse_special, tokens, n_tokens, err);
}

int engine_token_piece(const engine_model *model, int32_t token, dk_buf *out, char *err)
{
    if (token < 0 || (size_t)token >= model->n_vocab)
        return dk_fail(err, DK_ERR_ARG, "token id %d is out of range (n_vocab %zu)", (int)token, model->n_vocab);
    if (tok_token_type(model->vocab, token) == TOK_TYPE_CONTROL) {
        gguf_str text = tok_token_text(model->vocab, token);
        return dk_buf_append(out, text.ptr, text.len) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    return tok_piece(model->vocab, token, out, err);
}

bool engine_token_is_eog(const engine_model *model, int32_t token) { return tok_is_eog(model->vocab, token); }

int32_t engine_token_find(const engine_model *model, const char *text) { return tok_find(model->vocab, text, strlen(text)); }

/* Builds the grammar view of the vocabulary: every token's piece, all in one buffer. */
static int build_sample_vocab(const engine_model *model, sample_vocab **out, char *err)
{
    size_t n = model->n_vocab;
    dk_buf text = {0};
    size_t *offsets = dk_malloc_array(n + 1, sizeof(size_t));
    size_t *lens = dk_malloc_array(n, sizeof(size_t));
    const char **pieces = dk_malloc_array(n, sizeof(char *));
    bool *eog = dk_malloc_array(n, sizeof(bool));
    int rc = DK_OK;
    if (!offsets || !lens || !pieces || !eog) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n && rc == DK_OK; i++) {
        offsets[i] = text.len;
        eog[i] = tok_is_eog(model->vocab, (int32_t)i);
        rc = eog[i] ? DK_OK : engine_token_piece(model, (int32_t)i, &text, err);
    }
    if (rc != DK_OK) goto done;
    if (text.failed) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    offsets[n] = text.len;
    for (size_t i = 0; i < n; i++) {
        pieces[i] = text.data ? text.data + offsets[i] : "";
        lens[i] = offsets[i + 1] - offsets[i];
    }
    rc = sample_vocab_new(out, n, pieces, lens, eog, err);
done:
    dk_buf_free(&text);
    dk_free(offsets);
    dk_free(lens);
    dk_free(pieces);
    dk_free(eog);
    return rc;
}

int engine_sample_vocab(engine_model *model, const sample_vocab **out, char *err)
{
    pthread_mutex_lock(&model->sample_vocab_lock);
    int rc = model->sample_vocab ? DK_OK : build_sample_vocab(model, &model->sample_vocab, err);
    *out = model->sample_vocab;
    pthread_mutex_unlock(&model->sample_vocab_lock);
    return rc;
}

/* ---- sessions ---- */

void engine_session_params_default(engine_session_params *params)
{
    memset(params, 0, sizeof *params);
}

int engine_session_new(engine_session **out, engine_model *model, const engine_session_params *params, char *err)
{
    *out = NULL;
    if (!model->net) return dk_fail(err, DK_ERR_ARG, "model was loaded without weights (vocab only)");
    engine_batcher *b = params->batcher;
    size_t n_ctx = params->n_ctx;
    if (n_ctx == 0) n_ctx = model->n_ctx_train ? (model->n_ctx_train < 4096 ? model->n_ctx_train : 4096) : 2048;
    if (b && engine_batcher_model(b) != model) return dk_fail(err, DK_ERR_ARG, "session: the batcher belongs to another model");
    if (b && n_ctx > engine_batcher_n_ctx(b))
        return dk_fail(err, DK_ERR_ARG, "session: n_ctx %zu exceeds the batcher's %zu", n_ctx, engine_batcher_n_ctx(b));
    engine_session *s = dk_calloc(1, sizeof(*s));
    if (!s) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    s->model = model;
    s->batcher = b;
    s->n_ctx = n_ctx;
    s->logits = dk_malloc_array(model->n_vocab, sizeof(float));
    model_ctx_params cp = model_ctx_default_params();
    cp.n_ctx = (int64_t)n_ctx;
    cp.n_threads = params->n_threads > 0 ? params->n_threads : model->n_threads;
    cp.numerics = model->numerics;
    if (b) { /* the batcher has the scratch and the threads */
        cp.kind = MODEL_CTX_KV_ONLY;
        cp.n_threads = 1;
    }
    int rc = s->logits ? model_ctx_new(&s->ctx, model->net, &cp, err) : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc != DK_OK) {
        engine_session_free(s);
        return rc;
    }
    *out = s;
    return DK_OK;
}

void engine_session_free(engine_session *session)
{
    if (!session) return;
    model_ctx_free(session->ctx);
    dk_free(session->logits);
    dk_free(session->history);
    dk_free(session);
}

size_t engine_session_n_ctx(const engine_session *session) { return session->n_ctx; }
size_t engine_session_n_past(const engine_session *session) { return session->n_past; }

void engine_session_clear(engine_session *session)
{
    model_ctx_truncate(session->ctx, 0, NULL);
    session->n_past = 0;
    session->have_logits = false;
}

/* Prompts are evaluated in chunks of this many tokens when a cancel flag may stop them. */
#define EVAL_CANCEL_CHUNK 256

static bool cancelled(const atomic_int *cancel) { return cancel && atomic_load(cancel) != 0; }

/* engine_session_eval, stoppable between chunks by cancel (DK_ERR_LIMIT "cancelled"). */
static int session_eval(engine_session *session, const int32_t *tokens, size_t n_tokens, float *logits,
                        const atomic_int *cancel, char *err)
{
    size_t n_vocab = session->model->n_vocab;
    if (n_tokens == 0) return DK_OK;
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || (size_t)tokens[i] >= n_vocab)
            return dk_fail(err, DK_ERR_ARG, "token id %d is out of range (n_vocab %zu)", (int)tokens[i], n_vocab);
    if (n_tokens > session->n_ctx - session->n_past)
        return dk_fail(err, DK_ERR_LIMIT, "context full: %zu + %zu tokens > n_ctx %zu", session->n_past, n_tokens, session->n_ctx);
    if (logits && session->batcher)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "eval: the logits of every position are not available in a batched session");
    size_t need = session->n_past + n_tokens;
    if (need > session->history_cap) {
        size_t cap = session->history_cap ? session->history_cap : 256;
        while (cap < need) cap *= 2;
        int32_t *h = dk_realloc(session->history, cap * sizeof(int32_t));
        if (!h) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        session->history = h;
        session->history_cap = cap;
    }
    if (cancelled(cancel)) return dk_fail(err, DK_ERR_LIMIT, "cancelled");
    if (session->batcher) return engine_batcher_eval(session->batcher, session, tokens, n_tokens, cancel, err);
    size_t step = cancel && !logits ? EVAL_CANCEL_CHUNK : n_tokens;
    for (size_t done = 0; done < n_tokens; done += step) {
        size_t n = n_tokens - done < step ? n_tokens - done : step;
        if (cancelled(cancel)) return dk_fail(err, DK_ERR_LIMIT, "cancelled");
        int rc = model_decode(session->ctx, tokens + done, (int64_t)n, logits != NULL, logits ? logits : session->logits, err);
        if (rc != DK_OK) return rc;
        memcpy(session->history + session->n_past, tokens + done, n * sizeof(int32_t));
        session->n_past += n;
        session->have_logits = true;
    }
    if (logits) memcpy(session->logits, logits + (n_tokens - 1) * n_vocab, n_vocab * sizeof(float));
    return DK_OK;
}

int engine_session_eval(engine_session *session, const int32_t *tokens, size_t n_tokens, float *logits, char *err)
{
    return session_eval(session, tokens, n_tokens, logits, NULL, err);
}

const float *engine_session_logits(const engine_session *session) { return session->have_logits ? session->logits : NULL; }

int engine_session_truncate(engine_session *session, size_t n_keep, char *err)
{
    if (n_keep > session->n_past)
        return dk_fail(err, DK_ERR_ARG, "truncate: %zu positions kept of %zu", n_keep, session->n_past);
    int rc = model_ctx_truncate(session->ctx, (int64_t)n_keep, err);
    if (rc != DK_OK) return rc;
    session->n_past = n_keep;
    session->have_logits = false;
    return DK_OK;
}
/* ---- generation ---- */

void engine_generate_params_default(engine_generate_params *params)
{
    memset(params, 0, sizeof(*params));
    sample_params_default(&params->sampling);
    params->num_predict = -1;
}

/* Passes complete UTF-8 text through the stop matcher to the callback. Returns 1 when
 * generation should end (stop string or cancel), 0 to go on, -1 on allocation failure. */
typedef struct gen_stream {
    const engine_generate_params *params;
    sample_stop *stop;
    dk_buf raw;  /* token bytes not yet forming complete UTF-8 */
    dk_buf text; /* complete text, before the stop matcher */
    dk_buf out;  /* text released by the stop matcher */
    bool cancelled;
} gen_stream;

static int gen_emit(gen_stream *g, bool final)
{
    dk_buf_clear(&g->text);
    dk_buf_clear(&g->out);
    if (utf8_drain(&g->raw, &g->text, final) < 0) return -1;
    int hit = sample_stop_feed(g->stop, g->text.data, g->text.len, &g->out);
    if (hit < 0) return -1;
    if (final && !hit && sample_stop_flush(g->stop, &g->out) < 0) return -1;
    if (g->out.len && g->params->on_text && g->params->on_text(g->params->user, g->out.data, g->out.len)) {
        g->cancelled = true;
        return 1;
    }
    return hit;
}

/* Which part of the output a constrained generation is in (engine_generate_params.grammar). */
enum gen_phase {
    GEN_FREE,      /* no grammar */
    GEN_WAIT,      /* a lazy grammar before its trigger token: free */
    GEN_FIRST,     /* the first token: the grammar's first token, or <think> */
    GEN_REASONING, /* inside <think>...</think>: free, but no end-of-generation */
    GEN_GRAMMAR,   /* every token through the matcher */
};

typedef struct gen_control {
    enum gen_phase phase;
    sample_matcher *matcher; /* NULL without a grammar */
    int32_t think_open;      /* the <think> token, or -1 */
    int32_t think_close;     /* the </think> token, or -1 */
    long n_reasoning;        /* tokens generated inside the reasoning section */
    long max_reasoning;      /* engine_generate_params.max_reasoning_tokens */
    const int32_t *eog;      /* (n_eog) end-of-generation tokens, barred while reasoning; the vocab's */
    size_t n_eog;
    float *logits;           /* (n_vocab) scratch copy when tokens are barred; NULL otherwise */
    dk_buf tail;             /* the reasoning's last bytes, to find "</think>" across tokens */
} gen_control;

static const char think_close[] = "</think>";

static void gen_control_free(gen_control *c)
{
    sample_matcher_free(c->matcher);
    dk_free(c->logits);
    dk_buf_free(&c->tail);
}

static int gen_control_init(gen_control *c, engine_model *model, const engine_generate_params *p, char *err)
{
    memset(c, 0, sizeof(*c));
    c->think_open = c->think_close = -1;
    c->phase = GEN_FREE;
    bool reasoning = p->grammar && !p->grammar_lazy && (p->grammar_after_reasoning || p->in_reasoning);
    if (p->n_banned || reasoning) {
        c->logits = dk_malloc_array(model->n_vocab, sizeof(float));
        if (!c->logits) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    if (!p->grammar) return DK_OK;
    const sample_vocab *vocab;
    int rc = engine_sample_vocab(model, &vocab, err);
    if (rc == DK_OK) rc = sample_matcher_new(&c->matcher, p->grammar, vocab, err);
    if (rc != DK_OK) return rc;
    c->phase = GEN_GRAMMAR;
    if (p->grammar_lazy) {
        c->phase = GEN_WAIT;
        return DK_OK;
    }
    if (!reasoning) return DK_OK;
    c->eog = sample_vocab_eog(vocab, &c->n_eog);
    c->think_open = engine_token_find(model, "<think>");
    c->think_close = engine_token_find(model, think_close);
    c->max_reasoning = p->max_reasoning_tokens;
    if (p->in_reasoning) c->phase = GEN_REASONING;
    else if (c->think_open >= 0) c->phase = GEN_FIRST;
    return DK_OK;
}

/* The logits sampling sees: the session's, or a copy with barred tokens at -inf. */
static const float *gen_logits(gen_control *c, const engine_model *model, const float *logits,
                               const engine_generate_params *p)
{
    if (!c->logits) return logits;
    memcpy(c->logits, logits, model->n_vocab * sizeof(float));
    for (size_t i = 0; i < p->n_banned; i++)
        if (p->banned[i] >= 0 && (size_t)p->banned[i] < model->n_vocab) c->logits[p->banned[i]] = -INFINITY;
    if (c->phase == GEN_REASONING)
        for (size_t i = 0; i < c->n_eog; i++) c->logits[c->eog[i]] = -INFINITY;
    return c->logits;
}

static int gen_pick(gen_control *c, sample_chain *chain, const float *logits, int32_t *tok, char *err)
{
    int rc = DK_OK;
    switch (c->phase) {
    case GEN_REASONING:
        if (c->max_reasoning > 0 && c->n_reasoning >= c->max_reasoning && c->think_close >= 0) {
            *tok = c->think_close; /* the budget is spent: close the section */
            break;
        }
        c->n_reasoning++;
        *tok = sample_chain_sample(chain, logits);
        break;
    case GEN_FREE:
    case GEN_WAIT:
        *tok = sample_chain_sample(chain, logits);
        break;
    case GEN_FIRST:
        rc = sample_chain_sample_grammar(chain, logits, c->matcher, &c->think_open, 1, tok, err);
        break;
    case GEN_GRAMMAR:
        rc = sample_chain_sample_grammar(chain, logits, c->matcher, NULL, 0, tok, err);
        break;
    }
    return rc; /* the matcher's own message: no token can continue, too many parse stacks... */
}

/* Moves the grammar state over a chosen token whose text is piece[0..n_piece). */
static int gen_advance(gen_control *c, int32_t tok, int32_t trigger, const char *piece, size_t n_piece, char *err)
{
    if (c->phase == GEN_WAIT) {
        if (tok != trigger) return DK_OK;
        c->phase = GEN_GRAMMAR;
    }
    if (c->phase == GEN_FIRST) {
        if (tok == c->think_open) {
            c->phase = GEN_REASONING;
            return DK_OK;
        }
        c->phase = GEN_GRAMMAR;
    }
    if (c->phase == GEN_GRAMMAR) return sample_matcher_accept(c->matcher, tok, err);
    if (c->phase != GEN_REASONING) return DK_OK;
    if (dk_buf_append(&c->tail, piece, n_piece) != 0) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    const char *end = memmem(c->tail.data, c->tail.len, think_close, sizeof think_close - 1);
    if (!end) {
        size_t n_keep = sizeof think_close - 1; /* enough for a split "</think>" */
        if (c->tail.len > n_keep) {
            memmove(c->tail.data, c->tail.data + c->tail.len - n_keep, n_keep);
            c->tail.len = n_keep;
            c->tail.data[n_keep] = 0;
        }
        return DK_OK;
    }
    c->phase = GEN_GRAMMAR;
    const char *rest = end + sizeof think_close - 1;
    size_t n_rest = (size_t)(c->tail.data + c->tail.len - rest);
    /* Text after "</think>" in the same token is held to the grammar too; when it does not fit
     * (a rare merge such as "</think>\n\n" against a grammar without leading space) the grammar
     * starts after it instead. */
    if (n_rest && sample_matcher_accept_bytes(c->matcher, rest, n_rest, err) != DK_OK) sample_matcher_reset(c->matcher);
    return DK_OK;
}

/* The token's log probability under the model's own distribution (log-softmax of the raw
 * logits, in double) and the top_logprobs best tokens, to params->on_token. */
static int report_token(const engine_generate_params *params, const float *logits, size_t n_vocab, int32_t tok)
{
    engine_logprob top[ENGINE_MAX_TOP_LOGPROBS];
    size_t k = params->top_logprobs > 0 ? (size_t)params->top_logprobs : 0, n_top = 0;
    if (k > ENGINE_MAX_TOP_LOGPROBS) k = ENGINE_MAX_TOP_LOGPROBS;
    float max = -INFINITY;
    for (size_t i = 0; i < n_vocab; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0;
    for (size_t i = 0; i < n_vocab; i++) {
        sum += exp((double)logits[i] - max);
        if (k == 0 || (n_top == k && logits[i] <= top[k - 1].logprob)) continue;
        size_t j = n_top < k ? n_top++ : k - 1; /* insert into the sorted top list */
        while (j > 0 && top[j - 1].logprob < logits[i]) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = (engine_logprob){(int32_t)i, logits[i]};
    }
    double lse = (double)max + log(sum);
    for (size_t i = 0; i < n_top; i++) top[i].logprob = (float)((double)top[i].logprob - lse);
    return params->on_token(params->user, tok, (float)((double)logits[tok] - lse), top, n_top);
}

int engine_generate(engine_session *session, const int32_t *prompt, size_t n_prompt,
                    const engine_generate_params *params, engine_timings *timings, char *err)
{
    engine_timings t = {0};
    engine_model *model = session->model;
    sample_chain *chain = NULL;
    gen_stream g = {.params = params};
    gen_control control = {.think_open = -1, .think_close = -1};
    dk_buf piece = {0};
    bool entered = false;
    int rc;
    if (n_prompt == 0 && !session->have_logits)
        return dk_fail(err, DK_ERR_ARG, "generate: empty prompt and nothing evaluated yet");
    /* before the clock: a grammar's first use of a model builds its vocabulary trie, a one-time
     * cost per model (like loading), not part of prompt or eval time */
    rc = gen_control_init(&control, model, params, err);
    if (rc != DK_OK) goto done;
    if (session->batcher) {
        engine_batcher_enter(session->batcher);
        entered = true;
    }
    uint64_t t0 = dk_now_ns();
    if (n_prompt) {
        rc = session_eval(session, prompt, n_prompt, NULL, params->cancel, err);
        if (rc != DK_OK) {
            if (cancelled(params->cancel)) {
                t.done = ENGINE_DONE_CANCEL;
                rc = DK_OK;
            }
            goto done;
        }
    }
    uint64_t t1 = dk_now_ns();
    t.n_prompt = n_prompt;
    t.prompt_ms = (double)(t1 - t0) / 1e6;

    rc = sample_chain_new(&chain, &params->sampling, model->n_vocab, err);
    if (rc != DK_OK) goto done;
    rc = sample_stop_new(&g.stop, params->stops, params->n_stops, err);
    if (rc != DK_OK) goto done;
    for (size_t i = 0; i < n_prompt; i++) sample_chain_accept(chain, prompt[i]);

    t.done = ENGINE_DONE_LENGTH;
    for (long i = 0; params->num_predict < 0 || i < params->num_predict; i++) {
        int32_t tok;
        if (cancelled(params->cancel)) {
            t.done = ENGINE_DONE_CANCEL;
            break;
        }
        rc = gen_pick(&control, chain, gen_logits(&control, model, session->logits, params), &tok, err);
        if (rc != DK_OK) goto done;
        t.n_eval++;
        if (params->on_token && report_token(params, session->logits, model->n_vocab, tok) != 0) {
            t.done = ENGINE_DONE_CANCEL;
            break;
        }
        if (engine_token_is_eog(model, tok)) {
            t.done = ENGINE_DONE_EOG;
            break;
        }
        sample_chain_accept(chain, tok);
        dk_buf_clear(&piece);
        rc = engine_token_piece(model, tok, &piece, err);
        if (rc == DK_OK) rc = gen_advance(&control, tok, params->grammar_trigger, piece.data ? piece.data : "", piece.len, err);
        if (rc != DK_OK) goto done;
        if (dk_buf_append(&g.raw, piece.data ? piece.data : "", piece.len) != 0) goto oom;
        int e = gen_emit(&g, false);
        if (e < 0) goto oom;
        if (e > 0) {
            t.done = g.cancelled ? ENGINE_DONE_CANCEL : ENGINE_DONE_STOP;
            break;
        }
        if (control.phase == GEN_GRAMMAR && sample_matcher_finished(control.matcher)) {
            t.done = ENGINE_DONE_EOG; /* nothing but the end can follow */
            break;
        }
        if (session->n_past >= session->n_ctx) {
            t.done = ENGINE_DONE_CONTEXT;
            break;
        }
        rc = session_eval(session, &tok, 1, NULL, params->cancel, err);
        if (rc != DK_OK) {
            if (cancelled(params->cancel)) {
                t.done = ENGINE_DONE_CANCEL;
                rc = DK_OK;
                break;
            }
            goto done;
        }
    }
    if (t.done != ENGINE_DONE_STOP && t.done != ENGINE_DONE_CANCEL) {
        int e = gen_emit(&g, true);
        if (e < 0) goto oom;
        if (g.cancelled) t.done = ENGINE_DONE_CANCEL;
        else if (e > 0) t.done = ENGINE_DONE_STOP;
    }
    t.eval_ms = (double)(dk_now_ns() - t1) / 1e6;
    rc = DK_OK;
    goto done;
oom:
    rc = dk_fail(err, DK_ERR_NOMEM, "generate: out of memory");
done:
    if (entered) engine_batcher_leave(session->batcher);
    if (timings) *timings = t;
    sample_chain_free(chain);
    sample_stop_free(g.stop);
    gen_control_free(&control);
    dk_buf_free(&piece);
    dk_buf_free(&g.raw);
    dk_buf_free(&g.text);
    dk_buf_free(&g.out);
    return rc;
}

/* embeddings and reranking: embed.c */
