/*
 * sched.c: which models are resident and which session a request gets.
 *
 * A runner is one loaded model (keyed by its store digest and name): the engine_model, its
 * engine_batcher (continuous batching: the sessions of a runner share forward passes), and
 * config.num_parallel slots, each a session created on first use that remembers the last
 * conversation it served, so that the next turn of a chat lands where its KV cache prefix is.
 * A request that finds every slot busy waits, in FIFO order, unless config.max_queue requests
 * already wait ("server busy"). Models load outside the lock (other models keep serving; two
 * requests for the same model wait for one load), within config.max_memory (estimated: the
 * GGUF's size plus the KV caches of its slots) and config.max_loaded_models, unloading the
 * least recently used idle runners first. A runner lives for its keep_alive after its last
 * use; a reaper thread unloads expired idle runners.
 *
 * Locking: one mutex guards every runner's bookkeeping; a session is used by the one request
 * that holds its slot, outside the lock. Not for: HTTP (http.c), request parsing (request.c).
 */
#include "server/srv_internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf/gguf.h"

#define SCHED_POLL_MS 100 /* waits wake this often to look at cancel flags */

typedef struct sched_slot {
    engine_session *session;  /* created on first use; NULL for embedding models */
    json_t *conversation;     /* the messages it last served (owned), or NULL */
    bool busy;
    uint64_t last_used_ns;
} sched_slot;

struct srv_runner {
    srv_runner *next;
    char *key;                /* "sha256:HEX name" */
    store_model *info;        /* owned */
    engine_model *model;      /* NULL while loading */
    engine_batcher *batcher;  /* NULL for embedding models */
    json_t *details;          /* srv_model_details, made at load */
    sched_slot *slots;        /* (n_slots) */
    int n_slots;
    int n_leases;             /* slots held */
    int n_pending;            /* requests loading or waiting for this runner */
    bool loading;
    bool failed;              /* the load failed: detached, freed by the last pending request */
    int load_rc;
    char load_err[DK_ERRLEN];
    bool unload_requested;    /* unload as soon as it is idle */
    size_t n_ctx;             /* context of its sessions */
    int n_threads;
    int64_t keep_alive_ns;    /* of the last request (< 0 forever) */
    uint64_t expires_ns;      /* monotonic; 0: never */
    uint64_t last_used_ns;
    uint64_t est_bytes;       /* weights + KV caches of all slots */
};

/* A request waiting in line (on the waiter's stack). */
typedef struct sched_waiter {
    struct sched_waiter *prev, *next;
    const char *key;
} sched_waiter;

struct srv_sched {
    srv *server;
    pthread_mutex_t lock;
    pthread_cond_t cond;      /* CLOCK_MONOTONIC; broadcast on every change */
    srv_runner *runners;
    sched_waiter *wait_head, *wait_tail;
    size_t n_waiting;
    pthread_t reaper;
    bool reaper_started;
    bool stop;
    uint64_t retired_steps, retired_rows; /* batch counters of runners already unloaded */
};

/* What the GGUF says about a model's size, before loading it. */
typedef struct model_shape {
    uint64_t file_bytes;
    size_t n_ctx_train;       /* 0 if unknown */
    uint64_t kv_bytes_per_pos; /* bytes of K and V (F16) for one position, all layers */
    bool embedding;           /* an encoder: no KV cache */
} model_shape;

static uint64_t now_ns(void) { return dk_now_ns(); }

static void deadline_in(struct timespec *ts, uint64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    uint64_t t = (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec + ns;
    ts->tv_sec = (time_t)(t / 1000000000ull);
    ts->tv_nsec = (long)(t % 1000000000ull);
}

/* ---- sizes ---- */

static uint64_t arch_u64(const gguf_file *f, const char *arch, const char *suffix, uint64_t fallback)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v;
    return gguf_get_u64(f, key, &v) == DK_OK ? v : fallback;
}

static int shape_read(const char *path, model_shape *out, char *err)
{
    memset(out, 0, sizeof *out);
    gguf_file *f;
    int rc = gguf_open(&f, path, err);
    if (rc != DK_OK) return rc;
    out->file_bytes = gguf_file_size(f);
    gguf_str a;
    char arch[64] = "llama";
    if (gguf_get_str(f, "general.architecture", &a) == DK_OK && a.len < sizeof arch) {
        memcpy(arch, a.ptr, a.len);
        arch[a.len] = 0;
    }
    out->embedding = strstr(arch, "bert") != NULL;
    uint64_t n_layer = arch_u64(f, arch, "block_count", 0);
    uint64_t n_embd = arch_u64(f, arch, "embedding_length", 0);
    uint64_t n_head = arch_u64(f, arch, "attention.head_count", 1);
    uint64_t n_head_kv = arch_u64(f, arch, "attention.head_count_kv", n_head);
    uint64_t head_dim = n_head ? n_embd / n_head : 0;
    uint64_t k_len = arch_u64(f, arch, "attention.key_length", head_dim);
    uint64_t v_len = arch_u64(f, arch, "attention.value_length", head_dim);
    out->n_ctx_train = (size_t)arch_u64(f, arch, "context_length", 0);
    gguf_close(f);
    uint64_t per_pos;
    if (dk_mul_u64(n_layer, n_head_kv, &per_pos) || dk_mul_u64(per_pos, (k_len + v_len) * 2, &per_pos))
        per_pos = UINT64_MAX / 4096;
    out->kv_bytes_per_pos = per_pos;
    return DK_OK;
}

static uint64_t runner_estimate(const model_shape *shape, size_t n_ctx, int n_slots)
{
    if (shape->embedding) return shape->file_bytes;
    uint64_t kv, total;
    if (dk_mul_u64(shape->kv_bytes_per_pos, (uint64_t)n_ctx, &kv) || dk_mul_u64(kv, (uint64_t)n_slots, &kv) ||
        dk_add_u64(kv, shape->file_bytes, &total))
        return UINT64_MAX / 2;
    return total;
}

static uint64_t memory_bound(const srv_config *c)
{
    if (c->max_memory) return c->max_memory;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return UINT64_MAX;
    return (uint64_t)pages / 4 * 3 * (uint64_t)page;
}

/* ---- runners ---- */

static void runner_free(srv_sched *sched, srv_runner *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_slots; i++) {
        engine_session_free(r->slots[i].session);
        json_decref(r->slots[i].conversation);
    }
    dk_free(r->slots);
    if (r->batcher) {
        engine_batcher_stats st;
        engine_batcher_get_stats(r->batcher, &st);
        pthread_mutex_lock(&sched->lock);
        sched->retired_steps += st.steps;
        sched->retired_rows += st.rows;
        pthread_mutex_unlock(&sched->lock);
        engine_batcher_free(r->batcher);
    }
    engine_model_free(r->model);
    json_decref(r->details);
    store_model_free(r->info);
    dk_free(r->key);
    dk_free(r);
}

/* Frees a chain of detached runners (linked by next); called without the lock. */
static void runners_free(srv_sched *sched, srv_runner *list)
{
    while (list) {
        srv_runner *next = list->next;
        runner_free(sched, list);
        list = next;
    }
}

static void runner_unlink_locked(srv_sched *sched, srv_runner *r)
{
    for (srv_runner **p = &sched->runners; *p; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    r->next = NULL;
}

/* Out of the list and onto *freed, to be freed once the lock is released. */
static void runner_detach_locked(srv_sched *sched, srv_runner *r, srv_runner **freed)
{
    runner_unlink_locked(sched, r);
    r->next = *freed;
    *freed = r;
}

static bool runner_idle(const srv_runner *r) { return r->n_leases == 0 && r->n_pending == 0 && !r->loading; }

static srv_runner *runner_find_locked(srv_sched *sched, const char *key)
{
    for (srv_runner *r = sched->runners; r; r = r->next)
        if (strcmp(r->key, key) == 0) return r;
    return NULL;
}

/* Drops a pending reference; a failed runner is freed by its last one. */
static void runner_unpend_locked(srv_runner *r, srv_runner **freed)
{
    r->n_pending--;
    if (r->failed && r->n_pending == 0) {
        r->next = *freed;
        *freed = r;
    }
}

/* Makes room for a runner of `bytes`: unloads least recently used idle runners while the
 * bounds are exceeded. Evicts nothing (and returns false) when even that would not make it
 * fit because others are busy; a model larger than the bound alone loads anyway. */
static bool make_room_locked(srv_sched *sched, uint64_t bytes, srv_runner **freed)
{
    const srv_config *c = &sched->server->config;
    uint64_t bound = memory_bound(c);
    uint64_t total = 0, idle_total = 0;
    int count = 0, idle_count = 0;
    for (srv_runner *r = sched->runners; r; r = r->next) {
        total += r->est_bytes;
        count++;
        if (runner_idle(r)) idle_total += r->est_bytes, idle_count++;
    }
    bool fits_now = count + 1 <= c->max_loaded_models && total + bytes <= bound;
    if (fits_now) return true;
    int busy_count = count - idle_count;
    uint64_t busy_total = total - idle_total;
    bool can_fit = busy_count + 1 <= c->max_loaded_models && (busy_total + bytes <= bound || busy_count == 0);
    if (!can_fit) return false;
    while (count + 1 > c->max_loaded_models || (total + bytes > bound && count > busy_count)) {
        srv_runner *lru = NULL;
        for (srv_runner *r = sched->runners; r; r = r->next)
            if (runner_idle(r) && (!lru || r->last_used_ns < lru->last_used_ns)) lru = r;
        if (!lru) break;
        total -= lru->est_bytes;
        count--;
        runner_detach_locked(sched, lru, freed);
    }
    return true;
}

/* Loads r (created by the caller, loading, with a pending reference) without the lock held. */
static int runner_load(srv_sched *sched, srv_runner *r, char *err)
{
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = r->n_threads;
    engine_model *model = NULL;
    int rc = engine_model_load(&model, r->info->gguf_path, &lp, err);
    if (rc != DK_OK) return rc;
    if (!engine_has_weights(model)) {
        engine_model_free(model);
        return dk_fail(err, DK_ERR_UNSUPPORTED, "model '%s' has no weights (a vocabulary only)", r->info->name);
    }
    engine_batcher *batcher = NULL;
    if (!engine_is_embedding(model)) {
        rc = engine_batcher_new(&batcher, model, r->n_ctx, 0, r->n_threads, err);
        if (rc != DK_OK) {
            engine_model_free(model);
            return rc;
        }
    }
    json_t *details = srv_model_details(r->info, model);
    pthread_mutex_lock(&sched->lock);
    r->model = model;
    r->batcher = batcher;
    r->details = details;
    pthread_mutex_unlock(&sched->lock);
    return DK_OK;
}

/* ---- waiting in line ---- */

static void waiter_remove_locked(srv_sched *sched, sched_waiter *w)
{
    if (w->prev) w->prev->next = w->next;
    else sched->wait_head = w->next;
    if (w->next) w->next->prev = w->prev;
    else sched->wait_tail = w->prev;
    w->prev = w->next = NULL;
    sched->n_waiting--;
}

/* True when no request that came before (in line) waits for the same model. */
static bool first_in_line_locked(const srv_sched *sched, const sched_waiter *self, bool queued, const char *key)
{
    for (const sched_waiter *w = sched->wait_head; w; w = w->next) {
        if (queued && w == self) return true;
        if (strcmp(w->key, key) == 0) return false;
    }
    return true;
}

/* One wait: joins the line first (DK_ERR_LIMIT "server busy" when it is full), then sleeps
 * until something changes or a poll interval passes. */
static int wait_once_locked(srv_sched *sched, sched_waiter *w, bool *queued, char *err)
{
    if (!*queued) {
        if (sched->n_waiting >= (size_t)sched->server->config.max_queue)
            return dk_fail(err, DK_ERR_LIMIT, "server busy, please try again; maximum pending requests exceeded");
        w->prev = sched->wait_tail;
        w->next = NULL;
        if (sched->wait_tail) sched->wait_tail->next = w;
        else sched->wait_head = w;
        sched->wait_tail = w;
        sched->n_waiting++;
        *queued = true;
    }
    struct timespec until;
    deadline_in(&until, SCHED_POLL_MS * 1000000ull);
    pthread_cond_timedwait(&sched->cond, &sched->lock, &until);
    return DK_OK;
}

static int check_abort(const srv_sched *sched, const atomic_int *cancel, char *err)
{
    if (atomic_load(&sched->server->stopping) || sched->stop)
        return dk_fail(err, DK_ERR_LIMIT, "cancelled: the server is shutting down");
    if (cancel && atomic_load(cancel)) return dk_fail(err, DK_ERR_LIMIT, "cancelled");
    return DK_OK;
}

/* ---- slots ---- */

/* How many leading messages (role and content) two conversations share. */
static size_t messages_common(const json_t *stored, const json_t *conv)
{
    if (!json_is_array(stored) || !json_is_array(conv)) return 0;
    size_t n = 0, max = json_array_size(stored) < json_array_size(conv) ? json_array_size(stored) : json_array_size(conv);
    for (; n < max; n++) {
        const json_t *a = json_array_get(stored, n), *b = json_array_get(conv, n);
        if (!json_equal(json_object_get(a, "role"), json_object_get(b, "role")) ||
            !json_equal(json_object_get(a, "content"), json_object_get(b, "content")))
            break;
    }
    return n;
}

/* The idle slot to use: the one whose last conversation shares the most leading messages
 * with the new one (its next turn, or the same question asked again with another last
 * message), else an empty one, else the least recently used. -1 when all are busy. */
static int slot_choose_locked(const srv_runner *r, const json_t *conversation, size_t *n_reused)
{
    int best = -1;
    long best_score = -2;
    *n_reused = 0;
    for (int i = 0; i < r->n_slots; i++) {
        const sched_slot *s = &r->slots[i];
        if (s->busy) continue;
        size_t n = messages_common(s->conversation, conversation);
        long score = n > 0 ? (long)n : (!s->conversation && !s->session) ? 0 : -1;
        if (score > best_score || (score == best_score && s->last_used_ns < r->slots[best].last_used_ns)) {
            best = i;
            best_score = score;
            *n_reused = n;
        }
    }
    return best;
}

/* ---- acquire ---- */

typedef struct acquire_req {
    const char *name;
    size_t num_ctx;
    int n_threads;
    int64_t keep_alive_ns;
    const json_t *conversation;
    const atomic_int *cancel;
    bool take_slot;            /* false: only make sure it is loaded (preload) */
} acquire_req;

static void opts_resolve(const srv_sched *sched, const srv_load_opts *opts, acquire_req *req)
{
    const srv_config *c = &sched->server->config;
    req->keep_alive_ns = (!opts || opts->keep_alive_ns == SRV_KEEP_ALIVE_DEFAULT) ? c->keep_alive_ns
                                                                                  : opts->keep_alive_ns;
    req->num_ctx = (opts && opts->num_ctx) ? opts->num_ctx : c->num_ctx;
    req->n_threads = (opts && opts->num_thread > 0) ? opts->num_thread : c->n_threads;
}

static char *runner_key(const store_model *m)
{
    dk_buf b = {0};
    dk_buf_printf(&b, "%s %s", m->digest, m->name);
    return dk_buf_detach(&b);
}

static srv_runner *runner_new(srv_sched *sched, store_model *info, char *key, const model_shape *shape,
                              const acquire_req *req)
{
    srv_runner *r = dk_calloc(1, sizeof *r);
    int n_slots = sched->server->config.num_parallel;
    sched_slot *slots = dk_calloc((size_t)n_slots, sizeof *slots);
    if (!r || !slots) {
        dk_free(r);
        dk_free(slots);
        return NULL;
    }
    r->key = key;
    r->info = info;
    r->slots = slots;
    r->n_slots = n_slots;
    r->n_ctx = req->num_ctx;
    if (shape->n_ctx_train && r->n_ctx > shape->n_ctx_train) r->n_ctx = shape->n_ctx_train;
    r->n_threads = req->n_threads;
    r->keep_alive_ns = req->keep_alive_ns;
    r->loading = true;
    r->n_pending = 1;
    r->last_used_ns = now_ns();
    r->est_bytes = runner_estimate(shape, r->n_ctx, n_slots);
    return r;
}

static void runner_set_expiry_locked(srv_runner *r, int64_t keep_alive_ns)
{
    r->keep_alive_ns = keep_alive_ns;
    r->expires_ns = keep_alive_ns < 0 ? 0 : now_ns() + (uint64_t)keep_alive_ns;
}

/* The heart of srv_sched_acquire and srv_sched_preload. On success with take_slot, *out
 * holds a slot; without, the runner is loaded and its keep_alive set. */
static int sched_get(srv_sched *sched, const acquire_req *req, srv_lease *out, double *load_ms, char *err)
{
    store_model *info = NULL;
    int rc = store_resolve(sched->server->store, req->name, &info, err);
    if (rc != DK_OK) return rc;
    char *key = runner_key(info);
    if (!key) {
        store_model_free(info);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    model_shape shape;
    bool have_shape = false;
    sched_waiter w = {.key = key}; /* w.key: the runner's key once this request made it */
    bool queued = false;
    srv_runner *waited = NULL; /* the runner this request waits for (holds a pending reference on) */
    srv_runner *freed = NULL;
    srv_runner *r = NULL;
    bool saw_load = false;
    uint64_t t0 = now_ns();
    *load_ms = 0;

    pthread_mutex_lock(&sched->lock);
    for (;;) {
        if ((rc = check_abort(sched, req->cancel, err)) != DK_OK) break;
        if (waited && waited->failed) {
            rc = dk_fail(err, waited->load_rc, "%s", waited->load_err);
            break;
        }
        r = runner_find_locked(sched, w.key);
        if (!r) {
            if (!have_shape) {
                pthread_mutex_unlock(&sched->lock);
                rc = shape_read(info->gguf_path, &shape, err);
                pthread_mutex_lock(&sched->lock);
                if (rc != DK_OK) break;
                have_shape = true;
                continue;
            }
            size_t n_ctx = shape.n_ctx_train && req->num_ctx > shape.n_ctx_train ? shape.n_ctx_train : req->num_ctx;
            uint64_t need = runner_estimate(&shape, n_ctx, sched->server->config.num_parallel);
            if (!first_in_line_locked(sched, &w, queued, w.key) || !make_room_locked(sched, need, &freed)) {
                if ((rc = wait_once_locked(sched, &w, &queued, err)) != DK_OK) break;
                continue;
            }
            r = runner_new(sched, info, key, &shape, req);
            if (!r) {
                rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
                break;
            }
            info = NULL; /* the runner owns them now */
            key = NULL;
            w.key = r->key;
            r->next = sched->runners;
            sched->runners = r;
            pthread_mutex_unlock(&sched->lock);
            runners_free(sched, freed);
            freed = NULL;
            uint64_t t_load = now_ns();
            char load_err[DK_ERRLEN];
            rc = runner_load(sched, r, load_err);
            pthread_mutex_lock(&sched->lock);
            r->loading = false;
            *load_ms = (double)(now_ns() - t_load) / 1e6;
            if (rc != DK_OK) {
                r->failed = true;
                r->load_rc = rc;
                dk_strlcpy(r->load_err, load_err, sizeof r->load_err);
                dk_fail(err, rc, "%s", load_err);
                runner_unlink_locked(sched, r); /* new requests load afresh; waiters see the error */
                runner_unpend_locked(r, &freed);
                r = NULL;
                pthread_cond_broadcast(&sched->cond);
                break;
            }
            waited = r; /* keep the loader's pending reference until it has a slot */
            pthread_cond_broadcast(&sched->cond);
            continue;
        }
        if (r->loading) {
            saw_load = true;
            if (!waited) {
                waited = r;
                r->n_pending++;
            }
            if ((rc = wait_once_locked(sched, &w, &queued, err)) != DK_OK) break;
            continue;
        }
        if (!req->take_slot) {
            runner_set_expiry_locked(r, req->keep_alive_ns);
            rc = DK_OK;
            break;
        }
        int slot = -1;
        if (first_in_line_locked(sched, &w, queued, r->key))
            slot = slot_choose_locked(r, req->conversation, &out->n_conversation_reused);
        if (slot < 0) {
            if (!waited) { /* a runner someone waits for is not idle: keep_alive 0 or LRU keep it */
                waited = r;
                r->n_pending++;
            }
            if ((rc = wait_once_locked(sched, &w, &queued, err)) != DK_OK) break;
            continue;
        }
        r->slots[slot].busy = true;
        r->slots[slot].last_used_ns = now_ns();
        r->n_leases++;
        r->last_used_ns = now_ns();
        out->runner = r;
        out->model = r->model;
        out->info = r->info;
        out->slot = slot;
        rc = DK_OK;
        break;
    }
    if (queued) {
        waiter_remove_locked(sched, &w);
        pthread_cond_broadcast(&sched->cond); /* the next in line may go now */
    }
    if (waited) runner_unpend_locked(waited, &freed);
    /* Preload with keep_alive 0, or an unload asked while loading: unload once idle. */
    if (rc == DK_OK && r && runner_idle(r) && (r->keep_alive_ns == 0 || r->unload_requested))
        runner_detach_locked(sched, r, &freed);
    pthread_mutex_unlock(&sched->lock);
    runners_free(sched, freed);
    store_model_free(info);
    dk_free(key);
    /* Waiting for another request's load of the model counts as load time too. */
    if (rc == DK_OK && saw_load && *load_ms == 0) *load_ms = (double)(now_ns() - t0) / 1e6;
    return rc;
}

static int slot_session_make(srv_sched *sched, srv_runner *r, int slot, char *err)
{
    sched_slot *s = &r->slots[slot];
    if (s->session || engine_is_embedding(r->model)) return DK_OK;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = r->n_ctx;
    sp.n_threads = r->n_threads;
    sp.batcher = r->batcher;
    (void)sched;
    return engine_session_new(&s->session, r->model, &sp, err);
}

int srv_sched_acquire(srv_sched *sched, const char *name, const srv_load_opts *opts, const json_t *conversation,
                      const atomic_int *cancel, srv_lease *out, char *err)
{
    memset(out, 0, sizeof *out);
    acquire_req req = {.name = name, .conversation = conversation, .cancel = cancel, .take_slot = true};
    opts_resolve(sched, opts, &req);
    double load_ms = 0;
    int rc = sched_get(sched, &req, out, &load_ms, err);
    if (rc != DK_OK) return rc;
    out->name = name;
    out->load_ms = load_ms;
    out->keep_alive_ns = req.keep_alive_ns;
    /* The slot is ours: its session is made (or kept) outside the lock. */
    rc = slot_session_make(sched, out->runner, out->slot, err);
    if (rc != DK_OK) {
        srv_sched_release(sched, out, NULL);
        return rc;
    }
    out->session = out->runner->slots[out->slot].session;
    return DK_OK;
}

void srv_sched_release(srv_sched *sched, srv_lease *lease, const json_t *conversation)
{
    if (!lease || !lease->runner) return;
    srv_runner *r = lease->runner;
    json_t *copy = conversation ? json_deep_copy(conversation) : NULL;
    srv_runner *freed = NULL;
    pthread_mutex_lock(&sched->lock);
    sched_slot *s = &r->slots[lease->slot];
    json_decref(s->conversation);
    s->conversation = copy;
    s->busy = false;
    s->last_used_ns = now_ns();
    r->n_leases--;
    r->last_used_ns = now_ns();
    runner_set_expiry_locked(r, lease->keep_alive_ns);
    if (runner_idle(r) && (r->keep_alive_ns == 0 || r->unload_requested)) runner_detach_locked(sched, r, &freed);
    pthread_cond_broadcast(&sched->cond);
    pthread_mutex_unlock(&sched->lock);
    runners_free(sched, freed);
    memset(lease, 0, sizeof *lease);
}

int srv_sched_preload(srv_sched *sched, const char *name, const srv_load_opts *opts, double *load_ms, char *err)
{
    acquire_req req = {.name = name, .take_slot = false, .cancel = NULL};
    opts_resolve(sched, opts, &req);
    double ms = 0;
    int rc = sched_get(sched, &req, NULL, &ms, err);
    if (load_ms) *load_ms = ms;
    return rc;
}

void srv_sched_unload(srv_sched *sched, const char *name)
{
    store_model *info = NULL;
    char e[DK_ERRLEN];
    const char *match = name;
    if (store_resolve(sched->server->store, name, &info, e) == DK_OK) match = info->name;
    srv_runner *freed = NULL;
    pthread_mutex_lock(&sched->lock);
    for (srv_runner *r = sched->runners, *next; r; r = next) {
        next = r->next;
        if (strcmp(r->info->name, match) != 0 && strcmp(r->info->name, name) != 0) continue;
        if (runner_idle(r)) runner_detach_locked(sched, r, &freed);
        else r->unload_requested = true;
    }
    pthread_cond_broadcast(&sched->cond);
    pthread_mutex_unlock(&sched->lock);
    runners_free(sched, freed);
    store_model_free(info);
}

/* ---- listing and counters ---- */

json_t *srv_sched_ps(srv_sched *sched)
{
    json_t *list = json_array();
    if (!list) return NULL;
    uint64_t mono = now_ns(), unix_now = srv_unix_ns();
    pthread_mutex_lock(&sched->lock);
    for (const srv_runner *r = sched->runners; r; r = r->next) {
        if (r->loading) continue;
        uint64_t expires_unix;
        if (r->keep_alive_ns < 0) expires_unix = unix_now + 100ull * 365 * 86400 * 1000000000ull;
        else if (r->n_leases > 0 || !r->expires_ns) expires_unix = unix_now + (uint64_t)r->keep_alive_ns;
        else expires_unix = unix_now + (r->expires_ns > mono ? r->expires_ns - mono : 0);
        char when[40];
        srv_time_rfc3339(when, expires_unix);
        const char *hex = strncmp(r->info->digest, "sha256:", 7) == 0 ? r->info->digest + 7 : r->info->digest;
        json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:O, s:s, s:I, s:I}", "name", r->info->name, "model",
                              r->info->name, "size", (json_int_t)r->est_bytes, "digest", hex, "details",
                              r->details ? r->details : json_null(), "expires_at", when, "size_vram", (json_int_t)0,
                              "context_length", (json_int_t)r->n_ctx);
        if (m) json_array_append_new(list, m);
    }
    pthread_mutex_unlock(&sched->lock);
    return list;
}

void srv_sched_stats(srv_sched *sched, size_t *n_loaded, size_t *n_waiting, size_t *n_busy, uint64_t *batch_steps,
                     uint64_t *batch_rows)
{
    size_t loaded = 0, busy = 0;
    pthread_mutex_lock(&sched->lock);
    uint64_t steps = sched->retired_steps, rows = sched->retired_rows;
    for (const srv_runner *r = sched->runners; r; r = r->next) {
        if (!r->loading) loaded++;
        busy += (size_t)r->n_leases;
        if (r->batcher) {
            engine_batcher_stats st;
            engine_batcher_get_stats(r->batcher, &st);
            steps += st.steps;
            rows += st.rows;
        }
    }
    *n_waiting = sched->n_waiting;
    pthread_mutex_unlock(&sched->lock);
    *n_loaded = loaded;
    *n_busy = busy;
    *batch_steps = steps;
    *batch_rows = rows;
}

/* ---- the reaper: unloads idle runners whose keep_alive has passed ---- */

static void *reaper_main(void *arg)
{
    srv_sched *sched = arg;
    pthread_mutex_lock(&sched->lock);
    while (!sched->stop) {
        uint64_t now = now_ns(), next = now + 1000000000ull;
        srv_runner *freed = NULL;
        for (srv_runner *r = sched->runners, *nr; r; r = nr) {
            nr = r->next;
            if (!runner_idle(r) || !r->expires_ns) continue;
            if (r->expires_ns <= now) runner_detach_locked(sched, r, &freed);
            else if (r->expires_ns < next) next = r->expires_ns;
        }
        if (freed) {
            pthread_mutex_unlock(&sched->lock);
            runners_free(sched, freed);
            pthread_mutex_lock(&sched->lock);
            pthread_cond_broadcast(&sched->cond); /* memory came free */
            continue;
        }
        struct timespec until;
        deadline_in(&until, next - now);
        pthread_cond_timedwait(&sched->cond, &sched->lock, &until);
    }
    pthread_mutex_unlock(&sched->lock);
    return NULL;
}

int srv_sched_new(srv_sched **out, srv *server, char *err)
{
    *out = NULL;
    srv_sched *s = dk_calloc(1, sizeof *s);
    if (!s) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    s->server = server;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        srv_sched_free(s);
        return dk_fail(err, DK_ERR_NOMEM, "cannot start the scheduler's thread");
    }
    s->reaper_started = true;
    *out = s;
    return DK_OK;
}

void srv_sched_shutdown(srv_sched *sched)
{
    if (!sched) return;
    pthread_mutex_lock(&sched->lock);
    pthread_cond_broadcast(&sched->cond);
    pthread_mutex_unlock(&sched->lock);
}

void srv_sched_free(srv_sched *sched)
{
    if (!sched) return;
    pthread_mutex_lock(&sched->lock);
    sched->stop = true;
    pthread_cond_broadcast(&sched->cond);
    pthread_mutex_unlock(&sched->lock);
    if (sched->reaper_started) pthread_join(sched->reaper, NULL);
    srv_runner *all = sched->runners;
    sched->runners = NULL;
    runners_free(sched, all);
    pthread_cond_destroy(&sched->cond);
    pthread_mutex_destroy(&sched->lock);
    dk_free(sched);
}
