/*
 * test_sample.c: the samplers (determinism, distribution, each filter on hand-made logits,
 * penalties, the chain) and the stop-string matcher over chunked text.
 */
#include "test.h"

#include "sample/sample.h"

TEST(sample, rng_is_deterministic)
{
    sample_rng a, b, c;
    sample_rng_seed(&a, 42);
    sample_rng_seed(&b, 42);
    sample_rng_seed(&c, 43);
    int differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = sample_rng_next(&a), y = sample_rng_next(&b), z = sample_rng_next(&c);
        CHECK(x == y);
        differ += x != z;
    }
    CHECK(differ > 990);
    /* fixed values: the same on every machine (xoshiro256** seeded by splitmix64) */
    sample_rng_seed(&a, 0);
    uint64_t first = sample_rng_next(&a);
    sample_rng_seed(&a, 0);
    CHECK(sample_rng_next(&a) == first);
    for (int i = 0; i < 10000; i++) {
        double u = sample_rng_uniform(&a);
        REQUIRE(u >= 0.0 && u < 1.0);
    }
}

TEST(sample, rng_known_values)
{
    /* splitmix64(0) first output is 0xe220a8397b1dcdaf (a published test value) */
    sample_rng r;
    sample_rng_seed(&r, 0);
    CHECK(r.s[0] == 0xe220a8397b1dcdafull);
}

TEST(sample, argmax_lowest_id_on_ties)
{
    float l[] = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
    CHECK_EQ_INT(sample_argmax(l, 5), 1);
    sample_cand buf[5];
    sample_cands c = {buf, 0, false};
    sample_cands_from_logits(&c, l, 5);
    CHECK_EQ_INT(sample_greedy(&c), 1);
    sample_cands_sort(&c);
    CHECK_EQ_INT(c.data[0].id, 1);
    CHECK_EQ_INT(c.data[1].id, 3);
    CHECK_EQ_INT(c.data[4].id, 2);
    CHECK_EQ_INT(sample_greedy(&c), 1);
}

TEST(sample, top_k_keeps_k_best)
{
    float l[] = {0.1f, 5.0f, 2.0f, 4.0f, 3.0f};
    sample_cand buf[5];
    sample_cands c = {buf, 0, false};
    sample_cands_from_logits(&c, l, 5);
    sample_top_k(&c, 3);
    REQUIRE(c.n == 3);
    CHECK_EQ_INT(c.data[0].id, 1);
    CHECK_EQ_INT(c.data[1].id, 3);
    CHECK_EQ_INT(c.data[2].id, 4);
    sample_cands_from_logits(&c, l, 5);
    sample_top_k(&c, 0); /* off */
    CHECK_EQ_INT(c.n, 5);
    sample_top_k(&c, 100);
    CHECK_EQ_INT(c.n, 5);
}

TEST(sample, top_p_keeps_the_nucleus)
{
    /* probabilities 0.5, 0.25, 0.125, 0.125 */
    float l[] = {logf(0.125f), logf(0.5f), logf(0.125f), logf(0.25f)};
    sample_cand buf[4];
    sample_cands c = {buf, 0, false};
    sample_cands_from_logits(&c, l, 4);
    sample_top_p(&c, 0.7f, 1);
    REQUIRE(c.n == 2);
    CHECK_EQ_INT(c.data[0].id, 1);
    CHECK_EQ_INT(c.data[1].id, 3);
    sample_cands_from_logits(&c, l, 4);
    sample_top_p(&c, 0.3f, 1);
    CHECK_EQ_INT(c.n, 1);
    sample_cands_from_logits(&c, l, 4);
    sample_top_p(&c, 0.3f, 3); /* min_keep */
    CHECK_EQ_INT(c.n, 3);
    sample_cands_from_logits(&c, l, 4);
    sample_top_p(&c, 1.0f, 1); /* off */
    CHECK_EQ_INT(c.n, 4);
}

TEST(sample, min_p_relative_to_best)
{
    /* probabilities relative to the best: 1, 0.5, 0.09, 0.2 */
    float l[] = {0.0f, logf(0.5f), logf(0.09f), logf(0.2f)};
    sample_cand buf[4];
    sample_cands c = {buf, 0, false};
    sample_cands_from_logits(&c, l, 4);
    sample_min_p(&c, 0.1f, 1);
    REQUIRE(c.n == 3);
    CHECK_EQ_INT(c.data[2].id, 3);
    sample_cands_from_logits(&c, l, 4);
    sample_min_p(&c, 0.6f, 1);
    CHECK_EQ_INT(c.n, 1);
    sample_cands_from_logits(&c, l, 4);
    sample_min_p(&c, 0.0f, 1);
    CHECK_EQ_INT(c.n, 4);
}

TEST(sample, temperature_scales_and_zero_is_greedy)
{
    float l[] = {1.0f, 2.0f, -4.0f};
    sample_cand buf[3];
    sample_cands c = {buf, 0, false};
    sample_cands_from_logits(&c, l, 3);
    sample_temperature(&c, 0.5f);
    CHECK_NEAR(c.data[0].logit, 2.0, 1e-6);
    CHECK_NEAR(c.data[2].logit, -8.0, 1e-6);
    sample_cands_from_logits(&c, l, 3);
    sample_temperature(&c, 0.0f);
    REQUIRE(c.n == 1);
    CHECK_EQ_INT(c.data[0].id, 1);
}

TEST(sample, penalties_follow_llama_cpp)
{
    float l[] = {2.0f, -2.0f, 1.0f, 4.0f};
    sample_cand buf[4];
    sample_cands c = {buf, 0, false};
    int32_t last[] = {0, 1, 0, 7 /* not a candidate: ignored */};
    sample_cands_from_logits(&c, l, 4);
    sample_penalties(&c, last, 4, 2.0f, 0.0f, 0.0f);
    CHECK_NEAR(c.data[0].logit, 1.0, 1e-6);  /* positive: divided */
    CHECK_NEAR(c.data[1].logit, -4.0, 1e-6); /* negative: multiplied */
    CHECK_NEAR(c.data[2].logit, 1.0, 1e-6);  /* not in history */
    sample_cands_from_logits(&c, l, 4);
    sample_penalties(&c, last, 4, 1.0f, 0.5f, 0.25f);
    CHECK_NEAR(c.data[0].logit, 2.0 - 2 * 0.5 - 0.25, 1e-6); /* count 2 */
    CHECK_NEAR(c.data[1].logit, -2.0 - 0.5 - 0.25, 1e-6);    /* count 1 */
    CHECK_NEAR(c.data[3].logit, 4.0, 1e-6);
}

TEST(sample, dist_matches_softmax)
{
    float l[] = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f};
    double z = 0;
    for (int i = 0; i < 5; i++) z += exp(l[i]);
    sample_rng rng;
    sample_rng_seed(&rng, 1234);
    sample_cand buf[5];
    int counts[5] = {0};
    const int n = 200000;
    for (int d = 0; d < n; d++) {
        sample_cands c = {buf, 0, false};
        sample_cands_from_logits(&c, l, 5);
        int32_t t = sample_dist(&c, &rng);
        REQUIRE(t >= 0 && t < 5);
        counts[t]++;
    }
    for (int i = 0; i < 5; i++) {
        double p = exp(l[i]) / z;
        double sd = sqrt(p * (1 - p) / n);
        CHECK_MSG(fabs(counts[i] / (double)n - p) < 5 * sd, "token %d: %g vs %g", i, counts[i] / (double)n, p);
    }
}

TEST(sample, chain_is_deterministic_and_filters)
{
    enum { V = 50 };
    float l[V];
    for (int i = 0; i < V; i++) l[i] = (float)((i * 37) % 11) * 0.3f;
    sample_params p;
    sample_params_default(&p);
    p.seed = 99;
    p.temperature = 1.5f;
    p.top_k = 3;
    p.top_p = 1.0f;
    char err[DK_ERRLEN];
    sample_chain *a = NULL, *b = NULL;
    REQUIRE(sample_chain_new(&a, &p, V, err) == DK_OK);
    REQUIRE(sample_chain_new(&b, &p, V, err) == DK_OK);
    /* top-3 ids of l: logits 3.0 at ids with (i*37)%11 == 10 */
    sample_cand buf[V];
    sample_cands c = {buf, 0, false};
    sample_cands_from_logits(&c, l, V);
    sample_top_k(&c, 3);
    int32_t allowed[3] = {c.data[0].id, c.data[1].id, c.data[2].id};
    int seen[3] = {0};
    for (int i = 0; i < 300; i++) {
        int32_t x = sample_chain_sample(a, l), y = sample_chain_sample(b, l);
        CHECK(x == y);
        int ok = 0;
        for (int k = 0; k < 3; k++) if (x == allowed[k]) { ok = 1; seen[k]++; }
        CHECK(ok);
    }
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    sample_chain_reset(a);
    sample_chain_reset(b);
    CHECK(sample_chain_sample(a, l) == sample_chain_sample(b, l));
    sample_chain_free(a);
    sample_chain_free(b);

    /* temperature 0: greedy, even with penalties the history changes the argmax */
    p.temperature = 0.0f;
    p.repeat_penalty = 100.0f;
    REQUIRE(sample_chain_new(&a, &p, V, err) == DK_OK);
    int32_t g = sample_chain_sample(a, l);
    CHECK_EQ_INT(g, sample_argmax(l, V));
    sample_chain_accept(a, g);
    CHECK(sample_chain_sample(a, l) != g);
    sample_chain_free(a);
    CHECK(sample_chain_new(&a, &p, 0, err) == DK_ERR_ARG);
}

/* Feeds text in chunks of `chunk` bytes and returns what came out. */
static char *stop_run(const char *const *stops, size_t n_stops, const char *text, size_t chunk, int *hit)
{
    char err[DK_ERRLEN];
    sample_stop *s = NULL;
    if (sample_stop_new(&s, stops, n_stops, err) != DK_OK) return NULL;
    dk_buf out = {0};
    size_t n = strlen(text);
    *hit = 0;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        if (sample_stop_feed(s, text + i, k, &out) == 1) *hit = 1;
    }
    sample_stop_flush(s, &out);
    sample_stop_free(s);
    dk_buf_putc(&out, 0);
    return dk_buf_detach(&out);
}

TEST(sample, stop_strings_across_chunks)
{
    const char *stops[] = {"<|end|>", "\n\nUser:"};
    const char *text = "Hello <|en world <|end|> ignored";
    for (size_t chunk = 1; chunk <= 8; chunk++) {
        int hit;
        char *o = stop_run(stops, 2, text, chunk, &hit);
        REQUIRE(o);
        CHECK_EQ_STR(o, "Hello <|en world ");
        CHECK(hit);
        dk_free(o);
        o = stop_run(stops, 2, "a\n\nUse b\n\nUser: c", chunk, &hit);
        CHECK_EQ_STR(o, "a\n\nUse b");
        CHECK(hit);
        dk_free(o);
        o = stop_run(stops, 2, "no stop here <|e", chunk, &hit);
        CHECK_EQ_STR(o, "no stop here <|e"); /* flushed at the end */
        CHECK(!hit);
        dk_free(o);
    }
}

TEST(sample, stop_holds_back_only_possible_prefixes)
{
    const char *stops[] = {"STOP"};
    char err[DK_ERRLEN];
    sample_stop *s = NULL;
    REQUIRE(sample_stop_new(&s, stops, 1, err) == DK_OK);
    dk_buf out = {0};
    CHECK(sample_stop_feed(s, "abcST", 5, &out) == 0);
    CHECK_EQ_INT(out.len, 3); /* "ST" held back */
    CHECK(sample_stop_feed(s, "x", 1, &out) == 0);
    CHECK_EQ_INT(out.len, 6); /* "STx" is not a prefix: released */
    CHECK(sample_stop_feed(s, "S", 1, &out) == 0);
    CHECK(sample_stop_feed(s, "TOP and more", 12, &out) == 1);
    CHECK(sample_stop_hit(s));
    CHECK(sample_stop_feed(s, "zzz", 3, &out) == 1);
    CHECK_EQ_INT(out.len, 6);
    CHECK(memcmp(out.data, "abcSTx", 6) == 0);
    dk_buf_free(&out);
    sample_stop_free(s);

    /* no stop strings: everything passes straight through */
    REQUIRE(sample_stop_new(&s, NULL, 0, err) == DK_OK);
    CHECK(sample_stop_feed(s, "abc", 3, &out) == 0);
    CHECK_EQ_INT(out.len, 3);
    dk_buf_free(&out);
    sample_stop_free(s);
}
