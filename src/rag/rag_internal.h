/*
 * rag_internal.h: private to src/rag/. Faster scoring for code that scores one query against
 * many stored vectors (hnsw.c, the exact search): the query is prepared once (copied, and
 * normalised for cosine) and then scored against ids without repeating that work. Nothing
 * outside src/rag/ includes this file; rag.h is the interface.
 */
#ifndef DK_RAG_INTERNAL_H
#define DK_RAG_INTERNAL_H

#include "rag/rag.h"

/* Writes the prepared form of query (dim floats, as given) into qprep (room for dim floats,
 * owned by the caller): a copy, normalised for cosine (a zero query stays zero). */
void rag_vectors_prepare_query(const rag_vectors *v, const float *query, float *qprep);

/* rag_vectors_score(v, query, id) for qprep = the prepared query; the same number. id must
 * be < rag_vectors_count(v) (not checked). */
float rag_vectors_score_prepared(const rag_vectors *v, const float *qprep, uint32_t id);

/* The same as an object (what hnsw.c uses): a prepared query with its own buffer.
 * rag_query_new: DK_OK or DK_ERR_NOMEM; free with rag_query_free (NULL is fine).
 * rag_query_prepare: query (dim floats) into q; DK_ERR_ARG if a value is not finite (q is
 * then unusable until prepared again). rag_query_score: rag_vectors_score of that query. */
typedef struct rag_query rag_query;
int rag_query_new(const rag_vectors *v, rag_query **out);
int rag_query_prepare(const rag_vectors *v, const float *query, rag_query *q);
float rag_query_score(const rag_vectors *v, const rag_query *q, uint32_t id);
void rag_query_free(rag_query *q);

/* Stored vector id (< count, not checked) as dim floats into out: dequantised (F16, I8) and,
 * for cosine, the normalised vector that was stored. */
void rag_vectors_get(const rag_vectors *v, uint32_t id, float *out);

#endif
