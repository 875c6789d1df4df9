/*
 * rag/ingest.c: `duckling ingest`'s pipeline. Paths become sources (files, directories walked
 * in name order, DuckDB files' tables); a source whose content hash is already stored is left
 * alone; any other is read (read.c), chunked by the embedder's own token count (chunk.c) and
 * embedded in batches (engine_embed_batch), reusing the vector of every chunk whose text hash
 * the source already had, so an edit re-embeds only the chunks it touched. Each source is one
 * transaction: its old chunks are deleted, its row written, its new chunks appended and the
 * store's generation bumped, then COMMIT; a failure or a cancel in the middle rolls back, so
 * the store is as it was before that source. After the last source the index is rebuilt for
 * the new generation and saved (store.c).
 *
 * Why the hash of a source is of its bytes: it is checked before anything is parsed, so an
 * unchanged corpus costs one read and one hash per file (and a changed text, Markdown or HTML
 * file is parsed from those same bytes). Tables are hashed after rendering
 * (their bytes on disk change with every checkpoint).
 *
 * Not for: the formats themselves (read.c), chunk boundaries (chunk.c), the index (store.c).
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/evp.h>

#include "rag/rag_internal.h"
#include "rag/store_internal.h"

#define INGEST_MAX_DEPTH 32

/* ---- hashing ---- */

/* "sha256 hex" of data into hex (65 bytes). */
static int ingest_sha256(const void *data, size_t n, char hex[65], char *err)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest(data, n, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
        return dk_fail(err, DK_ERR_NOMEM, "sha256 failed");
    for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return DK_OK;
}

/* ---- the sources a list of paths names ---- */

typedef struct ingest_source {
    char *path;        /* as stored: the file, or "DB.duckdb:TABLE" */
    char *file;        /* the file to read (the database for a table) */
    char *table;       /* NULL for files */
} ingest_source;

typedef struct ingest_list {
    ingest_source *items;
    size_t n, cap;
} ingest_list;

static void ingest_list_free(ingest_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        dk_free(l->items[i].path);
        dk_free(l->items[i].file);
        dk_free(l->items[i].table);
    }
    dk_free(l->items);
}

static int ingest_list_add(ingest_list *l, const char *file, const char *table, char *err)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        ingest_source *items = dk_realloc(l->items, cap * sizeof *items);
        if (!items) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        l->items = items;
        l->cap = cap;
    }
    ingest_source *src = &l->items[l->n];
    memset(src, 0, sizeof *src);
    dk_buf path = {0};
    int ok = dk_buf_puts(&path, file) == DK_OK && (!table || dk_buf_printf(&path, ":%s", table) == DK_OK);
    src->path = ok ? dk_buf_detach(&path) : NULL;
    src->file = dk_strdup(file);
    src->table = table ? dk_strdup(table) : NULL;
    dk_buf_free(&path);
    l->n++;
    if (!src->path || !src->file || (table && !src->table)) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return DK_OK;
}

static bool ingest_is_duckdb(const char *path)
{
    const char *dot = strrchr(path, '.');
    return dot && (strcasecmp(dot, ".duckdb") == 0 || strcasecmp(dot, ".ddb") == 0);
}

static int ingest_name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct ingest_walk {
    ingest_list *list;
    const rag_ingest_opts *opts;
    rag_ingest_stats *stats;
    const char *store_path;
} ingest_walk;

static void ingest_skip(const rag_ingest_opts *opts, rag_ingest_stats *stats, const char *path, const char *why)
{
    stats->skipped++;
    if (opts->on_skip) opts->on_skip(opts->ud, path, why);
}

static int ingest_add_path(ingest_walk *w, const char *path, int depth, char *err);

/* Every table of a DuckDB file as a source. */
static int ingest_add_tables(ingest_walk *w, const char *path, char *err)
{
    char **tables = NULL;
    char lerr[DK_ERRLEN];
    if (rag_list_tables(path, &tables, lerr) != DK_OK) {
        ingest_skip(w->opts, w->stats, path, lerr);
        return DK_OK;
    }
    int rc = DK_OK;
    for (size_t i = 0; rc == DK_OK && tables[i]; i++) rc = ingest_list_add(w->list, path, tables[i], err);
    rag_strings_free(tables);
    return rc;
}

static int ingest_add_dir(ingest_walk *w, const char *path, int depth, char *err)
{
    if (depth >= INGEST_MAX_DEPTH) {
        ingest_skip(w->opts, w->stats, path, "directories nested too deep");
        return DK_OK;
    }
    DIR *d = opendir(path);
    if (!d) {
        ingest_skip(w->opts, w->stats, path, "cannot open the directory");
        return DK_OK;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = DK_OK;
    struct dirent *e;
    while (rc == DK_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; /* hidden, ".", ".." */
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **grown = dk_realloc(names, cap * sizeof *names);
            if (!grown) {
                rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
                break;
            }
            names = grown;
        }
        if (!(names[n] = dk_strdup(e->d_name))) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        else n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, ingest_name_cmp);
    for (size_t i = 0; i < n; i++) {
        if (rc == DK_OK) {
            dk_buf child = {0};
            size_t len = strlen(path);
            bool slash = len > 0 && path[len - 1] == '/';
            if (dk_buf_printf(&child, "%s%s%s", path, slash ? "" : "/", names[i]) != DK_OK)
                rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            else rc = ingest_add_path(w, child.data, depth + 1, err);
            dk_buf_free(&child);
        }
        dk_free(names[i]);
    }
    dk_free(names);
    return rc;
}

/* "FILE.duckdb:TABLE" when FILE.duckdb exists: *colon points at the ':'. */
static const char *ingest_table_colon(const char *path)
{
    const char *colon = strrchr(path, ':');
    if (!colon || colon == path || !colon[1]) return NULL;
    char file[4096];
    size_t n = (size_t)(colon - path);
    if (n >= sizeof file) return NULL;
    memcpy(file, path, n);
    file[n] = '\0';
    struct stat st;
    return ingest_is_duckdb(file) && stat(file, &st) == 0 && S_ISREG(st.st_mode) ? colon : NULL;
}

static bool ingest_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The store or its write-ahead log (DuckDB's FILE.wal beside it). */
static bool ingest_is_store_file(const ingest_walk *w, const char *path)
{
    if (ingest_same_file(path, w->store_path)) return true;
    size_t n = strlen(path);
    if (n < 5 || strcmp(path + n - 4, ".wal") != 0) return false;
    char *base = dk_strndup(path, n - 4);
    bool same = base && ingest_same_file(base, w->store_path);
    dk_free(base);
    return same;
}

static int ingest_add_path(ingest_walk *w, const char *path, int depth, char *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        const char *colon = ingest_table_colon(path);
        if (colon) {
            char *file = dk_strndup(path, (size_t)(colon - path));
            int rc = file ? ingest_list_add(w->list, file, colon + 1, err) : dk_fail(err, DK_ERR_NOMEM, "out of memory");
            dk_free(file);
            return rc;
        }
        ingest_skip(w->opts, w->stats, path, "no such file or directory");
        return DK_OK;
    }
    if (S_ISDIR(st.st_mode)) return ingest_add_dir(w, path, depth, err);
    if (!S_ISREG(st.st_mode)) {
        ingest_skip(w->opts, w->stats, path, "not a regular file");
        return DK_OK;
    }
    if (ingest_is_store_file(w, path)) return DK_OK; /* the store itself, met in a walk */
    if (ingest_is_duckdb(path)) return ingest_add_tables(w, path, err);
    return ingest_list_add(w->list, path, NULL, err);
}

/* ---- one source ---- */

typedef struct ingest_ctx {
    rag_store *s;
    const rag_ingest_opts *opts;
    rag_ingest_stats *stats;
    size_t chunk_tokens, overlap_tokens, batch;
    rag_progress progress;
    bool replaced;     /* a stored source got new chunks (old ones deleted) */
} ingest_ctx;

typedef struct stored_source {
    int64_t id;        /* 0: not in the store */
    char hash[65];
} stored_source;

static int ingest_find_source(rag_store *s, const char *path, stored_source *out, char *err)
{
    memset(out, 0, sizeof *out);
    duckdb_prepared_statement st;
    int rc = rag_store_prepare(s, "SELECT id, hash FROM sources WHERE path = $1", &st, err);
    if (rc != DK_OK) return rc;
    duckdb_bind_varchar(st, 1, path);
    duckdb_result res;
    rc = rag_store_run(st, &res, err);
    duckdb_destroy_prepare(&st);
    if (rc != DK_OK) return rc;
    if (duckdb_row_count(&res) > 0) {
        out->id = duckdb_value_int64(&res, 0, 0);
        char *h = duckdb_value_varchar(&res, 1, 0);
        if (h) dk_strlcpy(out->hash, h, sizeof out->hash);
        duckdb_free(h);
    }
    duckdb_destroy_result(&res);
    return DK_OK;
}

static size_t ingest_count_tokens(void *ud, const char *text, size_t n)
{
    engine_model *model = ud;
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    char err[DK_ERRLEN];
    if (engine_tokenize(model, text, n, false, false, &tokens, &n_tokens, err) != DK_OK) n_tokens = n; /* bytes bound tokens */
    dk_free(tokens);
    return n_tokens;
}

/* The vectors a source already had, by chunk text hash (sorted for bsearch). */
typedef struct old_vector {
    char hash[65];
    float *x;
} old_vector;

typedef struct old_vectors {
    old_vector *items;
    size_t n;
} old_vectors;

static void old_vectors_free(old_vectors *o)
{
    for (size_t i = 0; i < o->n; i++) dk_free(o->items[i].x);
    dk_free(o->items);
    o->items = NULL;
    o->n = 0;
}

static int old_vector_cmp(const void *a, const void *b)
{
    return strcmp(((const old_vector *)a)->hash, ((const old_vector *)b)->hash);
}

static int old_vectors_take_chunk(old_vectors *o, duckdb_data_chunk chunk, size_t dim, char *err)
{
    idx_t n = duckdb_data_chunk_get_size(chunk);
    duckdb_vector hv = duckdb_data_chunk_get_vector(chunk, 0), ev = duckdb_data_chunk_get_vector(chunk, 1);
    duckdb_string_t *hashes = duckdb_vector_get_data(hv);
    const float *x = duckdb_vector_get_data(duckdb_array_vector_get_child(ev));
    uint64_t *hvalid = duckdb_vector_get_validity(hv), *evalid = duckdb_vector_get_validity(ev);
    old_vector *grown = dk_realloc(o->items, (o->n + n + 1) * sizeof *grown);
    if (!grown) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    o->items = grown;
    for (idx_t i = 0; i < n; i++) {
        if ((hvalid && !duckdb_validity_row_is_valid(hvalid, i)) || (evalid && !duckdb_validity_row_is_valid(evalid, i)))
            continue;
        old_vector *ov = &o->items[o->n];
        uint32_t len = duckdb_string_t_length(hashes[i]);
        if (len >= sizeof ov->hash) continue;
        memcpy(ov->hash, duckdb_string_t_data(&hashes[i]), len);
        ov->hash[len] = '\0';
        if (!(ov->x = dk_malloc_array(dim, sizeof(float)))) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        memcpy(ov->x, x + i * dim, dim * sizeof(float));
        o->n++;
    }
    return DK_OK;
}

static int old_vectors_load(rag_store *s, int64_t source_id, old_vectors *o, char *err)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT hash, embedding FROM chunks WHERE source_id = %" PRId64, source_id);
    duckdb_result res;
    if (duckdb_query(s->con, sql, &res) == DuckDBError) {
        int rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return rc;
    }
    int rc = DK_OK;
    duckdb_data_chunk chunk;
    while (rc == DK_OK && (chunk = duckdb_fetch_chunk(res)) != NULL) {
        rc = old_vectors_take_chunk(o, chunk, s->dim, err);
        duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    if (rc == DK_OK && o->n) qsort(o->items, o->n, sizeof *o->items, old_vector_cmp);
    return rc;
}

static const float *old_vectors_find(const old_vectors *o, const char *hash)
{
    old_vector key;
    dk_strlcpy(key.hash, hash, sizeof key.hash);
    const old_vector *hit = o->n ? bsearch(&key, o->items, o->n, sizeof *o->items, old_vector_cmp) : NULL;
    return hit ? hit->x : NULL;
}

/* The chunks of one source, ready to append. */
typedef struct pending {
    size_t n;
    char **texts;      /* what is embedded: "heading\n\ntext", or text */
    char (*hashes)[65];
    float *x;          /* n * dim */
} pending;

static void pending_free(pending *p)
{
    for (size_t i = 0; p->texts && i < p->n; i++) dk_free(p->texts[i]);
    dk_free(p->texts);
    dk_free(p->hashes);
    dk_free(p->x);
    memset(p, 0, sizeof *p);
}

static int pending_init(pending *p, const rag_doc *doc, const rag_chunk *chunks, size_t n, size_t dim, char *err)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    p->texts = dk_calloc(n ? n : 1, sizeof *p->texts);
    p->hashes = dk_calloc(n ? n : 1, sizeof *p->hashes);
    p->x = dk_malloc_array(n ? n * dim : 1, sizeof(float));
    if (!p->texts || !p->hashes || !p->x) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const rag_chunk *c = &chunks[i];
        dk_buf b = {0};
        if (c->heading && c->heading[0]) dk_buf_printf(&b, "%s\n\n", c->heading);
        if (dk_buf_append(&b, doc->text + c->text_start, c->text_end - c->text_start) != DK_OK || !b.data) {
            dk_buf_free(&b);
            return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        }
        p->texts[i] = dk_buf_detach(&b);
        int rc = ingest_sha256(p->texts[i], strlen(p->texts[i]), p->hashes[i], err);
        if (rc != DK_OK) return rc;
    }
    return DK_OK;
}

static bool ingest_cancelled(const ingest_ctx *c)
{
    return c->opts->cancel && *c->opts->cancel;
}

static void ingest_report(ingest_ctx *c)
{
    if (c->opts->on_progress) c->opts->on_progress(c->opts->ud, &c->progress);
}

/* Fills p->x: reused vectors from old, the rest through the model in batches. */
static int pending_embed(ingest_ctx *c, pending *p, const old_vectors *old, char *err)
{
    size_t dim = c->s->dim;
    const char **batch = dk_malloc_array(c->batch, sizeof *batch);
    size_t *where = dk_malloc_array(c->batch, sizeof *where);
    float *out = dk_malloc_array(c->batch * dim, sizeof(float));
    int rc = batch && where && out ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    size_t i = 0;
    while (rc == DK_OK && i < p->n) {
        size_t nb = 0;
        for (; i < p->n && nb < c->batch; i++) {
            const float *x = old_vectors_find(old, p->hashes[i]);
            if (x) {
                memcpy(p->x + i * dim, x, dim * sizeof(float));
                c->stats->reused++;
                c->progress.chunks_done++;
                continue;
            }
            batch[nb] = p->texts[i];
            where[nb++] = i;
        }
        if (nb) {
            uint64_t t0 = dk_now_ns();
            size_t n_tokens = 0;
            rc = engine_embed_batch(c->opts->embedder, batch, nb, true, 0, out, &n_tokens, err);
            c->stats->embed_ms += (double)(dk_now_ns() - t0) / 1e6;
            c->stats->embed_tokens += n_tokens;
            if (rc != DK_OK) break;
            for (size_t j = 0; j < nb; j++) memcpy(p->x + where[j] * dim, out + j * dim, dim * sizeof(float));
            c->stats->embedded += nb;
            c->progress.chunks_done += nb;
        }
        ingest_report(c);
        if (ingest_cancelled(c)) rc = dk_fail(err, DK_ERR_CANCELLED, "ingest interrupted");
    }
    dk_free(batch);
    dk_free(where);
    dk_free(out);
    return rc;
}

/* First ingest: records the model and creates the chunks table. Later: the same model. */
static int ingest_check_model(rag_store *s, const rag_ingest_opts *o, char *err)
{
    size_t dim = engine_n_embd(o->embedder);
    const char *name = o->model_name ? o->model_name : "";
    if (s->dim) {
        if (s->dim != dim || !s->embed_model || strcmp(s->embed_model, name) != 0)
            return dk_fail(err, DK_ERR_ARG, "the store was built with %s (%zu dimensions), not %s (%zu); ingest with the same model",
                           s->embed_model ? s->embed_model : "?", s->dim, name, dim);
        return DK_OK;
    }
    char sql[768], dim_text[32];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS chunks (id BIGINT PRIMARY KEY, source_id BIGINT NOT NULL, seq INTEGER,"
             " heading VARCHAR, text VARCHAR, loc_start BIGINT, loc_end BIGINT, unit VARCHAR, n_tokens INTEGER,"
             " hash VARCHAR, embedding FLOAT[%zu])", dim);
    snprintf(dim_text, sizeof dim_text, "%zu", dim);
    int rc = rag_store_exec(s, "BEGIN TRANSACTION", err);
    if (rc == DK_OK) rc = rag_store_exec(s, sql, err);
    if (rc == DK_OK) rc = rag_store_meta_set(s, "embed_model", name, err);
    if (rc == DK_OK) rc = rag_store_meta_set(s, "dim", dim_text, err);
    if (rc == DK_OK) rc = rag_store_exec(s, "COMMIT", err);
    else rag_store_exec(s, "ROLLBACK", NULL);
    return rc == DK_OK ? rag_store_meta_load(s, err) : rc;
}

/* ---- writing one source's transaction ---- */

typedef struct source_row {
    const char *path, *kind, *title, *hash;
    int64_t bytes, mtime;
    size_t n_chunks;
} source_row;

static int ingest_write_source(rag_store *s, int64_t id, bool exists, const source_row *r, char *err)
{
    const char *sql = exists
        ? "UPDATE sources SET kind = $2, title = $3, hash = $4, bytes = $5, mtime = to_timestamp($6)::TIMESTAMP,"
          " ingested_at = now()::TIMESTAMP, n_chunks = $7 WHERE id = $1"
        : "INSERT INTO sources VALUES ($1, $8, $2, $3, $4, $5, to_timestamp($6)::TIMESTAMP, now()::TIMESTAMP, $7)";
    duckdb_prepared_statement st;
    int rc = rag_store_prepare(s, sql, &st, err);
    if (rc != DK_OK) return rc;
    duckdb_bind_int64(st, 1, id);
    duckdb_bind_varchar(st, 2, r->kind);
    if (r->title) duckdb_bind_varchar(st, 3, r->title);
    else duckdb_bind_null(st, 3);
    duckdb_bind_varchar(st, 4, r->hash);
    duckdb_bind_int64(st, 5, r->bytes);
    duckdb_bind_int64(st, 6, r->mtime);
    duckdb_bind_int64(st, 7, (int64_t)r->n_chunks);
    if (!exists) duckdb_bind_varchar(st, 8, r->path);
    duckdb_result res;
    rc = rag_store_run(st, &res, err);
    duckdb_destroy_prepare(&st);
    if (rc == DK_OK) duckdb_destroy_result(&res);
    return rc;
}

static void chunk_set_varchar(duckdb_data_chunk dc, idx_t col, idx_t row, const char *text, size_t len)
{
    duckdb_vector_assign_string_element_len(duckdb_data_chunk_get_vector(dc, col), row, text, len);
}

/* Fills one data chunk of rows [from, to) of the source's chunks. */
static void chunk_fill(duckdb_data_chunk dc, const rag_doc *doc, const rag_chunk *chunks, const pending *p, size_t dim,
                       int64_t first_id, int64_t source_id, size_t from, size_t to)
{
    int64_t *ids = duckdb_vector_get_data(duckdb_data_chunk_get_vector(dc, 0));
    int64_t *src = duckdb_vector_get_data(duckdb_data_chunk_get_vector(dc, 1));
    int32_t *seq = duckdb_vector_get_data(duckdb_data_chunk_get_vector(dc, 2));
    int64_t *loc_start = duckdb_vector_get_data(duckdb_data_chunk_get_vector(dc, 5));
    int64_t *loc_end = duckdb_vector_get_data(duckdb_data_chunk_get_vector(dc, 6));
    int32_t *n_tokens = duckdb_vector_get_data(duckdb_data_chunk_get_vector(dc, 8));
    float *x = duckdb_vector_get_data(duckdb_array_vector_get_child(duckdb_data_chunk_get_vector(dc, 10)));
    for (size_t i = from; i < to; i++) {
        idx_t row = i - from;
        const rag_chunk *c = &chunks[i];
        ids[row] = first_id + (int64_t)i;
        src[row] = source_id;
        seq[row] = (int32_t)i;
        const char *heading = c->heading ? c->heading : "";
        chunk_set_varchar(dc, 3, row, heading, strlen(heading));
        chunk_set_varchar(dc, 4, row, doc->text + c->text_start, c->text_end - c->text_start);
        loc_start[row] = c->loc_start;
        loc_end[row] = c->loc_end;
        chunk_set_varchar(dc, 7, row, doc->unit, strlen(doc->unit));
        n_tokens[row] = (int32_t)c->n_tokens;
        chunk_set_varchar(dc, 9, row, p->hashes[i], 64);
        memcpy(x + row * dim, p->x + i * dim, dim * sizeof(float));
    }
    duckdb_data_chunk_set_size(dc, to - from);
}

static int ingest_append_chunks(rag_store *s, const rag_doc *doc, const rag_chunk *chunks, const pending *p,
                                int64_t first_id, int64_t source_id, char *err)
{
    duckdb_logical_type types[11];
    static const duckdb_type scalar[10] = {DUCKDB_TYPE_BIGINT, DUCKDB_TYPE_BIGINT, DUCKDB_TYPE_INTEGER,
                                           DUCKDB_TYPE_VARCHAR, DUCKDB_TYPE_VARCHAR, DUCKDB_TYPE_BIGINT,
                                           DUCKDB_TYPE_BIGINT, DUCKDB_TYPE_VARCHAR, DUCKDB_TYPE_INTEGER,
                                           DUCKDB_TYPE_VARCHAR};
    for (int i = 0; i < 10; i++) types[i] = duckdb_create_logical_type(scalar[i]);
    duckdb_logical_type f = duckdb_create_logical_type(DUCKDB_TYPE_FLOAT);
    types[10] = duckdb_create_array_type(f, s->dim);
    duckdb_destroy_logical_type(&f);

    duckdb_appender app = NULL;
    int rc = DK_OK;
    if (duckdb_appender_create(s->con, NULL, "chunks", &app) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "store: %s", app ? duckdb_appender_error(app) : "cannot append to chunks");
    }
    size_t cap = duckdb_vector_size();
    for (size_t from = 0; rc == DK_OK && from < p->n; from += cap) {
        size_t to = from + cap < p->n ? from + cap : p->n;
        duckdb_data_chunk dc = duckdb_create_data_chunk(types, 11);
        if (!dc) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            break;
        }
        chunk_fill(dc, doc, chunks, p, s->dim, first_id, source_id, from, to);
        if (duckdb_append_data_chunk(app, dc) == DuckDBError)
            rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_appender_error(app));
        duckdb_destroy_data_chunk(&dc);
    }
    if (rc == DK_OK && duckdb_appender_flush(app) == DuckDBError)
        rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_appender_error(app));
    if (app) duckdb_appender_destroy(&app);
    for (int i = 0; i < 11; i++) duckdb_destroy_logical_type(&types[i]);
    return rc;
}

static int ingest_bump_generation(rag_store *s, char *err)
{
    char gen[32];
    snprintf(gen, sizeof gen, "%" PRId64, s->generation + 1);
    return rag_store_meta_set(s, "generation", gen, err);
}

/* The transaction of one source: out with the old chunks, in with the new. */
static int ingest_commit_source(ingest_ctx *c, const stored_source *old, const source_row *row, const rag_doc *doc,
                                const rag_chunk *chunks, const pending *p, char *err)
{
    rag_store *s = c->s;
    int64_t source_id = old->id ? old->id : rag_store_scalar(s, "SELECT coalesce(max(id), 0) + 1 FROM sources");
    /* New ids above every id ever in the table at this point, deleted ones included, so a
     * chunk id is never reused within the transaction. */
    int64_t first_id = rag_store_scalar(s, "SELECT coalesce(max(id), 0) + 1 FROM chunks");
    if (source_id < 1 || first_id < 1) return dk_fail(err, DK_ERR_IO, "store: cannot number the new rows");
    int rc = rag_store_exec(s, "BEGIN TRANSACTION", err);
    if (rc != DK_OK) return rc;
    if (old->id) {
        char sql[96];
        snprintf(sql, sizeof sql, "DELETE FROM chunks WHERE source_id = %" PRId64, old->id);
        rc = rag_store_exec(s, sql, err);
    }
    if (rc == DK_OK) rc = ingest_write_source(s, source_id, old->id != 0, row, err);
    if (rc == DK_OK && p->n) rc = ingest_append_chunks(s, doc, chunks, p, first_id, source_id, err);
    if (rc == DK_OK) rc = ingest_bump_generation(s, err);
    if (rc == DK_OK && ingest_cancelled(c)) rc = dk_fail(err, DK_ERR_CANCELLED, "ingest interrupted");
    if (rc == DK_OK) rc = rag_store_exec(s, "COMMIT", err);
    if (rc != DK_OK) {
        rag_store_exec(s, "ROLLBACK", NULL);
        return rc;
    }
    return rag_store_meta_load(s, err);
}

/* The file's bytes (*data, caller frees) and their hash, before anything is parsed; a
 * DK_ERR_* with why for an unreadable file. */
static int ingest_load_file(const char *file, char **data, size_t *len, char hex[65], char *why)
{
    int rc = dk_file_read(file, (size_t)64 << 20, data, len, why);
    if (rc == DK_OK) rc = ingest_sha256(*data ? *data : "", *len, hex, why);
    return rc;
}

/* Reads a source's document: text, Markdown and HTML from the bytes already loaded (data),
 * data files through DuckDB, tables from their database. On a bad source fills why. */
static int ingest_read(const ingest_source *src, const char *data, size_t len, rag_doc **doc, char *why)
{
    if (src->table) return rag_read_table(src->file, src->table, NULL, doc, why);
    int rc = rag_read_buffer(src->file, data, len, NULL, doc, why);
    return rc == DK_ERR_UNSUPPORTED ? rag_read_file(src->file, NULL, doc, why) : rc;
}

static int ingest_one(ingest_ctx *c, const ingest_source *src, char *err)
{
    rag_store *s = c->s;
    stored_source old;
    int rc = ingest_find_source(s, src->path, &old, err);
    if (rc != DK_OK) return rc;
    struct stat st;
    int64_t mtime = stat(src->file, &st) == 0 ? (int64_t)st.st_mtime : 0;
    char hash[65] = "", why[DK_ERRLEN];
    char *data = NULL;
    size_t len = 0;
    if (!src->table) {
        int lrc = ingest_load_file(src->file, &data, &len, hash, why);
        bool unchanged = lrc == DK_OK && old.id && strcmp(old.hash, hash) == 0;
        if (lrc != DK_OK) ingest_skip(c->opts, c->stats, src->path, why);
        else if (unchanged) c->stats->unchanged++;
        if (lrc != DK_OK || unchanged) {
            dk_free(data);
            return DK_OK;
        }
    }
    rag_doc *doc = NULL;
    int read_rc = ingest_read(src, data, len, &doc, why);
    dk_free(data);
    if (read_rc != DK_OK) {
        ingest_skip(c->opts, c->stats, src->path, why);
        return DK_OK;
    }
    int64_t bytes = (int64_t)len;
    if (src->table) {
        bytes = (int64_t)doc->text_len;
        if ((rc = ingest_sha256(doc->text, doc->text_len, hash, err)) != DK_OK) goto done_doc;
        if (old.id && strcmp(old.hash, hash) == 0) {
            c->stats->unchanged++;
            goto done_doc;
        }
    }
    rag_chunk *chunks = NULL;
    size_t n_chunks = 0;
    rag_chunk_opts co = {c->chunk_tokens, c->overlap_tokens, ingest_count_tokens, c->opts->embedder};
    rc = rag_chunk_doc(doc, &co, &chunks, &n_chunks, err);
    pending p = {0};
    old_vectors ov = {0};
    if (rc == DK_OK) rc = pending_init(&p, doc, chunks, n_chunks, s->dim, err);
    if (rc == DK_OK && old.id) rc = old_vectors_load(s, old.id, &ov, err);
    if (rc == DK_OK) {
        c->progress.chunks_done = 0;
        c->progress.chunks_total = n_chunks;
        ingest_report(c);
        rc = pending_embed(c, &p, &ov, err);
    }
    if (rc == DK_OK) {
        source_row row = {src->path, doc->kind, doc->title, hash, bytes, mtime, n_chunks};
        rc = ingest_commit_source(c, &old, &row, doc, chunks, &p, err);
    }
    if (rc == DK_OK) {
        if (old.id) c->replaced = true;
        if (old.id) c->stats->updated++;
        else c->stats->added++;
        c->stats->chunks += n_chunks;
    }
    old_vectors_free(&ov);
    pending_free(&p);
    rag_chunks_free(chunks, n_chunks);
done_doc:
    rag_doc_free(doc);
    return rc;
}

/* ---- the whole ingest ---- */

static int ingest_opts_check(const rag_store *s, const rag_ingest_opts *o, ingest_ctx *c, char *err)
{
    if (!s->writable) return dk_fail(err, DK_ERR_ARG, "the store was opened read-only");
    if (!o || !o->embedder) return dk_fail(err, DK_ERR_ARG, "ingest needs an embedding model");
    if (!engine_is_embedding(o->embedder))
        return dk_fail(err, DK_ERR_ARG, "%s is not an embedding model", o->model_name ? o->model_name : "the model");
    c->chunk_tokens = o->chunk_tokens ? o->chunk_tokens : 256;
    size_t n_ctx = engine_n_ctx_train(o->embedder) ? engine_n_ctx_train(o->embedder) : 512;
    /* Room for the special tokens and the heading line that is embedded with the chunk. */
    size_t room = n_ctx > 48 ? n_ctx - 16 : n_ctx / 2;
    if (c->chunk_tokens > room) c->chunk_tokens = room;
    c->overlap_tokens = o->overlap_tokens ? o->overlap_tokens : 32;
    if (c->overlap_tokens * 2 >= c->chunk_tokens) {
        if (o->overlap_tokens) return dk_fail(err, DK_ERR_ARG, "overlap %zu must be less than half the chunk size %zu",
                                              o->overlap_tokens, c->chunk_tokens);
        c->overlap_tokens = c->chunk_tokens / 4;
    }
    c->batch = o->batch ? o->batch : 32;
    return DK_OK;
}

int rag_ingest(rag_store *s, const char *const *paths, size_t n_paths, const rag_ingest_opts *opts,
               rag_ingest_stats *stats, char *err)
{
    rag_ingest_stats local;
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    ingest_ctx c = {.s = s, .opts = opts, .stats = stats};
    int rc = ingest_opts_check(s, opts, &c, err);
    if (rc == DK_OK) rc = ingest_check_model(s, opts, err);
    if (rc == DK_OK && opts->hnsw_min_chunks) {
        char v[32];
        snprintf(v, sizeof v, "%zu", opts->hnsw_min_chunks);
        rc = rag_store_meta_set(s, "hnsw_min_chunks", v, err);
        if (rc == DK_OK) rc = rag_store_meta_load(s, err);
        if (rc == DK_OK) s->index_generation = -1; /* the graph may now be due */
    }
    if (rc != DK_OK) return rc;

    int64_t start_generation = s->generation;
    ingest_list list = {0};
    ingest_walk w = {&list, opts, stats, s->path};
    for (size_t i = 0; rc == DK_OK && i < n_paths; i++) rc = ingest_add_path(&w, paths[i], 0, err);
    stats->files = list.n;
    c.progress.n_files = list.n;
    for (size_t i = 0; rc == DK_OK && i < list.n; i++) {
        if (ingest_cancelled(&c)) {
            rc = dk_fail(err, DK_ERR_CANCELLED, "ingest interrupted");
            break;
        }
        c.progress.path = list.items[i].path;
        c.progress.i_file = i;
        c.progress.chunks_done = c.progress.chunks_total = 0;
        rc = ingest_one(&c, &list.items[i], err);
    }
    ingest_list_free(&list);
    /* Whatever committed is kept; the index follows it even after a cancel or a failure. */
    char ierr[DK_ERRLEN];
    int irc = rag_store_index_after_ingest(s, start_generation, !c.replaced, opts->n_threads, ierr);
    if (rc == DK_OK && irc != DK_OK) {
        dk_strlcpy(err, ierr, DK_ERRLEN);
        rc = irc;
    }
    return rc;
}
