/*
 * store_internal.h: private to src/rag/'s store files (store.c opens the DuckDB file and owns
 * the loaded index; ingest.c fills it; search.c queries it). The struct is shared because the
 * three files work on the same connection and the same in-memory index; nothing outside
 * src/rag/ includes this file.
 *
 * The index in memory mirrors the chunks table: position i of vectors (and document i of
 * bm25) is the chunk whose id is ids[i], ids ascending. It is valid for one generation of the
 * chunks (dk_meta 'generation', bumped by every source transaction); index_generation says
 * which one it was built for, and -1 means not loaded.
 */
#ifndef DK_RAG_STORE_INTERNAL_H
#define DK_RAG_STORE_INTERNAL_H

/* duckdb.h declares a few `f()` functions without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <duckdb.h>
#pragma GCC diagnostic pop

#include "rag/rag.h"

/* Stores of fewer chunks than this get no HNSW graph by default: exact search is as fast
 * and exact (dk_meta 'hnsw_min_chunks' overrides it). */
#define RAG_HNSW_MIN_CHUNKS 4096

struct rag_store {
    duckdb_database db;
    duckdb_connection con;
    bool writable;
    char *path;
    char *embed_model;       /* dk_meta 'embed_model', or NULL */
    size_t dim;              /* dk_meta 'dim', 0 when none yet */
    int64_t generation;      /* dk_meta 'generation' */
    size_t hnsw_min;         /* dk_meta 'hnsw_min_chunks' (RAG_HNSW_MIN_CHUNKS when absent) */

    int64_t index_generation;  /* -1: nothing loaded */
    int64_t *ids;            /* chunk ids, ascending; n_ids of them */
    size_t n_ids;
    rag_vectors *vectors;    /* NULL when the store has no chunks */
    rag_hnsw *hnsw;          /* NULL below hnsw_min chunks */
    rag_bm25 *bm25;          /* built on the first keyword search, NULL before */
    int64_t bm25_generation;
    bool index_from_store;   /* the index was read from dk_index, not rebuilt */
};

/* Runs sql (no results wanted); DuckDB's error as DK_ERR_IO. */
int rag_store_exec(rag_store *s, const char *sql, char *err);
/* Prepares sql; DuckDB's error as DK_ERR_IO (nothing to destroy then). */
int rag_store_prepare(rag_store *s, const char *sql, duckdb_prepared_statement *out, char *err);
/* Executes a prepared statement into *res, which the caller destroys on success. */
int rag_store_run(duckdb_prepared_statement st, duckdb_result *res, char *err);
/* The first column of the first row of sql as an integer; -1 on a failure or no row. */
int64_t rag_store_scalar(const rag_store *s, const char *sql);
/* dk_meta value of key into a new string (*out NULL when absent); caller dk_free's it. */
int rag_store_meta_get(rag_store *s, const char *key, char **out, char *err);
int rag_store_meta_set(rag_store *s, const char *key, const char *value, char *err);
/* Re-reads embed_model, dim and generation from dk_meta. */
int rag_store_meta_load(rag_store *s, char *err);

/* Brings the in-memory index to the store's generation: from dk_index when it was saved for
 * this generation, else rebuilt from the chunks (n_threads for the HNSW build). When
 * save is set (and the store writable), a rebuilt index is written back to dk_index. */
int rag_store_index_sync(rag_store *s, int n_threads, bool save, char *err);

/* After an ingest that started at start_generation: when it only added chunks (no source
 * was replaced), the index of that generation (in memory, or saved) is extended with the new
 * chunks (rag_hnsw_extend) instead of rebuilt; otherwise rag_store_index_sync. Saved either
 * way. */
int rag_store_index_after_ingest(rag_store *s, int64_t start_generation, bool only_added, int n_threads, char *err);

/* The position of chunk id in s->ids, or -1. */
long rag_store_position(const rag_store *s, int64_t id);

#endif
