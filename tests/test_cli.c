/*
 * test_cli.c: the duckling program end to end: spawns the built binary (test_cli_path()) and
 * checks stdout, stderr and exit status of run, logits, tokenize and embed against the kit's
 * llama.cpp references, and that bad input gives one line on stderr and a non-zero status.
 */
#include "test.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"

typedef struct proc_result {
    int exited;   /* 1 if it exited normally (no signal) */
    int status;   /* exit status */
    char *out;    /* stdout, NUL-terminated, dk_free */
    size_t n_out;
    char *err;    /* stderr */
    size_t n_err;
} proc_result;

static void proc_free(proc_result *r)
{
    dk_free(r->out);
    dk_free(r->err);
    memset(r, 0, sizeof(*r));
}

/* Runs the binary with args (NULL-terminated, args[0] is the subcommand), stdin from
 * stdin_text (or /dev/null). */
static int spawn(proc_result *r, const char *stdin_text, const char *const *args)
{
    memset(r, 0, sizeof(*r));
    static int counter;
    char out_path[512], err_path[512], in_path[512];
    counter++;
    snprintf(out_path, sizeof out_path, "%s/cli-%d.out", test_tmpdir(), counter);
    snprintf(err_path, sizeof err_path, "%s/cli-%d.err", test_tmpdir(), counter);
    snprintf(in_path, sizeof in_path, "%s/cli-%d.in", test_tmpdir(), counter);
    char e[DK_ERRLEN];
    if (dk_file_write(in_path, stdin_text ? stdin_text : "", stdin_text ? strlen(stdin_text) : 0, e) != DK_OK) return -1;
    const char *argv[64];
    size_t n = 0;
    argv[n++] = test_cli_path();
    for (size_t i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int in = open(in_path, O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0 || err < 0) _exit(127);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    r->exited = WIFEXITED(st);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (dk_file_read(out_path, 1 << 26, &r->out, &r->n_out, e) != DK_OK) return -1;
    if (dk_file_read(err_path, 1 << 26, &r->err, &r->n_err, e) != DK_OK) return -1;
    return 0;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int binary_ready(void)
{
    if (access(test_cli_path(), X_OK) != 0) {
        test_fail_at(__FILE__, __LINE__, "no binary at %s (build it first)", test_cli_path());
        return 0;
    }
    return 1;
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
