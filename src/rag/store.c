/*
 * rag/store.c: the retrieval store, a DuckDB file. It creates and checks the tables (their
 * meaning is documented in docs/rag.md), keeps the store's settings in dk_meta, and owns the
 * in-memory index over the chunks' vectors: loaded from dk_index when that was saved for the
 * current generation of the chunks, rebuilt from the chunks table otherwise (and then saved
 * back when the store is writable), so an index survives closing and reopening the store and
 * is never used when it no longer matches the chunks.
 *
 * Tables:
 *   dk_meta(key, value)                 schema version, embed_model, dim, generation
 *   sources(id, path, kind, title, hash, bytes, mtime, ingested_at, n_chunks)
 *   chunks(id, source_id, seq, heading, text, loc_start, loc_end, unit, n_tokens, hash,
 *          embedding FLOAT[dim])
 *   dk_index(name, generation, data)    'ids', 'vectors', 'hnsw' BLOBs of one generation
 * The chunks table is created by the first ingest, when the dimension is known.
 *
 * Not for: reading files and chunking (read.c, chunk.c), the ingest pipeline (ingest.c),
 * searching (search.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rag/rag_internal.h"
#include "rag/store_internal.h"

#define RAG_SCHEMA_VERSION "1"

int rag_store_exec(rag_store *s, const char *sql, char *err)
{
    duckdb_result res;
    if (duckdb_query(s->con, sql, &res) == DuckDBError) {
        int rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return rc;
    }
    duckdb_destroy_result(&res);
    return DK_OK;
}

int rag_store_prepare(rag_store *s, const char *sql, duckdb_prepared_statement *out, char *err)
{
    if (duckdb_prepare(s->con, sql, out) == DuckDBError) {
        int rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_prepare_error(*out));
        duckdb_destroy_prepare(out);
        return rc;
    }
    return DK_OK;
}

int rag_store_run(duckdb_prepared_statement st, duckdb_result *res, char *err)
{
    if (duckdb_execute_prepared(st, res) == DuckDBError) {
        int rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(res));
        duckdb_destroy_result(res);
        return rc;
    }
    return DK_OK;
}

int rag_store_meta_get(rag_store *s, const char *key, char **out, char *err)
{
    *out = NULL;
    duckdb_prepared_statement st;
    int rc = rag_store_prepare(s, "SELECT value FROM dk_meta WHERE key = $1", &st, err);
    if (rc != DK_OK) return rc;
    duckdb_bind_varchar(st, 1, key);
    duckdb_result res;
    rc = rag_store_run(st, &res, err);
    duckdb_destroy_prepare(&st);
    if (rc != DK_OK) return rc;
    if (duckdb_row_count(&res) > 0 && !duckdb_value_is_null(&res, 0, 0)) {
        char *v = duckdb_value_varchar(&res, 0, 0);
        *out = v ? dk_strdup(v) : NULL;
        duckdb_free(v);
        if (!*out) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    duckdb_destroy_result(&res);
    return rc;
}

int rag_store_meta_set(rag_store *s, const char *key, const char *value, char *err)
{
    duckdb_prepared_statement st;
    int rc = rag_store_prepare(s, "INSERT OR REPLACE INTO dk_meta VALUES ($1, $2)", &st, err);
    if (rc != DK_OK) return rc;
    duckdb_bind_varchar(st, 1, key);
    duckdb_bind_varchar(st, 2, value);
    duckdb_result res;
    rc = rag_store_run(st, &res, err);
    duckdb_destroy_prepare(&st);
    if (rc == DK_OK) duckdb_destroy_result(&res);
    return rc;
}

int rag_store_meta_load(rag_store *s, char *err)
{
    char *model = NULL, *dim = NULL, *gen = NULL, *hmin = NULL;
    int rc = rag_store_meta_get(s, "embed_model", &model, err);
    if (rc == DK_OK) rc = rag_store_meta_get(s, "dim", &dim, err);
    if (rc == DK_OK) rc = rag_store_meta_get(s, "generation", &gen, err);
    if (rc == DK_OK) rc = rag_store_meta_get(s, "hnsw_min_chunks", &hmin, err);
    if (rc == DK_OK) {
        dk_free(s->embed_model);
        s->embed_model = model;
        model = NULL;
        s->dim = dim ? (size_t)strtoull(dim, NULL, 10) : 0;
        s->generation = gen ? strtoll(gen, NULL, 10) : 0;
        s->hnsw_min = hmin ? (size_t)strtoull(hmin, NULL, 10) : RAG_HNSW_MIN_CHUNKS;
        if (s->hnsw_min == 0) s->hnsw_min = 1;
        if (s->dim > 65536) rc = dk_fail(err, DK_ERR_FORMAT, "store: dimension %zu in dk_meta is out of range", s->dim);
    }
    dk_free(model);
    dk_free(dim);
    dk_free(gen);
    dk_free(hmin);
    return rc;
}

static int store_create_tables(rag_store *s, char *err)
{
    static const char *const ddl[] = {
        "CREATE TABLE IF NOT EXISTS dk_meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
        "CREATE TABLE IF NOT EXISTS sources (id BIGINT PRIMARY KEY, path VARCHAR NOT NULL UNIQUE, kind VARCHAR,"
        " title VARCHAR, hash VARCHAR, bytes BIGINT, mtime TIMESTAMP, ingested_at TIMESTAMP, n_chunks INTEGER)",
        "CREATE TABLE IF NOT EXISTS dk_index (name VARCHAR PRIMARY KEY, generation BIGINT, data BLOB)",
        "INSERT OR IGNORE INTO dk_meta VALUES ('schema', '" RAG_SCHEMA_VERSION "'), ('generation', '0')",
    };
    int rc = rag_store_exec(s, "BEGIN TRANSACTION", err);
    for (size_t i = 0; rc == DK_OK && i < sizeof ddl / sizeof ddl[0]; i++) rc = rag_store_exec(s, ddl[i], err);
    if (rc == DK_OK) return rag_store_exec(s, "COMMIT", err);
    rag_store_exec(s, "ROLLBACK", NULL);
    return rc;
}

/* A store has dk_meta with our schema version. */
static int store_check(rag_store *s, char *err)
{
    duckdb_result res;
    if (duckdb_query(s->con, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'dk_meta'",
                     &res) == DuckDBError) {
        int rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return rc;
    }
    int64_t n = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    if (n == 0) return dk_fail(err, DK_ERR_FORMAT, "%s is a DuckDB file but not a duckling store (no dk_meta table)", s->path);
    char *version = NULL;
    int rc = rag_store_meta_get(s, "schema", &version, err);
    if (rc == DK_OK && (!version || strcmp(version, RAG_SCHEMA_VERSION) != 0))
        rc = dk_fail(err, DK_ERR_UNSUPPORTED, "%s has store schema %s; this duckling reads schema " RAG_SCHEMA_VERSION,
                     s->path, version ? version : "(none)");
    dk_free(version);
    return rc;
}

static int store_connect(rag_store *s, char *err)
{
    duckdb_config config = NULL;
    if (duckdb_create_config(&config) == DuckDBError) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    duckdb_set_config(config, "access_mode", s->writable ? "READ_WRITE" : "READ_ONLY");
    duckdb_set_config(config, "autoinstall_known_extensions", "false");
    duckdb_set_config(config, "autoload_known_extensions", "false");
    char *open_err = NULL;
    int rc = DK_OK;
    if (duckdb_open_ext(s->path, &s->db, config, &open_err) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "cannot open store %s: %s", s->path, open_err ? open_err : "unknown error");
        duckdb_free(open_err);
        s->db = NULL;
    } else if (duckdb_connect(s->db, &s->con) == DuckDBError) {
        rc = dk_fail(err, DK_ERR_IO, "cannot connect to store %s", s->path);
        s->con = NULL;
    }
    duckdb_destroy_config(&config);
    return rc;
}

int rag_store_open(rag_store **out, const char *path, bool writable, char *err)
{
    *out = NULL;
    if (!path || !path[0]) return dk_fail(err, DK_ERR_ARG, "no store path given");
    struct stat st;
    if (!writable && stat(path, &st) != 0) return dk_fail(err, DK_ERR_NOTFOUND, "store %s does not exist", path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return dk_fail(err, DK_ERR_ARG, "store %s is a directory", path);
    rag_store *s = dk_calloc(1, sizeof *s);
    if (!s || !(s->path = dk_strdup(path))) {
        dk_free(s);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    s->writable = writable;
    s->index_generation = -1;
    s->bm25_generation = -1;
    int rc = store_connect(s, err);
    if (rc == DK_OK && writable) rc = store_create_tables(s, err);
    if (rc == DK_OK) rc = store_check(s, err);
    if (rc == DK_OK) rc = rag_store_meta_load(s, err);
    if (rc != DK_OK) {
        rag_store_close(s);
        return rc;
    }
    *out = s;
    return DK_OK;
}

static void store_index_clear(rag_store *s)
{
    rag_hnsw_free(s->hnsw);
    rag_vectors_free(s->vectors);
    rag_bm25_free(s->bm25);
    dk_free(s->ids);
    s->hnsw = NULL;
    s->vectors = NULL;
    s->bm25 = NULL;
    s->ids = NULL;
    s->n_ids = 0;
    s->index_generation = -1;
    s->bm25_generation = -1;
    s->index_from_store = false;
}

void rag_store_close(rag_store *s)
{
    if (!s) return;
    store_index_clear(s);
    if (s->con) duckdb_disconnect(&s->con);
    if (s->db) duckdb_close(&s->db);
    dk_free(s->embed_model);
    dk_free(s->path);
    dk_free(s);
}

const char *rag_store_embed_model(const rag_store *s) { return s->embed_model; }
size_t rag_store_dim(const rag_store *s) { return s->dim; }

int64_t rag_store_scalar(const rag_store *s, const char *sql)
{
    duckdb_result res;
    int64_t v = -1;
    if (duckdb_query(s->con, sql, &res) != DuckDBError && duckdb_row_count(&res) > 0) v = duckdb_value_int64(&res, 0, 0);
    duckdb_destroy_result(&res);
    return v;
}

static size_t store_count(const rag_store *s, const char *sql)
{
    int64_t n = rag_store_scalar(s, sql);
    return n > 0 ? (size_t)n : 0;
}

size_t rag_store_n_sources(const rag_store *s) { return store_count(s, "SELECT count(*) FROM sources"); }
size_t rag_store_n_chunks(const rag_store *s)
{
    return s->dim ? store_count(s, "SELECT count(*) FROM chunks") : 0;
}

long rag_store_position(const rag_store *s, int64_t id)
{
    size_t lo = 0, hi = s->n_ids;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ids[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n_ids && s->ids[lo] == id ? (long)lo : -1;
}

/* ---- the index: rebuilt from the chunks ---- */

/* Appends the vectors of one result chunk (columns id, embedding) to ids and v. */
static int store_take_chunk(duckdb_data_chunk chunk, dk_buf *ids, rag_vectors *v, char *err)
{
    idx_t n = duckdb_data_chunk_get_size(chunk);
    duckdb_vector id_vec = duckdb_data_chunk_get_vector(chunk, 0);
    duckdb_vector emb_vec = duckdb_data_chunk_get_vector(chunk, 1);
    const int64_t *id_data = duckdb_vector_get_data(id_vec);
    uint64_t *validity = duckdb_vector_get_validity(emb_vec);
    const float *x = duckdb_vector_get_data(duckdb_array_vector_get_child(emb_vec));
    for (idx_t i = 0; i < n; i++) {
        if (validity && !duckdb_validity_row_is_valid(validity, i))
            return dk_fail(err, DK_ERR_FORMAT, "store: chunk %" PRId64 " has no embedding", id_data[i]);
    }
    if (dk_buf_append(ids, id_data, n * sizeof(int64_t)) != DK_OK) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return rag_vectors_add(v, x, n, err);
}

/* Appends the chunks above the last indexed id to ids and vectors. */
static int store_read_new(rag_store *s, char *err)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT id, embedding FROM chunks WHERE id > %" PRId64 " ORDER BY id",
             s->n_ids ? s->ids[s->n_ids - 1] : (int64_t)0);
    duckdb_result res;
    if (duckdb_query(s->con, sql, &res) == DuckDBError) {
        int rc = dk_fail(err, DK_ERR_IO, "store: %s", duckdb_result_error(&res));
        duckdb_destroy_result(&res);
        return rc;
    }
    dk_buf ids = {0};
    if (dk_buf_append(&ids, s->ids, s->n_ids * sizeof(int64_t)) != DK_OK) {
        duckdb_destroy_result(&res);
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    int rc = DK_OK;
    duckdb_data_chunk chunk;
    while (rc == DK_OK && (chunk = duckdb_fetch_chunk(res)) != NULL) {
        rc = store_take_chunk(chunk, &ids, s->vectors, err);
        duckdb_destroy_data_chunk(&chunk);
    }
    duckdb_destroy_result(&res);
    if (rc != DK_OK) {
        dk_buf_free(&ids);
        return rc;
    }
    dk_free(s->ids);
    s->n_ids = ids.len / sizeof(int64_t);
    s->ids = (int64_t *)(void *)dk_buf_detach(&ids);
    return DK_OK;
}

/* Reads every chunk's vector in id order into s->ids / s->vectors (both empty before). */
static int store_read_vectors(rag_store *s, char *err)
{
    int rc = rag_vectors_new(&s->vectors, s->dim, RAG_VTYPE_F32, RAG_METRIC_COSINE, err);
    return rc == DK_OK ? store_read_new(s, err) : rc;
}

static int store_rebuild(rag_store *s, int n_threads, char *err)
{
    int rc = store_read_vectors(s, err);
    if (rc != DK_OK || s->n_ids < s->hnsw_min) return rc;
    rag_hnsw_params params = {0};
    params.n_threads = n_threads;
    return rag_hnsw_build(&s->hnsw, s->vectors, &params, err);
}

/* ---- the index: persisted in dk_index ---- */

static int store_put_blob(rag_store *s, const char *name, const void *data, size_t n, char *err)
{
    duckdb_prepared_statement st;
    int rc = rag_store_prepare(s, "INSERT OR REPLACE INTO dk_index VALUES ($1, $2, $3)", &st, err);
    if (rc != DK_OK) return rc;
    duckdb_bind_varchar(st, 1, name);
    duckdb_bind_int64(st, 2, s->generation);
    duckdb_bind_blob(st, 3, data, n);
    duckdb_result res;
    rc = rag_store_run(st, &res, err);
    duckdb_destroy_prepare(&st);
    if (rc == DK_OK) duckdb_destroy_result(&res);
    return rc;
}

static int store_save_index(rag_store *s, char *err)
{
    dk_buf vec = {0}, graph = {0};
    int rc = rag_store_exec(s, "BEGIN TRANSACTION", err);
    if (rc != DK_OK) return rc;
    rc = rag_store_exec(s, "DELETE FROM dk_index", err);
    if (rc == DK_OK) rc = store_put_blob(s, "ids", s->ids, s->n_ids * sizeof(int64_t), err);
    if (rc == DK_OK && s->vectors) rc = rag_vectors_save(s->vectors, &vec, err);
    if (rc == DK_OK && s->vectors) rc = store_put_blob(s, "vectors", vec.data, vec.len, err);
    if (rc == DK_OK && s->hnsw) rc = rag_hnsw_save(s->hnsw, &graph, err);
    if (rc == DK_OK && s->hnsw) rc = store_put_blob(s, "hnsw", graph.data, graph.len, err);
    dk_buf_free(&vec);
    dk_buf_free(&graph);
    if (rc == DK_OK) return rag_store_exec(s, "COMMIT", err);
    rag_store_exec(s, "ROLLBACK", NULL);
    return rc;
}

/* The BLOB name of dk_index for the current generation into *out (duckdb_free'd by the caller
 * via *blob); DK_ERR_NOTFOUND when absent or of another generation. */
static int store_get_blob(rag_store *s, const char *name, int64_t generation, duckdb_blob *blob, char *err)
{
    blob->data = NULL;
    blob->size = 0;
    duckdb_prepared_statement st;
    int rc = rag_store_prepare(s, "SELECT data FROM dk_index WHERE name = $1 AND generation = $2", &st, err);
    if (rc != DK_OK) return rc;
    duckdb_bind_varchar(st, 1, name);
    duckdb_bind_int64(st, 2, generation);
    duckdb_result res;
    rc = rag_store_run(st, &res, err);
    duckdb_destroy_prepare(&st);
    if (rc != DK_OK) return rc;
    if (duckdb_row_count(&res) == 0) rc = DK_ERR_NOTFOUND;
    else *blob = duckdb_value_blob(&res, 0, 0);
    duckdb_destroy_result(&res);
    return rc;
}

static int store_load_ids(rag_store *s, const duckdb_blob *b, char *err)
{
    if (b->size % sizeof(int64_t) != 0) return dk_fail(err, DK_ERR_FORMAT, "store: the saved id list is damaged");
    s->n_ids = b->size / sizeof(int64_t);
    s->ids = dk_malloc_array(s->n_ids ? s->n_ids : 1, sizeof(int64_t));
    if (!s->ids) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (s->n_ids) memcpy(s->ids, b->data, b->size);
    for (size_t i = 1; i < s->n_ids; i++)
        if (s->ids[i] <= s->ids[i - 1]) return dk_fail(err, DK_ERR_FORMAT, "store: the saved id list is not ascending");
    return DK_OK;
}

/* Loads the index saved for generation. DK_ERR_NOTFOUND: none saved (not an error). */
static int store_load_index(rag_store *s, int64_t generation, char *err)
{
    duckdb_blob ids = {0}, vec = {0}, graph = {0};
    int rc = store_get_blob(s, "ids", generation, &ids, err);
    if (rc == DK_OK) rc = store_load_ids(s, &ids, err);
    if (rc == DK_OK && s->n_ids > 0) {
        rc = store_get_blob(s, "vectors", generation, &vec, err);
        if (rc == DK_OK) rc = rag_vectors_load(&s->vectors, vec.data, vec.size, err);
        if (rc == DK_OK && rag_vectors_count(s->vectors) != s->n_ids)
            rc = dk_fail(err, DK_ERR_FORMAT, "store: the saved vectors do not match the saved ids");
    }
    if (rc == DK_OK && s->n_ids >= s->hnsw_min) {
        int grc = store_get_blob(s, "hnsw", generation, &graph, err);
        if (grc == DK_OK) rc = rag_hnsw_load(&s->hnsw, s->vectors, graph.data, graph.size, err);
    }
    duckdb_free(ids.data);
    duckdb_free(vec.data);
    duckdb_free(graph.data);
    return rc;
}

int rag_store_index_sync(rag_store *s, int n_threads, bool save, char *err)
{
    /* s->generation is current: nothing but this handle can change the file while it is open
     * (DuckDB locks it), and the ingest reloads dk_meta after every commit. */
    if (s->index_generation == s->generation) return DK_OK;
    store_index_clear(s);
    if (s->dim == 0) {
        s->index_generation = s->generation;
        return DK_OK;
    }
    char lerr[DK_ERRLEN];
    int rc = store_load_index(s, s->generation, lerr);
    if (rc == DK_OK && (s->hnsw || s->n_ids < s->hnsw_min)) {
        s->index_generation = s->generation;
        s->index_from_store = true;
        return DK_OK;
    }
    /* Not saved for this generation, or damaged: the chunks table is the truth. */
    store_index_clear(s);
    rc = store_rebuild(s, n_threads, err);
    if (rc == DK_OK && save && s->writable) rc = store_save_index(s, err);
    if (rc != DK_OK) {
        store_index_clear(s);
        return rc;
    }
    s->index_generation = s->generation;
    return DK_OK;
}

/* ---- the index after an ingest that only added chunks ---- */

int rag_store_index_after_ingest(rag_store *s, int64_t start_generation, bool only_added, int n_threads, char *err)
{
    int rc = rag_store_meta_load(s, err);
    if (rc != DK_OK) return rc;
    if (s->index_generation == s->generation) return DK_OK;
    char lerr[DK_ERRLEN];
    if (only_added && s->index_generation != start_generation) {
        store_index_clear(s);
        if (store_load_index(s, start_generation, lerr) == DK_OK) s->index_generation = start_generation;
        else store_index_clear(s);
    }
    /* Extend what the ingest started from: new chunks have ids above every old one. */
    if (only_added && s->index_generation == start_generation && s->vectors &&
        (s->hnsw || s->n_ids < s->hnsw_min)) {
        rc = store_read_new(s, err);
        if (rc == DK_OK && s->n_ids != rag_store_n_chunks(s)) rc = DK_ERR_FORMAT; /* not append-only after all */
        if (rc == DK_OK && s->hnsw) rc = rag_hnsw_extend(s->hnsw, err);
        else if (rc == DK_OK && s->n_ids >= s->hnsw_min) {
            rag_hnsw_params params = {0};
            params.n_threads = n_threads;
            rc = rag_hnsw_build(&s->hnsw, s->vectors, &params, err);
        }
        rag_bm25_free(s->bm25);
        s->bm25 = NULL;
        s->bm25_generation = -1;
        if (rc == DK_OK) {
            s->index_generation = s->generation;
            s->index_from_store = false;
            return store_save_index(s, err);
        }
        if (rc == DK_ERR_NOMEM) return rc;
    }
    store_index_clear(s);
    return rag_store_index_sync(s, n_threads, true, err);
}
