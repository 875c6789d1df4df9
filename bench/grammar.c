/*
 * bench/grammar.c: what grammar-constrained sampling costs per generated token on the real
 * Qwen vocabulary (151,936 tokens), under JSON mode and a few JSON schemas.
 *
 * For each grammar and sampler (greedy, temperature 0.8 with top-k 40 / top-p 0.9), it
 * generates with seeded random logits, timing sample_chain_sample_grammar +
 * sample_matcher_accept per step, and the plain sample_chain_sample on the same logits as
 * the baseline; a finished sentence restarts the matcher. Prints per-step average, p99 and
 * worst microseconds and the grammar's overhead over the plain chain. Random logits are the
 * hard case: the grammar rejects most of what they prefer, so masks are computed often.
 * Not a test: `make bench` builds it as $(BUILD)/bench-grammar.
 *
 *   build/bench-grammar [-n STEPS] [-s SEED]      (vocabulary from $DUCKLING_KIT, default ../shared/kit)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "engine/engine.h"
#include "sample/sample.h"

static const char *bench_schemas[][2] = {
    {"person", "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":40},"
               "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},\"email\":{\"type\":\"string\",\"format\":\"email\"},"
               "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":5}},\"required\":[\"name\",\"age\"]}"},
    {"tool-call", "{\"type\":\"object\",\"properties\":{\"name\":{\"enum\":[\"get_weather\",\"search\",\"send_email\"]},"
                  "\"arguments\":{\"type\":\"object\",\"properties\":{\"location\":{\"type\":\"string\"},"
                  "\"unit\":{\"enum\":[\"celsius\",\"fahrenheit\"]},\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":14}},"
                  "\"required\":[\"location\"],\"additionalProperties\":false}},\"required\":[\"name\",\"arguments\"]}"},
    {"events", "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"format\":\"uuid\"},"
               "\"when\":{\"type\":\"string\",\"format\":\"date-time\"},\"score\":{\"type\":\"number\"},"
               "\"kind\":{\"anyOf\":[{\"type\":\"null\"},{\"type\":\"string\",\"pattern\":\"^[a-z]{2,8}(-[a-z]+)?$\"}]}},"
               "\"required\":[\"id\",\"when\",\"score\",\"kind\"]},\"minItems\":1,\"maxItems\":4}"},
};

typedef struct bench_stats {
    double sum_us, worst_us, plain_sum_us;
    double *samples; /* (n) */
    size_t n;
    size_t n_finished;
} bench_stats;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int bench_run(const char *label, const sample_grammar *g, const sample_vocab *v,
                     float temperature, size_t n_steps, uint64_t seed)
{
    char err[DK_ERRLEN];
    size_t n_vocab = sample_vocab_n(v);
    sample_params sp;
    sample_params_default(&sp);
    sp.temperature = temperature;
    sp.seed = seed;
    sample_chain *chain = NULL, *plain = NULL;
    sample_matcher *m = NULL;
    float *logits = dk_malloc_array(n_vocab, sizeof(float));
    bench_stats st = {0};
    st.samples = dk_malloc_array(n_steps, sizeof(double));
    int rc = DK_ERR_NOMEM;
    if (!logits || !st.samples) goto done;
    if ((rc = sample_chain_new(&chain, &sp, n_vocab, err)) || (rc = sample_chain_new(&plain, &sp, n_vocab, err)) ||
        (rc = sample_matcher_new(&m, g, v, err)))
        goto done;
    sample_rng rng;
    sample_rng_seed(&rng, seed);
    uint64_t t_setup0 = dk_now_ns();
    for (size_t step = 0; step < n_steps; step++) {
        for (size_t i = 0; i < n_vocab; i++) logits[i] = (float)(sample_rng_uniform(&rng) * 8.0);
        uint64_t t0 = dk_now_ns();
        (void)sample_chain_sample(plain, logits);
        uint64_t t1 = dk_now_ns();
        int32_t tok;
        if ((rc = sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err)) != DK_OK ||
            (rc = sample_matcher_accept(m, tok, err)) != DK_OK)
            goto done;
        uint64_t t2 = dk_now_ns();
        sample_chain_accept(chain, tok);
        double us = (double)(t2 - t1) / 1000.0;
        st.samples[st.n++] = us;
        st.sum_us += us;
        st.plain_sum_us += (double)(t1 - t0) / 1000.0;
        if (us > st.worst_us) st.worst_us = us;
        if (sample_matcher_finished(m) || sample_vocab_is_eog(v, tok)) { /* a whole sentence: start the next one */
            st.n_finished++;
            sample_matcher_reset(m);
        }
    }
    double total_s = (double)(dk_now_ns() - t_setup0) / 1e9;
    qsort(st.samples, st.n, sizeof(double), cmp_double);
    double avg = st.sum_us / (double)st.n, plain_us = st.plain_sum_us / (double)st.n;
    printf("%-10s %-6s steps %5zu  sentences %4zu  grammar %8.1f us/token (p50 %7.1f, p99 %8.1f, worst %8.1f)  plain %7.1f  overhead %+8.1f us  [%.1f s]\n",
           label, temperature > 0 ? "temp" : "greedy", st.n, st.n_finished, avg, st.samples[st.n / 2],
           st.samples[st.n * 99 / 100], st.worst_us, plain_us, avg - plain_us, total_s);
    rc = DK_OK;
done:
    if (rc != DK_OK) fprintf(stderr, "%s: %s\n", label, err);
    sample_matcher_free(m);
    sample_chain_free(chain);
    sample_chain_free(plain);
    dk_free(logits);
    dk_free(st.samples);
    return rc;
}

int main(int argc, char **argv)
{
    size_t n_steps = 400;
    uint64_t seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-n") == 0) n_steps = (size_t)strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-s") == 0) seed = strtoull(argv[i + 1], NULL, 10);
    }
    if (n_steps == 0) n_steps = 1;
    char err[DK_ERRLEN], path[1024];
    snprintf(path, sizeof path, "%s/tokenizer/ggml-vocab-qwen2.gguf", dk_getenv_or("DUCKLING_KIT", "../shared/kit"));
    /* the vocabulary as generation prepares it: the file loaded vocab-only, engine_sample_vocab */
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.vocab_only = true;
    engine_model *model = NULL;
    const sample_vocab *v = NULL;
    if (engine_model_load(&model, path, &lp, err) != DK_OK) {
        fprintf(stderr, "%s: %s\n", path, err);
        return 1;
    }
    uint64_t t0 = dk_now_ns();
    if (engine_sample_vocab(model, &v, err) != DK_OK) {
        fprintf(stderr, "%s: %s\n", path, err);
        engine_model_free(model);
        return 1;
    }
    printf("vocabulary %s: %zu tokens, trie built in %.1f ms\n", path, sample_vocab_n(v), (double)(dk_now_ns() - t0) / 1e6);
    int failed = 0;
    size_t n_grammars = 1 + sizeof bench_schemas / sizeof bench_schemas[0];
    for (size_t k = 0; k < n_grammars; k++) {
        const char *label = k == 0 ? "json-mode" : bench_schemas[k - 1][0];
        dk_buf gbnf = {0};
        if (k == 0) {
            dk_buf_puts(&gbnf, sample_gbnf_json());
        } else {
            json_error_t jerr;
            json_t *schema = json_loads(bench_schemas[k - 1][1], 0, &jerr);
            int rc = schema ? sample_json_schema_to_gbnf(schema, "root", &gbnf, err) : DK_ERR_FORMAT;
            json_decref(schema);
            if (rc != DK_OK) {
                fprintf(stderr, "%s: %s\n", label, schema ? err : jerr.text);
                failed = 1;
                dk_buf_free(&gbnf);
                continue;
            }
        }
        sample_grammar *g = NULL;
        if (sample_grammar_parse(&g, gbnf.data, gbnf.len, "root", err) != DK_OK) {
            fprintf(stderr, "%s: %s\n", label, err);
            failed = 1;
        } else {
            failed |= bench_run(label, g, v, 0.0f, n_steps, seed) != DK_OK;
            failed |= bench_run(label, g, v, 0.8f, n_steps, seed) != DK_OK;
        }
        sample_grammar_free(g);
        dk_buf_free(&gbnf);
    }
    engine_model_free(model);
    return failed;
}
