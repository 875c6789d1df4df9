/*
 * test_embed_batch.c: engine_embed_batch (suite `embed_batch`): texts of different lengths
 * packed into shared forward passes give engine_embed's vector of each text within 1e-5 (the
 * kit's bert-tiny, FAST and EXACT numerics), across several passes; a text longer than the
 * context is cut at a token boundary (the vector of its first tokens and the closing [SEP])
 * or refused naming its index; empty texts are refused; dimensions cut and re-normalise;
 * n_tokens counts what was evaluated; rerankers and generative models are refused.
 */
#include "test.h"

#include <stdlib.h>

#include "base/base.h"
#include "convert/convert.h"
#include "engine/engine.h"

#define BERT "forward/bert-tiny/bert-tiny.F32.gguf"
#define STORIES "forward/stories260K/stories260K.F32.gguf"

static engine_model *load(const char *relative, bool exact)
{
    char path[512], err[DK_ERRLEN];
    test_kit_file(path, sizeof path, relative);
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 2;
    lp.exact = exact;
    engine_model *m = NULL;
    if (engine_model_load(&m, path, &lp, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "load %s: %s", path, err);
    return m;
}

static size_t n_tokens_of(engine_model *m, const char *text)
{
    char err[DK_ERRLEN];
    int32_t *ids = NULL;
    size_t n = 0;
    if (engine_tokenize(m, text, strlen(text), true, false, &ids, &n, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "%s", err);
    dk_free(ids);
    return n;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* "the the the ..." of n words (caller frees) */
static char *words(size_t n)
{
    dk_buf b = {0};
    for (size_t i = 0; i < n; i++) dk_buf_puts(&b, i ? " the" : "the");
    return dk_buf_detach(&b);
}

static void check_equals_embed(bool exact)
{
    char err[DK_ERRLEN];
    engine_model *m = load(BERT, exact);
    REQUIRE(m);
    size_t E = engine_n_embd(m), n_ctx = engine_n_ctx_train(m);
    REQUIRE(n_ctx == 128);
    REQUIRE(n_tokens_of(m, "the") == 3); /* [CLS] the [SEP]: one token a word */
    /* 70 texts of 3 to ~60 tokens: more rows than one pass holds (512) */
    enum { N = 70 };
    static const char *const base[] = {"hello world", "a cat sat on the mat", "duck",
                                       "the quick brown fox jumps over the lazy dog and runs far away into the forest",
                                       "DuckDB is an in-process SQL OLAP database management system."};
    const char *texts[N];
    char *owned[N] = {0};
    size_t want_tokens = 0;
    for (size_t i = 0; i < N; i++) {
        if (i % 7 == 6) texts[i] = owned[i] = words(5 + (i * 13) % 55);
        else texts[i] = base[i % 5];
        want_tokens += n_tokens_of(m, texts[i]);
    }
    float *batch = dk_malloc_array(N, E * sizeof(float)), *one = dk_malloc_array(E, sizeof(float));
    REQUIRE(batch && one);
    size_t n_tok = 0;
    REQUIRE_MSG(engine_embed_batch(m, texts, N, false, 0, batch, &n_tok, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(n_tok, want_tokens);
    CHECK(want_tokens > 512);
    double worst = 0;
    for (size_t i = 0; i < N; i++) {
        REQUIRE_MSG(engine_embed(m, texts[i], strlen(texts[i]), true, one, err) == DK_OK, "%s", err);
        worst = fmax(worst, max_diff(batch + i * E, one, E));
    }
    CHECK_MSG(worst <= 1e-5, "packed vs one by one: max |diff| %g", worst);
    test_log("embed_batch %s: %d texts, %zu tokens, max |diff| vs engine_embed %.3g", exact ? "exact" : "fast", N, n_tok, worst);
    for (size_t i = 0; i < N; i++) dk_free(owned[i]);
    dk_free(batch);
    dk_free(one);
    engine_model_free(m);
}

TEST(embed_batch, equals_engine_embed_fast)
{
    check_equals_embed(false);
}

TEST(embed_batch, equals_engine_embed_exact)
{
    check_equals_embed(true);
}

TEST(embed_batch, truncation_at_a_token_boundary)
{
    char err[DK_ERRLEN];
    engine_model *m = load(BERT, false);
    REQUIRE(m);
    size_t E = engine_n_embd(m);
    char *longer = words(300), *fits = words(126); /* [CLS] + 126 + [SEP] = 128 tokens */
    const char *texts[3] = {"hello world", longer, "duck"};
    float *out = dk_malloc_array(3, E * sizeof(float)), *ref = dk_malloc_array(E, sizeof(float));
    REQUIRE(out && ref && longer && fits);
    size_t n_tok = 0;
    REQUIRE_MSG(engine_embed_batch(m, texts, 3, true, 0, out, &n_tok, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(n_tok, n_tokens_of(m, "hello world") + 128 + n_tokens_of(m, "duck"));
    REQUIRE_MSG(engine_embed(m, fits, strlen(fits), true, ref, err) == DK_OK, "%s", err);
    CHECK_MSG(max_diff(out + E, ref, E) <= 1e-5, "the cut text is its first 126 words: %g", max_diff(out + E, ref, E));
    REQUIRE(engine_embed(m, "duck", 4, true, ref, err) == DK_OK);
    CHECK(max_diff(out + 2 * E, ref, E) <= 1e-5);
    /* not truncating: refused, naming the input */
    err[0] = 0;
    CHECK_EQ_INT(engine_embed_batch(m, texts, 3, false, 0, out, &n_tok, err), DK_ERR_ARG);
    CHECK_MSG(strstr(err, "input 1 is 302 tokens, longer than the context length 128") != NULL, "%s", err);
    CHECK_EQ_INT(n_tok, 0);
    /* engine_embed itself cannot take it */
    CHECK(engine_embed(m, longer, strlen(longer), true, ref, err) != DK_OK);
    dk_free(longer);
    dk_free(fits);
    dk_free(out);
    dk_free(ref);
    engine_model_free(m);
}

TEST(embed_batch, dimensions_empty_inputs_and_models)
{
    char err[DK_ERRLEN];
    engine_model *m = load(BERT, false);
    REQUIRE(m);
    size_t E = engine_n_embd(m);
    const char *texts[2] = {"hello world", "a cat sat on the mat"};
    float full[2 * 1024], cut[2 * 8];
    REQUIRE(E <= 1024);
    REQUIRE(engine_embed_batch(m, texts, 2, true, 0, full, NULL, err) == DK_OK);
    REQUIRE(engine_embed_batch(m, texts, 2, true, 8, cut, NULL, err) == DK_OK);
    for (size_t i = 0; i < 2; i++) { /* the first 8 values, normalised again */
        double norm = 0, full_norm = 0;
        for (size_t d = 0; d < 8; d++) norm += (double)full[i * E + d] * full[i * E + d];
        for (size_t d = 0; d < E; d++) full_norm += (double)full[i * E + d] * full[i * E + d];
        CHECK_NEAR(full_norm, 1.0, 1e-5);
        for (size_t d = 0; d < 8; d++) CHECK_NEAR(cut[i * 8 + d], full[i * E + d] / sqrt(norm), 1e-6);
    }
    /* dimensions >= n_embd: the whole vector */
    float same[2 * 1024];
    REQUIRE(engine_embed_batch(m, texts, 2, true, E + 5, same, NULL, err) == DK_OK);
    CHECK(max_diff(same, full, 2 * E) == 0);
    /* an empty text */
    const char *with_empty[3] = {"x", "", "y"};
    CHECK_EQ_INT(engine_embed_batch(m, with_empty, 3, true, 0, full, NULL, err), DK_ERR_ARG);
    CHECK_EQ_STR(err, "input 1 is empty");
    /* none at all: nothing to do */
    size_t n_tok = 7;
    CHECK_EQ_INT(engine_embed_batch(m, texts, 0, true, 0, full, &n_tok, err), DK_OK);
    CHECK_EQ_INT(n_tok, 0);
    CHECK(!engine_is_reranker(m));
    engine_model_free(m);

    /* a generative model */
    engine_model *g = load(STORIES, false);
    REQUIRE(g);
    CHECK_EQ_INT(engine_embed_batch(g, texts, 2, true, 0, full, NULL, err), DK_ERR_UNSUPPORTED);
    CHECK(!engine_is_reranker(g));
    engine_model_free(g);

    /* a reranker makes no embeddings */
    char path[512], vocab[512];
    snprintf(path, sizeof path, "%s/embed_batch_reranker.gguf", test_tmpdir());
    test_kit_file(vocab, sizeof vocab, "tokenizer/ggml-vocab-bert-bge.gguf");
    convert_synth_opts o = {.preset = "bert-reranker-tiny", .quant = "F32", .out_path = path, .seed = 1, .vocab_from = vocab};
    REQUIRE_MSG(convert_synth(&o, NULL, err) == DK_OK, "%s", err);
    engine_load_params lp;
    engine_load_params_default(&lp);
    engine_model *r = NULL;
    REQUIRE_MSG(engine_model_load(&r, path, &lp, err) == DK_OK, "%s", err);
    CHECK(engine_is_reranker(r) && engine_is_embedding(r));
    CHECK_EQ_INT(engine_embed_batch(r, texts, 2, true, 0, full, NULL, err), DK_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err, "reranker") != NULL, "%s", err);
    CHECK_EQ_INT(engine_embed(r, "x", 1, true, full, err), DK_ERR_UNSUPPORTED);
    engine_model_free(r);
}
