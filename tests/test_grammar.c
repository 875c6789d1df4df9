/*
 * test_grammar.c: GBNF parsing and grammar matching (suite `grammar`): parser errors with
 * their positions, sentences accepted and rejected (multi-byte UTF-8 split across tokens
 * included), token masks against a per-token check on the real Qwen and stories260K
 * vocabularies, greedy and temperature sampling under a grammar, allocation failures.
 * JSON schemas and the random-walk property tests are in test_json_schema.c.
 */
#include "test.h"

#include <stdlib.h>

#include "base/base.h"
#include "kit_vocab.h"
#include "sample/sample.h"

#define QWEN_VOCAB "tokenizer/ggml-vocab-qwen2.gguf"
#define STORIES "forward/stories260K/stories260K.F32.gguf"

static sample_grammar *parse_ok(const char *gbnf)
{
    sample_grammar *g = NULL;
    char err[DK_ERRLEN];
    if (sample_grammar_parse(&g, gbnf, strlen(gbnf), NULL, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "%s", err);
    return g;
}

/* Whether the grammar accepts text as a whole sentence (fed in chunks of `chunk` bytes). */
static bool matches(const sample_grammar *g, const sample_vocab *v, const char *text, size_t chunk)
{
    sample_matcher *m = NULL;
    char err[DK_ERRLEN];
    if (sample_matcher_new(&m, g, v, err) != DK_OK) return false;
    size_t n = strlen(text);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        ok = sample_matcher_accept_bytes(m, text + i, k, err) == DK_OK;
    }
    ok = ok && sample_matcher_accepting(m);
    sample_matcher_free(m);
    return ok;
}

static void expect_error(const char *gbnf, int code, const char *needle)
{
    sample_grammar *g = NULL;
    char err[DK_ERRLEN] = "";
    int rc = sample_grammar_parse(&g, gbnf, strlen(gbnf), NULL, err);
    CHECK_MSG(rc == code, "grammar %s: rc %d, want %d (%s)", gbnf, rc, code, err);
    CHECK_MSG(strstr(err, needle) != NULL, "grammar %s: error '%s' lacks '%s'", gbnf, err, needle);
    CHECK(g == NULL);
    sample_grammar_free(g);
}

TEST(grammar, parse_errors_have_positions)
{
    expect_error("root ::= foo", DK_ERR_FORMAT, "line 1, column 10: undefined rule 'foo'");
    expect_error("a ::= \"x\"\n", DK_ERR_FORMAT, "no start rule named 'root'");
    expect_error("root ::= \"x\"\nroot ::= \"y\"", DK_ERR_FORMAT, "line 2, column 1");
    expect_error("root ::= \"abc", DK_ERR_FORMAT, "unterminated");
    expect_error("root ::= [a-", DK_ERR_FORMAT, "line 1");
    expect_error("root ::= ( \"a\" ", DK_ERR_FORMAT, "expected ')'");
    expect_error("root ::= \"a\"\n  x ::= y", DK_ERR_FORMAT, "line 2, column 9: undefined rule 'y'");
    expect_error("root ::= root \"a\" | \"b\"", DK_ERR_FORMAT, "left recursion in rule 'root'");
    expect_error("root ::= a\na ::= b \"x\"\nb ::= \"\" | a", DK_ERR_FORMAT, "left recursion");
    expect_error("root ::= (\"a\"?)*", DK_ERR_FORMAT, "left recursion");
    expect_error("root ::= * \"a\"", DK_ERR_FORMAT, "line 1, column 10: repetition without");
    expect_error("root ::= \"a\"{3,2}", DK_ERR_FORMAT, "n < m");
    expect_error("root ::= \"a\"{1000000}", DK_ERR_LIMIT, "too large");
    expect_error("root ::= \"a\"{100000}{100000}", DK_ERR_FORMAT, "repetition without");
    expect_error("root ::= [z-a]", DK_ERR_FORMAT, "out of order");
    expect_error("root ::= \"\\q\"", DK_ERR_FORMAT, "unknown escape");
    expect_error("root ::= \"a\" ::=", DK_ERR_FORMAT, "line 1, column 14");
    expect_error("root ::= \"\xff\"", DK_ERR_FORMAT, "invalid UTF-8");
    expect_error("::= \"a\"", DK_ERR_FORMAT, "expected a rule name");
    char deep[400] = "root ::= ";
    memset(deep + 9, '(', 300);
    deep[309] = 0;
    expect_error(deep, DK_ERR_LIMIT, "nested too deeply");
    /* fine: comments, rules used before definition, continuation lines, empty alternatives */
    sample_grammar *g = parse_ok("# c\nroot ::= a | b # trailing\n  | \"c\"\na ::= \"a\" ( \"x\"\n | ) \nb ::= [b]\n");
    CHECK(g != NULL);
    sample_grammar_free(g);
}

typedef struct match_case {
    const char *text;
    bool ok;
} match_case;

static void check_cases(const char *gbnf, const match_case *cases, size_t n)
{
    sample_vocab *v = test_byte_vocab();
    sample_grammar *g = parse_ok(gbnf);
    if (!g || !v) goto done;
    for (size_t i = 0; i < n; i++)
        for (size_t chunk = 1; chunk <= 3; chunk += 2)
            CHECK_MSG(matches(g, v, cases[i].text, chunk) == cases[i].ok, "grammar %s on \"%s\" (chunk %zu): want %d",
                      gbnf, cases[i].text, chunk, cases[i].ok);
done:
    sample_grammar_free(g);
    sample_vocab_free(v);
}

TEST(grammar, accepts_and_rejects)
{
    static const match_case lit[] = {{"hello", true}, {"hell", false}, {"hello!", false}, {"", false}};
    check_cases("root ::= \"hello\"", lit, 4);
    static const match_case alt[] = {{"cat", true}, {"dog", true}, {"cow", false}, {"catdog", false}};
    check_cases("root ::= \"cat\" | \"dog\"", alt, 4);
    static const match_case rep[] = {{"", false}, {"a", false}, {"aa", true}, {"aaaa", true}, {"aaaaa", false}, {"aab", false}};
    check_cases("root ::= \"a\"{2,4}", rep, 6);
    static const match_case star[] = {{"", true}, {"ababab", true}, {"aba", false}, {"b", false}};
    check_cases("root ::= (\"a\" \"b\")*", star, 4);
    static const match_case plus[] = {{"", false}, {"x1", true}, {"x123", true}, {"x", false}, {"1", false}};
    check_cases("root ::= \"x\" [0-9]+", plus, 5);
    static const match_case opt[] = {{"ac", true}, {"abc", true}, {"abbc", false}};
    check_cases("root ::= \"a\" \"b\"? \"c\"", opt, 3);
    static const match_case lits[] = {{"abab", true}, {"ababab", true}, {"ab", false}, {"abababab", false}, {"aba", false}};
    check_cases("root ::= \"ab\"{2,3}", lits, 5);
    static const match_case least[] = {{"ab", false}, {"abbb", true}, {"abbbbbbbbb", true}};
    check_cases("root ::= \"a\" \"b\"{3,}", least, 3);
    static const match_case neg[] = {{"\"abc\"", true}, {"\"a\"b\"", false}, {"\"\"", true}, {"\"\xc3\xa9\"", true}};
    check_cases("root ::= \"\\\"\" [^\"]* \"\\\"\"", neg, 4);
    static const match_case any[] = {{"x", true}, {"\xe2\x82\xac", true}, {"xy", false}, {"\xe2\x82", false}};
    check_cases("root ::= .", any, 4);
    static const match_case esc[] = {{"\n\t\\A\xc3\xa9\xf0\x9f\x98\x80", true}, {"\n\t\\A\xc3\xa9", false}};
    check_cases("root ::= \"\\n\\t\\\\\\x41\\u00e9\\U0001F600\"", esc, 2);
    static const match_case rec[] = {{"()", true}, {"(())", true}, {"(()())", true}, {"(()", false}, {")(", false}};
    check_cases("root ::= p+\np ::= \"(\" p* \")\"", rec, 5);
    static const match_case cls[] = {{"a-", true}, {"z]", true}, {"_^", true}, {"A-", false}};
    check_cases("root ::= [a-z_] [\\-\\]^]", cls, 4);
    /* invalid UTF-8 and surrogates never match */
    static const match_case bad[] = {{"\xc3", false}, {"\xed\xa0\x80", false}, {"\xc0\x80", false}, {"\xff", false}, {"\xe4\xb8\xad", true}};
    check_cases("root ::= [^a]", bad, 5);
    /* an ambiguous grammar: the stacks are deduplicated, not multiplied */
    static const match_case amb[] = {{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true}, {"aaab", false}};
    check_cases("root ::= (\"a\" | \"a\" | [a] | x)*\nx ::= \"a\" | \"a\"", amb, 2);
}

TEST(grammar, utf8_split_across_tokens)
{
    /* tokens that are pieces of one character: "\xe4" "\xb8" "\xad" make 中 */
    const char *pieces[] = {"\xe4", "\xb8", "\xad", "\xe4\xb8", "\xad\"", "\"", "a", ""};
    size_t lens[] = {1, 1, 1, 2, 2, 1, 1, 0};
    bool eog[] = {false, false, false, false, false, false, false, true};
    sample_vocab *v = NULL;
    char err[DK_ERRLEN];
    REQUIRE(sample_vocab_new(&v, 8, pieces, lens, eog, err) == DK_OK);
    sample_grammar *g = parse_ok("root ::= \"\\\"\" [\\u4e00-\\u4e2f]+ \"\\\"\"");
    sample_matcher *m = NULL;
    REQUIRE(g && sample_matcher_new(&m, g, v, err) == DK_OK);
    CHECK(sample_matcher_allows(m, 5));
    CHECK(!sample_matcher_allows(m, 0));
    REQUIRE(sample_matcher_accept(m, 5, err) == DK_OK);
    CHECK(sample_matcher_allows(m, 0));
    CHECK(sample_matcher_allows(m, 3));
    CHECK(!sample_matcher_allows(m, 1));
    CHECK(!sample_matcher_allows(m, 6));
    CHECK(!sample_matcher_allows(m, 5)); /* empty string not allowed: + */
    REQUIRE(sample_matcher_accept(m, 0, err) == DK_OK);
    CHECK(sample_matcher_allows(m, 1));
    CHECK(!sample_matcher_allows(m, 2));
    CHECK(!sample_matcher_allows(m, 5));
    CHECK(!sample_matcher_accepting(m));
    float logits[8] = {0};
    REQUIRE(sample_matcher_apply(m, logits, err) == DK_OK);
    for (int i = 0; i < 8; i++) CHECK_MSG((isinf(logits[i]) != 0) == (i != 1), "token %d", i);
    REQUIRE(sample_matcher_accept(m, 1, err) == DK_OK);
    CHECK(sample_matcher_accept(m, 1, err) == DK_ERR_ARG);
    REQUIRE(sample_matcher_accept(m, 4, err) == DK_OK); /* completes 中 and closes */
    CHECK(sample_matcher_accepting(m));
    CHECK(sample_matcher_finished(m));
    CHECK(sample_matcher_allows(m, 7));
    CHECK(!sample_matcher_allows(m, 6));
    REQUIRE(sample_matcher_accept(m, 7, err) == DK_OK);
    sample_matcher_reset(m);
    CHECK(!sample_matcher_allows(m, 7));
    CHECK(sample_matcher_accept(m, 7, err) == DK_ERR_ARG);
    sample_matcher_free(m);
    sample_grammar_free(g);
    sample_vocab_free(v);
}

/* Checks the mask of the current state against a token-by-token check; returns the number
 * of allowed tokens (or -1 on error). */
static long check_mask(sample_matcher *m, size_t n_vocab, float *logits)
{
    char err[DK_ERRLEN];
    for (size_t i = 0; i < n_vocab; i++) logits[i] = 0.0f;
    int rc = sample_matcher_apply(m, logits, err);
    if (rc == DK_ERR_LIMIT) return 0;
    if (rc != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "apply: %s", err);
        return -1;
    }
    long n_allowed = 0, n_bad = 0;
    for (size_t i = 0; i < n_vocab; i++) {
        bool masked = isinf(logits[i]) != 0;
        bool allowed = sample_matcher_allows(m, (int32_t)i);
        n_allowed += allowed;
        if (masked == allowed && n_bad++ < 5) test_fail_at(__FILE__, __LINE__, "token %zu: mask %d, per-token %d", i, !masked, allowed);
    }
    return n_bad ? -1 : n_allowed;
}

static void masks_along_walks(const sample_vocab *v, const char *gbnf, int n_walks, int n_steps)
{
    sample_grammar *g = parse_ok(gbnf);
    size_t n = v ? sample_vocab_n(v) : 0;
    float *logits = dk_malloc_array(n ? n : 1, sizeof(float));
    float *scores = dk_malloc_array(n ? n : 1, sizeof(float));
    sample_matcher *m = NULL;
    sample_chain *chain = NULL;
    char err[DK_ERRLEN];
    sample_params sp;
    sample_params_default(&sp);
    sp.top_k = 0;
    sp.top_p = 1.0f;
    if (!g || !v || !logits || !scores || sample_matcher_new(&m, g, v, err) != DK_OK ||
        sample_chain_new(&chain, &sp, n, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "setup: %s", err);
        goto done;
    }
    sample_rng rng;
    sample_rng_seed(&rng, 7);
    for (int w = 0; w < n_walks && !test_failures(); w++) {
        sample_matcher_reset(m);
        for (int s = 0; s < n_steps; s++) {
            long n_allowed = check_mask(m, n, logits);
            if (n_allowed <= 0) {
                CHECK(n_allowed == 0);
                break;
            }
            for (size_t i = 0; i < n; i++) scores[i] = (float)(sample_rng_uniform(&rng) * 10.0);
            int32_t tok;
            if (sample_chain_sample_grammar(chain, scores, m, NULL, 0, &tok, err) != DK_OK) {
                test_fail_at(__FILE__, __LINE__, "sample: %s", err);
                break;
            }
            CHECK(isfinite(logits[tok]));
            if (sample_matcher_accept(m, tok, err) != DK_OK) {
                test_fail_at(__FILE__, __LINE__, "accept %d: %s", (int)tok, err);
                break;
            }
            if (!sample_matcher_allows(m, 0) && sample_matcher_finished(m)) break;
        }
    }
done:
    sample_chain_free(chain);
    sample_matcher_free(m);
    sample_grammar_free(g);
    dk_free(logits);
    dk_free(scores);
}

static const char arith_gbnf[] =
    "root ::= expr\n"
    "expr ::= term ( [-+*/] ws term )*\n"
    "term ::= [0-9]+ ws | \"(\" ws expr \")\" ws | \"\\\"\" [^\"\\n]{0,12} \"\\\"\" ws\n"
    "ws ::= \" \"?\n";

TEST(grammar, masks_match_per_token_check_qwen)
{
    engine_model *model;
    const sample_vocab *v = kit_sample_vocab(QWEN_VOCAB, &model);
    REQUIRE(v != NULL);
    CHECK_EQ_INT(sample_vocab_n(v), 151936);
    masks_along_walks(v, sample_gbnf_json(), 3, 12);
    masks_along_walks(v, arith_gbnf, 2, 12);
    masks_along_walks(v, "root ::= [\\u4e00-\\u9fff]{2,6} \"。\"", 2, 8);
    engine_model_free(model);
}

TEST(grammar, masks_match_per_token_check_stories)
{
    engine_model *model;
    const sample_vocab *v = kit_sample_vocab(STORIES, &model);
    REQUIRE(v != NULL);
    masks_along_walks(v, sample_gbnf_json(), 6, 40);
    masks_along_walks(v, arith_gbnf, 6, 40);
    masks_along_walks(v, "root ::= (\"Once\" | \"Lily\") \" \" [a-z ]{1,30} \".\"", 6, 40);
    engine_model_free(model);
}

/* Greedy: the best allowed token, whatever the logits; the shortcut over the first
 * candidates and the full mask agree. */
TEST(grammar, greedy_picks_best_allowed)
{
    sample_vocab *v = test_byte_vocab();
    sample_grammar *g = parse_ok("root ::= \"ab\" [0-9]");
    sample_matcher *m = NULL;
    sample_chain *chain = NULL;
    char err[DK_ERRLEN];
    sample_params sp;
    sample_params_default(&sp);
    sp.temperature = 0.0f;
    REQUIRE(v && g && sample_matcher_new(&m, g, v, err) == DK_OK && sample_chain_new(&chain, &sp, 257, err) == DK_OK);
    float logits[257];
    for (int i = 0; i < 257; i++) logits[i] = (float)i; /* everything prefers high bytes */
    int32_t tok = -1;
    REQUIRE(sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err) == DK_OK);
    CHECK_EQ_INT(tok, 'a');
    int32_t also[] = {200};
    REQUIRE(sample_chain_sample_grammar(chain, logits, m, also, 1, &tok, err) == DK_OK);
    CHECK_EQ_INT(tok, 200); /* EOG and 201..255 rank higher but are not allowed */
    REQUIRE(sample_matcher_accept(m, 'a', err) == DK_OK);
    REQUIRE(sample_matcher_accept(m, 'b', err) == DK_OK);
    logits['3'] = logits['7'] = 1000.0f;
    REQUIRE(sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err) == DK_OK);
    CHECK_EQ_INT(tok, '3'); /* ties: lowest id */
    REQUIRE(sample_matcher_accept(m, '3', err) == DK_OK);
    CHECK(sample_matcher_finished(m));
    REQUIRE(sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err) == DK_OK);
    CHECK_EQ_INT(tok, 256);
    REQUIRE(sample_matcher_accept(m, 256, err) == DK_OK);
    CHECK(sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err) == DK_ERR_LIMIT);
    sample_chain_free(chain);
    sample_matcher_free(m);
    sample_grammar_free(g);
    sample_vocab_free(v);
}

/* With a grammar that allows everything, temperature sampling draws exactly what the plain
 * chain draws (same filters, same random numbers). */
TEST(grammar, temperature_matches_plain_chain_when_all_allowed)
{
    sample_vocab *v = test_byte_vocab();
    sample_grammar *g = parse_ok("root ::= [\\x00-\\x7f]*");
    sample_matcher *m = NULL;
    sample_chain *a = NULL, *b = NULL;
    char err[DK_ERRLEN];
    sample_params sp;
    sample_params_default(&sp);
    sp.seed = 11;
    REQUIRE(v && g && sample_matcher_new(&m, g, v, err) == DK_OK);
    REQUIRE(sample_chain_new(&a, &sp, 128, err) == DK_OK && sample_chain_new(&b, &sp, 257, err) == DK_OK);
    sample_rng rng;
    sample_rng_seed(&rng, 3);
    for (int step = 0; step < 200; step++) {
        float logits[257];
        for (int i = 0; i < 257; i++) logits[i] = i < 128 ? (float)(sample_rng_uniform(&rng) * 4.0) : 50.0f;
        logits[256] = -INFINITY; /* EOG is allowed (the grammar accepts); top-k drops it */
        int32_t want = sample_chain_sample(a, logits), got = -1;
        REQUIRE(sample_chain_sample_grammar(b, logits, m, NULL, 0, &got, err) == DK_OK);
        CHECK_EQ_INT(got, want);
        sample_chain_accept(a, want);
        sample_chain_accept(b, got);
        REQUIRE(sample_matcher_accept(m, got, err) == DK_OK);
    }
    sample_chain_free(a);
    sample_chain_free(b);
    sample_matcher_free(m);
    sample_grammar_free(g);
    sample_vocab_free(v);
}

TEST(grammar, vocab_size_mismatch_and_bad_tokens)
{
    sample_vocab *v = test_byte_vocab();
    sample_grammar *g = parse_ok("root ::= \"a\"");
    sample_matcher *m = NULL;
    sample_chain *chain = NULL;
    char err[DK_ERRLEN];
    sample_params sp;
    sample_params_default(&sp);
    REQUIRE(v && g && sample_matcher_new(&m, g, v, err) == DK_OK && sample_chain_new(&chain, &sp, 100, err) == DK_OK);
    float logits[100] = {0};
    int32_t tok;
    CHECK(sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err) == DK_ERR_ARG);
    CHECK(!sample_matcher_allows(m, -1));
    CHECK(!sample_matcher_allows(m, 257));
    CHECK(sample_matcher_accept(m, 1000, err) == DK_ERR_ARG);
    sample_chain_free(chain);
    sample_matcher_free(m);
    sample_grammar_free(g);
    sample_vocab_free(v);
}

/* Every allocation of parse, vocab, matcher and a few steps fails in turn: errors, no leaks
 * (ASan), no crashes. */
TEST(grammar, allocation_failures)
{
    const char *gbnf = sample_gbnf_json();
    const char *text = "{\"a\": [1, 2.5e3, \"x\\u00e9\"], \"b\": {\"c\": null}}";
    int n_ok = 0;
    for (long k = 0; k < 2000; k++) {
        char err[DK_ERRLEN];
        dk_alloc_fail_after(k);
        sample_grammar *g = NULL;
        sample_vocab *v = NULL;
        sample_matcher *m = NULL;
        int rc = sample_grammar_parse(&g, gbnf, strlen(gbnf), NULL, err);
        if (rc == DK_OK) {
            const char *pieces[] = {"{", "\"", "a", "}", ":", " ", "1", ""};
            size_t lens[] = {1, 1, 1, 1, 1, 1, 1, 0};
            bool eog[] = {0, 0, 0, 0, 0, 0, 0, 1};
            rc = sample_vocab_new(&v, 8, pieces, lens, eog, err);
        }
        if (rc == DK_OK) rc = sample_matcher_new(&m, g, v, err);
        if (rc == DK_OK) rc = sample_matcher_accept_bytes(m, text, strlen(text), err);
        if (rc == DK_OK) {
            float logits[8] = {0};
            rc = sample_matcher_apply(m, logits, err);
        }
        dk_alloc_fail_after(-1);
        if (rc != DK_OK) CHECK_MSG(rc == DK_ERR_NOMEM || rc == DK_ERR_LIMIT, "k=%ld rc=%d %s", k, rc, err);
        else n_ok++;
        sample_matcher_free(m);
        sample_vocab_free(v);
        sample_grammar_free(g);
        if (n_ok >= 3) break;
    }
    CHECK(n_ok >= 3);
}
