/*
 * embed.c: the encoder half of engine.h: embeddings of one text (engine_embed), of many
 * texts packed into shared forward passes (engine_embed_batch), and cross-encoder reranking
 * (engine_rerank). Tokenization, truncation and packing live here; the forward pass and the
 * pooling (block-diagonal attention over packed sequences, the classification head) are
 * model/'s model_encode_batch.
 * Not for: generation (engine.c), the HTTP shapes of /api/embed or /api/rerank (server/).
 */
#include "engine/engine.h"
#include "engine/engine_internal.h"

#include <math.h>
#include <string.h>

#include "model/model.h"
#include "tokenize/tokenize.h"

/* Rows of one packed forward pass (a longer text gets a pass of its own length). */
#define EMBED_PACK_ROWS 512

bool engine_is_reranker(const engine_model *model)
{
    return model->net && !model_get_hparams(model->net)->causal &&
           model_get_hparams(model->net)->pooling == MODEL_POOLING_RANK;
}

/* Most tokens of one sequence: the trained context, never more than the position table. */
static size_t encoder_ctx(const engine_model *model)
{
    const model_hparams *hp = model_get_hparams(model->net);
    size_t n_pos = hp->n_pos_embd > 0 ? (size_t)hp->n_pos_embd : 512;
    return model->n_ctx_train && model->n_ctx_train < n_pos ? model->n_ctx_train : n_pos;
}

static int check_encoder(const engine_model *model, bool want_reranker, char *err)
{
    if (!engine_is_embedding(model))
        return dk_fail(err, DK_ERR_UNSUPPORTED, "%s is not an embedding model", model->arch);
    if (want_reranker && !engine_is_reranker(model))
        return dk_fail(err, DK_ERR_UNSUPPORTED, "this %s model is not a reranker (it has no classification head with rank pooling)",
                       model->arch);
    if (!want_reranker && engine_is_reranker(model))
        return dk_fail(err, DK_ERR_UNSUPPORTED, "this %s model is a reranker: it scores query-document pairs and makes no embeddings",
                       model->arch);
    if (!want_reranker && model_get_hparams(model->net)->pooling == MODEL_POOLING_NONE)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "this %s model has pooling_type 0 (none): per-token embeddings are not supported",
                       model->arch);
    return DK_OK;
}

/* ---- one text ---- */

int engine_embed(engine_model *model, const char *text, size_t n_bytes, bool normalize, float *out, char *err)
{
    int rc = check_encoder(model, false, err);
    if (rc != DK_OK) return rc;
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    rc = engine_tokenize(model, text, n_bytes, true, false, &tokens, &n_tokens, err);
    if (rc != DK_OK) return rc;
    if (n_tokens == 0) {
        dk_free(tokens);
        return dk_fail(err, DK_ERR_ARG, "embed: the text gives no tokens");
    }
    model_ctx *ctx = NULL;
    model_ctx_params cp = model_ctx_default_params();
    cp.n_ctx = (int64_t)n_tokens;
    cp.n_batch = (int64_t)n_tokens;
    cp.n_threads = model->n_threads;
    cp.numerics = model->numerics;
    rc = model_ctx_new(&ctx, model->net, &cp, err);
    if (rc == DK_OK) rc = model_encode(ctx, tokens, (int64_t)n_tokens, MODEL_POOLING_UNSPECIFIED, normalize, out, err);
    model_ctx_free(ctx);
    dk_free(tokens);
    return rc;
}

/* ---- tokens: the special frame and truncation ---- */

/* One tokenized text: ids[0..n), of which the first n_lead and the last n_trail are the
 * special tokens add_special put around the text ([CLS] and [SEP] for bert). */
typedef struct embed_seq {
    int32_t *ids; /* owned (dk_free) */
    size_t n, n_lead, n_trail;
} embed_seq;

/* Tokenizes text with add_special and finds the frame by tokenizing it once more without:
 * the plain ids must appear whole inside the framed ones. */
static int seq_tokenize(const engine_model *model, const char *text, size_t len, embed_seq *out, char *err)
{
    memset(out, 0, sizeof *out);
    int rc = engine_tokenize(model, text, len, true, false, &out->ids, &out->n, err);
    if (rc != DK_OK) return rc;
    int32_t *plain = NULL;
    size_t n_plain = 0;
    rc = engine_tokenize(model, text, len, false, false, &plain, &n_plain, err);
    if (rc != DK_OK) {
        dk_free(out->ids);
        out->ids = NULL;
        return rc;
    }
    if (n_plain <= out->n) {
        size_t n_special = out->n - n_plain;
        for (size_t lead = 0; lead <= n_special; lead++) {
            if (n_plain == 0 || memcmp(out->ids + lead, plain, n_plain * sizeof(int32_t)) == 0) {
                out->n_lead = lead;
                out->n_trail = n_special - lead;
                break;
            }
        }
        /* an empty text: the frame's tokens after the first (BOS/CLS) close it */
        if (n_plain == 0 && n_special > 0) {
            out->n_lead = 1;
            out->n_trail = n_special - 1;
        }
    }
    dk_free(plain);
    return DK_OK;
}

/* Cuts seq to n_max tokens at a token boundary of the text, keeping the frame's tokens at both
 * ends (when they fit; else it just keeps the first n_max). */
static void seq_cut(embed_seq *seq, size_t n_max)
{
    if (seq->n <= n_max) return;
    if (seq->n_lead + seq->n_trail >= n_max) {
        seq->n = n_max;
        seq->n_trail = 0;
        return;
    }
    size_t keep = n_max - seq->n_lead - seq->n_trail; /* text tokens kept */
    memmove(seq->ids + seq->n_lead + keep, seq->ids + seq->n - seq->n_trail, seq->n_trail * sizeof(int32_t));
    seq->n = n_max;
}

static void seqs_free(embed_seq *seqs, size_t n)
{
    for (size_t i = 0; seqs && i < n; i++) dk_free(seqs[i].ids);
    dk_free(seqs);
}

/* ---- packed forward passes ---- */

/* Encodes seqs[0..n) in passes of up to EMBED_PACK_ROWS rows (one sequence longer than that
 * gets a pass of its own) with one context; out receives per_seq values per sequence, as
 * model_encode_batch gives them for pooling. normalize: L2 per output vector. */
static int encode_packed(engine_model *model, const embed_seq *seqs, size_t n, enum model_pooling pooling, bool normalize,
                         size_t per_seq, float *out, char *err)
{
    size_t longest = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (seqs[i].n > longest) longest = seqs[i].n;
        total += seqs[i].n;
    }
    size_t rows = total < EMBED_PACK_ROWS ? total : EMBED_PACK_ROWS;
    if (longest > rows) rows = longest;
    const int32_t **ptrs = dk_malloc_array(n, sizeof *ptrs);
    int64_t *lens = dk_malloc_array(n, sizeof *lens);
    model_ctx *ctx = NULL;
    int rc = ptrs && lens ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (rc == DK_OK) {
        model_ctx_params cp = model_ctx_default_params();
        cp.n_ctx = (int64_t)rows;
        cp.n_batch = (int64_t)rows;
        cp.n_threads = model->n_threads;
        cp.numerics = model->numerics;
        rc = model_ctx_new(&ctx, model->net, &cp, err);
    }
    for (size_t i = 0; rc == DK_OK && i < n;) {
        size_t k = 0, used = 0;
        while (i + k < n && (k == 0 || used + seqs[i + k].n <= rows)) {
            ptrs[k] = seqs[i + k].ids;
            lens[k] = (int64_t)seqs[i + k].n;
            used += seqs[i + k].n;
            k++;
        }
        rc = model_encode_batch(ctx, ptrs, lens, (int64_t)k, pooling, normalize, out + i * per_seq, err);
        i += k;
    }
    model_ctx_free(ctx);
    dk_free(ptrs);
    dk_free(lens);
    return rc;
}

/* ---- many texts ---- */

int engine_embed_batch(engine_model *model, const char *const *texts, size_t n, bool truncate, size_t dimensions, float *out,
                       size_t *n_tokens, char *err)
{
    if (n_tokens) *n_tokens = 0;
    int rc = check_encoder(model, false, err);
    if (rc != DK_OK) return rc;
    if (n == 0) return DK_OK;
    size_t n_embd = model->n_embd, n_ctx = encoder_ctx(model);
    size_t dim = dimensions > 0 && dimensions < n_embd ? dimensions : n_embd;
    embed_seq *seqs = dk_calloc(n, sizeof *seqs);
    float *full = NULL;
    size_t total = 0;
    if (!seqs) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(texts[i]);
        if (len == 0) {
            rc = dk_fail(err, DK_ERR_ARG, "input %zu is empty", i);
            goto done;
        }
        if ((rc = seq_tokenize(model, texts[i], len, &seqs[i], err)) != DK_OK) goto done;
        if (seqs[i].n == 0) {
            rc = dk_fail(err, DK_ERR_ARG, "input %zu is empty", i);
            goto done;
        }
        if (seqs[i].n > n_ctx) {
            if (!truncate) {
                rc = dk_fail(err, DK_ERR_ARG, "input %zu is %zu tokens, longer than the context length %zu", i, seqs[i].n, n_ctx);
                goto done;
            }
            seq_cut(&seqs[i], n_ctx);
        }
        total += seqs[i].n;
    }
    /* straight into out when no cut is asked for; else full vectors first, then cut */
    float *dst = out;
    if (dim < n_embd) {
        if (!(full = dk_malloc_array(n, n_embd * sizeof(float)))) {
            rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
            goto done;
        }
        dst = full;
    }
    if ((rc = encode_packed(model, seqs, n, MODEL_POOLING_UNSPECIFIED, true, n_embd, dst, err)) != DK_OK) goto done;
    if (dim < n_embd) { /* Matryoshka: the first dim values, normalised again */
        for (size_t i = 0; i < n; i++) {
            const float *v = full + i * n_embd;
            double norm = 0;
            for (size_t d = 0; d < dim; d++) norm += (double)v[d] * v[d];
            float scale = norm > 0 ? (float)(1.0 / sqrt(norm)) : 1.0f;
            for (size_t d = 0; d < dim; d++) out[i * dim + d] = v[d] * scale;
        }
    }
    if (n_tokens) *n_tokens = total;
done:
    dk_free(full);
    seqs_free(seqs, n);
    return rc;
}

/* ---- reranking ---- */

/* The pair as a bert cross-encoder reads it: the query framed ([CLS] query [SEP]) followed by
 * the document without its leading frame (document [SEP]), the document cut so that the
 * pair fits in n_ctx. */
static int rerank_pair(const engine_model *model, const embed_seq *query, const char *doc, size_t n_ctx, embed_seq *out,
                       char *err)
{
    embed_seq d;
    int rc = seq_tokenize(model, doc, strlen(doc), &d, err);
    if (rc != DK_OK) return rc;
    /* the document's own part: without its leading frame, cut to what the query leaves */
    embed_seq part = {d.ids, d.n - d.n_lead, 0, d.n_trail};
    memmove(part.ids, part.ids + d.n_lead, part.n * sizeof(int32_t));
    seq_cut(&part, n_ctx - query->n);
    out->n = query->n + part.n;
    out->n_lead = query->n_lead;
    out->n_trail = part.n_trail;
    out->ids = dk_malloc_array(out->n, sizeof(int32_t));
    if (!out->ids) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    else {
        memcpy(out->ids, query->ids, query->n * sizeof(int32_t));
        memcpy(out->ids + query->n, part.ids, part.n * sizeof(int32_t));
    }
    dk_free(d.ids);
    return rc;
}

int engine_rerank_count(engine_model *model, const char *query, const char *const *docs, size_t n, float *scores,
                        size_t *n_tokens, char *err)
{
    if (n_tokens) *n_tokens = 0;
    int rc = check_encoder(model, true, err);
    if (rc != DK_OK) return rc;
    size_t len = strlen(query), n_ctx = encoder_ctx(model);
    if (len == 0) return dk_fail(err, DK_ERR_ARG, "the query is empty");
    if (n == 0) return DK_OK;
    embed_seq q;
    if ((rc = seq_tokenize(model, query, len, &q, err)) != DK_OK) return rc;
    embed_seq *pairs = dk_calloc(n, sizeof *pairs);
    size_t n_out = (size_t)model_get_hparams(model->net)->n_cls_out, total = 0;
    float *raw = NULL;
    if (!pairs) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (q.n + 1 >= n_ctx) {
        rc = dk_fail(err, DK_ERR_ARG, "the query is %zu tokens, too long for the context length %zu", q.n, n_ctx);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = rerank_pair(model, &q, docs[i], n_ctx, &pairs[i], err)) != DK_OK) goto done;
        total += pairs[i].n;
    }
    if (!(raw = dk_malloc_array(n, n_out * sizeof(float)))) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = encode_packed(model, pairs, n, MODEL_POOLING_RANK, false, n_out, raw, err)) != DK_OK) goto done;
    for (size_t i = 0; i < n; i++) scores[i] = raw[i * n_out]; /* the first output is the relevance */
    if (n_tokens) *n_tokens = total;
done:
    dk_free(raw);
    seqs_free(pairs, n);
    dk_free(q.ids);
    return rc;
}

int engine_rerank(engine_model *model, const char *query, const char *const *docs, size_t n, float *scores, char *err)
{
    return engine_rerank_count(model, query, docs, n, scores, NULL, err);
}
