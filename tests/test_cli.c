/*
 * test_cli.c: the duckling program end to end: spawns the built binary (test_cli_path()) and
 * checks stdout, stderr and exit status of run, logits, tokenize and embed against the kit's
 * llama.cpp references, and that bad input gives one line on stderr and a non-zero status.
 */
#include "test.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"
#include "test_proc.h"

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}


static json_t *load_json(const char *relative)
{
    char path[1024];
    test_kit_file(path, sizeof path, relative);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) test_fail_at(__FILE__, __LINE__, "cannot read %s: %s", path, je.text);
    return j;
}

#define STORIES "forward/stories260K/stories260K.F32.gguf"
#define STORIES_REF "forward/stories260K/stories260K.F32.exact.ref.json"

TEST(cli, run_greedy_prints_the_reference_text)
{
    if (!binary_ready()) return;
    json_t *ref = load_json(STORIES_REF);
    REQUIRE(ref);
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"run", model, "Once upon a time", "--temperature", "0", "-n", "64", "--raw", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, json_string_value(json_object_get(ref, "greedy_text")));
    CHECK_EQ_INT(r.n_err, 0);
    proc_free(&r);

    /* --verbose: Ollama-style statistics on stderr, stdout unchanged */
    const char *vargs[] = {"run", model, "Once upon a time", "--temperature", "0", "-n", "64", "--raw", "--verbose", NULL};
    REQUIRE(spawn(&r, NULL, vargs) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, json_string_value(json_object_get(ref, "greedy_text")));
    CHECK(strstr(r.err, "load duration:") != NULL);
    CHECK(strstr(r.err, "prompt eval count:    5 token(s)") != NULL);
    CHECK(strstr(r.err, "prompt eval rate:") != NULL);
    CHECK(strstr(r.err, "eval count:           64 token(s)") != NULL);
    CHECK(strstr(r.err, "eval rate:") != NULL);
    proc_free(&r);
    json_decref(ref);
}

TEST(cli, run_stop_strings_and_num_predict)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"run", model, "Once upon a time", "--temperature", "0", "--raw", "--stop", "Lily", "-n", "64", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, ", there was a little girl named ");
    proc_free(&r);
    const char *args2[] = {"run", model, "Once upon a time", "--temperature", "0", "--raw", "-n", "3", NULL};
    REQUIRE(spawn(&r, NULL, args2) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, ", there was");
    proc_free(&r);
}

TEST(cli, run_sampling_is_seeded)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"run", model, "Once upon a time", "--temperature", "1.2", "--seed", "7", "--raw", "-n", "40", NULL};
    proc_result a, b;
    REQUIRE(spawn(&a, NULL, args) == 0);
    REQUIRE(spawn(&b, NULL, args) == 0);
    CHECK_EQ_INT(a.status, 0);
    CHECK(a.n_out > 0);
    CHECK_EQ_STR(a.out, b.out);
    proc_free(&a);
    proc_free(&b);
}

TEST(cli, run_interactive_reads_stdin)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"run", model, "--temperature", "0", "--raw", "-n", "3", NULL};
    proc_result r;
    REQUIRE(spawn(&r, "Once upon a time\n/bye\n", args) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, ", there was\n");
    proc_free(&r);
}

/* Every reference id whose logit beats the reference's 10th by more than tol is in ours,
 * and the logits of ids in both agree within tol. */
static void check_top10(json_t *mine, json_t *ref, double tol, size_t pos)
{
    size_t n_ref = json_array_size(ref);
    REQUIRE_MSG(json_array_size(mine) == 10 && n_ref == 10, "position %zu: %zu entries", pos, json_array_size(mine));
    double tenth = json_number_value(json_array_get(json_array_get(ref, 9), 1));
    for (size_t i = 0; i < n_ref; i++) {
        json_int_t id = json_integer_value(json_array_get(json_array_get(ref, i), 0));
        double logit = json_number_value(json_array_get(json_array_get(ref, i), 1));
        int found = 0;
        for (size_t j = 0; j < 10; j++) {
            json_t *m = json_array_get(mine, j);
            if (json_integer_value(json_array_get(m, 0)) == id) {
                found = 1;
                CHECK_MSG(fabs(json_number_value(json_array_get(m, 1)) - logit) <= tol,
                          "position %zu id %lld: %g vs %g", pos, (long long)id, json_number_value(json_array_get(m, 1)), logit);
            }
        }
        if (logit > tenth + tol) CHECK_MSG(found, "position %zu: id %lld missing", pos, (long long)id);
    }
    for (size_t j = 1; j < 10; j++) { /* highest first, lower id first on ties */
        json_t *a = json_array_get(mine, j - 1), *b = json_array_get(mine, j);
        double la = json_number_value(json_array_get(a, 1)), lb = json_number_value(json_array_get(b, 1));
        CHECK(la > lb || (la == lb && json_integer_value(json_array_get(a, 0)) < json_integer_value(json_array_get(b, 0))));
    }
}

TEST(cli, logits_json_matches_reference)
{
    if (!binary_ready()) return;
    json_t *ref = load_json(STORIES_REF);
    REQUIRE(ref);
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"logits", model, "--tokens", "1,403,407,261,378", "--top", "10", "--json", "--gen", "4", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    json_error_t je;
    json_t *mine = json_loads(r.out, 0, &je);
    REQUIRE_MSG(mine, "bad JSON: %s", je.text);
    CHECK_EQ_INT(json_integer_value(json_object_get(mine, "n_vocab")), 512);
    json_t *pos = json_object_get(mine, "positions");
    REQUIRE(json_array_size(pos) == 9);
    json_t *prompt_top = json_object_get(ref, "prompt_top10"), *greedy_top = json_object_get(ref, "greedy_top10");
    for (size_t i = 0; i < 5; i++) check_top10(json_array_get(pos, i), json_array_get(prompt_top, i), 1e-3, i);
    for (size_t i = 0; i < 4; i++) check_top10(json_array_get(pos, 5 + i), json_array_get(greedy_top, i + 1), 1e-3, 5 + i);
    json_decref(mine);
    proc_free(&r);

    /* teacher forcing with the reference's greedy tokens gives the same positions */
    json_t *greedy = json_object_get(ref, "greedy_tokens");
    char force[128];
    snprintf(force, sizeof force, "%lld,%lld,%lld,%lld", (long long)json_integer_value(json_array_get(greedy, 0)),
             (long long)json_integer_value(json_array_get(greedy, 1)), (long long)json_integer_value(json_array_get(greedy, 2)),
             (long long)json_integer_value(json_array_get(greedy, 3)));
    const char *fargs[] = {"logits", model, "--tokens", "1,403,407,261,378", "--json", "--force", force, NULL};
    REQUIRE(spawn(&r, NULL, fargs) == 0);
    CHECK_EQ_INT(r.status, 0);
    mine = json_loads(r.out, 0, &je);
    REQUIRE_MSG(mine, "bad JSON: %s", je.text);
    pos = json_object_get(mine, "positions");
    REQUIRE(json_array_size(pos) == 9);
    for (size_t i = 0; i < 4; i++) check_top10(json_array_get(pos, 5 + i), json_array_get(greedy_top, i + 1), 1e-3, 5 + i);
    json_decref(mine);
    proc_free(&r);

    /* text form: one line per position */
    const char *targs[] = {"logits", model, "--tokens", "1,403", "--top", "3", NULL};
    REQUIRE(spawn(&r, NULL, targs) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_INT(count_lines(r.out), 2);
    CHECK(strncmp(r.out, "0 1: 403:", 9) == 0);
    proc_free(&r);
    json_decref(ref);
}

/* Parses " 1 2 3" / "1 2 3" into ids; returns the count. */
static size_t parse_id_line(const char *s, size_t len, long *ids, size_t cap)
{
    size_t n = 0;
    const char *end = s + len;
    while (s < end && n < cap) {
        while (s < end && *s == ' ') s++;
        if (s >= end) break;
        char *e;
        ids[n++] = strtol(s, &e, 10);
        if (e == s) break;
        s = e;
    }
    return n;
}

/* Checks `tokenize` against every case of a kit .inp/.out pair. */
static void check_vocab(const char *vocab, const char *inp, const char *outp, const char *const *flags)
{
    char path[1024], model[1024];
    char e[DK_ERRLEN];
    char *in = NULL, *out = NULL;
    size_t n_in, n_out;
    test_kit_file(model, sizeof model, vocab);
    REQUIRE(dk_file_read(test_kit_file(path, sizeof path, inp), 1 << 24, &in, &n_in, e) == DK_OK);
    REQUIRE(dk_file_read(test_kit_file(path, sizeof path, outp), 1 << 24, &out, &n_out, e) == DK_OK);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = in, *line = out;
    int n_cases = 0;
    char *s;
    while ((s = strstr(p, sep)) != NULL) {
        char file[512];
        snprintf(file, sizeof file, "%s/tok-case.txt", test_tmpdir());
        REQUIRE(dk_file_write(file, p, (size_t)(s - p), e) == DK_OK);
        const char *args[12] = {"tokenize", model, "--file", file};
        size_t na = 4;
        for (size_t i = 0; flags && flags[i]; i++) args[na++] = flags[i];
        args[na] = NULL;
        proc_result r;
        REQUIRE(spawn(&r, NULL, args) == 0);
        char *nl = strchr(line, '\n');
        REQUIRE(nl);
        long want[4096], got[4096];
        size_t n_want = parse_id_line(line, (size_t)(nl - line), want, 4096);
        size_t n_got = parse_id_line(r.out, r.n_out && r.out[r.n_out - 1] == '\n' ? r.n_out - 1 : r.n_out, got, 4096);
        CHECK_EQ_INT(r.status, 0);
        CHECK_MSG(n_want == n_got && memcmp(want, got, n_got * sizeof(long)) == 0, "%s case %d: '%.*s' -> %s",
                  vocab, n_cases, (int)(nl - line), line, r.out);
        proc_free(&r);
        line = nl + 1;
        p = s + strlen(sep);
        n_cases++;
        if (test_failures() > 5) break;
    }
    CHECK(n_cases > 20);
    dk_free(in);
    dk_free(out);
}

TEST(cli, tokenize_matches_kit_vectors)
{
    if (!binary_ready()) return;
    check_vocab("tokenizer/ggml-vocab-llama-spm.gguf", "tokenizer/ggml-vocab-llama-spm.gguf.inp",
                "tokenizer/ggml-vocab-llama-spm.gguf.out", NULL);
    check_vocab("tokenizer/ggml-vocab-qwen2.gguf", "tokenizer/ggml-vocab-qwen2.gguf.inp",
                "tokenizer/ggml-vocab-qwen2.gguf.out", NULL);
    check_vocab("tokenizer/ggml-vocab-bert-bge.gguf", "tokenizer/ggml-vocab-bert-bge.gguf.inp",
                "tokenizer/ggml-vocab-bert-bge.gguf.out", NULL);
    const char *special[] = {"--parse-special", "--add-special", NULL};
    check_vocab("tokenizer/ggml-vocab-phi-3.gguf", "tokenizer/extra.inp",
                "tokenizer/ggml-vocab-phi-3.gguf.extra.addspecial.out", special);
}

TEST(cli, tokenize_json_and_text_argument)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *args[] = {"tokenize", model, "Once upon a time", "--json", "--add-special", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "[1,403,407,261,378]\n");
    proc_free(&r);
    const char *args2[] = {"tokenize", model, "Once upon a time", NULL};
    REQUIRE(spawn(&r, NULL, args2) == 0);
    CHECK_EQ_STR(r.out, "403 407 261 378\n");
    proc_free(&r);
}

TEST(cli, embed_gives_reference_unit_vectors)
{
    if (!binary_ready()) return;
    json_t *ref = load_json("forward/bert-tiny/bert-tiny.F32.exact.ref.json");
    REQUIRE(ref);
    char model[1024];
    test_kit_file(model, sizeof model, "forward/bert-tiny/bert-tiny.F32.gguf");
    json_t *texts = json_object_get(ref, "texts");
    const char *args[] = {"embed", model, json_string_value(json_array_get(texts, 0)),
                          json_string_value(json_array_get(texts, 1)), NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    json_error_t je;
    json_t *mine = json_loads(r.out, 0, &je);
    REQUIRE_MSG(mine, "bad JSON: %s", je.text);
    REQUIRE(json_array_size(mine) == 2);
    for (size_t s = 0; s < 2; s++) {
        json_t *v = json_array_get(mine, s), *want = json_array_get(json_object_get(ref, "pooled_normalized"), s);
        REQUIRE(json_array_size(v) == 256 && json_array_size(want) == 256);
        double norm = 0, dot = 0, max_diff = 0;
        for (size_t i = 0; i < 256; i++) {
            double a = json_number_value(json_array_get(v, i)), b = json_number_value(json_array_get(want, i));
            norm += a * a;
            dot += a * b;
            if (fabs(a - b) > max_diff) max_diff = fabs(a - b);
        }
        CHECK_NEAR(sqrt(norm), 1.0, 1e-5);
        CHECK_MSG(dot >= 0.99999, "cosine %g", dot);
        CHECK_MSG(max_diff <= 1e-4, "max diff %g", max_diff);
    }
    json_decref(mine);
    proc_free(&r);
    json_decref(ref);
}

/* A failing command: non-zero exit, no crash, exactly one line on stderr. */
static void check_fails(const char *const *args)
{
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_MSG(r.exited && r.status != 0, "%s %s: status %d", args[0], args[1] ? args[1] : "", r.status);
    CHECK_MSG(count_lines(r.err) == 1, "%s: stderr '%s'", args[0], r.err);
    proc_free(&r);
}

TEST(cli, bad_input_fails_cleanly)
{
    if (!binary_ready()) return;
    char model[1024], trunc[512], e[DK_ERRLEN];
    test_kit_file(model, sizeof model, STORIES);
    /* a truncated copy of a real model */
    char *data = NULL;
    size_t n = 0;
    REQUIRE(dk_file_read(model, 1 << 26, &data, &n, e) == DK_OK);
    snprintf(trunc, sizeof trunc, "%s/truncated.gguf", test_tmpdir());
    REQUIRE(dk_file_write(trunc, data, n / 2, e) == DK_OK);
    dk_free(data);

    const char *a1[] = {"run", "/nonexistent/model.gguf", "hi", NULL};
    const char *a2[] = {"run", trunc, "hi", "--raw", NULL};
    const char *a3[] = {"logits", model, "--tokens", "1,x,3", NULL};
    const char *a4[] = {"logits", model, "--tokens", "1,2", "--bogus", NULL};
    const char *a5[] = {"logits", model, "--tokens", "1,99999", NULL};
    const char *a6[] = {"run", model, "hi", "--format", "/nonexistent/schema.json", NULL};
    const char *a7[] = {"run", model, "hi", "--temperature", "hot", NULL};
    const char *a8[] = {"tokenize", trunc, "hello", NULL};
    const char *a9[] = {"embed", model, "not an embedding model", NULL};
    const char *a10[] = {"nosuchcommand", NULL};
    const char *a11[] = {"logits", model, NULL};
    const char *a12[] = {"tokenize", model, NULL};
    const char *a13[] = {"logits", model, "--tokens", "", NULL};
    const char *a14[] = {"run", NULL};
    const char *a15[] = {"tokenize", model, "--file", "/nonexistent/text.txt", NULL};
    const char *const *all[] = {a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) check_fails(all[i]);
}

TEST(cli, help_texts)
{
    if (!binary_ready()) return;
    proc_result r;
    const char *a1[] = {"--help", NULL};
    REQUIRE(spawn(&r, NULL, a1) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "usage: duckling") && strstr(r.out, "logits") && strstr(r.out, "tokenize"));
    proc_free(&r);
    const char *a2[] = {"help", "run", NULL};
    REQUIRE(spawn(&r, NULL, a2) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "--temperature") != NULL);
    proc_free(&r);
    const char *a3[] = {"logits", "--help", NULL};
    REQUIRE(spawn(&r, NULL, a3) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "--tokens") != NULL);
    proc_free(&r);
    const char *a4[] = {"help", "nosuch", NULL};
    check_fails(a4);
}

/* ------------------------------------------------------------------ bench */

static json_t *run_json(const char *const *args)
{
    proc_result r;
    if (spawn(&r, NULL, args) != 0) return NULL;
    json_error_t je;
    json_t *j = r.exited && r.status == 0 ? json_loads(r.out, 0, &je) : NULL;
    CHECK_MSG(j != NULL, "%s %s: status %d, stderr '%s'", args[0], args[1], r.status, r.err);
    proc_free(&r);
    return j;
}

TEST(cli, bench_reports_llama_bench_fields)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, "forward/llama-tiny/llama-tiny.Q4_0.gguf");
    const char *a1[] = {"bench", model, "-p", "16", "-n", "4", "-r", "3", "-t", "2", "--json", NULL};
    json_t *j = run_json(a1);
    REQUIRE(j && json_is_array(j) && json_array_size(j) == 2);
    static const char *const tests[] = {"pp16", "tg4"};
    for (size_t i = 0; i < 2; i++) {
        json_t *t = json_array_get(j, i);
        CHECK_EQ_STR(json_string_value(json_object_get(t, "test")), tests[i]);
        CHECK_EQ_INT(json_integer_value(json_object_get(t, "n_prompt")), i == 0 ? 16 : 0);
        CHECK_EQ_INT(json_integer_value(json_object_get(t, "n_gen")), i == 0 ? 0 : 4);
        CHECK_EQ_INT(json_integer_value(json_object_get(t, "n_threads")), 2);
        CHECK_EQ_STR(json_string_value(json_object_get(t, "numerics")), "fast");
        CHECK(json_integer_value(json_object_get(t, "model_size")) > 0);
        CHECK(json_integer_value(json_object_get(t, "model_n_params")) > 0);
        double avg = json_number_value(json_object_get(t, "avg_ts")), sd = json_number_value(json_object_get(t, "stddev_ts"));
        json_t *samples = json_object_get(t, "samples_ts");
        REQUIRE(json_array_size(samples) == 3);
        double mean = 0;
        for (size_t k = 0; k < 3; k++) mean += json_number_value(json_array_get(samples, k)) / 3;
        CHECK(avg > 0 && sd >= 0);
        CHECK_NEAR(avg, mean, 1e-3 * mean);
        /* avg_ns is the mean time of a repetition: tokens / avg_ns ~ t/s */
        double ns = json_number_value(json_object_get(t, "avg_ns"));
        CHECK(ns > 0);
    }
    json_decref(j);
    /* depth and the reference numerics */
    const char *a2[] = {"bench", model, "-p", "0", "-n", "2", "-d", "8", "-r", "1", "--json", "--exact", NULL};
    j = run_json(a2);
    REQUIRE(j && json_array_size(j) == 1);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(j, 0), "test")), "tg2 @ d8");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(j, 0), "n_depth")), 8);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(j, 0), "numerics")), "exact");
    json_decref(j);
    /* the table: header, rule, one row per test */
    const char *a3[] = {"bench", model, "-p", "8", "-n", "2", "-r", "1", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, a3) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_INT(count_lines(r.out), 4);
    CHECK(strstr(r.out, "| pp8") || strstr(r.out, " pp8 |"));
    CHECK(strstr(r.out, "tg2") && strstr(r.out, "t/s"));
    proc_free(&r);
}

TEST(cli, bench_bad_input_fails_cleanly)
{
    if (!binary_ready()) return;
    char model[1024], bert[1024];
    test_kit_file(model, sizeof model, "forward/llama-tiny/llama-tiny.Q4_0.gguf");
    test_kit_file(bert, sizeof bert, "forward/bert-tiny/bert-tiny.F32.gguf");
    const char *a1[] = {"bench", NULL};
    const char *a2[] = {"bench", model, "-p", "0", "-n", "0", NULL};
    const char *a3[] = {"bench", model, "-r", "0", NULL};
    const char *a4[] = {"bench", model, "-p", "many", NULL};
    const char *a5[] = {"bench", "/nonexistent/model.gguf", NULL};
    const char *a6[] = {"bench", bert, "-p", "8", "-n", "2", NULL};
    const char *a7[] = {"bench", model, "--bogus", NULL};
    const char *a8[] = {"bench", model, model, NULL};
    const char *a9[] = {"bench", model, "-t", NULL};
    const char *const *all[] = {a1, a2, a3, a4, a5, a6, a7, a8, a9};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) check_fails(all[i]);
}

/* ---- run: structured output, tools, thinking ---- */

/* A tiny qwen3 carrying the real Qwen vocabulary and chat template, written once per run. */
static const char *qwen_vocab_model(void)
{
    static char path[512];
    if (path[0]) return path;
    char vocab[512];
    snprintf(path, sizeof path, "%s/cli-qwen-vocab.gguf", test_tmpdir());
    test_kit_file(vocab, sizeof vocab, "tokenizer/ggml-vocab-qwen2.gguf");
    const char *args[] = {"synth", "--preset", "qwen-vocab-tiny", "--quant", "Q8_0", "--out", path, "--vocab-from", vocab, NULL};
    proc_result r;
    if (spawn(&r, NULL, args) != 0 || r.status != 0) {
        test_fail_at(__FILE__, __LINE__, "synth failed: %s", r.err ? r.err : "");
        path[0] = 0;
    }
    proc_free(&r);
    return path[0] ? path : NULL;
}

static const char *write_tmp(const char *name, const char *text)
{
    static char paths[8][512]; /* a test may hold this many at once */
    static int k;
    char *p = paths[k++ % 8], e[DK_ERRLEN];
    snprintf(p, 512, "%s/%s", test_tmpdir(), name);
    if (dk_file_write(p, text, strlen(text), e) != DK_OK) test_fail_at(__FILE__, __LINE__, "%s", e);
    return p;
}

TEST(cli, run_format_json_and_schema)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *schema = write_tmp("person.schema.json",
                                   "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
                                   "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":99}},"
                                   "\"required\":[\"name\",\"age\"],\"additionalProperties\":false}");
    int n_parsed = 0;
    for (int k = 0; k < 6; k++) {
        char seed[16];
        snprintf(seed, sizeof seed, "%d", k + 1);
        const char *fmt = k % 2 ? schema : "json";
        const char *args[] = {"run", model, "Once upon a time", "--raw", "--format", fmt, "--seed", seed, "--temperature", "1",
                              "-n", "300", "--ctx", "512", "--verbose", NULL};
        proc_result r;
        REQUIRE(spawn(&r, NULL, args) == 0);
        CHECK_EQ_INT(r.status, 0);
        json_error_t je;
        json_t *v = json_loads(r.out, 0, &je);
        if (v) {
            n_parsed++;
            CHECK(json_is_object(v));
            if (k % 2) {
                CHECK(json_is_string(json_object_get(v, "name")) && strlen(json_string_value(json_object_get(v, "name"))) <= 8);
                json_int_t age = json_integer_value(json_object_get(v, "age"));
                CHECK(json_is_integer(json_object_get(v, "age")) && age >= 0 && age <= 99);
                CHECK_EQ_INT(json_object_size(v), 2);
            }
        } else {
            /* only an answer cut by -n may be incomplete */
            CHECK_MSG(strstr(r.err, "eval count:           300 token(s)") != NULL, "output neither JSON nor cut: %s", r.out);
        }
        json_decref(v);
        proc_free(&r);
    }
    CHECK(n_parsed >= 3);
    /* inline schema */
    const char *args[] = {"run", model, "Once", "--raw", "--format", "{\"enum\":[\"yes\",\"no\"]}", "--temperature", "0", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_MSG(strcmp(r.out, "\"yes\"") == 0 || strcmp(r.out, "\"no\"") == 0, "got %s", r.out);
    proc_free(&r);
}

TEST(cli, run_tools_required_prints_valid_calls)
{
    if (!binary_ready()) return;
    const char *model = qwen_vocab_model();
    REQUIRE(model);
    const char *tools = write_tmp("tools.json",
                                  "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
                                  "\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":10}},\"required\":[\"city\"],"
                                  "\"additionalProperties\":false}}}]");
    int n_calls = 0;
    for (int k = 0; k < 3; k++) {
        char seed[16];
        snprintf(seed, sizeof seed, "%d", k + 1);
        const char *args[] = {"run", model, "Weather in Paris?", "--tools", tools, "--tool-choice", k == 2 ? "get_weather" : "required",
                              "--no-think", "--seed", seed, "--temperature", "1", "-n", "120", "--verbose", NULL};
        proc_result r;
        REQUIRE(spawn(&r, NULL, args) == 0);
        CHECK_EQ_INT(r.status, 0);
        /* a call cut by -n comes out as content; a finished answer has none */
        int cut = strstr(r.err, "eval count:           120 token(s)") != NULL;
        CHECK_MSG(cut || !strstr(r.out, "<tool_call>"), "call text in the output: %s", r.out);
        const char *line = r.out;
        while (line && *line) {
            const char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            json_t *v = json_loadb(line, len, 0, NULL);
            if (v) {
                CHECK_EQ_STR(json_string_value(json_object_get(v, "name")), "get_weather");
                const json_t *city = json_object_get(json_object_get(v, "arguments"), "city");
                CHECK(json_is_string(city) && strlen(json_string_value(city)) <= 40);
                n_calls++;
                json_decref(v);
            }
            line = nl ? nl + 1 : NULL;
        }
        proc_free(&r);
    }
    CHECK(n_calls >= 2);
}

TEST(cli, run_structured_bad_input)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *bad_schema = write_tmp("bad.schema.json", "{\"type\": \"object\", \"properties\": ");
    const char *not_array = write_tmp("tools-object.json", "{\"name\": \"x\"}");
    const char *a1[] = {"run", model, "hi", "--format", bad_schema, NULL};
    const char *a2[] = {"run", model, "hi", "--tool-choice", "required", NULL};
    const char *a3[] = {"run", model, "hi", "--raw", "--tools", not_array, NULL};
    const char *a4[] = {"run", model, "hi", "--tools", not_array, NULL};
    const char *a5[] = {"run", model, "hi", "--format", "{\"type\":\"nonsense\"}", NULL};
    const char *a6[] = {"run", model, "hi", "--format", "[1,2]", NULL};
    const char *a7[] = {"run", model, "bad \xff\xfe bytes", NULL};             /* JSON cannot hold it */
    const char *a8[] = {"run", model, "hi", "--system", "\xc3", NULL};
    const char *const *all[] = {a1, a2, a3, a4, a5, a6, a7, a8};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) check_fails(all[i]);
}

/* ---- render ---- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

TEST(cli, render_prints_the_template_output)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *msgs = write_tmp("render-msgs.json",
                                 "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi \\u2713\"}]");
    /* stories260K has no template: the built-in ChatML */
    const char *a1[] = {"render", model, msgs, NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, a1) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi \xe2\x9c\x93<|im_end|>\n"
                        "<|im_start|>assistant\n");
    proc_free(&r);
    /* the real Qwen3 template of the kit's vocabulary, with its thinking switch */
    const char *qwen = qwen_vocab_model();
    REQUIRE(qwen);
    const char *a2[] = {"render", qwen, msgs, "--var", "enable_thinking=false", NULL};
    REQUIRE(spawn(&r, NULL, a2) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_MSG(ends_with(r.out, "<|im_start|>assistant\n<think>\n\n</think>\n\n"), "got %s", r.out);
    CHECK_MSG(strstr(r.out, "<|im_start|>system\nBe brief.<|im_end|>\n") == r.out, "got %s", r.out);
    proc_free(&r);
    const char *a3[] = {"render", qwen, msgs, "--no-generation-prompt", NULL};
    REQUIRE(spawn(&r, NULL, a3) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_MSG(ends_with(r.out, "Hi \xe2\x9c\x93<|im_end|>\n"), "got %s", r.out);
    proc_free(&r);
}

TEST(cli, render_bad_input_fails_cleanly)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *msgs = write_tmp("render-ok.json", "[{\"role\":\"user\",\"content\":\"hi\"}]");
    const char *bad_tmpl = write_tmp("render-bad.jinja", "{% if x %}\nno end");
    const char *raising = write_tmp("render-raise.jinja", "{{ raise_exception('no system role') }}");
    const char *bad_json = write_tmp("render-bad.json", "[{\"role\":");
    proc_result r;
    const char *a1[] = {"render", "--template", bad_tmpl, msgs, NULL};
    REQUIRE(spawn(&r, NULL, a1) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_MSG(strstr(r.err, "line 2, column") != NULL, "%s", r.err);
    proc_free(&r);
    const char *a2[] = {"render", "--template", raising, msgs, NULL};
    REQUIRE(spawn(&r, NULL, a2) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_MSG(strstr(r.err, "no system role") != NULL, "%s", r.err);
    CHECK_EQ_INT(r.n_out, 0);
    proc_free(&r);
    const char *a3[] = {"render", model, bad_json, NULL};
    const char *a4[] = {"render", model, write_tmp("render-obj.json", "{\"messages\": 3}"), NULL};
    const char *a5[] = {"render", model, msgs, "--var", "novalue", NULL};
    const char *a6[] = {"render", model, msgs, "--var", "x={", NULL};
    const char *a7[] = {"render", "/nonexistent/model.gguf", msgs, NULL};
    const char *a8[] = {"render", model, NULL};
    const char *a9[] = {"render", "--template", bad_tmpl, "--config", msgs, msgs, NULL};
    const char *const *all[] = {a1, a2, a3, a4, a5, a6, a7, a8, a9};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) check_fails(all[i]);
}

/* ------------------------------------------------------------------ run: chat, servers, ps */

/* The greedy one-shot answer of the local model to prompt (dk_free), or NULL. */
static char *run_once(const char *model, const char *prompt)
{
    const char *args[] = {"run", model, prompt, "--temperature", "0", "-n", "20", NULL};
    proc_result r;
    if (spawn(&r, NULL, args) != 0) return NULL;
    CHECK_MSG(r.status == 0 && r.n_out > 0, "run '%s': status %d, stderr '%s'", prompt, r.status, r.err);
    char *out = r.out;
    r.out = NULL;
    proc_free(&r);
    return out;
}

TEST(cli, run_chat_through_a_pipe)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    char *one = run_once(model, "Once upon a time");
    char *two = run_once(model, "Once upon\na time");
    REQUIRE(one && two);
    /* The same prompts in one session: the first answer is the one-shot one; after /clear the
     * multi-line block is a first message again, so it matches its one-shot answer too. */
    const char *input = "/set parameter temperature 0\n"
                        "/show parameters\n"
                        "Once upon a time\n"
                        "/clear\n"
                        "\"\"\"\n"
                        "Once upon\n"
                        "a time\n"
                        "\"\"\"\n"
                        "/nosuch thing\n"
                        "/bye\n"
                        "never answered\n";
    const char *args[] = {"run", model, "-n", "20", NULL};
    proc_result r;
    REQUIRE(spawn(&r, input, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    dk_buf want = {0};
    dk_buf_printf(&want,
                  "Set parameter 'temperature' to '0'\n"
                  "User defined parameters:\n"
                  "%-30s 20\n"
                  "%-30s 0\n"
                  "%s\n"
                  "Cleared session context\n"
                  "%s\n"
                  "Unknown command '/nosuch'. Type /? for help\n",
                  "num_predict", "temperature", one, two);
    CHECK_EQ_STR(r.out, want.data);
    CHECK_EQ_INT(r.n_err, 0);
    proc_free(&r);
    /* deterministic: the same session again gives the same bytes */
    REQUIRE(spawn(&r, input, args) == 0);
    CHECK_EQ_STR(r.out, want.data);
    proc_free(&r);
    dk_buf_free(&want);
    dk_free(one);
    dk_free(two);
}

TEST(cli, run_chat_commands_report_and_go_on)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    char *one = run_once(model, "Once upon a time");
    REQUIRE(one);
    const char *input = "/set parameter nosuch 1\n"
                        "/set parameter top_k many\n"
                        "/set parameter temperature 0\n"
                        "/set system Be brief.\n"
                        "/show system\n"
                        "/clear\n"
                        "/show system\n"
                        "/set system\n"
                        "/show system\n"
                        "/show nothing\n"
                        "/show info\n"
                        "/set verbose\n"
                        "/?\n"
                        "\"\"\"Once upon a time\"\"\"\n";
    const char *args[] = {"run", model, "-n", "20", NULL};
    proc_result r;
    REQUIRE(spawn(&r, input, args) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_MSG(strstr(r.out, "Couldn't set parameter: unknown parameter 'nosuch'\n") != NULL, "%s", r.out);
    CHECK_MSG(strstr(r.out, "Couldn't set parameter: top_k: 'many' is not a number\n") != NULL, "%s", r.out);
    CHECK(strstr(r.out, "Set system message.\nBe brief.\nCleared session context\nBe brief.\n") != NULL);
    CHECK(strstr(r.out, "Cleared system message.\nNo system message was specified for this model.\n") != NULL);
    CHECK(strstr(r.out, "Unknown command '/show nothing'. Type /? for help\n") != NULL);
    CHECK(strstr(r.out, "    architecture        llama\n") != NULL);
    CHECK(strstr(r.out, "    context length      128\n") != NULL);
    CHECK(strstr(r.out, "Available Commands:") != NULL);
    /* """...""" on one line is a message; /set verbose prints the timings after it */
    CHECK(ends_with(r.out, one) || (strstr(r.out, one) && r.out[r.n_out - 1] == '\n'));
    CHECK(strstr(r.err, "eval count:           ") != NULL);
    proc_free(&r);
    dk_free(one);
}

TEST(cli, run_without_a_server_loads_the_model)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    json_t *ref = load_json(STORIES_REF);
    REQUIRE(ref);
    const char *args[] = {"run", model, "Once upon a time", "--temperature", "0", "-n", "64", "--raw", NULL};
    const char *closed[] = {"DUCKLING_HOST=http://127.0.0.1:1/", NULL};
    const char *ollama[] = {"DUCKLING_HOST=", "OLLAMA_HOST=127.0.0.1:1", NULL};
    const char *const *envs[] = {closed, ollama};
    for (size_t i = 0; i < 2; i++) {
        proc_result r;
        REQUIRE(spawn_env(&r, NULL, args, envs[i]) == 0);
        CHECK_EQ_INT(r.status, 0);
        CHECK_EQ_STR(r.out, json_string_value(json_object_get(ref, "greedy_text")));
        proc_free(&r);
    }
    /* --host names a server: it must answer */
    const char *hargs[] = {"run", model, "hi", "--host", "127.0.0.1:1", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, hargs) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_EQ_STR(r.err, "duckling run: could not connect to a running duckling server at 127.0.0.1:1\n");
    proc_free(&r);
    json_decref(ref);
}

TEST(cli, ps_without_a_server_fails)
{
    if (!binary_ready()) return;
    const char *args[] = {"ps", NULL};
    proc_result r;
    REQUIRE(spawn(&r, NULL, args) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_EQ_STR(r.err, "duckling ps: could not connect to a running duckling server at 127.0.0.1:1\n");
    CHECK_EQ_INT(r.n_out, 0);
    proc_free(&r);
    const char *bad[] = {"ps", "extra", NULL};
    check_fails(bad);
}

/* ---- a stand-in server on a real socket: canned Ollama replies, every request recorded ---- */

typedef struct fake_server {
    int fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t lock;
    dk_buf requests; /* "METHOD PATH BODY\n" per request */
} fake_server;

static void fake_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

/* RFC 3339 (UTC) of now + seconds. */
static void fake_time(char *buf, size_t n, long seconds)
{
    time_t t = time(NULL) + seconds;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%S.123456789Z", &tm);
}

static void fake_reply(int fd, const char *method, const char *path, const char *body)
{
    int status = 200;
    const char *type = "application/json";
    dk_buf out = {0};
    bool split = false;
    if (strcmp(method, "GET") == 0 && strcmp(path, "/") == 0) {
        type = "text/plain";
        dk_buf_puts(&out, "Ollama is running");
    } else if (strcmp(path, "/api/ps") == 0) {
        char soon[64];
        fake_time(soon, sizeof soon, 270);
        dk_buf_printf(&out,
                      "{\"models\":[{\"name\":\"qwen2.5:0.5b\",\"model\":\"qwen2.5:0.5b\",\"size\":1234567890,"
                      "\"digest\":\"sha256:a8b0c51577010a279d933d14c2f8ab4b9c1b1d57ab7d4d2a6e6f1a2b3c4d5e6f\","
                      "\"expires_at\":\"2318-01-01T00:00:00Z\",\"size_vram\":0,\"context_length\":4096},"
                      "{\"name\":\"tiny:latest\",\"model\":\"tiny:latest\",\"size\":532000000,\"digest\":\"0123456789abcdef\","
                      "\"expires_at\":\"%s\",\"size_vram\":0,\"context_length\":2048}]}",
                      soon);
    } else if (strstr(body, "\"model\":\"missing\"")) {
        status = 404;
        dk_buf_puts(&out, "{\"error\":\"model 'missing' not found\"}");
    } else if (strcmp(path, "/api/chat") == 0) {
        type = "application/x-ndjson";
        split = true;
        dk_buf_puts(&out, "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"hmm\"},\"done\":false}\n"
                          "{\"message\":{\"role\":\"assistant\",\"content\":\"Hello\"},\"done\":false}\n"
                          "{\"message\":{\"role\":\"assistant\",\"content\":\" world\",\"tool_calls\":[{\"function\":"
                          "{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},\"done\":false}\n"
                          "{\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\","
                          "\"total_duration\":5000000,\"load_duration\":1000000,\"prompt_eval_count\":3,"
                          "\"prompt_eval_duration\":2000000,\"eval_count\":2,\"eval_duration\":1000000}\n");
        if (strstr(body, "\"model\":\"midway\"")) dk_buf_puts(&out, "{\"error\":\"the model broke\"}\n");
    } else if (strcmp(path, "/api/show") == 0) {
        dk_buf_puts(&out, "{\"template\":\"{{ .Prompt }}\",\"parameters\":\"temperature 0.7\","
                          "\"details\":{\"family\":\"qwen2\",\"parameter_size\":\"494.03M\",\"quantization_level\":\"Q4_K_M\"},"
                          "\"model_info\":{\"general.architecture\":\"qwen2\",\"qwen2.context_length\":32768,"
                          "\"qwen2.embedding_length\":896}}");
    } else {
        status = 404;
        dk_buf_puts(&out, "{\"error\":\"not found\"}");
    }
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, type, out.len);
    fake_write_all(fd, head, (size_t)n);
    /* a stream in two writes cut inside a line: the client must join the halves */
    size_t first = split ? out.len / 2 + 3 : out.len;
    fake_write_all(fd, out.data, first);
    if (split) {
        usleep(20000);
        fake_write_all(fd, out.data + first, out.len - first);
    }
    dk_buf_free(&out);
}

static void fake_serve_one(fake_server *fs, int fd)
{
    dk_buf in = {0};
    char chunk[4096];
    size_t body_at = 0, need = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0) break;
        dk_buf_append(&in, chunk, (size_t)n);
        if (!body_at) {
            char *end = in.data ? strstr(in.data, "\r\n\r\n") : NULL;
            if (!end) continue;
            body_at = (size_t)(end - in.data) + 4;
            char *cl = strcasestr(in.data, "Content-Length:");
            need = cl && cl < end ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
        }
        if (in.len >= body_at + need) break;
    }
    if (body_at && in.len >= body_at + need) {
        char method[16] = "", path[256] = "";
        sscanf(in.data, "%15s %255s", method, path);
        const char *body = in.data + body_at;
        pthread_mutex_lock(&fs->lock);
        dk_buf_printf(&fs->requests, "%s %s %s\n", method, path, body);
        pthread_mutex_unlock(&fs->lock);
        fake_reply(fd, method, path, body);
    }
    dk_buf_free(&in);
    close(fd);
}

static void *fake_loop(void *arg)
{
    fake_server *fs = arg;
    while (!atomic_load(&fs->stop)) {
        struct pollfd p = {.fd = fs->fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0) continue;
        int c = accept(fs->fd, NULL, NULL);
        if (c >= 0) fake_serve_one(fs, c);
    }
    return NULL;
}

/* A listening socket on a free loopback port; the port in *port. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static int fake_start(fake_server *fs)
{
    memset(fs, 0, sizeof(*fs));
    pthread_mutex_init(&fs->lock, NULL);
    fs->fd = listen_any(&fs->port);
    if (fs->fd < 0) return -1;
    return pthread_create(&fs->thread, NULL, fake_loop, fs) == 0 ? 0 : -1;
}

static void fake_stop(fake_server *fs)
{
    atomic_store(&fs->stop, 1);
    pthread_join(fs->thread, NULL);
    close(fs->fd);
    dk_buf_free(&fs->requests);
    pthread_mutex_destroy(&fs->lock);
}

/* The recorded requests so far (a copy, dk_free), and forgets them. */
static char *fake_take(fake_server *fs)
{
    pthread_mutex_lock(&fs->lock);
    char *s = fs->requests.data ? dk_buf_detach(&fs->requests) : dk_strdup("");
    pthread_mutex_unlock(&fs->lock);
    return s;
}

TEST(cli, run_and_ps_through_a_server)
{
    if (!binary_ready()) return;
    fake_server fs;
    REQUIRE(fake_start(&fs) == 0);
    char host[64];
    snprintf(host, sizeof host, "DUCKLING_HOST=127.0.0.1:%d", fs.port);
    const char *env[] = {host, NULL};
    proc_result r;

    /* a streamed chat: content on stdout, thinking on stderr, the call as a JSON line, the
     * final object's timings; the request carries the options, messages, think */
    const char *a1[] = {"run", "some/model", "hi", "--temperature", "0", "--think", "--verbose", "--keepalive", "10m", NULL};
    REQUIRE(spawn_env(&r, NULL, a1, env) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_STR(r.out, "Hello world\n{\"name\":\"f\",\"arguments\":{\"a\":1}}\n");
    CHECK_MSG(strstr(r.err, "Thinking...\nhmm\n...done thinking.\n") != NULL, "%s", r.err);
    CHECK(strstr(r.err, "total duration:       5.000ms\n") != NULL);
    CHECK(strstr(r.err, "load duration:        1.000ms\n") != NULL);
    CHECK(strstr(r.err, "prompt eval count:    3 token(s)\n") != NULL);
    CHECK(strstr(r.err, "eval rate:            2000.00 tokens/s\n") != NULL);
    proc_free(&r);
    char *reqs = fake_take(&fs);
    CHECK_MSG(strstr(reqs, "GET / \n") != NULL, "%s", reqs);
    CHECK(strstr(reqs, "POST /api/chat {\"model\":\"some/model\",\"stream\":true,\"options\":{\"temperature\":0.0},") != NULL);
    CHECK(strstr(reqs, "\"keep_alive\":\"10m\"") != NULL);
    CHECK(strstr(reqs, "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]") != NULL);
    CHECK(strstr(reqs, "\"think\":true") != NULL);
    dk_free(reqs);

    /* the server's error: one line, exit 1 (a refused request, and one that fails midway) */
    const char *a2[] = {"run", "missing", "hi", NULL};
    REQUIRE(spawn_env(&r, NULL, a2, env) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_EQ_STR(r.err, "duckling run: model 'missing' not found\n");
    proc_free(&r);
    const char *a3[] = {"run", "midway", "hi", "--hide-thinking", NULL};
    REQUIRE(spawn_env(&r, NULL, a3, env) == 0);
    CHECK_EQ_INT(r.status, 1);
    CHECK_EQ_STR(r.err, "duckling run: the model broke\n");
    proc_free(&r);

    /* a chat keeps the conversation: the second request has the first answer in it */
    const char *a4[] = {"run", "m", NULL};
    REQUIRE(spawn_env(&r, "hi\n/show info\n/show parameters\nagain\n", a4, env) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_MSG(strstr(r.out, "    architecture        qwen2\n    parameters          494.03M\n    context length      32768\n") != NULL,
              "%s", r.out);
    CHECK(strstr(r.out, "Model defined parameters:\ntemperature 0.7\n") != NULL);
    proc_free(&r);
    reqs = fake_take(&fs);
    CHECK_MSG(strstr(reqs, "{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"Hello world\","
                           "\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"a\":1}}}]},"
                           "{\"role\":\"user\",\"content\":\"again\"}]") != NULL,
              "%s", reqs);
    dk_free(reqs);

    /* --local never asks */
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    const char *a5[] = {"run", model, "Once upon a time", "--local", "--raw", "-n", "3", "--temperature", "0", NULL};
    REQUIRE(spawn_env(&r, NULL, a5, env) == 0);
    CHECK_EQ_STR(r.out, ", there was");
    proc_free(&r);
    reqs = fake_take(&fs);
    CHECK_EQ_STR(reqs, "");
    dk_free(reqs);

    /* ps: Ollama's columns */
    const char *a6[] = {"ps", NULL};
    REQUIRE(spawn_env(&r, NULL, a6, env) == 0);
    CHECK_EQ_INT(r.status, 0);
    CHECK_EQ_INT(count_lines(r.out), 3);
    CHECK(strncmp(r.out, "NAME ", 5) == 0 && strstr(r.out, " ID ") && strstr(r.out, " SIZE ") && strstr(r.out, " PROCESSOR ") &&
          strstr(r.out, " CONTEXT ") && strstr(r.out, " UNTIL\n"));
    CHECK_MSG(strstr(r.out, "qwen2.5:0.5b") && strstr(r.out, " a8b0c5157701 ") && strstr(r.out, " 1.2 GB ") &&
              strstr(r.out, " 100% CPU ") && strstr(r.out, " 4096 ") && strstr(r.out, " Forever\n"), "%s", r.out);
    CHECK_MSG(strstr(r.out, "tiny:latest") && strstr(r.out, " 532 MB ") && strstr(r.out, " 4 minutes from now\n"), "%s", r.out);
    proc_free(&r);
    fake_stop(&fs);
}

/* ---- the real server ---- */

/* GET / on 127.0.0.1:port; 1 when it answers 200. */
static int http_root_ok(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0) return 0;
    char buf[256] = "";
    int ok = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        fake_write_all(fd, "GET / HTTP/1.0\r\n\r\n", 18);
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n > 0) buf[n] = 0;
        ok = strncmp(buf, "HTTP/1.", 7) == 0 && strstr(buf, " 200 ") != NULL;
    }
    close(fd);
    return ok;
}

TEST(cli, run_through_duckling_serve)
{
    if (!binary_ready()) return;
    char model[1024];
    test_kit_file(model, sizeof model, STORIES);
    int port = 0;
    int probe = listen_any(&port);
    REQUIRE(probe >= 0);
    close(probe);
    char port_s[16], host[64], models[512], ollama[512], err_path[512];
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(host, sizeof host, "DUCKLING_HOST=127.0.0.1:%d", port);
    snprintf(models, sizeof models, "DUCKLING_MODELS=%s/serve-models", test_tmpdir());
    snprintf(ollama, sizeof ollama, "OLLAMA_MODELS=%s/serve-ollama", test_tmpdir());
    snprintf(err_path, sizeof err_path, "%s/serve.err", test_tmpdir());
    const char *env[] = {host, models, ollama, NULL};
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (devnull < 0 || err < 0) _exit(127);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(err, 2);
        child_env(env);
        const char *argv[] = {test_cli_path(), "serve", "--host", "127.0.0.1", "--port", port_s, NULL};
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    /* wait (at most 20 s) for it to answer, or to die */
    int up = 0, st = 0, exited = 0;
    for (int i = 0; i < 200 && !up && !exited; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) exited = 1;
        else if (http_root_ok(port)) up = 1;
        else usleep(100000);
    }
    if (!up) {
        char *e = NULL, er[DK_ERRLEN];
        size_t n = 0;
        dk_file_read(err_path, 1 << 20, &e, &n, er);
        test_fail_at(__FILE__, __LINE__, "duckling serve --port %d %s; its stderr: %s", port,
                     exited ? "exited at once" : "did not answer GET / within 20 s", e ? e : "");
        dk_free(e);
        if (!exited) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        return;
    }
    char *local = run_once(model, "Once upon a time");
    const char *args[] = {"run", model, "Once upon a time", "--temperature", "0", "-n", "20", "--verbose", NULL};
    proc_result r;
    int spawned = spawn_env(&r, NULL, args, env);
    if (spawned == 0) {
        CHECK_MSG(r.status == 0, "run through the server: status %d, stderr '%s'", r.status, r.err);
        CHECK_EQ_STR(r.out, local);
        CHECK_MSG(strstr(r.err, "eval count:           20 token(s)") != NULL, "%s", r.err);
        proc_free(&r);
        /* the model is resident now: ps lists it */
        const char *ps[] = {"ps", NULL};
        if (spawn_env(&r, NULL, ps, env) == 0) {
            CHECK_EQ_INT(r.status, 0);
            CHECK_MSG(count_lines(r.out) == 2 && strstr(r.out, "stories260K") && strstr(r.out, "100% CPU"), "%s", r.out);
            proc_free(&r);
        }
        /* a chat through a pipe: the first answer is the one-shot one */
        const char *chat[] = {"run", model, "-n", "20", NULL};
        if (spawn_env(&r, "/set parameter temperature 0\nOnce upon a time\n", chat, env) == 0) {
            CHECK_EQ_INT(r.status, 0);
            dk_buf want = {0};
            dk_buf_printf(&want, "Set parameter 'temperature' to '0'\n%s\n", local ? local : "");
            CHECK_EQ_STR(r.out, want.data);
            dk_buf_free(&want);
            proc_free(&r);
        }
    }
    dk_free(local);
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    REQUIRE(spawned == 0);
}

/* ---- at a terminal: libedit, history, Ctrl-C at the prompt ---- */

/* Reads from the pty into out until needle appears after offset *from (then *from moves past
 * it), the child closes the terminal, or timeout_ms pass. 1 when found. */
static int pty_expect(int fd, dk_buf *out, size_t *from, const char *needle, int timeout_ms)
{
    uint64_t deadline = dk_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        const char *hit = out->data && *from <= out->len ? strstr(out->data + *from, needle) : NULL;
        if (hit) {
            *from = (size_t)(hit - out->data) + strlen(needle);
            return 1;
        }
        uint64_t now = dk_now_ns();
        if (now >= deadline) return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1) <= 0) continue;
        char buf[1024];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return 0; /* EIO: the child closed the terminal */
        dk_buf_append(out, buf, (size_t)n);
    }
}

TEST(cli, run_chat_at_a_terminal)
{
    if (!binary_ready()) return;
    char model[1024], history[512], history_env[600];
    test_kit_file(model, sizeof model, STORIES);
    char *one = run_once(model, "Once upon a time");
    REQUIRE(one);
    snprintf(history, sizeof history, "%s/tty-history", test_tmpdir());
    snprintf(history_env, sizeof history_env, "DUCKLING_HISTORY=%s", history);
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    REQUIRE(master >= 0);
    REQUIRE(grantpt(master) == 0 && unlockpt(master) == 0);
    const char *slave_name = ptsname(master);
    REQUIRE(slave_name);
    const char *env[] = {history_env, "TERM=dumb", NULL};
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        setsid();
        int slave = open(slave_name, O_RDWR); /* becomes the controlling terminal */
        if (slave < 0) _exit(127);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        close(master);
        child_env(env);
        const char *argv[] = {test_cli_path(), "run", model, "--temperature", "0", "-n", "20", NULL};
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    dk_buf out = {0};
    size_t from = 0;
    char first_line[256];
    dk_strlcpy(first_line, one, sizeof first_line);
    first_line[strcspn(first_line, "\n")] = 0;
    CHECK_MSG(pty_expect(master, &out, &from, ">>> ", 20000), "no prompt: '%s'", out.data ? out.data : "");
    fake_write_all(master, "Once upon a time\r", 17);
    CHECK_MSG(pty_expect(master, &out, &from, first_line, 20000), "no answer: '%s'", out.data ? out.data : "");
    CHECK(pty_expect(master, &out, &from, ">>> ", 20000));
    /* the prompt is printed before libedit reads; a Ctrl-C in between can still be lost
     * (a known race, in the closing note), so give it time to be reading */
    usleep(300000);
    fake_write_all(master, "\003", 1); /* Ctrl-C at the prompt: a hint, not the end */
    CHECK_MSG(pty_expect(master, &out, &from, "Use Ctrl + d or /bye to exit.", 20000), "'%s'", out.data ? out.data : "");
    CHECK(pty_expect(master, &out, &from, ">>> ", 20000));
    fake_write_all(master, "/bye\r", 5);
    pty_expect(master, &out, &from, "\001never\001", 20000); /* read until it closes the terminal */
    int st = 0;
    pid_t done = 0;
    for (int i = 0; i < 200 && (done = waitpid(pid, &st, WNOHANG)) == 0; i++) usleep(50000);
    if (done == 0) { /* a hung chat must fail the test, not hang the suite */
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    REQUIRE_MSG(done == pid, "the chat did not exit: '%s'", out.data ? out.data : "");
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d, output '%s'", st, out.data ? out.data : "");
    close(master);
    char *h = NULL, e[DK_ERRLEN];
    size_t n = 0;
    CHECK_MSG(dk_file_read(history, 1 << 20, &h, &n, e) == DK_OK, "%s", e);
    CHECK_MSG(h && strstr(h, "Once") && strstr(h, "/bye"), "history: '%s'", h ? h : "");
    dk_free(h);
    dk_buf_free(&out);
    dk_free(one);
}
