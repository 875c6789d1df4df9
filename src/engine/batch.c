/*
 * batch.c: continuous batching. Sessions made with a batcher keep only their KV caches; each
 * thread that evaluates one of them queues its request (a decode token, or a prompt) and
 * waits. Whichever waiting thread finds the queue ready runs the next step: it takes the
 * requests in arrival order (a prompt in chunks, within max_tokens rows), evaluates them as one
 * model_decode_batch with the batcher's scratch and threads, hands out the logits and wakes
 * everyone. A step is ready when every session inside engine_generate has its token queued,
 * or when the oldest request has waited BATCH_WAIT_NS, so a slow sampler (a large grammar
 * mask) delays the others by at most that. Decoding is bound by reading the weights, so a
 * step of k tokens costs little more than a step of one: that is the throughput gain.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "engine/engine_internal.h"

#define BATCH_WAIT_NS 3000000ull   /* a step waits this long for late sessions */
#define BATCH_POLL_NS 50000000ull  /* waiters look at their cancel flag this often */
#define BATCH_PROMPT_CHUNK 128     /* prompt tokens per step while other sessions decode */

typedef struct batch_req {
    engine_session *session;
    const int32_t *tokens;
    size_t n, done;      /* tokens asked for; tokens in the KV cache so far */
    size_t taken;        /* tokens of the step in flight (0: not in one) */
    const atomic_int *cancel;
    bool finished;
    int rc;
    char err[DK_ERRLEN];
    struct batch_req *next;
} batch_req;

struct engine_batcher {
    engine_model *model;
    model_ctx *scratch;
    size_t n_ctx, max_tokens;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    batch_req *head;        /* waiting requests, oldest first */
    size_t n_waiting;
    int n_generating;       /* sessions between engine_batcher_enter and _leave */
    bool stepping;          /* a step runs (outside the lock) */
    uint64_t ready_at_ns;   /* when the oldest waiting request stops waiting for others */
    engine_batcher_stats stats;
    /* the running step's arrays (used by the stepping thread only), grown as needed */
    model_seq *seqs;
    batch_req **reqs;
    float *logits;
    size_t cap;
};

int engine_batcher_new(engine_batcher **out, engine_model *model, size_t n_ctx, size_t max_tokens, int n_threads,
                       char *err)
{
    *out = NULL;
    if (!model->net) return dk_fail(err, DK_ERR_ARG, "batcher: the model was loaded without weights");
    if (engine_is_embedding(model)) return dk_fail(err, DK_ERR_ARG, "batcher: %s is an embedding model", model->arch);
    if (n_ctx == 0) n_ctx = model->n_ctx_train ? (model->n_ctx_train < 4096 ? model->n_ctx_train : 4096) : 2048;
    if (max_tokens == 0) max_tokens = 512;
    if (max_tokens > n_ctx) max_tokens = n_ctx;
    engine_batcher *b = dk_calloc(1, sizeof *b);
    if (!b) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    b->model = model;
    b->n_ctx = n_ctx;
    b->max_tokens = max_tokens;
    model_ctx_params cp = model_ctx_default_params();
    cp.n_ctx = (int64_t)n_ctx;
    cp.n_batch = (int64_t)max_tokens;
    cp.n_threads = n_threads > 0 ? n_threads : model->n_threads;
    cp.numerics = model->numerics;
    cp.kind = MODEL_CTX_SCRATCH_ONLY;
    int rc = model_ctx_new(&b->scratch, model->net, &cp, err);
    if (rc != DK_OK) {
        dk_free(b);
        return rc;
    }
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = b;
    return DK_OK;
}

void engine_batcher_free(engine_batcher *b)
{
    if (!b) return;
    model_ctx_free(b->scratch);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    dk_free(b->seqs);
    dk_free(b->reqs);
    dk_free(b->logits);
    dk_free(b);
}

size_t engine_batcher_n_ctx(const engine_batcher *b) { return b->n_ctx; }
engine_model *engine_batcher_model(const engine_batcher *b) { return b->model; }

void engine_batcher_get_stats(engine_batcher *b, engine_batcher_stats *out)
{
    pthread_mutex_lock(&b->lock);
    *out = b->stats;
    pthread_mutex_unlock(&b->lock);
}

void engine_batcher_enter(engine_batcher *b)
{
    pthread_mutex_lock(&b->lock);
    b->n_generating++;
    pthread_mutex_unlock(&b->lock);
}

void engine_batcher_leave(engine_batcher *b)
{
    pthread_mutex_lock(&b->lock);
    b->n_generating--;
    pthread_cond_broadcast(&b->cond); /* a step may have been waiting for this session */
    pthread_mutex_unlock(&b->lock);
}

static void unlink_req(engine_batcher *b, batch_req *r)
{
    for (batch_req **p = &b->head; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            b->n_waiting--;
            return;
        }
}

static bool step_ready(const engine_batcher *b, uint64_t now)
{
    if (!b->head || b->stepping) return false;
    return b->n_waiting >= (size_t)(b->n_generating > 0 ? b->n_generating : 1) || now >= b->ready_at_ns;
}

static int grow_step_arrays(engine_batcher *b, size_t n)
{
    if (n <= b->cap) return 0;
    size_t cap = b->cap ? b->cap * 2 : 8;
    while (cap < n) cap *= 2;
    model_seq *seqs = dk_realloc(b->seqs, cap * sizeof *seqs);
    if (seqs) b->seqs = seqs;
    batch_req **reqs = dk_realloc(b->reqs, cap * sizeof *reqs);
    if (reqs) b->reqs = reqs;
    float *logits = dk_malloc_array(cap, b->model->n_vocab * sizeof(float));
    if (!seqs || !reqs || !logits) {
        dk_free(logits);
        return -1;
    }
    dk_free(b->logits);
    b->logits = logits;
    b->cap = cap;
    return 0;
}

/* The requests' results after a step (lock held). */
static void finish_step(engine_batcher *b, size_t n, int rc, const char *err)
{
    size_t n_vocab = b->model->n_vocab;
    for (size_t i = 0; i < n; i++) {
        batch_req *r = b->reqs[i];
        engine_session *s = r->session;
        if (rc != DK_OK) {
            r->rc = rc;
            dk_strlcpy(r->err, err, sizeof r->err);
        } else {
            memcpy(s->history + s->n_past, r->tokens + r->done, r->taken * sizeof(int32_t));
            s->n_past += r->taken;
            r->done += r->taken;
            if (!b->seqs[i].no_logits) {
                memcpy(s->logits, b->logits + i * n_vocab, n_vocab * sizeof(float));
                s->have_logits = true;
            }
        }
        r->taken = 0;
        if (rc != DK_OK || r->done == r->n) {
            r->finished = true;
            unlink_req(b, r);
        }
        b->stats.rows += rc == DK_OK ? (uint64_t)b->seqs[i].n_tok : 0;
    }
}

/* Takes the waiting requests into one step and runs it; called and returns with the lock
 * held, drops it during the forward pass. */
static void run_step(engine_batcher *b)
{
    size_t n = 0, budget = b->max_tokens;
    char err[DK_ERRLEN] = "";
    if (grow_step_arrays(b, b->n_waiting) != 0) { /* out of memory: fail everyone waiting */
        for (batch_req *r = b->head; r; r = r->next) {
            r->finished = true;
            r->rc = dk_fail(r->err, DK_ERR_NOMEM, "batch: out of memory");
        }
        b->head = NULL;
        b->n_waiting = 0;
        pthread_cond_broadcast(&b->cond);
        return;
    }
    /* while other sessions decode, a prompt goes in chunks, so their next tokens are not held
     * up for the whole prompt */
    size_t n_decoding = 0;
    for (batch_req *r = b->head; r; r = r->next) n_decoding += r->n - r->done == 1;
    size_t chunk = n_decoding > 0 ? BATCH_PROMPT_CHUNK : b->max_tokens;
    for (batch_req *r = b->head; r && budget > 0; r = r->next) {
        size_t k = r->n - r->done;
        if (k > budget) k = budget;
        if (k > chunk) k = chunk;
        r->taken = k;
        b->seqs[n] = (model_seq){r->session->ctx, r->tokens + r->done, (int64_t)k, r->done + k < r->n};
        b->reqs[n++] = r;
        budget -= k;
    }
    b->stepping = true;
    pthread_mutex_unlock(&b->lock);
    int rc = model_decode_batch(b->scratch, b->seqs, (int64_t)n, b->logits, err);
    pthread_mutex_lock(&b->lock);
    b->stepping = false;
    finish_step(b, n, rc, err);
    b->stats.steps++;
    uint64_t rows = 0;
    for (size_t i = 0; i < n; i++) rows += (uint64_t)b->seqs[i].n_tok;
    if (rows > b->stats.max_rows) b->stats.max_rows = rows;
    b->ready_at_ns = dk_now_ns() + BATCH_WAIT_NS;
    pthread_cond_broadcast(&b->cond);
}

static void wait_until(engine_batcher *b, uint64_t deadline_ns)
{
    struct timespec ts = {(time_t)(deadline_ns / 1000000000ull), (long)(deadline_ns % 1000000000ull)};
    pthread_cond_timedwait(&b->cond, &b->lock, &ts);
}

static bool is_cancelled(const atomic_int *cancel) { return cancel && atomic_load(cancel) != 0; }

int engine_batcher_eval(engine_batcher *b, engine_session *session, const int32_t *tokens, size_t n_tokens,
                        const atomic_int *cancel, char *err)
{
    batch_req r = {.session = session, .tokens = tokens, .n = n_tokens, .cancel = cancel};
    pthread_mutex_lock(&b->lock);
    batch_req **tail = &b->head;
    while (*tail) tail = &(*tail)->next;
    *tail = &r;
    if (b->n_waiting++ == 0) b->ready_at_ns = dk_now_ns() + BATCH_WAIT_NS;
    while (!r.finished) {
        uint64_t now = dk_now_ns();
        if (step_ready(b, now)) {
            run_step(b);
            continue;
        }
        if (r.taken == 0 && is_cancelled(cancel)) {
            unlink_req(b, &r);
            r.finished = true;
            r.rc = dk_fail(r.err, DK_ERR_LIMIT, "cancelled");
            pthread_cond_broadcast(&b->cond);
            break;
        }
        uint64_t deadline = now + BATCH_POLL_NS;
        if (!b->stepping && b->head && b->ready_at_ns < deadline) deadline = b->ready_at_ns;
        wait_until(b, deadline);
    }
    pthread_mutex_unlock(&b->lock);
    if (r.rc != DK_OK) return dk_fail(err, r.rc, "%s", r.err);
    return DK_OK;
}
