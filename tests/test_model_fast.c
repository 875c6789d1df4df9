/*
 * test_model_fast.c: MODEL_NUMERICS_FAST (int8 activations, F16 KV cache) against the
 * conformance kit, for every causal model and type: the prompt in one batch (the panel and
 * packed GEMMs) and teacher-forced steps one token at a time (the decode kernels), compared
 * with llama.cpp's DEFAULT references (which compute the same kind of numerics), and with
 * the EXACT references no worse than llama.cpp's own default-vs-exact difference (the
 * ref's compare_to_exact) allows; free greedy decoding up to the margin rule; repacked and
 * unrepacked weights; and bert embeddings in FAST mode.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>

#include "kit_refs.h"
#include "model/model.h"
#include "test.h"

static const char *const fast_types[] = {
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q5_1", "Q4_K_M", "Q4_0", "Q4_1", "Q3_K_M", "Q2_K",
};
#define N_FAST_TYPES (sizeof fast_types / sizeof fast_types[0])

/* Against the DEFAULT refs: the tolerances test_model.c allows an EXACT engine there. */
static double fast_default_tol(const char *type)
{
    if (!strcmp(type, "F32") || !strcmp(type, "F16")) return 0.08;
    if (!strcmp(type, "BF16")) return 0.3;
    if (!strcmp(type, "Q8_0")) return 0.9;
    return 2.0;
}

/* llama.cpp's max |default - exact| over the prompt logits, from the default ref. */
static double llama_default_vs_exact(const char *ref_path)
{
    json_error_t je;
    json_t *j = json_load_file(ref_path, JSON_ALLOW_NUL, &je); /* some pieces hold NUL bytes */
    double v = -1;
    if (j) {
        json_t *c = json_object_get(j, "compare_to_exact");
        json_t *m = c ? json_object_get(c, "prompt_logits_max_abs_diff") : NULL;
        if (m) v = json_number_value(m);
        json_decref(j);
    }
    return v;
}

static int32_t argmax_f(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

typedef struct fast_run {
    float *prompt;    /* (n_prompt, V) */
    float *steps;     /* (n_greedy, V): logits that chose greedy token i (teacher-forced) */
    int64_t n_free;   /* free greedy steps that matched the default ref */
    bool free_ok;
} fast_run;

/* Prompt in one batch, then the ref's greedy tokens forced one at a time; then free greedy. */
static bool run_fast(model_weights *m, const kit_causal_ref *r, double tol, fast_run *out, char *why, size_t why_n)
{
    char err[DK_ERRLEN];
    int64_t V = model_get_hparams(m)->n_vocab;
    model_ctx_params cp = model_ctx_default_params();
    cp.n_ctx = 128;
    cp.n_threads = 2;
    cp.numerics = MODEL_NUMERICS_FAST;
    model_ctx *c = NULL;
    out->prompt = dk_malloc_array((size_t)(r->n_prompt * V), sizeof(float));
    out->steps = dk_malloc_array((size_t)(r->n_greedy * V), sizeof(float));
    out->n_free = 0;
    out->free_ok = true;
    bool ok = out->prompt && out->steps && model_ctx_new(&c, m, &cp, err) == DK_OK;
    if (ok) ok = model_decode(c, r->prompt_tokens, r->n_prompt, true, out->prompt, err) == DK_OK;
    if (ok) memcpy(out->steps, out->prompt + (r->n_prompt - 1) * V, (size_t)V * sizeof(float));
    for (int64_t i = 1; ok && i < r->n_greedy; i++)
        ok = model_decode(c, &r->greedy_tokens[i - 1], 1, false, out->steps + i * V, err) == DK_OK;
    if (ok) ok = model_ctx_truncate(c, r->n_prompt, err) == DK_OK;
    float *step = ok ? dk_malloc_array((size_t)V, sizeof(float)) : NULL;
    if (ok && step) {
        memcpy(step, out->prompt + (r->n_prompt - 1) * V, (size_t)V * sizeof(float));
        for (int64_t i = 0; i < r->n_greedy && r->greedy_margins[i] >= tol; i++) {
            int32_t tok = argmax_f(step, V);
            if (tok != r->greedy_tokens[i]) {
                snprintf(why, why_n, "free greedy step %lld: %d vs %d (margin %g)", (long long)i, tok, r->greedy_tokens[i],
                         r->greedy_margins[i]);
                out->free_ok = false;
                break;
            }
            out->n_free++;
            if (i + 1 < r->n_greedy && model_decode(c, &tok, 1, false, step, err) != DK_OK) break;
        }
    }
    if (!ok) snprintf(why, why_n, "%.200s", err);
    dk_free(step);
    model_ctx_free(c);
    return ok;
}

/* max |ours - ref| over the prompt positions: full logits when the ref has them (else the
 * last position's and the top-10 of the others); with steps, also the top-10 logits of every
 * forced step (only for the ref whose greedy tokens were forced) */
static double max_diff(const fast_run *f, const kit_causal_ref *r, int64_t V, bool steps)
{
    double d = 0;
    for (int64_t p = 0; p < r->n_prompt; p++) {
        const float *ref = r->prompt_logits ? r->prompt_logits + p * V : (p == r->n_prompt - 1 ? r->last_logits : NULL);
        if (ref) {
            for (int64_t i = 0; i < V; i++) d = fmax(d, fabs((double)f->prompt[p * V + i] - ref[i]));
        } else {
            for (int k = 0; k < KIT_TOP; k++)
                d = fmax(d, fabs((double)f->prompt[p * V + r->prompt_top_id[p * KIT_TOP + k]] - r->prompt_top_logit[p * KIT_TOP + k]));
        }
    }
    for (int64_t i = 0; steps && i < r->n_greedy; i++)
        for (int k = 0; k < KIT_TOP; k++)
            d = fmax(d, fabs((double)f->steps[i * V + r->greedy_top_id[i * KIT_TOP + k]] - r->greedy_top_logit[i * KIT_TOP + k]));
    return d;
}

static void run_fast_model(const char *name)
{
    char rel[256], path[1024], dref[1024], eref[1024], err[DK_ERRLEN], why[DK_ERRLEN + 64];
    int n_types = 0;
    for (size_t ti = 0; ti < N_FAST_TYPES; ti++) {
        const char *type = fast_types[ti];
        snprintf(rel, sizeof rel, "forward/%s/%s.%s.gguf", name, name, type);
        test_kit_file(path, sizeof path, rel);
        FILE *fp = fopen(path, "rb");
        if (!fp) continue;
        fclose(fp);
        n_types++;
        snprintf(rel, sizeof rel, "forward/%s/%s.%s.ref.json", name, name, type);
        test_kit_file(dref, sizeof dref, rel);
        snprintf(rel, sizeof rel, "forward/%s/%s.%s.exact.ref.json", name, name, type);
        test_kit_file(eref, sizeof eref, rel);
        kit_causal_ref d, e;
        int rd = kit_causal_ref_load(&d, dref, err), re = rd == 0 ? kit_causal_ref_load(&e, eref, err) : -1;
        model_weights *m = NULL;
        CHECK_MSG(rd == 0 && re == 0, "%s", err);
        if (rd == 0 && re == 0) CHECK_MSG(model_load(&m, path, err) == DK_OK, "%s: %s", path, err);
        /* the unrepacked kernels too, on a few types */
        bool pack = !(strcmp(type, "F32") == 0 || strcmp(type, "Q4_K_M") == 0 || strcmp(type, "Q5_1") == 0);
        if (m && pack) CHECK_MSG(model_prepare_fast(m, 2, err) == DK_OK, "%s", err);
        if (m) {
            int64_t V = model_get_hparams(m)->n_vocab;
            double tol = fast_default_tol(type), llama = llama_default_vs_exact(dref);
            fast_run f = {0};
            bool ok = run_fast(m, &d, tol, &f, why, sizeof why);
            CHECK_MSG(ok, "%s %s: %s", name, type, why);
            if (ok) {
                double dd = max_diff(&f, &d, V, true), de = max_diff(&f, &e, V, false);
                CHECK_MSG(dd <= tol, "%s %s fast vs default: max |d| %g > %g", name, type, dd, tol);
                /* at least as close to exact math as llama.cpp's default numerics, with room for
                 * rounding-boundary flips of the int8 activations (which differ from ggml's) */
                CHECK_MSG(llama > 0 && de <= 1.5 * llama + 0.05, "%s %s fast vs exact: max |d| %g, llama.cpp default %g", name, type, de,
                          llama);
                CHECK_MSG(f.free_ok, "%s %s: %s", name, type, why);
                test_log("%-12s %-7s%s fast: vs default %.3g (tol %g), vs exact %.3g (llama.cpp %.3g), free greedy %lld\n", name, type,
                         pack ? " packed" : "", dd, tol, de, llama, (long long)f.n_free);
            }
            dk_free(f.prompt);
            dk_free(f.steps);
        }
        model_free(m);
        if (rd == 0) kit_causal_ref_free(&d);
        if (re == 0) kit_causal_ref_free(&e);
    }
    CHECK_MSG(n_types > 0, "no GGUF files for %s in the kit", name);
}

TEST(model_fast, llama_tiny) { run_fast_model("llama-tiny"); }
TEST(model_fast, llama3_tiny) { run_fast_model("llama3-tiny"); }
TEST(model_fast, qwen2_tiny) { run_fast_model("qwen2-tiny"); }
TEST(model_fast, qwen3_tiny) { run_fast_model("qwen3-tiny"); }
TEST(model_fast, gemma2_tiny) { run_fast_model("gemma2-tiny"); }
TEST(model_fast, gemma3_tiny) { run_fast_model("gemma3-tiny"); }
TEST(model_fast, phi3_tiny) { run_fast_model("phi3-tiny"); }
TEST(model_fast, stories260k) { run_fast_model("stories260K"); }

/* bert in FAST mode (encoders keep an F32 cache): pooled embeddings vs the default refs. */
TEST(model_fast, bert_tiny)
{
    char rel[256], path[1024], err[DK_ERRLEN];
    for (size_t ti = 0; ti < N_FAST_TYPES; ti++) {
        snprintf(rel, sizeof rel, "forward/bert-tiny/bert-tiny.%s.gguf", fast_types[ti]);
        test_kit_file(path, sizeof path, rel);
        FILE *fp = fopen(path, "rb");
        if (!fp) continue;
        fclose(fp);
        model_weights *m = NULL;
        REQUIRE_MSG(model_load(&m, path, err) == DK_OK, "%s", err);
        REQUIRE_MSG(model_prepare_fast(m, 2, err) == DK_OK, "%s", err);
        kit_embed_ref def;
        snprintf(rel, sizeof rel, "forward/bert-tiny/bert-tiny.%s.ref.json", fast_types[ti]);
        int rc = kit_embed_ref_load(&def, test_kit_file(path, sizeof path, rel), err);
        CHECK_MSG(rc == 0, "%s", err);
        model_ctx_params cp = model_ctx_default_params();
        cp.n_threads = 2;
        cp.numerics = MODEL_NUMERICS_FAST;
        model_ctx *c = NULL;
        int64_t E = model_get_hparams(m)->n_embd;
        float *pooled = dk_malloc_array((size_t)E, sizeof(float));
        if (rc == 0 && pooled && model_ctx_new(&c, m, &cp, err) == DK_OK) {
            double min_cos = 1;
            int64_t off = 0;
            for (int64_t s = 0; s < def.n_seq; s++) {
                REQUIRE(model_encode(c, def.tokens + off, def.seq_len[s], MODEL_POOLING_UNSPECIFIED, true, pooled, err) == DK_OK);
                double ab = 0, aa = 0, bb = 0;
                for (int64_t i = 0; i < E; i++) {
                    double a = pooled[i], b = def.pooled_normalized[s * E + i];
                    ab += a * b, aa += a * a, bb += b * b;
                }
                min_cos = fmin(min_cos, ab / sqrt(aa * bb));
                off += def.seq_len[s];
            }
            /* test_model.c's bounds against the default refs */
            double want = !strcmp(fast_types[ti], "F32") || !strcmp(fast_types[ti], "F16") ? 0.99999 : 0.9995;
            CHECK_MSG(min_cos >= want, "bert %s fast: cosine vs default %.7f", fast_types[ti], min_cos);
            test_log("bert-tiny    %-7s fast: cosine vs default %.7f\n", fast_types[ti], min_cos);
        }
        model_ctx_free(c);
        dk_free(pooled);
        if (rc == 0) kit_embed_ref_free(&def);
        model_free(m);
    }
}

/* Decoding one token over a long context splits the attention of each kv head in chunks
 * over the threads (attn_chunk_task/attn_merge); the merged softmax must equal the one of
 * the same position evaluated inside a batch. */
TEST(model_fast, long_context_split_attention)
{
    char path[1024], err[DK_ERRLEN];
    model_weights *m = NULL;
    REQUIRE_MSG(model_load(&m, test_kit_file(path, sizeof path, "forward/llama-tiny/llama-tiny.F32.gguf"), err) == DK_OK, "%s", err);
    const int64_t n = 700, V = model_get_hparams(m)->n_vocab;
    int32_t *toks = dk_malloc_array((size_t)n, sizeof(int32_t));
    float *batch = dk_malloc_array((size_t)V, sizeof(float)), *step = dk_malloc_array((size_t)V, sizeof(float));
    REQUIRE(toks && batch && step);
    for (int64_t i = 0; i < n; i++) toks[i] = (int32_t)(1 + (i * 37) % (V - 1));
    for (int fast = 0; fast <= 1; fast++) {
        model_ctx_params cp = model_ctx_default_params();
        cp.n_ctx = 1024;
        cp.n_batch = 1024;
        cp.n_threads = 2;
        cp.numerics = fast ? MODEL_NUMERICS_FAST : MODEL_NUMERICS_EXACT;
        model_ctx *c = NULL;
        REQUIRE_MSG(model_ctx_new(&c, m, &cp, err) == DK_OK, "%s", err);
        CHECK(model_decode(c, toks, n, false, batch, err) == DK_OK);  /* position n-1 inside the batch */
        CHECK(model_ctx_truncate(c, n - 1, err) == DK_OK);
        CHECK(model_decode(c, toks + n - 1, 1, false, step, err) == DK_OK); /* alone: split attention */
        double d = 0;
        for (int64_t i = 0; i < V; i++) d = fmax(d, fabs((double)batch[i] - step[i]));
        /* FAST: the batch and the single token go through different matmul kernels, whose
         * float rounding can flip an int8 activation */
        CHECK_MSG(d <= (fast ? 0.05 : 1e-4), "%s: batch vs split decode max |d| %g", fast ? "fast" : "exact", d);
        test_log("long context, %s: batch vs split decode max |d| %.3g\n", fast ? "fast" : "exact", d);
        model_ctx_free(c);
    }
    dk_free(toks);
    dk_free(batch);
    dk_free(step);
    model_free(m);
}

/* Repacking and FAST contexts with every allocation failing in turn: a clean error, no leak,
 * and the model still works unprepared. */
TEST(model_fast, allocation_failures)
{
    char path[1024], err[DK_ERRLEN];
    test_kit_file(path, sizeof path, "forward/qwen2-tiny/qwen2-tiny.Q4_K_M.gguf");
    bool done = false;
    for (long n = 0; n < 300 && !done; n++) {
        model_weights *m = NULL;
        REQUIRE_MSG(model_load(&m, path, err) == DK_OK, "%s", err);
        dk_alloc_fail_after(n);
        int rc = model_prepare_fast(m, 2, err);
        model_ctx *c = NULL;
        if (rc == DK_OK) {
            model_ctx_params cp = model_ctx_default_params();
            cp.n_ctx = 32;
            cp.n_threads = 2;
            cp.numerics = MODEL_NUMERICS_FAST;
            rc = model_ctx_new(&c, m, &cp, err);
            done = rc == DK_OK;
        }
        dk_alloc_fail_after(-1);
        CHECK_MSG(rc == DK_OK || rc == DK_ERR_NOMEM, "n=%ld: rc %d (%s)", n, rc, err);
        if (rc != DK_OK && !c) CHECK_MSG(model_prepare_fast(m, 2, err) == DK_OK, "retry after a failure: %s", err);
        if (!c) { /* unprepared or half-prepared, the model still decodes */
            model_ctx_params cp = model_ctx_default_params();
            cp.n_ctx = 32;
            cp.numerics = MODEL_NUMERICS_FAST;
            REQUIRE(model_ctx_new(&c, m, &cp, err) == DK_OK);
        }
        int32_t tok = 1;
        float *logits = dk_malloc_array((size_t)model_get_hparams(m)->n_vocab, sizeof(float));
        REQUIRE(logits);
        CHECK(model_decode(c, &tok, 1, false, logits, err) == DK_OK);
        CHECK(isfinite(logits[0]));
        dk_free(logits);
        model_ctx_free(c);
        model_free(m);
    }
    CHECK(done);
}
