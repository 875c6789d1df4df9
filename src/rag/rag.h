/*
 * rag: retrieval over the user's documents and tables. This header is its whole interface;
 * today it holds the vector index (issue 7's first part): a flat store of vectors searched
 * exactly with the SIMD kernels of kernels/ (vec.c), and an HNSW graph over the same store
 * (hnsw.c) for approximate search, both with an optional filter of allowed ids, and both
 * serialisable to bytes so that a store (a DuckDB file, later) can persist them.
 *
 * Scores: higher is better for every metric: cosine similarity (vectors normalised when
 * added), dot product, or minus the squared L2 distance. Ids are the positions of the vectors
 * in the order they were added (0..n-1).
 * Types: F32 as given; F16 (round to nearest even); I8: each vector quantised symmetrically
 * with its own scale (max |x| / 127), queries stay F32.
 *
 * Above the index: a keyword index (BM25, bm25.c) and reciprocal-rank fusion of ranked lists;
 * readers that turn files and tables into text blocks (read.c) and a token-aware chunker
 * (chunk.c), both declared in rag_internal.h; and the store (store.c, ingest.c, search.c): a
 * DuckDB file holding sources, chunks, their vectors and the persisted HNSW graph, filled by
 * rag_ingest and searched by rag_search (vector, keyword or hybrid, with metadata filters and
 * an optional cross-encoder rerank).
 *
 * Not for: embedding or reranking models themselves (engine/), prompts and answers (agent/).
 * Thread safety: searches on one rag_vectors / rag_hnsw / rag_bm25 may run from many threads
 * at once; adding and building need the object to themselves. A rag_store is used by one
 * thread at a time.
 * Errors: DK_OK or a DK_ERR_* code with one line in err (DK_ERRLEN bytes).
 */
#ifndef DK_RAG_H
#define DK_RAG_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "engine/engine.h"

typedef enum rag_metric { RAG_METRIC_COSINE = 0, RAG_METRIC_DOT, RAG_METRIC_L2 } rag_metric;
typedef enum rag_vtype { RAG_VTYPE_F32 = 0, RAG_VTYPE_F16, RAG_VTYPE_I8 } rag_vtype;

typedef struct rag_hit {
    uint32_t id;
    float score;   /* higher is better (see above) */
} rag_hit;

/* ---- vectors and exact search (vec.c) ---- */

typedef struct rag_vectors rag_vectors;

/* An empty store of dim-dimensional vectors (1 <= dim <= 65536). Free with rag_vectors_free. */
int rag_vectors_new(rag_vectors **out, size_t dim, rag_vtype type, rag_metric metric, char *err);
void rag_vectors_free(rag_vectors *v); /* NULL is fine */

/* Appends n vectors (row-major, n * dim floats), converted to the store's type (normalised
 * first for cosine; a zero vector stays zero). Non-finite values are DK_ERR_ARG (nothing
 * is added). At most UINT32_MAX vectors. */
int rag_vectors_add(rag_vectors *v, const float *x, size_t n, char *err);

size_t rag_vectors_count(const rag_vectors *v);
size_t rag_vectors_dim(const rag_vectors *v);
rag_metric rag_vectors_metric(const rag_vectors *v);
rag_vtype rag_vectors_type(const rag_vectors *v);

/* The score of stored vector id against query (dim floats, as given: normalised here for
 * cosine), as the searches compute it. */
float rag_vectors_score(const rag_vectors *v, const float *query, uint32_t id);

/* Exact top-k: the k best-scoring vectors, best first (ties: lower id first), into out
 * (room for k); *n_out = min(k, number allowed). allow: NULL, or a bitmap of
 * ceil(count / 8) bytes, bit (id % 8) of byte (id / 8) set for the ids that may be returned
 * (metadata filters). n_threads <= 1: the calling thread only. */
int rag_exact_search(const rag_vectors *v, const float *query, size_t k, const uint8_t *allow, int n_threads,
                     rag_hit *out, size_t *n_out, char *err);

/* Bytes of the store (a versioned little-endian header, then the vectors), appended to out;
 * and back. rag_vectors_load validates everything (sizes, type, metric, dim) and fails with
 * DK_ERR_FORMAT on anything else; the caller frees *out. */
int rag_vectors_save(const rag_vectors *v, dk_buf *out, char *err);
int rag_vectors_load(rag_vectors **out, const void *data, size_t n_bytes, char *err);

/* ---- HNSW (hnsw.c) ---- */

typedef struct rag_hnsw rag_hnsw;

typedef struct rag_hnsw_params {
    int m;                /* links per node on the upper layers (layer 0: 2 * m); 0: 16 */
    int ef_construction;  /* candidates while inserting; 0: 200 */
    uint64_t seed;        /* of the random layer assignment */
    int n_threads;        /* inserting threads, of the build and of later extends (a loaded
                             index extends on one); <= 1: the calling thread only, and the
                             graph is then a function of the vectors and these parameters */
} rag_hnsw_params;

/* Builds a graph over every vector of v (borrowed: v must outlive the index and not change
 * while it is used; vectors added later are indexed by rag_hnsw_extend). */
int rag_hnsw_build(rag_hnsw **out, const rag_vectors *v, const rag_hnsw_params *params, char *err);
/* Inserts the vectors of v added since the index was built or last extended. */
int rag_hnsw_extend(rag_hnsw *h, char *err);
void rag_hnsw_free(rag_hnsw *h); /* NULL is fine */

/* Approximate top-k (best first): ef candidates on layer 0 (ef < k: k). allow as in
 * rag_exact_search (filtered ids are walked through but never returned). */
int rag_hnsw_search(const rag_hnsw *h, const float *query, size_t k, size_t ef, const uint8_t *allow, rag_hit *out,
                    size_t *n_out, char *err);

/* Bytes of the graph (not of the vectors), appended to out; and back over the same vectors
 * (validated: every link in range, levels consistent; DK_ERR_FORMAT otherwise). */
int rag_hnsw_save(const rag_hnsw *h, dk_buf *out, char *err);
int rag_hnsw_load(rag_hnsw **out, const rag_vectors *v, const void *data, size_t n_bytes, char *err);

/* Memory the graph holds, in bytes (for benchmarks). */
size_t rag_hnsw_memory(const rag_hnsw *h);

/* ---- keyword search (bm25.c) ---- */

/* An inverted index over documents 0..n-1 (added in order), scored with Okapi BM25 (k1 1.2,
 * b 0.75). Words: maximal runs of letters and digits (Unicode, via utf8proc), case-folded;
 * a few very common English words (the, and, of, ...) are not indexed. */
typedef struct rag_bm25 rag_bm25;

int rag_bm25_new(rag_bm25 **out, char *err);
void rag_bm25_free(rag_bm25 *b); /* NULL is fine */
/* Appends one document (UTF-8 text of n bytes; invalid bytes are word separators); its id is
 * the number of documents added before it. */
int rag_bm25_add(rag_bm25 *b, const char *text, size_t n, char *err);
size_t rag_bm25_count(const rag_bm25 *b);
/* The k best documents for query (best first, ties: lower id first; only documents sharing a
 * word with it), allow as in rag_exact_search (ceil(count / 8) bytes or NULL). */
int rag_bm25_search(const rag_bm25 *b, const char *query, size_t k, const uint8_t *allow, rag_hit *out,
                    size_t *n_out, char *err);

/* Reciprocal-rank fusion: every id of the n_lists ranked lists (best first) scores
 * sum 1 / (k_rrf + rank), rank counted from 1 (k_rrf 0: 60); the k best into out (room for
 * k), best first, ties: lower id first. */
int rag_rrf_fuse(const rag_hit *const *lists, const size_t *list_lens, size_t n_lists, size_t k_rrf, size_t k,
                 rag_hit *out, size_t *n_out, char *err);

/* ---- the store (store.c, ingest.c, search.c) ---- */

/* A DuckDB file of sources (path, kind, content hash, size, modification time), chunks
 * (source, position, byte or row offsets, heading, text, token count, hash, embedding) and
 * the persisted index (vectors and HNSW graph as BLOBs, valid for one generation of the
 * chunks). Its tables are documented in docs/rag.md; other programs may read them with any
 * DuckDB client. */
typedef struct rag_store rag_store;

/* Opens a store. writable: read-write, created when missing (what ingest needs); else
 * READ_ONLY, a missing file is DK_ERR_NOTFOUND, a DuckDB file without duckling's tables
 * DK_ERR_FORMAT. The caller frees *out with rag_store_close. */
int rag_store_open(rag_store **out, const char *path, bool writable, char *err);
void rag_store_close(rag_store *s); /* NULL is fine */

/* The embedding model the store's vectors came from (as given to the first ingest: a store
 * name or a path), or NULL for an empty store; its dimension (0 if none). */
const char *rag_store_embed_model(const rag_store *s);
size_t rag_store_dim(const rag_store *s);
size_t rag_store_n_sources(const rag_store *s);
size_t rag_store_n_chunks(const rag_store *s);

typedef struct rag_progress {
    const char *path;       /* the file being read or embedded */
    size_t i_file, n_files; /* 0-based index of that file among those found */
    size_t chunks_done;     /* chunks of this file embedded (or reused) so far */
    size_t chunks_total;    /* chunks of this file */
} rag_progress;

typedef struct rag_ingest_opts {
    engine_model *embedder;  /* a bert-family embedding model (engine_is_embedding); required */
    const char *model_name;  /* recorded in the store; a later ingest with another name or
                                dimension is DK_ERR_ARG */
    size_t chunk_tokens;     /* tokens of the embedder per chunk at most; 0: 256 (and never
                                more than the model's context) */
    size_t overlap_tokens;   /* tokens a chunk repeats from the end of the one before, in the
                                same section; 0: 32; must be < chunk_tokens / 2 */
    size_t batch;            /* chunks per engine_embed_batch call; 0: 32 */
    int n_threads;           /* for the index build; <= 0: 1 */
    size_t hnsw_min_chunks;  /* the store gets an HNSW graph from this many chunks on (smaller
                                ones are searched exactly, which is as fast); recorded in the
                                store; 0: keep the store's (4096 for a new one) */
    /* Called after every batch, and once when a file starts; may be NULL. */
    void (*on_progress)(void *ud, const rag_progress *p);
    /* Called for each file skipped, with why (one line); may be NULL. */
    void (*on_skip)(void *ud, const char *path, const char *why);
    void *ud;
    /* Checked between batches: when it becomes non-zero the file in progress is rolled back
     * (the store keeps what it had before that file) and rag_ingest returns DK_ERR_CANCELLED. */
    const volatile int *cancel;
} rag_ingest_opts;

typedef struct rag_ingest_stats {
    size_t files;            /* files found (directories are walked) */
    size_t added, updated;   /* sources new to the store, sources whose content changed */
    size_t unchanged;        /* same content hash as stored: nothing read further */
    size_t skipped;          /* unreadable, binary, invalid UTF-8, lines too long, ... */
    size_t chunks;           /* chunks written */
    size_t embedded;         /* chunks that went through the model */
    size_t reused;           /* chunks whose text hash was already in the store: vector kept */
    size_t embed_tokens;     /* tokens the model evaluated for them (special tokens included) */
    double embed_ms;         /* time in the model */
} rag_ingest_stats;

/* Ingests paths into s: files (.txt .text .md .markdown .html .htm .csv .tsv .parquet .json
 * .jsonl .ndjson; anything else that is valid UTF-8 text is read as text), directories
 * (walked recursively in name order, hidden entries skipped), DuckDB files (every table; or
 * "FILE.duckdb:TABLE" for one). Each source goes in one transaction: its old chunks out, the
 * new ones in. A source whose content hash is stored already is left alone (nothing is
 * embedded). After the last file the index is brought up to date and saved. Bad files are
 * skipped (on_skip) and counted; only a failure of the store itself, of the model or a
 * cancel stop the ingest. stats may be NULL. */
int rag_ingest(rag_store *s, const char *const *paths, size_t n_paths, const rag_ingest_opts *opts,
               rag_ingest_stats *stats, char *err);

typedef enum rag_mode { RAG_MODE_HYBRID = 0, RAG_MODE_VECTOR, RAG_MODE_KEYWORD } rag_mode;

typedef struct rag_filter {
    const char *source;      /* exact path of a source as stored, or NULL */
    const char *path_glob;   /* DuckDB GLOB pattern over the stored path (*.md), or NULL */
    int64_t after, before;   /* source modification time in Unix seconds: > after, < before;
                                0: no bound */
} rag_filter;

typedef struct rag_search_opts {
    size_t k;                /* passages returned; 0: 5 */
    rag_mode mode;
    rag_filter filter;
    bool exact;              /* exact vector search instead of HNSW */
    size_t ef;               /* HNSW candidates; 0: max(64, 4k) */
    engine_model *reranker;  /* a cross-encoder (engine_is_reranker) or NULL */
    size_t candidates;       /* fused candidates handed to the reranker; 0: max(20, 4k) */
} rag_search_opts;

typedef struct rag_passage {
    int64_t chunk_id;
    const char *path;        /* the source as stored */
    const char *kind;        /* "text" "markdown" "html" "csv" "parquet" "json" "table" */
    const char *heading;     /* "Title > Section" the chunk sits under, or "" */
    const char *text;        /* the chunk's text */
    int64_t start, end;      /* byte offsets in the source file, or row numbers for tables */
    const char *unit;        /* "byte" or "row" */
    float score;             /* the ranking score: rerank, fused, cosine or BM25 */
    int vector_rank;         /* 1-based rank in the vector list, 0 when not in it */
    int keyword_rank;        /* 1-based rank in the BM25 list, 0 when not in it */
} rag_passage;

typedef struct rag_results rag_results;

/* The passages most relevant to query, best first. embedder: the store's embedding model
 * (needed unless mode is RAG_MODE_KEYWORD; its dimension must match). The first search of an
 * open store loads the index (or rebuilds it when the store changed since it was saved). */
int rag_search(rag_store *s, engine_model *embedder, const char *query, const rag_search_opts *opts,
               rag_results **out, char *err);
size_t rag_results_count(const rag_results *r);
const rag_passage *rag_results_get(const rag_results *r, size_t i); /* NULL when out of range */
void rag_results_free(rag_results *r); /* NULL is fine */

#endif
