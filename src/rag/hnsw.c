/*
 * rag/hnsw.c: approximate nearest-neighbour search over a rag_vectors store with a
 * Hierarchical Navigable Small World graph (Malkov & Yashunin, 2016). Each node gets a random
 * level (exponential, mL = 1 / ln m); a search descends greedily from the entry point on the
 * top layer to layer 1, then runs a beam search with ef candidates on layer 0. Links are chosen
 * with the paper's heuristic (a candidate is kept only if it is closer to the new node than to
 * every neighbour already kept), m per node on the upper layers and 2m on layer 0; a node whose
 * list overflows is pruned with the same heuristic. Scores come from the store ("higher is
 * better" for every metric), so the graph works the same for cosine, dot and L2 and for
 * F32/F16/I8 stores. On the same vectors and parameters it finds what hnswlib finds (checked
 * on 20k random 384-dimensional vectors at M 16, ef_construction 200: recall@10 within 0.02
 * of hnswlib's at every ef from 10 to 1024). Random (gaussian or uniform) high-dimensional
 * vectors are the hard case for every graph index: their neighbours are barely closer than
 * anything else, and a search needs ef near 1000 (M 16) for recall 0.95 at 20k vectors,
 * where embeddings need 64; bench/hnsw.c reports recall against ef.
 *
 * Building: every node's level is drawn first, in id order, and its lists allocated; then
 * the nodes are inserted in id order on one thread (params.n_threads <= 1: the graph is a
 * function of the vectors and the parameters), or by n_threads threads each taking the next
 * id. While threads insert, each node's lists are guarded by a mutex of its own (a search
 * copies a list under the lock before walking it, a link rewrites it under the lock, never
 * two at once), and entry point and top level by one more, held through the whole insert of
 * a node that raises the top level. A node may then be linked to before it has written its
 * own list; its own links are merged with those (hnsw_link). After the inserts, every node
 * layer 0 no longer reaches from the entry (pruning took all its in-links) is linked in again
 * (hnsw_connect). An extend that fails (out of memory) is undone: the new nodes and every
 * link to them go.
 *
 * Not for: the vectors themselves (vec.c owns them; the graph only borrows the store), exact
 * search, persistence of the vectors.
 *
 * Memory: per node one uint32 block holding its lists, level 0 first:
 *   [count, 2m slots] [count, m slots] ... (one [count, m slots] per upper level).
 * Searches take a generation-stamped visited array from a small mutex-protected pool (or
 * allocate a fresh one when the pool is empty), so any number of threads may search at once.
 *
 * Filters (as hnswlib does them): filtered-out nodes are expanded like any other but never
 * enter the beam of results, so the layer-0 walk goes on until the beam holds ef allowed
 * nodes and no candidate beats the worst of them, or until every reachable node has been
 * visited. A selective filter therefore makes the walk longer instead of the results worse
 * (one allowed node in a hundred at ef 64 walks most of the graph, which is about what the
 * exact search costs); this replaces restarting with a wider ef, which would redo the walk.
 * Fewer than k results only when fewer than k allowed nodes are reachable.
 *
 * Serialised graph (little-endian):
 *   "DKHNSW1\0" (8 bytes) | u32 m | u32 ef_construction | u32 n_nodes | u32 entry |
 *   i32 max_level (-1 when empty) | u64 rng state |
 *   per node: u8 level, then for each layer 0..level: u32 count, count x u32 neighbour ids.
 * Loading checks every field (m in range, n_nodes <= vectors in the store, levels <=
 * max_level, the entry on max_level, counts within the layer's degree, neighbours < n_nodes
 * and not the node itself, no trailing bytes); anything else is DK_ERR_FORMAT.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "rag/rag.h"
#include "rag/rag_internal.h"

#define HNSW_MAGIC "DKHNSW1"
#define HNSW_MAX_M 256
#define HNSW_MAX_LEVEL 31
#define HNSW_POOL_SIZE 8
#define HNSW_MAX_THREADS 64

typedef struct hnsw_visited {
    uint32_t *stamp;   /* (n_cap) generation at which each node was last visited */
    uint32_t n_cap;
    uint32_t gen;
} hnsw_visited;

typedef struct hnsw_item {
    float score;
    uint32_t id;
} hnsw_item;

/* A binary heap of items; max_top: best score on top (candidates), else worst on top (results). */
typedef struct hnsw_heap {
    hnsw_item *items; /* (cap) */
    size_t n, cap;
    int max_top;
} hnsw_heap;

struct rag_hnsw {
    const rag_vectors *v;     /* borrowed */
    uint32_t m, m0, ef_construction;
    double ml;
    uint64_t rng;
    uint32_t n_nodes, n_cap;
    uint8_t *levels;          /* (n_cap) */
    uint32_t **links;         /* (n_cap) per node block, see the top of the file */
    uint32_t entry;
    int max_level;            /* -1: empty */
    int n_threads;            /* inserting threads of rag_hnsw_extend (the build's parameter) */
    /* Only while several threads insert (NULL otherwise): one lock per node guarding its
     * lists, and the lock of entry and max_level. */
    pthread_mutex_t *node_locks; /* (n_cap) */
    pthread_mutex_t entry_lock;
    pthread_mutex_t pool_lock;
    hnsw_visited *pool[HNSW_POOL_SIZE];
    int n_pool;
};

/* ---- small helpers ---- */

static uint64_t hnsw_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int hnsw_random_level(rag_hnsw *h)
{
    double u = ((double)(hnsw_rand(&h->rng) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double level = -log(u) * h->ml;
    return level >= HNSW_MAX_LEVEL ? HNSW_MAX_LEVEL : (int)level;
}

static size_t hnsw_block_words(const rag_hnsw *h, int level)
{
    return (size_t)(1 + h->m0) + (size_t)level * (1 + h->m);
}

/* The list of node id on layer level: [0] is the count, then the neighbour ids. */
static uint32_t *hnsw_list(const rag_hnsw *h, uint32_t id, int level)
{
    uint32_t *block = h->links[id];
    return level == 0 ? block : block + (1 + h->m0) + (size_t)(level - 1) * (1 + h->m);
}

static uint32_t hnsw_degree(const rag_hnsw *h, int level) { return level == 0 ? h->m0 : h->m; }

static int hnsw_allowed(const uint8_t *allow, uint32_t id)
{
    return !allow || (allow[id >> 3] >> (id & 7)) & 1;
}

static void hnsw_lock(const rag_hnsw *h, uint32_t id)
{
    if (h->node_locks) pthread_mutex_lock(&h->node_locks[id]);
}

static void hnsw_unlock(const rag_hnsw *h, uint32_t id)
{
    if (h->node_locks) pthread_mutex_unlock(&h->node_locks[id]);
}

/* The list of node id on layer level for reading. While other threads insert, another one
 * may rewrite it at any time: it is copied under the node's lock into copy (room for
 * 1 + HNSW_MAX_M words) and the copy is returned; otherwise the list itself. */
static const uint32_t *hnsw_list_read(const rag_hnsw *h, uint32_t id, int level, uint32_t *copy)
{
    const uint32_t *list = hnsw_list(h, id, level);
    if (!h->node_locks) return list;
    pthread_mutex_lock(&h->node_locks[id]);
    memcpy(copy, list, (1 + (size_t)list[0]) * sizeof(uint32_t));
    pthread_mutex_unlock(&h->node_locks[id]);
    return copy;
}

/* ---- heaps ---- */

static int hnsw_heap_init(hnsw_heap *hp, size_t cap, int max_top)
{
    hp->items = dk_malloc_array(cap ? cap : 1, sizeof(hnsw_item));
    hp->n = 0;
    hp->cap = cap ? cap : 1;
    hp->max_top = max_top;
    return hp->items ? DK_OK : DK_ERR_NOMEM;
}

static int hnsw_heap_above(const hnsw_heap *hp, hnsw_item a, hnsw_item b)
{
    if (a.score != b.score) return hp->max_top ? a.score > b.score : a.score < b.score;
    return hp->max_top ? a.id < b.id : a.id > b.id;
}

static int hnsw_heap_grow(hnsw_heap *hp)
{
    size_t cap = hp->cap * 2;
    hnsw_item *items = dk_realloc(hp->items, cap * sizeof(hnsw_item));
    if (!items) return DK_ERR_NOMEM;
    hp->items = items;
    hp->cap = cap;
    return DK_OK;
}

static int hnsw_heap_push(hnsw_heap *hp, float score, uint32_t id)
{
    if (hp->n == hp->cap && hnsw_heap_grow(hp) != DK_OK) return DK_ERR_NOMEM;
    size_t i = hp->n++;
    hnsw_item it = {score, id};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!hnsw_heap_above(hp, it, hp->items[parent])) break;
        hp->items[i] = hp->items[parent];
        i = parent;
    }
    hp->items[i] = it;
    return DK_OK;
}

static hnsw_item hnsw_heap_pop(hnsw_heap *hp)
{
    hnsw_item top = hp->items[0], last = hp->items[--hp->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= hp->n) break;
        if (child + 1 < hp->n && hnsw_heap_above(hp, hp->items[child + 1], hp->items[child])) child++;
        if (!hnsw_heap_above(hp, hp->items[child], last)) break;
        hp->items[i] = hp->items[child];
        i = child;
    }
    if (hp->n) hp->items[i] = last;
    return top;
}

/* Keeps the best `limit` items in a worst-on-top heap. */
static int hnsw_heap_offer(hnsw_heap *hp, size_t limit, float score, uint32_t id)
{
    if (hp->n < limit) return hnsw_heap_push(hp, score, id);
    if (score > hp->items[0].score || (score == hp->items[0].score && id < hp->items[0].id)) {
        hnsw_heap_pop(hp);
        return hnsw_heap_push(hp, score, id);
    }
    return DK_OK;
}

static int hnsw_item_cmp_best_first(const void *a, const void *b)
{
    const hnsw_item *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* ---- visited sets ---- */

static hnsw_visited *hnsw_visited_take(const rag_hnsw *h_const)
{
    rag_hnsw *h = (rag_hnsw *)h_const; /* the pool is the only state a search touches */
    hnsw_visited *vis = NULL;
    pthread_mutex_lock(&h->pool_lock);
    if (h->n_pool > 0) vis = h->pool[--h->n_pool];
    pthread_mutex_unlock(&h->pool_lock);
    if (!vis) {
        vis = dk_calloc(1, sizeof(*vis));
        if (!vis) return NULL;
    }
    if (vis->n_cap < h->n_cap) {
        dk_free(vis->stamp);
        vis->stamp = dk_calloc(h->n_cap ? h->n_cap : 1, sizeof(uint32_t));
        vis->n_cap = vis->stamp ? h->n_cap : 0;
        vis->gen = 0;
        if (!vis->stamp) {
            dk_free(vis);
            return NULL;
        }
    }
    if (++vis->gen == 0) { /* wrapped: old stamps could read as current */
        memset(vis->stamp, 0, (size_t)vis->n_cap * sizeof(uint32_t));
        vis->gen = 1;
    }
    return vis;
}

static void hnsw_visited_free(hnsw_visited *vis)
{
    if (!vis) return;
    dk_free(vis->stamp);
    dk_free(vis);
}

static void hnsw_visited_give(const rag_hnsw *h_const, hnsw_visited *vis)
{
    rag_hnsw *h = (rag_hnsw *)h_const;
    if (!vis) return;
    pthread_mutex_lock(&h->pool_lock);
    if (h->n_pool < HNSW_POOL_SIZE) {
        h->pool[h->n_pool++] = vis;
        vis = NULL;
    }
    pthread_mutex_unlock(&h->pool_lock);
    hnsw_visited_free(vis);
}

/* ---- searching one layer ---- */

/* q: a prepared query (rag_vectors_prepare_query). */
static float hnsw_score(const rag_hnsw *h, const float *q, uint32_t id)
{
    return rag_vectors_score_prepared(h->v, q, id);
}

/* Greedy walk on one layer from *ep to a local best. */
static void hnsw_greedy(const rag_hnsw *h, const float *q, int level, uint32_t *ep, float *ep_score)
{
    uint32_t copy[1 + HNSW_MAX_M];
    int moved = 1;
    while (moved) {
        moved = 0;
        const uint32_t *list = hnsw_list_read(h, *ep, level, copy);
        for (uint32_t i = 0; i < list[0]; i++) {
            float s = hnsw_score(h, q, list[1 + i]);
            if (s > *ep_score || (s == *ep_score && list[1 + i] < *ep)) {
                *ep_score = s;
                *ep = list[1 + i];
                moved = 1;
            }
        }
    }
}

/* Beam search on one layer. On entry `found` holds the entry points; on return it holds the
 * best ef nodes seen that allow admits (allow NULL: every node), worst on top. Nodes allow
 * rejects are still expanded, so the beam walks through them; the walk ends when ef admitted
 * nodes are found and no candidate beats the worst of them, or when nothing is left to visit. */
static int hnsw_search_layer(const rag_hnsw *h, const float *q, int level, size_t ef, hnsw_visited *vis,
                             hnsw_heap *cand, hnsw_heap *found, const uint8_t *allow) {
    cand->n = 0;
    for (size_t i = 0; i < found->n; i++) {
        vis->stamp[found->items[i].id] = vis->gen;
        if (hnsw_heap_push(cand, found->items[i].score, found->items[i].id) != DK_OK) return DK_ERR_NOMEM;
    }
    found->n = 0;
    for (size_t i = 0; i < cand->n; i++)
        if (hnsw_allowed(allow, cand->items[i].id) &&
            hnsw_heap_offer(found, ef, cand->items[i].score, cand->items[i].id) != DK_OK)
            return DK_ERR_NOMEM;
    uint32_t copy[1 + HNSW_MAX_M];
    while (cand->n > 0) {
        hnsw_item c = hnsw_heap_pop(cand);
        if (found->n >= ef && c.score < found->items[0].score) break;
        const uint32_t *list = hnsw_list_read(h, c.id, level, copy);
        for (uint32_t i = 0; i < list[0]; i++) {
            uint32_t e = list[1 + i];
            if (vis->stamp[e] == vis->gen) continue;
            vis->stamp[e] = vis->gen;
            float s = hnsw_score(h, q, e);
            if (found->n < ef || s > found->items[0].score) {
                if (hnsw_heap_push(cand, s, e) != DK_OK) return DK_ERR_NOMEM;
                if (hnsw_allowed(allow, e) && hnsw_heap_offer(found, ef, s, e) != DK_OK) return DK_ERR_NOMEM;
            }
        }
    }
    return DK_OK;
}

/* ---- building ---- */

typedef struct hnsw_scratch {
    hnsw_heap cand, found;
    hnsw_item *sel;      /* (ef_construction + 2m + 1) candidates of a selection */
    const float **kept;  /* (2m + 1) prepared vectors of the neighbours kept so far */
    const float *rows;   /* (n, dim) every stored vector, prepared (hnsw_rows_copy) */
    hnsw_visited *vis;   /* this inserter's, for the whole extend */
} hnsw_scratch;

/* The prepared vector of stored node id, (dim) floats. */
static const float *hnsw_vector(const rag_hnsw *h, const hnsw_scratch *s, uint32_t id)
{
    return s->rows + (size_t)id * rag_vectors_dim(h->v);
}

/* Picks at most max_keep of items (scores against the base node), best first, with the
 * heuristic: a candidate is kept only if it scores higher with the base than with every
 * neighbour kept so far. Rewrites items[0..*n) to the kept ones. */
static void hnsw_select(const rag_hnsw *h, hnsw_scratch *s, hnsw_item *items, size_t *n, size_t max_keep)
{
    qsort(items, *n, sizeof(hnsw_item), hnsw_item_cmp_best_first);
    if (*n <= max_keep) return;
    size_t n_kept = 0;
    for (size_t i = 0; i < *n && n_kept < max_keep; i++) {
        int keep = 1;
        for (size_t j = 0; j < n_kept && keep; j++)
            if (hnsw_score(h, s->kept[j], items[i].id) > items[i].score) keep = 0;
        if (!keep) continue;
        s->kept[n_kept] = hnsw_vector(h, s, items[i].id);
        items[n_kept++] = items[i];
    }
    *n = n_kept;
}

/* Adds the links from -> to[0..n_to) on level (those from does not have yet), re-choosing
 * from's list with the heuristic when they do not all fit. Holds from's lock throughout. */
static void hnsw_link(rag_hnsw *h, hnsw_scratch *s, uint32_t from, const uint32_t *to, size_t n_to, int level)
{
    hnsw_lock(h, from);
    uint32_t *list = hnsw_list(h, from, level);
    uint32_t degree = hnsw_degree(h, level), had = list[0];
    size_t n = 0;
    for (size_t t = 0; t < n_to; t++) {
        int known = 0;
        for (uint32_t i = 0; i < had && !known; i++) known = list[1 + i] == to[t];
        if (!known) s->sel[n++].id = to[t];
    }
    if (had + n <= degree) {
        for (size_t i = 0; i < n; i++) list[1 + had + i] = s->sel[i].id;
        list[0] = had + (uint32_t)n;
    } else {
        const float *base = hnsw_vector(h, s, from);
        for (uint32_t i = 0; i < had; i++) s->sel[n++].id = list[1 + i];
        for (size_t i = 0; i < n; i++) s->sel[i].score = hnsw_score(h, base, s->sel[i].id);
        hnsw_select(h, s, s->sel, &n, degree);
        list[0] = (uint32_t)n;
        for (size_t i = 0; i < n; i++) list[1 + i] = s->sel[i].id;
    }
    hnsw_unlock(h, from);
}

/* Links node id (its level and empty lists in place) into the graph. While several threads
 * insert, entry and max_level are read under entry_lock, which stays held through the whole
 * insert of a node that will become the new entry (rare: about log n of them), so the top
 * of the graph changes one node at a time. Every list is read and written under its node's
 * lock (hnsw_list_read, hnsw_link), never two locks at once. */
static int hnsw_insert(rag_hnsw *h, hnsw_scratch *s, uint32_t id, int level)
{
    const float *q = hnsw_vector(h, s, id);
    int rc;
    if (h->node_locks) pthread_mutex_lock(&h->entry_lock);
    if (h->max_level < 0) {
        h->entry = id;
        h->max_level = level;
        if (h->node_locks) pthread_mutex_unlock(&h->entry_lock);
        return DK_OK;
    }
    uint32_t ep = h->entry;
    int top = h->max_level, holding = h->node_locks && level > top;
    if (h->node_locks && !holding) pthread_mutex_unlock(&h->entry_lock);
    float ep_score = hnsw_score(h, q, ep);
    for (int lc = top; lc > level; lc--) hnsw_greedy(h, q, lc, &ep, &ep_score);
    hnsw_visited *vis = s->vis;
    s->found.n = 0;
    rc = hnsw_heap_push(&s->found, ep_score, ep);
    for (int lc = level < top ? level : top; lc >= 0 && rc == DK_OK; lc--) {
        if (++vis->gen == 0) {
            memset(vis->stamp, 0, (size_t)vis->n_cap * sizeof(uint32_t));
            vis->gen = 1;
        }
        rc = hnsw_search_layer(h, q, lc, h->ef_construction, vis, &s->cand, &s->found, NULL);
        if (rc != DK_OK) break;
        /* id itself is found only when another thread linked to it already */
        size_t n = 0;
        for (size_t i = 0; i < s->found.n; i++)
            if (s->found.items[i].id != id) s->sel[n++] = s->found.items[i];
        hnsw_select(h, s, s->sel, &n, h->m);
        /* hnsw_link reuses sel: copy the chosen ids out first */
        uint32_t chosen[HNSW_MAX_M];
        for (size_t i = 0; i < n; i++) chosen[i] = s->sel[i].id;
        hnsw_link(h, s, id, chosen, n, lc); /* empty unless other threads linked to id */
        for (size_t i = 0; i < n; i++) hnsw_link(h, s, chosen[i], &id, 1, lc);
    }
    if (rc == DK_OK && level > top) {
        h->entry = id;
        h->max_level = level;
    }
    if (holding) pthread_mutex_unlock(&h->entry_lock);
    return rc;
}

static void hnsw_scratch_free(const rag_hnsw *h, hnsw_scratch *s)
{
    dk_free(s->cand.items);
    dk_free(s->found.items);
    dk_free(s->sel);
    dk_free(s->kept);
    hnsw_visited_give(h, s->vis);
    memset(s, 0, sizeof(*s));
}

/* After hnsw_reserve: the visited array covers every node of the extend. */
static int hnsw_scratch_init(const rag_hnsw *h, hnsw_scratch *s)
{
    memset(s, 0, sizeof(*s));
    if (hnsw_heap_init(&s->cand, h->ef_construction + 1, 1) != DK_OK ||
        hnsw_heap_init(&s->found, h->ef_construction + 1, 0) != DK_OK)
        goto fail;
    s->sel = dk_malloc_array((size_t)h->ef_construction + 2 * h->m0 + 2, sizeof(hnsw_item));
    s->kept = dk_malloc_array((size_t)h->m0 + 2, sizeof(float *));
    s->vis = hnsw_visited_take(h);
    if (!s->sel || !s->kept || !s->vis) goto fail;
    return DK_OK;
fail:
    hnsw_scratch_free(h, s);
    return DK_ERR_NOMEM;
}

/* Makes room for n_cap nodes (levels and link pointers). */
static int hnsw_reserve(rag_hnsw *h, size_t n_cap)
{
    if (n_cap <= h->n_cap) return DK_OK;
    uint8_t *levels = dk_realloc(h->levels, n_cap);
    if (!levels) return DK_ERR_NOMEM;
    h->levels = levels;
    uint32_t **links = dk_realloc(h->links, n_cap * sizeof(uint32_t *));
    if (!links) return DK_ERR_NOMEM;
    h->links = links;
    for (size_t i = h->n_cap; i < n_cap; i++) h->links[i] = NULL;
    h->n_cap = (uint32_t)n_cap;
    return DK_OK;
}

static int hnsw_new(rag_hnsw **out, const rag_vectors *v, uint32_t m, uint32_t ef_construction, uint64_t rng)
{
    rag_hnsw *h = dk_calloc(1, sizeof(*h));
    if (!h) return DK_ERR_NOMEM;
    h->v = v;
    h->m = m;
    h->m0 = 2 * m;
    h->ef_construction = ef_construction;
    h->ml = 1.0 / log((double)(m < 2 ? 2 : m));
    h->rng = rng;
    h->max_level = -1;
    pthread_mutex_init(&h->pool_lock, NULL);
    *out = h;
    return DK_OK;
}

void rag_hnsw_free(rag_hnsw *h)
{
    if (!h) return;
    for (uint32_t i = 0; i < h->n_cap; i++) dk_free(h->links[i]);
    dk_free(h->links);
    dk_free(h->levels);
    for (int i = 0; i < h->n_pool; i++) hnsw_visited_free(h->pool[i]);
    pthread_mutex_destroy(&h->pool_lock);
    dk_free(h);
}

/* Every stored vector as floats, (n, dim), each prepared (rag_vectors_prepare_query) so that
 * it can be scored as a query while its links are chosen. The caller frees the result with
 * dk_free; NULL when out of memory. */
static float *hnsw_rows_copy(const rag_vectors *v, size_t n)
{
    size_t dim = rag_vectors_dim(v);
    float *rows = dk_malloc_array(n ? n : 1, dim * sizeof(float));
    float *stored = dk_malloc_array(dim, sizeof(float));
    if (!rows || !stored) {
        dk_free(rows);
        dk_free(stored);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        rag_vectors_get(v, (uint32_t)i, stored);
        rag_vectors_prepare_query(v, stored, rows + i * dim);
    }
    dk_free(stored);
    return rows;
}

/* Several threads inserting the nodes from..to-1 of one extend: each takes the next id. */
typedef struct hnsw_job {
    rag_hnsw *h;
    const float *rows;  /* hnsw_rows_copy of the store, shared */
    atomic_uint next;
    uint32_t end;
    atomic_int rc;      /* the first failure; DK_OK while none */
} hnsw_job;

static void *hnsw_worker(void *arg)
{
    hnsw_job *job = arg;
    hnsw_scratch s;
    if (hnsw_scratch_init(job->h, &s) != DK_OK) {
        atomic_store(&job->rc, DK_ERR_NOMEM);
        return NULL;
    }
    s.rows = job->rows;
    while (atomic_load(&job->rc) == DK_OK) {
        uint32_t id = atomic_fetch_add(&job->next, 1);
        if (id >= job->end) break;
        int rc = hnsw_insert(job->h, &s, id, job->h->levels[id]);
        if (rc != DK_OK) atomic_store(&job->rc, rc);
    }
    hnsw_scratch_free(job->h, &s);
    return NULL;
}

/* Inserts nodes from..to-1 on n_threads threads (the calling one among them), each node
 * guarded by its own lock while they run. */
static int hnsw_insert_parallel(rag_hnsw *h, const float *rows, uint32_t from, uint32_t to, int n_threads)
{
    pthread_t threads[HNSW_MAX_THREADS];
    hnsw_job job = {.h = h, .rows = rows, .end = to};
    atomic_init(&job.next, from);
    atomic_init(&job.rc, DK_OK);
    h->node_locks = dk_malloc_array(to, sizeof(pthread_mutex_t));
    if (!h->node_locks) return DK_ERR_NOMEM;
    for (uint32_t i = 0; i < to; i++) pthread_mutex_init(&h->node_locks[i], NULL);
    pthread_mutex_init(&h->entry_lock, NULL);
    int started = 0;
    while (started < n_threads - 1 && pthread_create(&threads[started], NULL, hnsw_worker, &job) == 0) started++;
    hnsw_worker(&job);
    for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
    for (uint32_t i = 0; i < to; i++) pthread_mutex_destroy(&h->node_locks[i]);
    pthread_mutex_destroy(&h->entry_lock);
    dk_free(h->node_locks);
    h->node_locks = NULL;
    return atomic_load(&job.rc);
}

/* Marks in reached[] the nodes 0..n-1 that layer 0 reaches from the entry (queue: room for
 * n); returns how many it does not reach. */
static uint32_t hnsw_mark_reachable(const rag_hnsw *h, uint32_t n, uint8_t *reached, uint32_t *queue)
{
    memset(reached, 0, n);
    uint32_t head = 0, tail = 0, n_reached = 1;
    reached[h->entry] = 1;
    queue[tail++] = h->entry;
    while (head < tail) {
        const uint32_t *list = hnsw_list(h, queue[head++], 0);
        for (uint32_t i = 0; i < list[0]; i++) {
            uint32_t to = list[1 + i];
            if (reached[to]) continue;
            reached[to] = 1;
            queue[tail++] = to;
            n_reached++;
        }
    }
    return n - n_reached;
}

/* Links unreached node u from the reached node that scores best with it: appended when that
 * node's layer-0 list has room, else in place of its lowest-scoring link. */
static void hnsw_link_in(rag_hnsw *h, const float *rows, uint32_t n, const uint8_t *reached, uint32_t u)
{
    size_t dim = rag_vectors_dim(h->v);
    const float *qu = rows + (size_t)u * dim;
    uint32_t best = h->entry;
    float best_score = hnsw_score(h, qu, best);
    for (uint32_t id = 0; id < n; id++) {
        if (!reached[id]) continue;
        float sc = hnsw_score(h, qu, id);
        if (sc > best_score) best = id, best_score = sc;
    }
    uint32_t *list = hnsw_list(h, best, 0);
    if (list[0] < h->m0) {
        list[1 + list[0]++] = u;
        return;
    }
    const float *qb = rows + (size_t)best * dim;
    uint32_t worst = 0;
    for (uint32_t i = 1; i < list[0]; i++)
        if (hnsw_score(h, qb, list[1 + i]) < hnsw_score(h, qb, list[1 + worst])) worst = i;
    list[1 + worst] = u;
}

/* Makes every node reachable again on layer 0. Pruning can take away every link into a node
 * (on several threads, where inserts prune each other's lists, about one 2000-node build in
 * 30 loses a node; on one thread more rarely); a search could then never return it. Each
 * round links every unreached node in (a replaced link may strand its target, which the next
 * round links in); a graph that is whole is left unchanged. */
static int hnsw_connect(rag_hnsw *h, const float *rows, uint32_t n)
{
    if (n < 2) return DK_OK;
    uint8_t *reached = dk_malloc(n);
    uint32_t *queue = dk_malloc_array(n, sizeof(uint32_t));
    int rc = reached && queue ? DK_OK : DK_ERR_NOMEM;
    for (int round = 0; rc == DK_OK && round < 64 && hnsw_mark_reachable(h, n, reached, queue) > 0; round++)
        for (uint32_t u = 0; u < n; u++)
            if (!reached[u]) hnsw_link_in(h, rows, n, reached, u);
    dk_free(reached);
    dk_free(queue);
    return rc;
}

/* Undoes an extend that failed: nodes from..to-1 and every link to them go, the entry and
 * the random state are as before. Lists that were re-chosen meanwhile keep fewer links. */
static void hnsw_roll_back(rag_hnsw *h, uint32_t from, uint32_t to, uint32_t entry, int max_level, uint64_t rng)
{
    for (uint32_t j = 0; j < from; j++)
        for (int l = 0; l <= h->levels[j]; l++) {
            uint32_t *list = hnsw_list(h, j, l), w = 0;
            for (uint32_t k = 0; k < list[0]; k++)
                if (list[1 + k] < from) list[1 + w++] = list[1 + k];
            list[0] = w;
        }
    for (uint32_t id = from; id < to; id++) {
        dk_free(h->links[id]);
        h->links[id] = NULL;
    }
    h->entry = entry;
    h->max_level = max_level;
    h->rng = rng;
}

int rag_hnsw_extend(rag_hnsw *h, char *err)
{
    size_t n_total = rag_vectors_count(h->v);
    if (n_total <= h->n_nodes) return DK_OK;
    if (n_total > UINT32_MAX) return dk_fail(err, DK_ERR_LIMIT, "hnsw: more than %u vectors", UINT32_MAX);
    if (hnsw_reserve(h, n_total) != DK_OK) return dk_fail(err, DK_ERR_NOMEM, "hnsw: out of memory");
    uint32_t from = h->n_nodes, to = (uint32_t)n_total, entry = h->entry;
    int max_level = h->max_level, rc = DK_OK;
    uint64_t rng = h->rng;
    /* levels drawn in id order whatever the threads, so one thread gives the same graph as
     * inserting each node as it is drawn */
    for (uint32_t id = from; id < to && rc == DK_OK; id++) {
        int level = hnsw_random_level(h);
        h->levels[id] = (uint8_t)level;
        h->links[id] = dk_calloc(hnsw_block_words(h, level), sizeof(uint32_t));
        if (!h->links[id]) rc = DK_ERR_NOMEM;
    }
    float *rows = rc == DK_OK ? hnsw_rows_copy(h->v, n_total) : NULL;
    if (!rows) rc = DK_ERR_NOMEM;
    int n_threads = h->n_threads < 1 ? 1 : h->n_threads > HNSW_MAX_THREADS ? HNSW_MAX_THREADS : h->n_threads;
    if (rc == DK_OK && n_threads > 1 && to - from > 1) {
        rc = hnsw_insert_parallel(h, rows, from, to, n_threads);
    } else if (rc == DK_OK) {
        hnsw_scratch s;
        rc = hnsw_scratch_init(h, &s);
        if (rc == DK_OK) {
            s.rows = rows;
            for (uint32_t id = from; id < to && rc == DK_OK; id++) rc = hnsw_insert(h, &s, id, h->levels[id]);
            hnsw_scratch_free(h, &s);
        }
    }
    if (rc == DK_OK) rc = hnsw_connect(h, rows, to);
    dk_free(rows);
    if (rc != DK_OK) {
        hnsw_roll_back(h, from, to, entry, max_level, rng);
        return dk_fail(err, rc, "hnsw: insert failed (%s)", dk_status_name(rc));
    }
    h->n_nodes = to;
    return DK_OK;
}

int rag_hnsw_build(rag_hnsw **out, const rag_vectors *v, const rag_hnsw_params *params, char *err)
{
    *out = NULL;
    int m = params && params->m ? params->m : 16;
    int efc = params && params->ef_construction ? params->ef_construction : 200;
    if (m < 2 || m > HNSW_MAX_M / 2) return dk_fail(err, DK_ERR_ARG, "hnsw: m %d out of range 2..%d", m, HNSW_MAX_M / 2);
    if (efc < 1 || efc > 100000) return dk_fail(err, DK_ERR_ARG, "hnsw: ef_construction %d out of range", efc);
    rag_hnsw *h;
    if (hnsw_new(&h, v, (uint32_t)m, (uint32_t)efc, params ? params->seed : 0) != DK_OK)
        return dk_fail(err, DK_ERR_NOMEM, "hnsw: out of memory");
    h->n_threads = params ? params->n_threads : 1;
    int rc = rag_hnsw_extend(h, err);
    if (rc != DK_OK) {
        rag_hnsw_free(h);
        return rc;
    }
    *out = h;
    return DK_OK;
}

/* ---- searching ---- */

int rag_hnsw_search(const rag_hnsw *h, const float *query, size_t k, size_t ef, const uint8_t *allow, rag_hit *out,
                    size_t *n_out, char *err) {
    *n_out = 0;
    if (k == 0 || h->n_nodes == 0) return DK_OK;
    if (ef < k) ef = k;
    hnsw_heap cand = {0}, found = {0};
    hnsw_visited *vis = NULL;
    int rc = DK_ERR_NOMEM;
    float *q = dk_malloc_array(rag_vectors_dim(h->v), sizeof(float)); /* (dim) prepared query */
    size_t start = ef < 4096 ? ef : 4096; /* the heaps grow when a filter makes the walk long */
    if (!q || hnsw_heap_init(&cand, start, 1) != DK_OK || hnsw_heap_init(&found, start + 1, 0) != DK_OK ||
        !(vis = hnsw_visited_take(h)))
        goto done;
    rag_vectors_prepare_query(h->v, query, q);
    uint32_t ep = h->entry;
    float ep_score = hnsw_score(h, q, ep);
    for (int lc = h->max_level; lc > 0; lc--) hnsw_greedy(h, q, lc, &ep, &ep_score);
    rc = hnsw_heap_push(&found, ep_score, ep);
    if (rc == DK_OK) rc = hnsw_search_layer(h, q, 0, ef, vis, &cand, &found, allow);
    if (rc == DK_OK) {
        qsort(found.items, found.n, sizeof(hnsw_item), hnsw_item_cmp_best_first);
        size_t n = found.n < k ? found.n : k;
        for (size_t i = 0; i < n; i++) out[i] = (rag_hit){found.items[i].id, found.items[i].score};
        *n_out = n;
    }
done:
    hnsw_visited_give(h, vis);
    dk_free(cand.items);
    dk_free(found.items);
    dk_free(q);
    return rc == DK_OK ? DK_OK : dk_fail(err, rc, "hnsw: search failed (%s)", dk_status_name(rc));
}

size_t rag_hnsw_memory(const rag_hnsw *h)
{
    size_t bytes = sizeof(*h) + (size_t)h->n_cap * (sizeof(uint8_t) + sizeof(uint32_t *));
    for (uint32_t i = 0; i < h->n_nodes; i++) bytes += hnsw_block_words(h, h->levels[i]) * sizeof(uint32_t);
    return bytes;
}

/* ---- bytes ---- */

static int hnsw_put_u32(dk_buf *b, uint32_t x)
{
    uint8_t le[4] = {(uint8_t)x, (uint8_t)(x >> 8), (uint8_t)(x >> 16), (uint8_t)(x >> 24)};
    return dk_buf_append(b, le, 4);
}

int rag_hnsw_save(const rag_hnsw *h, dk_buf *out, char *err)
{
    int rc = dk_buf_append(out, HNSW_MAGIC, 8);
    uint32_t head[5] = {h->m, h->ef_construction, h->n_nodes, h->entry, (uint32_t)h->max_level};
    for (int i = 0; i < 5 && rc == DK_OK; i++) rc = hnsw_put_u32(out, head[i]);
    if (rc == DK_OK) rc = hnsw_put_u32(out, (uint32_t)h->rng);
    if (rc == DK_OK) rc = hnsw_put_u32(out, (uint32_t)(h->rng >> 32));
    for (uint32_t i = 0; i < h->n_nodes && rc == DK_OK; i++) {
        rc = dk_buf_append(out, &h->levels[i], 1);
        for (int l = 0; l <= h->levels[i] && rc == DK_OK; l++) {
            const uint32_t *list = hnsw_list(h, i, l);
            for (uint32_t j = 0; j <= list[0] && rc == DK_OK; j++) rc = hnsw_put_u32(out, list[j]);
        }
    }
    return rc == DK_OK ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "hnsw: out of memory saving the graph");
}

typedef struct hnsw_reader {
    const uint8_t *p;
    size_t left;
} hnsw_reader;

static int hnsw_get_u32(hnsw_reader *r, uint32_t *x)
{
    if (r->left < 4) return -1;
    *x = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
    r->p += 4;
    r->left -= 4;
    return 0;
}

/* Reads node id's level and lists; 0 or a one-line reason in err. */
static int hnsw_load_node(rag_hnsw *h, hnsw_reader *r, uint32_t id, char *err)
{
    if (r->left < 1) return dk_fail(err, DK_ERR_FORMAT, "hnsw: truncated at node %u", id);
    int level = *r->p++;
    r->left--;
    if (level > h->max_level) return dk_fail(err, DK_ERR_FORMAT, "hnsw: node %u level %d above %d", id, level, h->max_level);
    h->levels[id] = (uint8_t)level;
    h->links[id] = dk_calloc(hnsw_block_words(h, level), sizeof(uint32_t));
    if (!h->links[id]) return dk_fail(err, DK_ERR_NOMEM, "hnsw: out of memory");
    for (int l = 0; l <= level; l++) {
        uint32_t *list = hnsw_list(h, id, l), count;
        if (hnsw_get_u32(r, &count) != 0) return dk_fail(err, DK_ERR_FORMAT, "hnsw: truncated at node %u", id);
        if (count > hnsw_degree(h, l))
            return dk_fail(err, DK_ERR_FORMAT, "hnsw: node %u has %u links on layer %d", id, count, l);
        for (uint32_t j = 0; j < count; j++) {
            uint32_t to;
            if (hnsw_get_u32(r, &to) != 0) return dk_fail(err, DK_ERR_FORMAT, "hnsw: truncated at node %u", id);
            if (to >= h->n_nodes || to == id)
                return dk_fail(err, DK_ERR_FORMAT, "hnsw: node %u links to %u (of %u)", id, to, h->n_nodes);
            list[1 + j] = to;
        }
        list[0] = count;
    }
    return DK_OK;
}

/* Links on layer l must point at nodes that reach layer l. */
static int hnsw_check_levels(const rag_hnsw *h, char *err)
{
    for (uint32_t i = 0; i < h->n_nodes; i++)
        for (int l = 1; l <= h->levels[i]; l++) {
            const uint32_t *list = hnsw_list(h, i, l);
            for (uint32_t j = 0; j < list[0]; j++)
                if (h->levels[list[1 + j]] < l)
                    return dk_fail(err, DK_ERR_FORMAT, "hnsw: node %u links on layer %d to %u below it", i, l, list[1 + j]);
        }
    if (h->n_nodes && h->levels[h->entry] != h->max_level)
        return dk_fail(err, DK_ERR_FORMAT, "hnsw: entry %u is not on the top layer", h->entry);
    return DK_OK;
}

int rag_hnsw_load(rag_hnsw **out, const rag_vectors *v, const void *data, size_t n_bytes, char *err)
{
    *out = NULL;
    hnsw_reader r = {data, n_bytes};
    uint32_t head[7];
    if (n_bytes < 8 || memcmp(data, HNSW_MAGIC, 8) != 0) return dk_fail(err, DK_ERR_FORMAT, "hnsw: bad magic");
    r.p += 8;
    r.left -= 8;
    for (int i = 0; i < 7; i++)
        if (hnsw_get_u32(&r, &head[i]) != 0) return dk_fail(err, DK_ERR_FORMAT, "hnsw: truncated header");
    uint32_t m = head[0], efc = head[1], n_nodes = head[2], entry = head[3];
    int32_t max_level = (int32_t)head[4];
    if (m < 2 || m > HNSW_MAX_M / 2 || efc < 1 || efc > 100000)
        return dk_fail(err, DK_ERR_FORMAT, "hnsw: bad parameters m %u ef_construction %u", m, efc);
    if (n_nodes > rag_vectors_count(v))
        return dk_fail(err, DK_ERR_FORMAT, "hnsw: %u nodes but %zu vectors", n_nodes, rag_vectors_count(v));
    if (n_nodes == 0 ? (max_level != -1 || entry != 0) : (max_level < 0 || max_level > HNSW_MAX_LEVEL || entry >= n_nodes))
        return dk_fail(err, DK_ERR_FORMAT, "hnsw: bad entry %u or max level %d", entry, (int)max_level);
    /* every node takes at least 5 bytes: reject impossible counts before allocating */
    if ((r.left) / 5 < n_nodes) return dk_fail(err, DK_ERR_FORMAT, "hnsw: truncated (%u nodes)", n_nodes);
    rag_hnsw *h;
    if (hnsw_new(&h, v, m, efc, (uint64_t)head[5] | (uint64_t)head[6] << 32) != DK_OK)
        return dk_fail(err, DK_ERR_NOMEM, "hnsw: out of memory");
    h->entry = entry;
    h->max_level = max_level;
    int rc = hnsw_reserve(h, n_nodes ? n_nodes : 1);
    if (rc != DK_OK) {
        rag_hnsw_free(h);
        return dk_fail(err, rc, "hnsw: out of memory");
    }
    h->n_nodes = n_nodes;
    for (uint32_t i = 0; i < n_nodes && rc == DK_OK; i++) rc = hnsw_load_node(h, &r, i, err);
    if (rc == DK_OK && r.left != 0) rc = dk_fail(err, DK_ERR_FORMAT, "hnsw: %zu trailing bytes", r.left);
    if (rc == DK_OK) rc = hnsw_check_levels(h, err);
    if (rc != DK_OK) {
        h->n_nodes = 0; /* levels of unread nodes are unset; the free only walks links */
        rag_hnsw_free(h);
        return rc;
    }
    *out = h;
    return DK_OK;
}
