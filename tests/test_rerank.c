/*
 * test_rerank.c: cross-encoder reranking (suite `rerank`). A synthetic reranker (`duckling
 * synth --preset bert-reranker-tiny`: bert with the classification head cls.* and pooling_type
 * 4, the kit's bert-bge WordPiece vocabulary) scores pairs as llama.cpp does (reference
 * constants below); scores do not depend on how pairs share forward passes; long documents
 * are cut to the context; the wrong models are refused. Then, in-process, /api/rerank and
 * /v1/rerank over HTTP: the response shape, ordering, top_n, return_documents, usage, and
 * 4xx errors for bad requests, unknown models and models that are not rerankers.
 */
#include "test.h"
#include "test_serve.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>

#include "base/base.h"
#include "convert/convert.h"
#include "engine/engine.h"
#include "server/server.h"

#define BERT "forward/bert-tiny/bert-tiny.F32.gguf"
#define STORIES "forward/stories260K/stories260K.F32.gguf"

/* The reranker of these tests, written once per run into the temporary directory; the same
 * file as `duckling synth --preset bert-reranker-tiny --quant F32 --seed 1
 * --vocab-from $DUCKLING_KIT/tokenizer/ggml-vocab-bert-bge.gguf --out rr.gguf`. */
static const char *reranker_path(void)
{
    static char path[512];
    static bool made;
    if (made) return path;
    char vocab[512], err[DK_ERRLEN];
    snprintf(path, sizeof path, "%s/rerank_tiny.F32.gguf", test_tmpdir());
    test_kit_file(vocab, sizeof vocab, "tokenizer/ggml-vocab-bert-bge.gguf");
    convert_synth_opts o = {.preset = "bert-reranker-tiny", .quant = "F32", .out_path = path, .seed = 1, .vocab_from = vocab};
    if (convert_synth(&o, NULL, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "synth: %s", err);
        return NULL;
    }
    made = true;
    return path;
}

static engine_model *load(const char *path, bool exact)
{
    char err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 2;
    lp.exact = exact;
    engine_model *m = NULL;
    if (engine_model_load(&m, path, &lp, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "load %s: %s", path, err);
    return m;
}

/* llama.cpp's scores of the same pairs on the same file: libllama (this tree's
 * /work/ext/llama.cpp build, CPU, 2 threads) with embeddings = true, pooling_type =
 * LLAMA_POOLING_TYPE_RANK, flash_attn_type DISABLED and type_k = type_v = F32 (the kit's
 * "exact" settings: llama.cpp's default F16 KV cache moves the scores by up to 2e-3
 * relative), n_ctx = n_batch = 512, one pair per llama_decode with positions 0.., tokens
 * [CLS] query [SEP] document [SEP] (llama_tokenize(query, add_special = true) +
 * llama_tokenize(document, false) + llama_vocab_sep), score = llama_get_embeddings_seq(ctx,
 * 0)[0]: what `llama-embedding --pooling rank --embd-normalize -1 -fa off -ctk f32 -ctv f32`
 * prints for such pairs. llama.cpp's token ids were duckling's. (llama-server's /rerank
 * builds [CLS] query [SEP] document, without the closing [SEP], for a bert vocabulary that
 * lacks add_eos_token; duckling keeps the pair encoding the model was trained on.) */
static const char *const k_query = "what is a panda";
static const char *const k_docs[] = {
    "the giant panda is a bear species endemic to china", "hi", "pandas eat bamboo", "", "Ducks swim; pandas don't!",
};
static const float k_llama_scores[] = {-0.5119857f, -0.9536088f, -0.3539646f, -0.8902081f, -0.4119653f};
#define N_DOCS (sizeof k_docs / sizeof k_docs[0])

static void check_llama_scores(bool exact)
{
    char err[DK_ERRLEN];
    const char *path = reranker_path();
    REQUIRE(path);
    engine_model *m = load(path, exact);
    REQUIRE(m);
    CHECK(engine_is_reranker(m));
    CHECK(engine_is_embedding(m)); /* an encoder: no generation, no session */
    float scores[N_DOCS];
    size_t n_tok = 0;
    REQUIRE_MSG(engine_rerank_count(m, k_query, k_docs, N_DOCS, scores, &n_tok, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(n_tok, 17 + 8 + 11 + 7 + 16); /* the pairs' lengths as llama.cpp tokenized them */
    double worst = 0;
    for (size_t i = 0; i < N_DOCS; i++) {
        double rel = fabs(scores[i] - k_llama_scores[i]) / fabs(k_llama_scores[i]);
        worst = fmax(worst, rel);
        CHECK_MSG(rel <= 1e-3, "doc %zu: %.7g vs llama.cpp %.7g", i, scores[i], k_llama_scores[i]);
    }
    test_log("rerank %s: worst relative difference to llama.cpp %.3g", exact ? "exact" : "fast", worst);
    /* a second query */
    const char *duck = "the duck swims in the pond";
    float s;
    REQUIRE(engine_rerank(m, "a duck", &duck, 1, &s, err) == DK_OK);
    CHECK_NEAR(s, -0.455916, 0.455916 * 1e-3); /* llama.cpp, as above */
    engine_model_free(m);
}

TEST(rerank, matches_llama_cpp_fast)
{
    check_llama_scores(false);
}

TEST(rerank, matches_llama_cpp_exact)
{
    check_llama_scores(true);
}

static char *words(size_t n)
{
    dk_buf b = {0};
    for (size_t i = 0; i < n; i++) dk_buf_puts(&b, i ? " the" : "the");
    return dk_buf_detach(&b);
}

TEST(rerank, packing_truncation_and_refusals)
{
    char err[DK_ERRLEN];
    const char *path = reranker_path();
    REQUIRE(path);
    engine_model *m = load(path, false);
    REQUIRE(m);
    /* 60 documents (several forward passes) score as each alone */
    enum { N = 60 };
    const char *docs[N];
    char *owned[N] = {0};
    for (size_t i = 0; i < N; i++) docs[i] = i % 3 == 2 ? (owned[i] = words(3 + i)) : k_docs[i % N_DOCS];
    float all[N], one;
    REQUIRE_MSG(engine_rerank(m, k_query, docs, N, all, err) == DK_OK, "%s", err);
    double worst = 0;
    for (size_t i = 0; i < N; i++) {
        REQUIRE(engine_rerank(m, k_query, &docs[i], 1, &one, err) == DK_OK);
        worst = fmax(worst, fabs(one - all[i]));
    }
    CHECK_MSG(worst <= 1e-5, "packed vs alone: %g", worst);
    for (size_t i = 0; i < N; i++) dk_free(owned[i]);

    /* a document longer than the context (128) is cut: the query takes 6 tokens, so 121 of the
     * document's words and its [SEP] remain */
    char *longer = words(400), *fits = words(121), *over = words(122);
    float s_long, s_fits, s_over;
    REQUIRE(longer && fits && over);
    REQUIRE(engine_rerank(m, k_query, (const char *const *)&longer, 1, &s_long, err) == DK_OK);
    REQUIRE(engine_rerank(m, k_query, (const char *const *)&fits, 1, &s_fits, err) == DK_OK);
    REQUIRE(engine_rerank(m, k_query, (const char *const *)&over, 1, &s_over, err) == DK_OK);
    CHECK_NEAR(s_long, s_fits, 1e-6);
    CHECK_NEAR(s_over, s_fits, 1e-6);
    /* a query that leaves no room, an empty query */
    const char *d = "x";
    CHECK_EQ_INT(engine_rerank(m, longer, &d, 1, &one, err), DK_ERR_ARG);
    CHECK_MSG(strstr(err, "the query is 402 tokens") != NULL, "%s", err);
    CHECK_EQ_INT(engine_rerank(m, "", &d, 1, &one, err), DK_ERR_ARG);
    dk_free(longer);
    dk_free(fits);
    dk_free(over);
    engine_model_free(m);

    /* models that are no rerankers */
    char kit[512];
    engine_model *e = load(test_kit_file(kit, sizeof kit, BERT), false);
    REQUIRE(e);
    CHECK(!engine_is_reranker(e));
    CHECK_EQ_INT(engine_rerank(e, k_query, &d, 1, &one, err), DK_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err, "not a reranker") != NULL, "%s", err);
    engine_model_free(e);
    engine_model *g = load(test_kit_file(kit, sizeof kit, STORIES), false);
    REQUIRE(g);
    CHECK_EQ_INT(engine_rerank(g, k_query, &d, 1, &one, err), DK_ERR_UNSUPPORTED);
    engine_model_free(g);
}

/* ---- HTTP ---- */

static srv *server_up(void) { return test_server_up("rerank_models"); }

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
    dk_buf_append(user, p, size * n);
    return size * n;
}

/* POSTs text to path: the status, and the body parsed (NULL when not JSON; caller decrefs). */
static json_t *post(const srv *s, const char *path, const char *text, long *status)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv_port(s), path);
    dk_buf body = {0};
    *status = 0;
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    json_t *v = body.data ? json_loads(body.data, 0, NULL) : NULL;
    dk_buf_free(&body);
    return v;
}

/* POSTs a JSON body (stolen); the reply when its status is want (else a failure and NULL). */
static json_t *post_json(const srv *s, const char *path, json_t *body, long want, int line)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    long status;
    json_t *v = post(s, path, text ? text : "", &status);
    free(text);
    if (status != want || !v) {
        char *got = v ? json_dumps(v, JSON_COMPACT) : NULL;
        test_fail_at(__FILE__, line, "POST %s: status %ld, not %ld: %s", path, status, want, got ? got : "(not JSON)");
        free(got);
        json_decref(v);
        return NULL;
    }
    return v;
}
#define POST_JSON(s, path, body, want) post_json(s, path, body, want, __LINE__)

static json_t *docs_json(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < N_DOCS; i++) json_array_append_new(a, json_string(k_docs[i]));
    return a;
}

TEST(rerank, http_api_and_v1)
{
    const char *path = reranker_path();
    REQUIRE(path);
    srv *s = server_up();
    REQUIRE(s);
    /* llama.cpp's order of the documents: 2, 4, 0, 3, 1 */
    static const size_t order[N_DOCS] = {2, 4, 0, 3, 1};
    static const char *const prefixes[] = {"/api/rerank", "/v1/rerank"};
    for (size_t p = 0; p < 2; p++) {
        json_t *r = POST_JSON(s, prefixes[p], json_pack("{s:s,s:s,s:o}", "model", path, "query", k_query, "documents", docs_json()), 200);
        if (r) {
            CHECK_EQ_STR(json_string_value(json_object_get(r, "model")), path);
            json_t *results = json_object_get(r, "results");
            CHECK_EQ_INT(json_array_size(results), N_DOCS);
            for (size_t k = 0; k < json_array_size(results) && k < N_DOCS; k++) {
                json_t *x = json_array_get(results, k);
                size_t idx = (size_t)json_integer_value(json_object_get(x, "index"));
                CHECK_EQ_INT(idx, order[k]);
                if (idx < N_DOCS) CHECK_NEAR(json_number_value(json_object_get(x, "relevance_score")), k_llama_scores[idx], 1e-3);
                CHECK(json_object_get(x, "document") == NULL); /* return_documents defaults to false */
            }
            CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(r, "usage"), "total_tokens")), 17 + 8 + 11 + 7 + 16);
            json_decref(r);
        }
        r = POST_JSON(s, prefixes[p],
                      json_pack("{s:s,s:s,s:o,s:i,s:b}", "model", path, "query", k_query, "documents", docs_json(), "top_n", 2,
                                "return_documents", 1), 200);
        if (r) {
            json_t *results = json_object_get(r, "results");
            CHECK_EQ_INT(json_array_size(results), 2);
            json_t *best = json_array_get(results, 0);
            CHECK_EQ_INT(json_integer_value(json_object_get(best, "index")), 2);
            CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(best, "document"), "text")), k_docs[2]);
            json_decref(r);
        }
    }

    /* bad requests: the API's error shapes */
    char kit_bert[512], kit_stories[512];
    test_kit_file(kit_bert, sizeof kit_bert, BERT);
    test_kit_file(kit_stories, sizeof kit_stories, STORIES);
    /* /api/show tells a cross-encoder from an embedding model */
    const char *const show_models[2] = {path, kit_bert};
    const char *const show_caps[2] = {"rerank", "embedding"};
    for (int i = 0; i < 2; i++) {
        json_t *r = POST_JSON(s, "/api/show", json_pack("{s:s}", "model", show_models[i]), 200);
        if (r) {
            json_t *caps = json_object_get(r, "capabilities");
            CHECK_EQ_INT(json_array_size(caps), 1);
            CHECK_EQ_STR(json_string_value(json_array_get(caps, 0)), show_caps[i]);
        }
        json_decref(r);
    }
    dk_buf many = {0};
    dk_buf_puts(&many, "[");
    for (int i = 0; i <= 1000; i++) dk_buf_puts(&many, i ? ",\"d\"" : "\"d\"");
    dk_buf_puts(&many, "]");
    struct { const char *body; const char *model; long status; const char *needle; } cases[] = {
        {"{\"query\":\"q\",\"documents\":[\"d\"]}", NULL, 400, "model is required"},
        {"{\"model\":\"M\",\"documents\":[\"d\"]}", path, 400, "query is required"},
        {"{\"model\":\"M\",\"query\":\"\",\"documents\":[\"d\"]}", path, 400, "query must not be empty"},
        {"{\"model\":\"M\",\"query\":5,\"documents\":[\"d\"]}", path, 400, "query"},
        {"{\"model\":\"M\",\"query\":\"q\"}", path, 400, "documents is required"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":\"d\"}", path, 400, "documents must be an array of strings"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":[]}", path, 400, "documents must not be empty"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":[\"d\",{\"text\":\"e\"}]}", path, 400, "documents[1] must be a string"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":DOCS}", path, 400, "too many documents: 1001 (at most 1000)"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":[\"d\"],\"top_n\":0}", path, 400, "top_n"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":[\"d\"],\"return_documents\":\"yes\"}", path, 400, "return_documents"},
        {"{\"model\":\"nope-model\",\"query\":\"q\",\"documents\":[\"d\"]}", NULL, 404, "not found"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":[\"d\"]}", kit_bert, 400, "not a reranker"},
        {"{\"model\":\"M\",\"query\":\"q\",\"documents\":[\"d\"]}", kit_stories, 400, "not a reranker"},
        {"{bad", NULL, 400, "invalid JSON"},
    };
    for (size_t p = 0; p < 2; p++) {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            dk_buf b = {0};
            for (const char *c = cases[k].body; *c; c++) {
                if (strncmp(c, "\"M\"", 3) == 0) {
                    dk_buf_printf(&b, "\"%s\"", cases[k].model);
                    c += 2;
                } else if (strncmp(c, "DOCS", 4) == 0) {
                    dk_buf_puts(&b, many.data);
                    c += 3;
                } else {
                    dk_buf_putc(&b, *c);
                }
            }
            long status;
            json_t *v = post(s, prefixes[p], b.data, &status);
            const json_t *e = json_object_get(v, "error");
            const char *msg = p == 1 ? json_string_value(json_object_get(e, "message")) : json_string_value(e);
            CHECK_MSG(status == cases[k].status, "%s %s: status %ld, not %ld", prefixes[p], cases[k].body, status, cases[k].status);
            CHECK_MSG(msg && strstr(msg, cases[k].needle), "%s %s: error %s lacks %s", prefixes[p], cases[k].body,
                      msg ? msg : "(none)", cases[k].needle);
            json_decref(v);
            dk_buf_free(&b);
        }
    }
    dk_buf_free(&many);
    /* the reranker makes no embeddings, and the server still serves */
    json_t *r = POST_JSON(s, "/api/embed", json_pack("{s:s,s:s}", "model", path, "input", "x"), 400);
    if (r) CHECK_MSG(strstr(json_string_value(json_object_get(r, "error")), "reranker") != NULL, "embed: reranker message");
    json_decref(r);
    r = POST_JSON(s, "/v1/embeddings", json_pack("{s:s,s:s}", "model", path, "input", "x"), 400);
    json_decref(r);
    r = POST_JSON(s, "/api/rerank", json_pack("{s:s,s:s,s:[s]}", "model", path, "query", k_query, "documents", k_docs[0]), 200);
    if (r) CHECK_EQ_INT(json_array_size(json_object_get(r, "results")), 1);
    json_decref(r);
    srv_free(s);
}
