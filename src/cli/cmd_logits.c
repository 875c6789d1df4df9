/*
 * cmd_logits.c: `duckling logits MODEL --tokens 1,2,3 [--top 10] [--json] [--gen N | --force 4,5,6]`:
 * evaluates the prompt ids in one batch (as `run` does), then optionally N greedy tokens or the
 * forced ids one at a time, and prints the top (id, logit) pairs of every position, highest
 * first, lower id first on ties. This is the command conformance tests compare with llama.cpp.
 */
#include "cli/cli.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "logits"

typedef struct top_pair {
    int32_t id;
    float logit;
} top_pair;

static int pair_cmp(const void *a, const void *b)
{
    const top_pair *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The k best of logits (n_vocab) into top (k), sorted. A bounded insertion keeps it O(n k). */
static void top_k(const float *logits, size_t n_vocab, size_t k, top_pair *top)
{
    size_t n = 0;
    for (size_t i = 0; i < n_vocab; i++) {
        top_pair c = {(int32_t)i, logits[i]};
        if (n == k && pair_cmp(&c, &top[k - 1]) >= 0) continue;
        size_t j = n < k ? n++ : k - 1;
        while (j > 0 && pair_cmp(&c, &top[j - 1]) < 0) {
            top[j] = top[j - 1];
            j--;
        }
        top[j] = c;
    }
}

/* Appends one position's top pairs to the JSON positions array or prints a text line. */
static int emit_position(json_t *positions, const float *logits, size_t n_vocab, size_t k, top_pair *top,
                         size_t pos, int32_t token)
{
    top_k(logits, n_vocab, k, top);
    if (!positions) {
        printf("%zu %d:", pos, (int)token);
        for (size_t j = 0; j < k; j++) printf(" %d:%.6f", (int)top[j].id, (double)top[j].logit);
        putchar('\n');
        return 0;
    }
    json_t *row = json_array();
    if (!row) return -1;
    for (size_t j = 0; j < k; j++) {
        json_t *pair = json_pack("[if]", (int)top[j].id, (double)top[j].logit);
        if (!pair || json_array_append_new(row, pair)) {
            json_decref(row);
            return -1;
        }
    }
    return json_array_append_new(positions, row) ? -1 : 0;
}

int cli_logits(int argc, char **argv)
{
    const char *model_path = NULL, *tokens_arg = NULL, *force_arg = NULL;
    long top = 10, n_gen = 0, n_threads = 0, n_ctx = 0;
    bool fast = false; /* logits inspect numbers: the reference numerics unless --fast */
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (a[0] != '-') {
            if (model_path) return cli_error(CMD, "unexpected argument '%s'", a);
            model_path = a;
            continue;
        }
        if (strcmp(a, "--json") == 0) { json = true; continue; }
        if (strcmp(a, "--fast") == 0) { fast = true; continue; }
#define OPT(name) ((r = cli_opt_value(CMD, argc, argv, &i, name, &v)) != 0)
        if (OPT("--tokens")) { if (r < 0) return 1; tokens_arg = v; continue; }
        if (OPT("--force")) { if (r < 0) return 1; force_arg = v; continue; }
        if (OPT("--top")) { if (r < 0 || cli_parse_long(CMD, "--top", v, 1, INT32_MAX, &top)) return 1; continue; }
        if (OPT("--gen")) { if (r < 0 || cli_parse_long(CMD, "--gen", v, 0, 1L << 24, &n_gen)) return 1; continue; }
        if (OPT("--threads")) { if (r < 0 || cli_parse_long(CMD, "--threads", v, 1, 1024, &n_threads)) return 1; continue; }
        if (OPT("--ctx")) { if (r < 0 || cli_parse_long(CMD, "--ctx", v, 1, 1L << 24, &n_ctx)) return 1; continue; }
#undef OPT
        return cli_error(CMD, "unknown option '%s' (see duckling help logits)", a);
    }
    if (!model_path) return cli_error(CMD, "missing MODEL (usage: duckling logits MODEL --tokens 1,2,3)");
    if (!tokens_arg) return cli_error(CMD, "missing --tokens");
    if (force_arg && n_gen) return cli_error(CMD, "--gen and --force exclude each other");

    int status = 1;
    char err[DK_ERRLEN];
    int32_t *prompt = NULL, *forced = NULL;
    size_t n_prompt = 0, n_forced = 0;
    engine_model *model = NULL;
    engine_session *session = NULL;
    float *logits = NULL;
    top_pair *best = NULL;
    json_t *root = NULL, *positions = NULL;
    if (cli_parse_ids(CMD, "--tokens", tokens_arg, &prompt, &n_prompt)) goto done;
    if (force_arg && cli_parse_ids(CMD, "--force", force_arg, &forced, &n_forced)) goto done;
    if (cli_load_model(CMD, model_path, false, (int)n_threads, !fast, &model)) goto done;
    size_t n_vocab = engine_n_vocab(model);
    for (size_t i = 0; i < n_prompt + n_forced; i++) {
        int32_t t = i < n_prompt ? prompt[i] : forced[i - n_prompt];
        if ((size_t)t >= n_vocab) {
            cli_error(CMD, "token id %d is out of range (n_vocab %zu)", (int)t, n_vocab);
            goto done;
        }
    }
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = (size_t)n_ctx;
    sp.n_threads = (int)n_threads;
    if (sp.n_ctx == 0) sp.n_ctx = n_prompt + n_forced + (size_t)n_gen;
    if (engine_session_new(&session, model, &sp, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    size_t k = (size_t)top < n_vocab ? (size_t)top : n_vocab;
    logits = dk_malloc_array(n_prompt * n_vocab, sizeof(float));
    best = dk_malloc_array(k, sizeof(top_pair));
    if (!logits || !best) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    if (engine_session_eval(session, prompt, n_prompt, logits, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    if (json) {
        positions = json_array();
        root = positions ? json_pack("{s:I,s:o}", "n_vocab", (json_int_t)n_vocab, "positions", positions) : NULL;
        if (!root) {
            cli_error(CMD, "out of memory");
            goto done;
        }
    }
    size_t pos = 0;
    for (; pos < n_prompt; pos++)
        if (emit_position(positions, logits + pos * n_vocab, n_vocab, k, best, pos, prompt[pos])) goto oom;
    size_t n_more = forced ? n_forced : (size_t)n_gen;
    for (size_t i = 0; i < n_more; i++, pos++) {
        int32_t t = forced ? forced[i] : sample_argmax(engine_session_logits(session), n_vocab);
        if (engine_session_eval(session, &t, 1, NULL, err) != DK_OK) {
            cli_error(CMD, "%s", err);
            goto done;
        }
        if (emit_position(positions, engine_session_logits(session), n_vocab, k, best, pos, t)) goto oom;
    }
    if (json) {
        char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
        if (!s) goto oom;
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s); /* allocated by jansson */
    }
    status = fflush(stdout) == 0 ? 0 : cli_error(CMD, "cannot write the output");
    goto done;
oom:
    cli_error(CMD, "out of memory");
done:
    json_decref(root);
    dk_free(best);
    dk_free(logits);
    dk_free(prompt);
    dk_free(forced);
    engine_session_free(session);
    engine_model_free(model);
    return status;
}
