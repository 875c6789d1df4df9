/*
 * api_rerank.c: reranking with a cross-encoder, in the shape Jina, Cohere and llama.cpp's
 * server share, under both prefixes:
 *
 *   POST /api/rerank and POST /v1/rerank
 *     {"model", "query", "documents": [string, ...], "top_n"?, "return_documents"?, "keep_alive"?}
 *   -> {"model", "object": "list",
 *       "results": [{"index", "relevance_score", "document"?: {"text"}}, ...]  best first,
 *       "usage": {"prompt_tokens", "total_tokens"}}
 *
 * relevance_score is the model's raw score (no sigmoid), as llama.cpp gives it; top_n keeps
 * the best n (default all); return_documents (default false) echoes each document's text.
 * Errors are the API's JSON errors (Ollama's under /api/, OpenAI's under /v1/): 400 for a
 * missing or malformed field, an empty or too long list, a model that is not a reranker;
 * 404 for an unknown model. The scoring itself is engine_rerank_count's.
 * Not for: embeddings (api_ollama.c, api_openai.c).
 */
#include "server/srv_internal.h"

#include <string.h>

/* documents: a non-empty array of at most SRV_RERANK_MAX_DOCS strings; *docs (caller frees
 * with dk_free) points into the json. */
static int rerank_documents(const json_t *v, const char ***docs, size_t *n, char *err)
{
    *docs = NULL;
    *n = 0;
    if (!v || json_is_null(v)) return dk_fail(err, DK_ERR_ARG, "documents is required");
    if (!json_is_array(v)) return dk_fail(err, DK_ERR_ARG, "documents must be an array of strings");
    size_t count = json_array_size(v);
    if (count == 0) return dk_fail(err, DK_ERR_ARG, "documents must not be empty");
    if (count > SRV_RERANK_MAX_DOCS)
        return dk_fail(err, DK_ERR_ARG, "too many documents: %zu (at most %d)", count, SRV_RERANK_MAX_DOCS);
    const char **out = dk_malloc_array(count, sizeof *out);
    if (!out) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        const json_t *d = json_array_get(v, i);
        if (!json_is_string(d)) {
            dk_free(out);
            return dk_fail(err, DK_ERR_ARG, "documents[%zu] must be a string", i);
        }
        out[i] = json_string_value(d);
    }
    *docs = out;
    *n = count;
    return DK_OK;
}

typedef struct ranked {
    size_t index;
    float score;
} ranked;

/* best first; equal scores keep the documents' order */
static int ranked_cmp(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static json_t *rerank_reply(const char *model, const char *const *docs, const float *scores, size_t n, size_t top_n,
                            bool return_documents, size_t n_tokens)
{
    ranked *order = dk_malloc_array(n, sizeof *order);
    json_t *results = json_array();
    if (!order || !results) {
        dk_free(order);
        json_decref(results);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) order[i] = (ranked){i, scores[i]};
    qsort(order, n, sizeof *order, ranked_cmp);
    for (size_t k = 0; k < top_n && k < n; k++) {
        json_t *r = json_pack("{s:I,s:f}", "index", (json_int_t)order[k].index, "relevance_score", (double)order[k].score);
        if (r && return_documents) json_object_set_new(r, "document", json_pack("{s:s}", "text", docs[order[k].index]));
        json_array_append_new(results, r);
    }
    dk_free(order);
    return json_pack("{s:s,s:s,s:o,s:{s:I,s:I}}", "model", model, "object", "list", "results", results, "usage",
                     "prompt_tokens", (json_int_t)n_tokens, "total_tokens", (json_int_t)n_tokens);
}

static void rerank(srv_request *rq, bool openai)
{
    char err[DK_ERRLEN];
    srv_gen_job *job = srv_gen_job_from_request(rq);
    if (!job) return;
    const json_t *body = job->body;
    const char *query = NULL;
    const char **docs = NULL;
    size_t n = 0, n_tokens = 0;
    long long top_n = 0;
    bool return_documents = false;
    float *scores = NULL;
    int rc = srv_parse_model(body, &job->model_name, err);
    if (rc == DK_OK) rc = srv_field_string(body, "query", &query, err);
    if (rc == DK_OK && !query) rc = dk_fail(err, DK_ERR_ARG, "query is required");
    if (rc == DK_OK && !query[0]) rc = dk_fail(err, DK_ERR_ARG, "query must not be empty");
    if (rc == DK_OK) rc = rerank_documents(json_object_get(body, "documents"), &docs, &n, err);
    if (rc == DK_OK) rc = srv_field_int(body, "top_n", 1, 1LL << 31, (long long)n, &top_n, err);
    if (rc == DK_OK) rc = srv_field_bool(body, "return_documents", false, &return_documents, err);
    if (rc == DK_OK) rc = srv_parse_keep_alive(json_object_get(body, "keep_alive"), &job->load.keep_alive_ns, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        goto done;
    }
    if (srv_gen_acquire(job, rq, openai) != 0) goto done;
    if (!engine_is_reranker(job->lease.model)) {
        srv_reply_error(rq, 400, "this model is not a reranker (a cross-encoder with rank pooling): it does not support reranking");
        goto done;
    }
    if (!(scores = dk_malloc_array(n, sizeof *scores))) {
        srv_reply_error(rq, 500, "out of memory");
        goto done;
    }
    rc = engine_rerank_count(job->lease.model, query, docs, n, scores, &n_tokens, err);
    if (rc != DK_OK) {
        srv_reply_error(rq, srv_status_of(rc), "%s", err);
        goto done;
    }
    atomic_fetch_add(&rq->server->n_prompt_tokens, (unsigned long)n_tokens);
    json_t *o = rerank_reply(job->model_name, docs, scores, n, (size_t)top_n, return_documents, n_tokens);
    if (o) srv_reply_json(rq, 200, o);
    else srv_reply_error(rq, 500, "out of memory");
done:
    dk_free(scores);
    dk_free(docs);
    srv_gen_job_free(job);
}

void srv_api_rerank(srv_request *rq) { rerank(rq, false); }
void srv_openai_rerank(srv_request *rq) { rerank(rq, true); }
