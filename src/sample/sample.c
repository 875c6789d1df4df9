/*
 * sample.c: the samplers and the stop-string matcher declared in sample.h. Filters follow
 * llama.cpp's semantics (src/llama-sampling.cpp) but are written from the descriptions there,
 * not copied. Nothing here allocates per token except the chain's growing history.
 */
#include "sample/sample.h"
#include "sample/grammar_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers: splitmix64 to seed, xoshiro256** to draw ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sample_rng_seed(sample_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sample_rng_next(sample_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

double sample_rng_uniform(sample_rng *rng)
{
    return (double)(sample_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- candidates ---- */

void sample_cands_from_logits(sample_cands *cands, const float *logits, size_t n_vocab)
{
    for (size_t i = 0; i < n_vocab; i++) {
        cands->data[i].id = (int32_t)i;
        cands->data[i].logit = logits[i];
        cands->data[i].p = 0.0f;
    }
    cands->n = n_vocab;
    cands->sorted = false;
}

/* Descending logit, lower id first; NaN sorts last. */
static int cand_cmp(const void *a, const void *b)
{
    const sample_cand *x = a, *y = b;
    bool xn = isnan(x->logit), yn = isnan(y->logit);
    if (xn != yn) return xn ? 1 : -1;
    if (!xn && x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

void sample_cands_sort(sample_cands *cands)
{
    if (!cands->sorted && cands->n > 1) qsort(cands->data, cands->n, sizeof(sample_cand), cand_cmp);
    cands->sorted = true;
}

void sample_cands_softmax(sample_cands *cands)
{
    sample_cands_sort(cands);
    if (cands->n == 0) return;
    float max = cands->data[0].logit;
    double sum = 0.0;
    for (size_t i = 0; i < cands->n; i++) {
        float e = expf(cands->data[i].logit - max);
        cands->data[i].p = e;
        sum += e;
    }
    for (size_t i = 0; i < cands->n; i++) cands->data[i].p = (float)(cands->data[i].p / sum);
}

static sample_cand *cand_find(sample_cands *cands, int32_t id)
{
    if (id < 0) return NULL;
    if ((size_t)id < cands->n && cands->data[id].id == id) return &cands->data[id];
    for (size_t i = 0; i < cands->n; i++)
        if (cands->data[i].id == id) return &cands->data[i];
    return NULL;
}

void sample_penalties(sample_cands *cands, const int32_t *last, size_t n_last, float repeat,
                      float frequency, float presence)
{
    if (n_last == 0 || (repeat == 1.0f && frequency == 0.0f && presence == 0.0f)) return;
    for (size_t i = 0; i < n_last; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) seen = last[j] == last[i];
        if (seen) continue;
        size_t count = 1;
        for (size_t j = i + 1; j < n_last; j++) count += last[j] == last[i];
        sample_cand *c = cand_find(cands, last[i]);
        if (!c) continue;
        if (c->logit <= 0.0f) c->logit *= repeat;
        else c->logit /= repeat;
        c->logit -= (float)count * frequency + presence;
    }
    cands->sorted = false;
}

/* Sifts data[i] down the heap data[0..n) whose root is the worst (last in cand_cmp order). */
static void cand_heap_sift(sample_cand *data, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_cmp(&data[l], &data[w]) > 0) w = l;
        if (r < n && cand_cmp(&data[r], &data[w]) > 0) w = r;
        if (w == i) return;
        sample_cand t = data[i];
        data[i] = data[w];
        data[w] = t;
        i = w;
    }
}

/* The k best by a heap of the k best seen so far, then a sort of only those: the same
 * result as sorting everything and truncating (cand_cmp is a total order), without sorting
 * a 150k-token vocabulary for k = 40. */
void sample_top_k(sample_cands *cands, int k)
{
    if (k <= 0) return;
    size_t kk = (size_t)k;
    if (kk >= cands->n || cands->sorted) {
        sample_cands_sort(cands);
        if (kk < cands->n) cands->n = kk;
        return;
    }
    sample_cand *d = cands->data;
    for (size_t i = kk / 2; i-- > 0;) cand_heap_sift(d, kk, i);
    for (size_t i = kk; i < cands->n; i++) {
        if (cand_cmp(&d[i], &d[0]) < 0) {
            d[0] = d[i];
            cand_heap_sift(d, kk, 0);
        }
    }
    cands->n = kk;
    cands->sorted = false;
    sample_cands_sort(cands);
}

void sample_top_p(sample_cands *cands, float p, size_t min_keep)
{
    if (p >= 1.0f || cands->n == 0) return;
    sample_cands_softmax(cands);
    double cum = 0.0;
    size_t keep = cands->n;
    for (size_t i = 0; i < cands->n; i++) {
        cum += cands->data[i].p;
        if (cum >= p && i + 1 >= min_keep) {
            keep = i + 1;
            break;
        }
    }
    cands->n = keep;
}

void sample_min_p(sample_cands *cands, float min_p, size_t min_keep)
{
    if (min_p <= 0.0f || cands->n == 0) return;
    sample_cands_sort(cands);
    /* p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p) */
    float threshold = cands->data[0].logit + logf(min_p);
    size_t keep = 0;
    while (keep < cands->n && cands->data[keep].logit >= threshold) keep++;
    if (keep < min_keep) keep = min_keep < cands->n ? min_keep : cands->n;
    cands->n = keep;
}

void sample_temperature(sample_cands *cands, float t)
{
    if (cands->n == 0) return;
    if (t <= 0.0f) {
        int32_t best = sample_greedy(cands);
        sample_cand *c = cand_find(cands, best);
        cands->data[0] = *c;
        cands->n = 1;
        cands->sorted = true;
        return;
    }
    for (size_t i = 0; i < cands->n; i++) cands->data[i].logit /= t;
}

int32_t sample_greedy(const sample_cands *cands)
{
    if (cands->n == 0) return -1;
    if (cands->sorted) return cands->data[0].id;
    size_t best = 0;
    for (size_t i = 1; i < cands->n; i++) {
        const sample_cand *c = &cands->data[i], *b = &cands->data[best];
        if (c->logit > b->logit || (c->logit == b->logit && c->id < b->id)) best = i;
    }
    return cands->data[best].id;
}

int32_t sample_argmax(const float *logits, size_t n)
{
    if (n == 0) return -1;
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i; /* strict: the lowest id wins ties */
    return (int32_t)best;
}

int32_t sample_dist(sample_cands *cands, sample_rng *rng)
{
    if (cands->n == 0) return -1;
    sample_cands_softmax(cands);
    double u = sample_rng_uniform(rng), total = 0.0;
    for (size_t i = 0; i < cands->n; i++) total += cands->data[i].p;
    double target = u * total, cum = 0.0;
    for (size_t i = 0; i < cands->n; i++) {
        cum += cands->data[i].p;
        if (target < cum) return cands->data[i].id;
    }
    return cands->data[cands->n - 1].id; /* rounding at the very top */
}

/* ---- the chain ---- */

void sample_params_default(sample_params *params)
{
    params->temperature = 0.8f;
    params->top_k = 40;
    params->top_p = 0.9f;
    params->min_p = 0.0f;
    params->repeat_penalty = 1.0f;
    params->repeat_last_n = 64;
    params->presence_penalty = 0.0f;
    params->frequency_penalty = 0.0f;
    params->seed = 0;
}

struct sample_chain {
    sample_params params;
    size_t n_vocab;
    sample_cand *cands; /* (n_vocab) scratch */
    int32_t *history;   /* (n_history) accepted tokens, oldest first */
    size_t n_history, cap_history;
    sample_rng rng;
};

int sample_chain_new(sample_chain **out, const sample_params *params, size_t n_vocab, char *err)
{
    *out = NULL;
    if (n_vocab == 0 || n_vocab > INT32_MAX) return dk_fail(err, DK_ERR_ARG, "sampler: bad vocabulary size %zu", n_vocab);
    sample_chain *c = dk_calloc(1, sizeof(*c));
    if (!c) return dk_fail(err, DK_ERR_NOMEM, "sampler: out of memory");
    c->params = *params;
    c->n_vocab = n_vocab;
    c->cands = dk_malloc_array(n_vocab, sizeof(sample_cand));
    if (!c->cands) {
        sample_chain_free(c);
        return dk_fail(err, DK_ERR_NOMEM, "sampler: out of memory");
    }
    sample_rng_seed(&c->rng, params->seed);
    *out = c;
    return DK_OK;
}

void sample_chain_free(sample_chain *chain)
{
    if (!chain) return;
    dk_free(chain->cands);
    dk_free(chain->history);
    dk_free(chain);
}

void sample_chain_accept(sample_chain *chain, int32_t token)
{
    if (chain->params.repeat_last_n == 0) return;
    size_t keep = chain->params.repeat_last_n > 0 ? (size_t)chain->params.repeat_last_n : 0;
    if (keep && chain->n_history == keep) { /* bounded: drop the oldest */
        memmove(chain->history, chain->history + 1, (keep - 1) * sizeof(int32_t));
        chain->history[keep - 1] = token;
        return;
    }
    if (chain->n_history == chain->cap_history) {
        size_t cap = chain->cap_history ? chain->cap_history * 2 : 64;
        int32_t *h = dk_realloc(chain->history, cap * sizeof(int32_t));
        if (!h) return; /* penalties then see a shorter history; sampling still works */
        chain->history = h;
        chain->cap_history = cap;
    }
    chain->history[chain->n_history++] = token;
}

void sample_chain_reset(sample_chain *chain)
{
    chain->n_history = 0;
    sample_rng_seed(&chain->rng, chain->params.seed);
}

int32_t sample_chain_sample(sample_chain *chain, const float *logits)
{
    const sample_params *p = &chain->params;
    bool penalties = p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
    /* greedy without penalties needs no candidate list: one pass over the logits */
    if (p->temperature <= 0.0f && !penalties) return sample_argmax(logits, chain->n_vocab);
    sample_cands cands = {chain->cands, 0, false};
    sample_cands_from_logits(&cands, logits, chain->n_vocab);
    sample_penalties(&cands, chain->history, chain->n_history, p->repeat_penalty,
                     p->frequency_penalty, p->presence_penalty);
    if (p->temperature <= 0.0f) return sample_greedy(&cands);
    sample_top_k(&cands, p->top_k);
    sample_top_p(&cands, p->top_p, 1);
    sample_min_p(&cands, p->min_p, 1);
    sample_temperature(&cands, p->temperature);
    return sample_dist(&cands, &chain->rng);
}

/* ---- stop strings ---- */

struct sample_stop {
    char **stops;   /* (n_stops) owned copies */
    size_t n_stops;
    dk_buf pending; /* text held back */
    bool stopped;
};

int sample_stop_new(sample_stop **out, const char *const *stops, size_t n_stops, char *err)
{
    *out = NULL;
    sample_stop *s = dk_calloc(1, sizeof(*s));
    if (!s) return dk_fail(err, DK_ERR_NOMEM, "stop strings: out of memory");
    if (n_stops) {
        s->stops = dk_calloc(n_stops, sizeof(char *));
        if (!s->stops) goto fail;
    }
    for (size_t i = 0; i < n_stops; i++) {
        if (!stops[i] || !stops[i][0]) continue;
        s->stops[s->n_stops] = dk_strdup(stops[i]);
        if (!s->stops[s->n_stops]) goto fail;
        s->n_stops++;
    }
    *out = s;
    return DK_OK;
fail:
    sample_stop_free(s);
    return dk_fail(err, DK_ERR_NOMEM, "stop strings: out of memory");
}

void sample_stop_free(sample_stop *stop)
{
    if (!stop) return;
    for (size_t i = 0; i < stop->n_stops; i++) dk_free(stop->stops[i]);
    dk_free(stop->stops);
    dk_buf_free(&stop->pending);
    dk_free(stop);
}

bool sample_stop_hit(const sample_stop *stop) { return stop->stopped; }

/* Length of the longest proper prefix of s that ends text[0..n). */
static size_t partial_suffix(const char *text, size_t n, const char *s)
{
    size_t len = strlen(s);
    size_t max = len - 1 < n ? len - 1 : n;
    for (size_t k = max; k > 0; k--)
        if (memcmp(text + n - k, s, k) == 0) return k;
    return 0;
}

int sample_stop_feed(sample_stop *stop, const char *text, size_t n_bytes, dk_buf *out)
{
    if (stop->stopped) return 1;
    if (n_bytes && dk_buf_append(&stop->pending, text, n_bytes) < 0) return -1;
    const char *p = stop->pending.data ? stop->pending.data : "";
    size_t n = stop->pending.len;
    /* the earliest complete stop string wins */
    size_t cut = n;
    for (size_t i = 0; i < stop->n_stops; i++) {
        const char *hit = memmem(p, n, stop->stops[i], strlen(stop->stops[i]));
        if (hit && (size_t)(hit - p) < cut) cut = (size_t)(hit - p);
    }
    if (cut < n) {
        stop->stopped = true;
        int rc = dk_buf_append(out, p, cut);
        dk_buf_clear(&stop->pending);
        return rc < 0 ? -1 : 1;
    }
    size_t hold = 0;
    for (size_t i = 0; i < stop->n_stops; i++) {
        size_t k = partial_suffix(p, n, stop->stops[i]);
        if (k > hold) hold = k;
    }
    if (dk_buf_append(out, p, n - hold) < 0) return -1;
    if (hold) memmove(stop->pending.data, p + n - hold, hold); /* pending.data may be NULL when nothing is held */
    stop->pending.len = hold;
    if (stop->pending.data) stop->pending.data[hold] = 0;
    return 0;
}

int sample_stop_flush(sample_stop *stop, dk_buf *out)
{
    if (stop->stopped || stop->pending.len == 0) return 0;
    int rc = dk_buf_append(out, stop->pending.data, stop->pending.len);
    dk_buf_clear(&stop->pending);
    return rc < 0 ? -1 : 0;
}

/* ---- sampling under a grammar ---- */

/* Greedy chains look at this many best candidates before computing a whole mask. */
#define SAMPLE_GRAMMAR_TRY 8

static bool sample_id_listed(const int32_t *ids, size_t n, int32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* a ranks before b: higher logit, lower id on ties, NaN last (cand_cmp's order). */
static bool sample_cand_before(const sample_cand *a, const sample_cand *b) { return cand_cmp(a, b) < 0; }

static bool sample_mask_has(const uint64_t *bits, int32_t id) { return (bits[id >> 6] >> (id & 63)) & 1; }

/* The best allowed candidate. The few best are tried one by one (partial selection, no sort),
 * which is all it takes when the model already wants what the grammar allows. */
static int sample_grammar_greedy(const sample_cands *cands, sample_matcher *matcher, const int32_t *also,
                                 size_t n_also, int32_t *out_token, char *err)
{
    sample_cand top[SAMPLE_GRAMMAR_TRY];
    size_t n_top = 0;
    for (size_t i = 0; i < cands->n; i++) {
        const sample_cand *c = &cands->data[i];
        if (n_top == SAMPLE_GRAMMAR_TRY && !(c->logit >= top[n_top - 1].logit)) continue;
        if (n_top == SAMPLE_GRAMMAR_TRY && !sample_cand_before(c, &top[n_top - 1])) continue;
        size_t j = n_top < SAMPLE_GRAMMAR_TRY ? n_top++ : n_top - 1;
        while (j > 0 && sample_cand_before(c, &top[j - 1])) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = *c;
    }
    for (size_t i = 0; i < n_top; i++) {
        if (sample_id_listed(also, n_also, top[i].id) || sample_matcher_allows(matcher, top[i].id)) {
            *out_token = top[i].id;
            return DK_OK;
        }
    }
    const uint64_t *bits;
    size_t n_allowed;
    int rc = grammar_matcher_mask(matcher, &bits, &n_allowed, err);
    if (rc != DK_OK) return rc;
    const sample_cand *best = NULL;
    for (size_t i = 0; i < cands->n; i++) {
        const sample_cand *c = &cands->data[i];
        if (best && !sample_cand_before(c, best)) continue;
        if (sample_mask_has(bits, c->id) || sample_id_listed(also, n_also, c->id)) best = c;
    }
    if (!best) return dk_fail(err, DK_ERR_LIMIT, "grammar: no token of the vocabulary can continue the output");
    *out_token = best->id;
    return DK_OK;
}

int sample_chain_sample_grammar(sample_chain *chain, const float *logits, sample_matcher *matcher,
                                const int32_t *also, size_t n_also, int32_t *out_token, char *err)
{
    *out_token = -1;
    if (grammar_matcher_n_vocab(matcher) != chain->n_vocab)
        return dk_fail(err, DK_ERR_ARG, "grammar: vocabulary has %zu tokens, sampler %zu",
                       grammar_matcher_n_vocab(matcher), chain->n_vocab);
    const sample_params *p = &chain->params;
    sample_cands cands = {chain->cands, 0, false};
    sample_cands_from_logits(&cands, logits, chain->n_vocab);
    sample_penalties(&cands, chain->history, chain->n_history, p->repeat_penalty,
                     p->frequency_penalty, p->presence_penalty);
    if (p->temperature <= 0.0f) return sample_grammar_greedy(&cands, matcher, also, n_also, out_token, err);
    /* the (cached) mask first, then the usual filters over what survives */
    const uint64_t *bits;
    size_t n_allowed;
    int rc = grammar_matcher_mask(matcher, &bits, &n_allowed, err);
    if (rc != DK_OK) return rc;
    size_t k = 0;
    for (size_t i = 0; i < cands.n; i++)
        if (sample_mask_has(bits, cands.data[i].id) || sample_id_listed(also, n_also, cands.data[i].id))
            cands.data[k++] = cands.data[i];
    cands.n = k;
    if (k == 0) return dk_fail(err, DK_ERR_LIMIT, "grammar: no token of the vocabulary can continue the output");
    sample_top_k(&cands, p->top_k);
    sample_top_p(&cands, p->top_p, 1);
    sample_min_p(&cands, p->min_p, 1);
    sample_temperature(&cands, p->temperature);
    *out_token = sample_dist(&cands, &chain->rng);
    return DK_OK;
}
