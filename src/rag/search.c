/*
 * rag/search.c: rag_search, retrieval over a store. A question is embedded with the store's
 * model and searched in the vector index (HNSW, or exactly), and searched in a BM25 index of
 * the same chunks (built in memory on the first keyword search of an open store; it takes
 * well under a second for ten thousand chunks); hybrid mode fuses the two ranked lists by
 * reciprocal rank, so a chunk that both find comes first and one that only the keywords find
 * (a name, a number, a rare word the embedding blurs) still gets in. Metadata filters become
 * a bitmap of allowed positions, computed by DuckDB over the sources table, which both
 * searches honour while they search (not after, so k results come back whenever k match).
 * With a cross-encoder the fused candidates are rescored pairwise with the question and the
 * best k kept.
 *
 * Not for: the index's persistence (store.c), filling the store (ingest.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rag/rag_internal.h"
#include "rag/store_internal.h"

#define SEARCH_MAX_K 1000

struct rag_results {
    rag_passage *items;
    size_t n;
};

size_t rag_results_count(const rag_results *r) { return r ? r->n : 0; }

const rag_passage *rag_results_get(const rag_results *r, size_t i) { return r && i < r->n ? &r->items[i] : NULL; }

static void passage_free(rag_passage *p)
{
    dk_free((char *)p->path);
    dk_free((char *)p->kind);
    dk_free((char *)p->heading);
    dk_free((char *)p->text);
    dk_free((char *)p->unit);
}

void rag_results_free(rag_results *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) passage_free(&r->items[i]);
    dk_free(r->items);
    dk_free(r);
}

/* ---- filters ---- */

static bool filter_empty(const rag_filter *f)
{
    return !(f->source && f->source[0]) && !(f->path_glob && f->path_glob[0]) && !f->after && !f->before;
}

static int filter_sql(const rag_filter *f, dk_buf *sql, char *err)
{
    int ok = dk_buf_puts(sql, "SELECT c.id FROM chunks c JOIN sources s ON s.id = c.source_id WHERE true") == DK_OK;
    int i = 1;
    if (f->source && f->source[0]) ok = ok && dk_buf_printf(sql, " AND s.path = $%d", i++) == DK_OK;
    if (f->path_glob && f->path_glob[0]) ok = ok && dk_buf_printf(sql, " AND s.path GLOB $%d", i++) == DK_OK;
    if (f->after) ok = ok && dk_buf_printf(sql, " AND epoch(s.mtime) > $%d", i++) == DK_OK;
    if (f->before) ok = ok && dk_buf_printf(sql, " AND epoch(s.mtime) < $%d", i++) == DK_OK;
    return ok ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

static void filter_bind(duckdb_prepared_statement st, const rag_filter *f)
{
    idx_t i = 1;
    if (f->source && f->source[0]) duckdb_bind_varchar(st, i++, f->source);
    if (f->path_glob && f->path_glob[0]) duckdb_bind_varchar(st, i++, f->path_glob);
    if (f->after) duckdb_bind_int64(st, i++, f->after);
    if (f->before) duckdb_bind_int64(st, i++, f->before);
}

/* The bitmap of positions the filter allows (*allow NULL when there is no filter); *n_allowed
 * counts them. */
static int filter_bitmap(rag_store *s, const rag_filter *f, uint8_t **allow, size_t *n_allowed, char *err)
{
    *allow = NULL;
    *n_allowed = s->n_ids;
    if (filter_empty(f)) return DK_OK;
    dk_buf sql = {0};
    int rc = filter_sql(f, &sql, err);
    duckdb_prepared_statement st = NULL;
    if (rc == DK_OK && duckdb_prepare(s->con, sql.data, &st) == DuckDBError)
        rc = dk_fail(err, DK_ERR_ARG, "filter: %s", duckdb_prepare_error(st));
    dk_buf_free(&sql);
    duckdb_result res;
    if (rc == DK_OK) {
        filter_bind(st, f);
        if (duckdb_execute_prepared(st, &res) == DuckDBError) {
            rc = dk_fail(err, DK_ERR_ARG, "filter: %s", duckdb_result_error(&res));
            duckdb_destroy_result(&res);
        }
    }
    duckdb_destroy_prepare(&st);
    if (rc != DK_OK) return rc;
    uint8_t *bits = dk_calloc((s->n_ids + 7) / 8 + 1, 1);
    if (!bits) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    *n_allowed = 0;
    duckdb_data_chunk chunk;
    while (rc == DK_OK && (chunk = duckdb_fetch_chunk(res)) != NULL) {
        idx_t n = duckdb_data_chunk_get_size(chunk);
        const int64_t *ids = duckdb_vector_get_data(duckdb_data_chunk_get_vector(chunk, 0));
        for (idx_t i = 0; i < n; i++) {
            long pos = rag_store_position(s, ids[i]);
            if (pos < 0) continue;
            if (!(bits[pos / 8] & (1u << (pos % 8)))) (*n_allowed)++;
            bits[pos / 8] |= (uint8_t)(1u << (pos % 8));
        }
        duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    if (rc != DK_OK) {
        dk_free(bits);
        return rc;
    }
    *allow = bits;
    return DK_OK;
}

/* ---- the two rankings ---- */

static int search_vector(rag_store *s, engine_model *embedder, const char *query, const rag_search_opts *o, size_t n_cand,
                         const uint8_t *allow, rag_hit *hits, size_t *n_hits, char *err)
{
    if (!embedder) return dk_fail(err, DK_ERR_ARG, "a vector search needs the store's embedding model (%s)",
                                  s->embed_model ? s->embed_model : "none recorded");
    if (!engine_is_embedding(embedder)) return dk_fail(err, DK_ERR_ARG, "the model given for the query is not an embedding model");
    if (engine_n_embd(embedder) != s->dim)
        return dk_fail(err, DK_ERR_ARG, "the query model has %zu dimensions, the store's vectors %zu (built with %s)",
                       engine_n_embd(embedder), s->dim, s->embed_model ? s->embed_model : "?");
    float *q = dk_malloc_array(s->dim, sizeof(float));
    if (!q) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = engine_embed_batch(embedder, &query, 1, true, 0, q, NULL, err);
    if (rc == DK_OK) {
        if (s->hnsw && !o->exact) {
            size_t ef = o->ef ? o->ef : (4 * n_cand > 64 ? 4 * n_cand : 64);
            rc = rag_hnsw_search(s->hnsw, q, n_cand, ef, allow, hits, n_hits, err);
        } else {
            rc = rag_exact_search(s->vectors, q, n_cand, allow, 1, hits, n_hits, err);
        }
    }
    dk_free(q);
    return rc;
}

/* BM25 over "heading text" of every chunk, in the index's order. */
static int bm25_build(rag_store *s, char *err)
{
    if (s->bm25 && s->bm25_generation == s->index_generation) return DK_OK;
    rag_bm25_free(s->bm25);
    s->bm25 = NULL;
    rag_bm25 *b = NULL;
    int rc = rag_bm25_new(&b, err);
    if (rc != DK_OK) return rc;
    duckdb_result res;
    if (duckdb_query(s->con, "SELECT heading || ' ' || text FROM chunks ORDER BY id", &res) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        rag_bm25_free(b);
        return rc;
    }
    duckdb_data_chunk chunk;
    while (rc == DK_OK && (chunk = duckdb_fetch_chunk(res)) != NULL) {
        idx_t n = duckdb_data_chunk_get_size(chunk);
        duckdb_string_t *texts = duckdb_vector_get_data(duckdb_data_chunk_get_vector(chunk, 0));
        for (idx_t i = 0; rc == DK_OK && i < n; i++)
            rc = rag_bm25_add(b, duckdb_string_t_data(&texts[i]), duckdb_string_t_length(texts[i]), err);
        duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    if (rc == DK_OK && rag_bm25_count(b) != s->n_ids)
        rc = dk_fail(err, DK_ERR_IO, "store: the chunks changed while the keyword index was built");
    if (rc != DK_OK) {
        rag_bm25_free(b);
        return rc;
    }
    s->bm25 = b;
    s->bm25_generation = s->index_generation;
    return DK_OK;
}

/* ---- passages ---- */

static char *dup_or_empty(const char *s) { return dk_strdup(s ? s : ""); }

static int passage_take_row(duckdb_result *res, idx_t row, rag_passage *p)
{
    char *v[5];
    for (int c = 0; c < 5; c++) v[c] = duckdb_value_varchar(res, (idx_t)(c < 4 ? c + 1 : 7), row);
    p->chunk_id = duckdb_value_int64(res, 0, row);
    p->path = dup_or_empty(v[0]);
    p->kind = dup_or_empty(v[1]);
    p->heading = dup_or_empty(v[2]);
    p->text = dup_or_empty(v[3]);
    p->unit = dup_or_empty(v[4]);
    p->start = duckdb_value_int64(res, 5, row);
    p->end = duckdb_value_int64(res, 6, row);
    for (int c = 0; c < 5; c++) duckdb_free(v[c]);
    return p->path && p->kind && p->heading && p->text && p->unit ? DK_OK : DK_ERR_NOMEM;
}

/* Fills out[i] for the chunks at positions hits[i].id (n of them) with their text and source. */
static int passages_fetch(rag_store *s, const rag_hit *hits, size_t n, rag_passage *out, char *err)
{
    dk_buf sql = {0};
    int ok = dk_buf_puts(&sql, "SELECT c.id, s.path, s.kind, c.heading, c.text, c.loc_start, c.loc_end, c.unit"
                               " FROM chunks c JOIN sources s ON s.id = c.source_id WHERE c.id IN (") == DK_OK;
    for (size_t i = 0; ok && i < n; i++)
        ok = dk_buf_printf(&sql, "%s%" PRId64, i ? "," : "", s->ids[hits[i].id]) == DK_OK;
    ok = ok && dk_buf_puts(&sql, ")") == DK_OK;
    if (!ok) {
        dk_buf_free(&sql);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    duckdb_result res;
    int rc = DK_OK;
    if (duckdb_query(s->con, sql.data, &res) == DuckDBError) rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(&res));
    dk_buf_free(&sql);
    idx_t rows = rc == DK_OK ? duckdb_row_count(&res) : 0;
    for (idx_t r = 0; rc == DK_OK && r < rows; r++) {
        int64_t id = duckdb_value_int64(&res, 0, r);
        for (size_t i = 0; i < n; i++) {
            if (s->ids[hits[i].id] != id || out[i].path) continue;
            if (passage_take_row(&res, r, &out[i]) != DK_OK) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            break;
        }
    }
    duckdb_destroy_result(&res);
    for (size_t i = 0; rc == DK_OK && i < n; i++)
        if (!out[i].path) rc = dk_fail(err, DK_ERR_IO, "store: chunk %" PRId64 " vanished during the search", s->ids[hits[i].id]);
    return rc;
}

static int rank_in(const rag_hit *list, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (list[i].id == id) return (int)i + 1;
    return 0;
}

static int passage_score_cmp(const void *a, const void *b)
{
    const rag_passage *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->chunk_id < y->chunk_id ? -1 : x->chunk_id > y->chunk_id;
}

/* Rescores the passages with the cross-encoder and sorts them best first. */
static int passages_rerank(engine_model *reranker, const char *query, rag_passage *items, size_t n, char *err)
{
    if (!engine_is_reranker(reranker)) return dk_fail(err, DK_ERR_ARG, "the rerank model is not a cross-encoder (reranker)");
    const char **docs = dk_malloc_array(n ? n : 1, sizeof *docs);
    char **owned = dk_calloc(n ? n : 1, sizeof *owned);
    float *scores = dk_malloc_array(n ? n : 1, sizeof(float));
    int rc = docs && owned && scores ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == DK_OK && i < n; i++) {
        dk_buf b = {0};
        if (items[i].heading[0]) dk_buf_printf(&b, "%s\n\n", items[i].heading);
        dk_buf_puts(&b, items[i].text);
        if (!(owned[i] = dk_buf_detach(&b))) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        docs[i] = owned[i];
    }
    if (rc == DK_OK) rc = engine_rerank(reranker, query, docs, n, scores, err);
    if (rc == DK_OK) {
        for (size_t i = 0; i < n; i++) items[i].score = scores[i];
        qsort(items, n, sizeof *items, passage_score_cmp);
    }
    for (size_t i = 0; owned && i < n; i++) dk_free(owned[i]);
    dk_free(owned);
    dk_free(docs);
    dk_free(scores);
    return rc;
}

/* ---- the search ---- */

typedef struct search_lists {
    rag_hit *vec, *kw, *fused;
    size_t n_vec, n_kw, n_fused;
} search_lists;

static void search_lists_free(search_lists *l)
{
    dk_free(l->vec);
    dk_free(l->kw);
    dk_free(l->fused);
}

static int search_rank(rag_store *s, engine_model *embedder, const char *query, const rag_search_opts *o, size_t n_cand,
                       const uint8_t *allow, search_lists *l, char *err)
{
    l->vec = dk_malloc_array(n_cand, sizeof(rag_hit));
    l->kw = dk_malloc_array(n_cand, sizeof(rag_hit));
    l->fused = dk_malloc_array(n_cand, sizeof(rag_hit));
    if (!l->vec || !l->kw || !l->fused) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = DK_OK;
    if (o->mode != RAG_MODE_KEYWORD) rc = search_vector(s, embedder, query, o, n_cand, allow, l->vec, &l->n_vec, err);
    if (rc == DK_OK && o->mode != RAG_MODE_VECTOR) {
        rc = bm25_build(s, err);
        if (rc == DK_OK) rc = rag_bm25_search(s->bm25, query, n_cand, allow, l->kw, &l->n_kw, err);
    }
    if (rc != DK_OK) return rc;
    if (o->mode == RAG_MODE_HYBRID) {
        const rag_hit *lists[2] = {l->vec, l->kw};
        size_t lens[2] = {l->n_vec, l->n_kw};
        return rag_rrf_fuse(lists, lens, 2, 0, n_cand, l->fused, &l->n_fused, err);
    }
    const rag_hit *only = o->mode == RAG_MODE_VECTOR ? l->vec : l->kw;
    l->n_fused = o->mode == RAG_MODE_VECTOR ? l->n_vec : l->n_kw;
    memcpy(l->fused, only, l->n_fused * sizeof *only);
    return DK_OK;
}

static int search_check(const char *query, const rag_search_opts *o, char *err)
{
    if (!query || !query[0]) return dk_fail(err, DK_ERR_ARG, "the search query is empty");
    if (o->k > SEARCH_MAX_K) return dk_fail(err, DK_ERR_ARG, "k %zu is above the limit of %d", o->k, SEARCH_MAX_K);
    if (o->mode != RAG_MODE_HYBRID && o->mode != RAG_MODE_VECTOR && o->mode != RAG_MODE_KEYWORD)
        return dk_fail(err, DK_ERR_ARG, "unknown search mode %d", (int)o->mode);
    return DK_OK;
}

static int results_new(rag_results **out, size_t n, char *err)
{
    rag_results *r = dk_calloc(1, sizeof *r);
    if (r && n) r->items = dk_calloc(n, sizeof *r->items);
    if (!r || (n && !r->items)) {
        dk_free(r);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    *out = r;
    return DK_OK;
}

int rag_search(rag_store *s, engine_model *embedder, const char *query, const rag_search_opts *opts,
               rag_results **out, char *err)
{
    *out = NULL;
    rag_search_opts o = opts ? *opts : (rag_search_opts){0};
    int rc = search_check(query, &o, err);
    if (rc != DK_OK) return rc;
    size_t k = o.k ? o.k : 5;
    if ((rc = rag_store_index_sync(s, 1, false, err)) != DK_OK) return rc;
    uint8_t *allow = NULL;
    size_t n_allowed = 0;
    if ((rc = filter_bitmap(s, &o.filter, &allow, &n_allowed, err)) != DK_OK) return rc;
    if (s->n_ids == 0 || n_allowed == 0) {
        dk_free(allow);
        return results_new(out, 0, err);
    }
    size_t n_cand = k;
    if (o.mode == RAG_MODE_HYBRID || o.reranker) {
        n_cand = o.candidates ? o.candidates : (4 * k > 20 ? 4 * k : 20);
        if (n_cand < k) n_cand = k;
    }
    if (n_cand > s->n_ids) n_cand = s->n_ids;
    search_lists l = {0};
    rc = search_rank(s, embedder, query, &o, n_cand, allow, &l, err);
    dk_free(allow);
    rag_results *r = NULL;
    if (rc == DK_OK) rc = results_new(&r, l.n_fused, err);
    if (rc == DK_OK && l.n_fused) rc = passages_fetch(s, l.fused, l.n_fused, r->items, err);
    if (rc == DK_OK) {
        r->n = l.n_fused;
        for (size_t i = 0; i < r->n; i++) {
            r->items[i].score = l.fused[i].score;
            r->items[i].vector_rank = rank_in(l.vec, l.n_vec, l.fused[i].id);
            r->items[i].keyword_rank = rank_in(l.kw, l.n_kw, l.fused[i].id);
        }
        if (o.reranker) rc = passages_rerank(o.reranker, query, r->items, r->n, err);
    }
    search_lists_free(&l);
    if (rc == DK_OK) {
        for (size_t i = k; i < r->n; i++) passage_free(&r->items[i]);
        if (r->n > k) r->n = k;
        *out = r;
        return DK_OK;
    }
    if (r) r->n = l.n_fused; /* free whatever was filled */
    rag_results_free(r);
    return rc;
}
