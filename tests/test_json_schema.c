/*
 * test_json_schema.c: JSON schemas to GBNF (suite `json_schema`): every schema of the corpus
 * (tests/data/schemas/, one file per schema) converts to a grammar that parses; exact integer ranges;
 * patterns, formats, enums and key exclusion on hand-picked strings; refused keywords
 * named by their JSON pointer; and the property test: random walks with random logits
 * through sample_chain_sample_grammar (greedy and temperature) on the real Qwen vocabulary
 * and on stories260K's, whose finished outputs must parse with jansson and validate against
 * their schema (tests/json_validate.c, an independent validator).
 */
#include "test.h"

#include <dirent.h>
#include <stdlib.h>

#include "base/base.h"
#include "json_validate.h"
#include "kit_vocab.h"
#include "sample/sample.h"

#define QWEN_VOCAB "tokenizer/ggml-vocab-qwen2.gguf"
#define STORIES "forward/stories260K/stories260K.F32.gguf"
#define SCHEMA_DIR "tests/data/schemas"

/* A kit vocabulary (as generation prepares it) and a logit bias per token. */
typedef struct test_vocab {
    engine_model *model; /* owns v */
    const sample_vocab *v;
    size_t n;
    float *bias;  /* (n) a nudge towards closing strings and containers, so walks finish */
} test_vocab;

static void test_vocab_free(test_vocab *tv)
{
    engine_model_free(tv->model);
    dk_free(tv->bias);
    memset(tv, 0, sizeof *tv);
}

static bool test_vocab_load(test_vocab *tv, const char *relative)
{
    memset(tv, 0, sizeof *tv);
    tv->v = kit_sample_vocab(relative, &tv->model);
    if (!tv->v) return false;
    tv->n = sample_vocab_n(tv->v);
    tv->bias = dk_calloc(tv->n, sizeof(float));
    if (!tv->bias) {
        test_fail_at(__FILE__, __LINE__, "out of memory");
        test_vocab_free(tv);
        return false;
    }
    for (size_t i = 0; i < tv->n; i++) {
        size_t len;
        const char *piece = sample_vocab_piece(tv->v, (int32_t)i, &len);
        for (size_t k = 0; k < len; k++)
            if (piece[k] == '"' || piece[k] == '}' || piece[k] == ']' || piece[k] == ',') tv->bias[i] = 3.0f;
        if (sample_vocab_is_eog(tv->v, (int32_t)i)) tv->bias[i] = 3.0f;
    }
    return true;
}

static char *schema_gbnf(const json_t *schema, char *err)
{
    dk_buf b = {0};
    if (sample_json_schema_to_gbnf(schema, "root", &b, err) != DK_OK) {
        dk_buf_free(&b);
        return NULL;
    }
    return dk_buf_detach(&b);
}

static sample_grammar *schema_grammar_text(const char *schema_text)
{
    char err[DK_ERRLEN];
    json_error_t jerr;
    json_t *s = json_loads(schema_text, 0, &jerr);
    if (!s) {
        test_fail_at(__FILE__, __LINE__, "bad test schema %s: %s", schema_text, jerr.text);
        return NULL;
    }
    char *gbnf = schema_gbnf(s, err);
    json_decref(s);
    sample_grammar *g = NULL;
    if (!gbnf) test_fail_at(__FILE__, __LINE__, "convert %s: %s", schema_text, err);
    else if (sample_grammar_parse(&g, gbnf, strlen(gbnf), NULL, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "parse: %s\n%s", err, gbnf);
    dk_free(gbnf);
    return g;
}

static void check_strings(const char *schema_text, const char *const *good, const char *const *bad)
{
    sample_vocab *v = test_byte_vocab();
    sample_grammar *g = schema_grammar_text(schema_text);
    if (g && v) {
        for (size_t i = 0; good && good[i]; i++) CHECK_MSG(test_grammar_accepts(g, v, good[i]), "%s should accept %s", schema_text, good[i]);
        for (size_t i = 0; bad && bad[i]; i++) CHECK_MSG(!test_grammar_accepts(g, v, bad[i]), "%s should reject %s", schema_text, bad[i]);
    }
    sample_grammar_free(g);
    sample_vocab_free(v);
}

TEST(json_schema, integer_ranges_are_exact)
{
    static const long long ranges[][2] = {{0, 0}, {-5, 5}, {1, 9}, {7, 123}, {-123, -7}, {99, 1000}, {-1000, -99}, {0, 10}, {10, 19}, {55, 55}, {-1, 0}};
    sample_vocab *v = test_byte_vocab();
    REQUIRE(v);
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        char schema[128];
        snprintf(schema, sizeof schema, "{\"type\":\"integer\",\"minimum\":%lld,\"maximum\":%lld}", ranges[r][0], ranges[r][1]);
        sample_grammar *g = schema_grammar_text(schema);
        if (!g) continue;
        for (long long x = ranges[r][0] - 130; x <= ranges[r][1] + 130; x++) {
            char text[32];
            snprintf(text, sizeof text, "%lld", x);
            bool want = x >= ranges[r][0] && x <= ranges[r][1];
            CHECK_MSG(test_grammar_accepts(g, v, text) == want, "%s on %s: want %d", schema, text, want);
        }
        CHECK(!test_grammar_accepts(g, v, "-0"));
        CHECK(!test_grammar_accepts(g, v, "007")); /* no leading zeros */
        sample_grammar_free(g);
    }
    sample_vocab_free(v);
    /* one-sided and exclusive bounds */
    static const char *const ge[] = {"1000", "1001", "99999", "123456789", NULL}, *const ge_bad[] = {"999", "0", "-5", "01000", NULL};
    check_strings("{\"type\":\"integer\",\"minimum\":1000}", ge, ge_bad);
    static const char *const le[] = {"-7", "-8", "-123456", NULL}, *const le_bad[] = {"-6", "0", "7", NULL};
    check_strings("{\"type\":\"integer\",\"maximum\":-7}", le, le_bad);
    static const char *const ex[] = {"-1", "0", "1", "2", NULL}, *const ex_bad[] = {"-2", "3", "2.5", NULL};
    check_strings("{\"type\":\"integer\",\"exclusiveMinimum\":-1.5,\"exclusiveMaximum\":2.5}", ex, ex_bad);
}

TEST(json_schema, number_ranges_never_exceed_their_bounds)
{
    static const char *const unit_good[] = {"0", "1", "0.5", "0.25", "0.999", NULL};
    static const char *const unit_bad[] = {"1.5", "-0.5", "2", "-1", "1.0", "0.", "01", "1e0", NULL};
    check_strings("{\"type\":\"number\",\"minimum\":0,\"maximum\":1}", unit_good, unit_bad);
    static const char *const pos_good[] = {"1", "7.5", "123456.25", NULL};
    static const char *const pos_bad[] = {"0", "0.5", "-3", NULL};
    check_strings("{\"type\":\"number\",\"exclusiveMinimum\":0.5}", pos_good, pos_bad);
    static const char *const neg_good[] = {"-10", "-3", "-7", NULL};
    static const char *const neg_bad[] = {"-11", "-2", "0", "-2.5", NULL};
    check_strings("{\"type\":\"number\",\"minimum\":-10,\"maximum\":-3}", neg_good, neg_bad);
}

TEST(json_schema, strings_patterns_formats)
{
    static const char *const len_ok[] = {"\"ab\"", "\"abcd\"", "\"\\u00e9x\"", "\"\\\"\\\\\"", NULL};
    static const char *const len_bad[] = {"\"a\"", "\"abcde\"", "\"a\nb\"", "\"\\u0000x\"", "\"\\ud800x\"", NULL};
    check_strings("{\"type\":\"string\",\"minLength\":2,\"maxLength\":4}", len_ok, len_bad);
    static const char *const pat_ok[] = {"\"ABC-12\"", "\"XYZ-1234\"", NULL};
    static const char *const pat_bad[] = {"\"AB-12\"", "\"ABC-1\"", "\"ABC-12345\"", "\"abc-12\"", NULL};
    check_strings("{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}-[0-9]{2,4}$\"}", pat_ok, pat_bad);
    static const char *const un_ok[] = {"\"abbc\"", "\"xxabcyy\"", NULL};
    static const char *const un_bad[] = {"\"ac\"", "\"abx\"", NULL};
    check_strings("{\"type\":\"string\",\"pattern\":\"ab+c\"}", un_ok, un_bad);
    static const char *const cls_ok[] = {"\"a.b\"", "\"x\\\"y\"", "\"q\\\\\"", NULL};
    static const char *const cls_bad[] = {"\"abc\"", "\"a\\nb\"", NULL};
    check_strings("{\"type\":\"string\",\"pattern\":\"^.[^a-z0-9]?.$\"}", cls_ok, cls_bad);
    static const char *const date_ok[] = {"\"2024-02-29\"", NULL}, *const date_bad[] = {"\"2024-13-01\"", "\"24-01-01\"", NULL};
    check_strings("{\"type\":\"string\",\"format\":\"date\"}", date_ok, date_bad);
    static const char *const dt_ok[] = {"\"2024-01-02T03:04:05Z\"", "\"2024-01-02T23:59:59.123+02:00\"", NULL};
    static const char *const dt_bad[] = {"\"2024-01-02 03:04:05Z\"", "\"2024-01-02T24:00:00Z\"", NULL};
    check_strings("{\"type\":\"string\",\"format\":\"date-time\"}", dt_ok, dt_bad);
    static const char *const uuid_ok[] = {"\"123e4567-e89b-12d3-a456-426614174000\"", NULL}, *const uuid_bad[] = {"\"123e4567e89b12d3a456426614174000\"", NULL};
    check_strings("{\"type\":\"string\",\"format\":\"uuid\"}", uuid_ok, uuid_bad);
    static const char *const mail_ok[] = {"\"a.b@example.com\"", NULL}, *const mail_bad[] = {"\"a@b\"", "\"@b.com\"", NULL};
    check_strings("{\"type\":\"string\",\"format\":\"email\"}", mail_ok, mail_bad);
}

TEST(json_schema, objects_enums_refs)
{
    static const char *const obj_ok[] = {"{\"a\":1}", "{ \"a\": 1, \"b\": true }", "{\"b\":false}", "{}", NULL};
    static const char *const obj_bad[] = {"{\"b\":true,\"a\":1}", "{\"a\":1,}", "{,\"b\":true}", "{\"c\":1}", "{\"a\":1,  \"b\":true}", NULL};
    check_strings("{\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"boolean\"}}}", obj_ok, obj_bad);
    static const char *const req_ok[] = {"{\"a\":1,\"b\":true}", "{\"b\":true}", NULL};
    static const char *const req_bad[] = {"{\"a\":1}", "{}", NULL};
    check_strings("{\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"boolean\"}},\"required\":[\"b\"]}", req_ok, req_bad);
    /* extra keys: anything but the declared names */
    static const char *const add_ok[] = {"{\"ab\":1}", "{\"a\":true,\"x\":2}", "{\"\":3}", "{\"abc\":null,\"aa\":[1]}", NULL};
    static const char *const add_bad[] = {"{\"a\":1}", "{\"a\":true,\"a\":true}", NULL};
    check_strings("{\"properties\":{\"a\":{\"type\":\"boolean\"}},\"additionalProperties\":true}", add_ok, add_bad);
    static const char *const en_ok[] = {"\"x\"", "null", "[1,2]", "{\"k\":\"v\"}", NULL}, *const en_bad[] = {"\"y\"", "[1, 2]", NULL};
    check_strings("{\"enum\":[\"x\",null,[1,2],{\"k\":\"v\"}]}", en_ok, en_bad);
    static const char *const ref_ok[] = {"{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[]}]}", NULL};
    static const char *const ref_bad[] = {"{\"v\":1,\"kids\":[{\"w\":2}]}", NULL};
    check_strings("{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},\"required\":[\"v\"]}},\"$ref\":\"#/$defs/n\"}",
                  ref_ok, ref_bad);
    static const char *const arr_ok[] = {"[1,2]", "[ 1 , 2 , 3 ]", NULL}, *const arr_bad[] = {"[1]", "[1,2,3,4]", "[]", NULL};
    check_strings("{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":2,\"maxItems\":3}", arr_ok, arr_bad);
    static const char *const ws_ok[] = {"{\n  \"a\": 1\n}", NULL}, *const ws_bad[] = {"{\"a\":  1}", "{\n                         \"a\":1}", NULL};
    check_strings("{\"properties\":{\"a\":{\"type\":\"integer\"}}}", ws_ok, ws_bad);
}

static void expect_refused(const char *schema_text, int code, const char *needle)
{
    char err[DK_ERRLEN] = "";
    json_t *s = json_loads(schema_text, JSON_DECODE_ANY, NULL);
    REQUIRE(s);
    dk_buf b = {0};
    int rc = sample_json_schema_to_gbnf(s, "root", &b, err);
    CHECK_MSG(rc == code, "%s: rc %d (%s)", schema_text, rc, err);
    CHECK_MSG(strstr(err, needle) != NULL, "%s: '%s' lacks '%s'", schema_text, err, needle);
    CHECK(b.len == 0);
    dk_buf_free(&b);
    json_decref(s);
}

TEST(json_schema, refused_keywords_name_their_pointer)
{
    expect_refused("{\"properties\":{\"a\":{\"not\":{}}}}", DK_ERR_UNSUPPORTED, "/a: not");
    expect_refused("{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"multipleOf\":2}}", DK_ERR_UNSUPPORTED, "/items: multipleOf");
    expect_refused("{\"$ref\":\"http://example.com/x\"}", DK_ERR_UNSUPPORTED, "$ref");
    expect_refused("{\"$ref\":\"#/$defs/missing\"}", DK_ERR_UNSUPPORTED, "$ref");
    expect_refused("{\"type\":\"wat\"}", DK_ERR_FORMAT, "unknown type");
    expect_refused("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", DK_ERR_UNSUPPORTED, "backreferences");
    expect_refused("{\"type\":\"string\",\"pattern\":\"(a*)*\"}", DK_ERR_UNSUPPORTED, "empty");
    expect_refused("{\"type\":\"number\",\"minimum\":0.2,\"maximum\":0.8}", DK_ERR_UNSUPPORTED, "no integer");
    expect_refused("{\"$defs\":{\"a\":{\"allOf\":[{\"$ref\":\"#/$defs/a\"}]}},\"$ref\":\"#/$defs/a\"}", DK_ERR_UNSUPPORTED, "deep");
    expect_refused("false", DK_ERR_UNSUPPORTED, "nothing");
    char err[DK_ERRLEN];
    dk_buf b = {0};
    json_t *s = json_loads("{}", 0, NULL);
    CHECK(sample_json_schema_to_gbnf(s, "bad name", &b, err) == DK_ERR_ARG);
    /* two schemas under different names share one grammar text */
    CHECK(sample_json_schema_to_gbnf(s, "first", &b, err) == DK_OK);
    json_t *s2 = json_loads("{\"type\":\"integer\",\"minimum\":3}", 0, NULL);
    CHECK(sample_json_schema_to_gbnf(s2, "second", &b, err) == DK_OK);
    dk_buf_puts(&b, "root ::= first | second\n");
    sample_grammar *g = NULL;
    CHECK_MSG(sample_grammar_parse(&g, b.data, b.len, NULL, err) == DK_OK, "%s", err);
    sample_grammar_free(g);
    json_decref(s);
    json_decref(s2);
    dk_buf_free(&b);
}

/* ---- the corpus and the property test ---- */

typedef struct corpus_entry {
    char name[128];
    json_t *schema; /* NULL: JSON mode */
    char *gbnf;
    sample_grammar *g;
} corpus_entry;

static size_t load_corpus(corpus_entry *out, size_t cap)
{
    size_t n = 0;
    char err[DK_ERRLEN];
    memset(&out[n], 0, sizeof out[n]);
    snprintf(out[n].name, sizeof out[n].name, "json-mode");
    out[n].gbnf = dk_strdup(sample_gbnf_json());
    if (out[n].gbnf && sample_grammar_parse(&out[n].g, out[n].gbnf, strlen(out[n].gbnf), NULL, err) == DK_OK) n++;
    DIR *d = opendir(SCHEMA_DIR);
    if (!d) {
        test_fail_at(__FILE__, __LINE__, "cannot open %s (run from the repository root)", SCHEMA_DIR);
        return n;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        corpus_entry *c = &out[n];
        memset(c, 0, sizeof *c);
        dk_strlcpy(c->name, e->d_name, sizeof c->name);
        char path[512];
        snprintf(path, sizeof path, "%s/%s", SCHEMA_DIR, e->d_name);
        json_error_t jerr;
        c->schema = json_load_file(path, 0, &jerr);
        if (!c->schema) {
            test_fail_at(__FILE__, __LINE__, "%s: %s", path, jerr.text);
            continue;
        }
        c->gbnf = schema_gbnf(c->schema, err);
        if (!c->gbnf) {
            test_fail_at(__FILE__, __LINE__, "%s: %s", path, err);
            json_decref(c->schema);
            continue;
        }
        if (sample_grammar_parse(&c->g, c->gbnf, strlen(c->gbnf), NULL, err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "%s: %s\n%s", path, err, c->gbnf);
            json_decref(c->schema);
            dk_free(c->gbnf);
            continue;
        }
        n++;
    }
    closedir(d);
    return n;
}

static void free_corpus(corpus_entry *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_decref(c[i].schema);
        dk_free(c[i].gbnf);
        sample_grammar_free(c[i].g);
    }
}

TEST(json_schema, corpus_converts)
{
    corpus_entry c[64];
    size_t n = load_corpus(c, 64);
    CHECK_MSG(n >= 21, "only %zu grammars", n);
    free_corpus(c, n);
}

typedef struct walk_stats {
    int n_runs, n_finished, n_capped;
} walk_stats;

/* One walk; checks the output if it finished. */
static void walk_one(const corpus_entry *c, const test_vocab *tv, sample_matcher *m, sample_chain *chain, float *logits,
                     sample_rng *rng, int cap, walk_stats *st)
{
    char err[DK_ERRLEN];
    dk_buf text = {0};
    sample_matcher_reset(m);
    sample_chain_reset(chain);
    bool finished = false;
    for (int step = 0; step < cap; step++) {
        for (size_t i = 0; i < tv->n; i++) logits[i] = (float)(sample_rng_uniform(rng) * 8.0) + tv->bias[i];
        int32_t tok;
        int rc = sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err);
        if (rc != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "%s: step %d: %s (text so far: %s)", c->name, step, err, text.data ? text.data : "");
            break;
        }
        if (sample_matcher_accept(m, tok, err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "%s: accept: %s", c->name, err);
            break;
        }
        sample_chain_accept(chain, tok);
        if (sample_vocab_is_eog(tv->v, tok)) {
            finished = true;
            break;
        }
        size_t len;
        const char *piece = sample_vocab_piece(tv->v, tok, &len);
        dk_buf_append(&text, piece, len);
    }
    st->n_runs++;
    if (!finished) {
        st->n_capped++;
        dk_buf_free(&text);
        return;
    }
    st->n_finished++;
    json_error_t jerr;
    json_t *inst = json_loadb(text.data ? text.data : "", text.len, JSON_DECODE_ANY, &jerr);
    if (!inst) {
        test_fail_at(__FILE__, __LINE__, "%s: output does not parse (%s): %s", c->name, jerr.text, text.data);
    } else if (c->schema) {
        char why[256];
        if (!json_validate(inst, c->schema, NULL, why, sizeof why))
            test_fail_at(__FILE__, __LINE__, "%s: output does not validate (%s): %s", c->name, why, text.data);
    } else if (!json_is_object(inst)) {
        test_fail_at(__FILE__, __LINE__, "json mode: not an object: %s", text.data);
    }
    json_decref(inst);
    dk_buf_free(&text);
}

static void property_walks(const char *vocab_path, int n_seeds, int cap)
{
    test_vocab tv;
    if (!test_vocab_load(&tv, vocab_path)) return;
    corpus_entry c[64];
    size_t n = load_corpus(c, 64);
    float *logits = dk_malloc_array(tv.n, sizeof(float));
    walk_stats total = {0};
    for (size_t k = 0; k < n && logits && !test_failures(); k++) {
        walk_stats st = {0};
        for (int seed = 0; seed < n_seeds; seed++) {
            for (int greedy = 0; greedy < 2; greedy++) {
                char err[DK_ERRLEN];
                sample_params sp;
                sample_params_default(&sp);
                sp.seed = (uint64_t)seed * 7919 + k;
                if (greedy) sp.temperature = 0.0f;
                sample_chain *chain = NULL;
                sample_matcher *m = NULL;
                if (sample_chain_new(&chain, &sp, tv.n, err) != DK_OK || sample_matcher_new(&m, c[k].g, tv.v, err) != DK_OK) {
                    test_fail_at(__FILE__, __LINE__, "%s", err);
                } else {
                    sample_rng rng;
                    sample_rng_seed(&rng, sp.seed ^ 0xabcdef);
                    walk_one(&c[k], &tv, m, chain, logits, &rng, cap, &st);
                }
                sample_matcher_free(m);
                sample_chain_free(chain);
            }
        }
        total.n_runs += st.n_runs;
        total.n_finished += st.n_finished;
        total.n_capped += st.n_capped;
    }
    test_log("%s: %zu grammars, %d walks, %d finished and validated, %d cut at %d tokens", vocab_path, n,
             total.n_runs, total.n_finished, total.n_capped, cap);
    CHECK(total.n_finished * 3 >= total.n_runs);
    dk_free(logits);
    free_corpus(c, n);
    test_vocab_free(&tv);
}

TEST(json_schema, property_walks_qwen_vocab)
{
    const char *env = getenv("DUCKLING_GRAMMAR_SEEDS");
    property_walks(QWEN_VOCAB, env ? atoi(env) : 1, 160);
}

TEST(json_schema, property_walks_stories_vocab)
{
    const char *env = getenv("DUCKLING_GRAMMAR_SEEDS");
    property_walks(STORIES, env ? atoi(env) * 8 : 8, 300);
}

TEST(json_schema, allocation_failures)
{
    json_t *s = json_load_file(SCHEMA_DIR "/tool_call.json", 0, NULL);
    REQUIRE(s);
    int n_ok = 0;
    for (long k = 0; k < 5000 && n_ok < 2; k++) {
        char err[DK_ERRLEN];
        dk_buf b = {0};
        dk_alloc_fail_after(k);
        int rc = sample_json_schema_to_gbnf(s, "root", &b, err);
        dk_alloc_fail_after(-1);
        if (rc == DK_OK) n_ok++;
        else CHECK_MSG(rc == DK_ERR_NOMEM, "k=%ld rc=%d %s", k, rc, err);
        dk_buf_free(&b);
    }
    CHECK(n_ok == 2);
    json_decref(s);
}
