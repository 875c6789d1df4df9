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
 * Not for: files, chunking, embedding models, BM25 (later parts of rag/).
 * Thread safety: searches on one rag_vectors / rag_hnsw may run from many threads at once;
 * adding vectors and building need the object to themselves.
 * Errors: DK_OK or a DK_ERR_* code with one line in err (DK_ERRLEN bytes).
 */
#ifndef DK_RAG_H
#define DK_RAG_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

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

#endif
