/*
 * cmd_embed.c: `duckling embed MODEL TEXT... [--no-truncate] [--threads N] [--exact]`: prints
 * one JSON array holding, for each text, the model's L2-normalised embedding vector, computed
 * with engine_embed_batch (the texts share forward passes; a text longer than the context is
 * cut unless --no-truncate). Needs an embedding model (bert family, not a reranker).
 */
#include "cli/cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "embed"

int cli_embed(int argc, char **argv)
{
    const char *model_path = NULL;
    const char **texts = NULL; /* (n_texts) pointers into argv */
    size_t n_texts = 0;
    long n_threads = 0;
    bool exact = false, truncate = true;
    bool only_positional = false;
    texts = dk_calloc((size_t)argc, sizeof(char *));
    if (!texts) return cli_error(CMD, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (only_positional || a[0] != '-' || a[1] == 0) {
            if (!model_path) model_path = a;
            else texts[n_texts++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) { only_positional = true; continue; }
        if (!only_positional && strcmp(a, "--exact") == 0) { exact = true; continue; }
        if (!only_positional && strcmp(a, "--no-truncate") == 0) { truncate = false; continue; }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || cli_parse_long(CMD, "--threads", v, 1, 1024, &n_threads)) goto fail;
            continue;
        }
        cli_error(CMD, "unknown option '%s' (see duckling help embed)", a);
        goto fail;
    }
    if (!model_path || n_texts == 0) {
        cli_error(CMD, "usage: duckling embed MODEL TEXT...");
        goto fail;
    }
    engine_model *model = NULL;
    if (cli_load_model(CMD, model_path, false, (int)n_threads, exact, &model)) goto fail;
    char err[DK_ERRLEN];
    int status = 1;
    size_t n_embd = engine_n_embd(model);
    float *vecs = dk_malloc_array(n_texts, n_embd * sizeof(float)); /* (n_texts, n_embd) */
    json_t *all = json_array();
    if (!vecs || !all) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    if (engine_embed_batch(model, texts, n_texts, truncate, 0, vecs, NULL, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    for (size_t t = 0; t < n_texts; t++) {
        const float *vec = vecs + t * n_embd;
        json_t *row = json_array();
        if (!row || json_array_append_new(all, row)) {
            cli_error(CMD, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < n_embd; i++) {
            if (json_array_append_new(row, json_real(vec[i]))) {
                cli_error(CMD, "out of memory");
                goto done;
            }
        }
    }
    char *s = json_dumps(all, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (!s) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s); /* allocated by jansson */
    status = fflush(stdout) == 0 ? 0 : cli_error(CMD, "cannot write the output");
done:
    json_decref(all);
    dk_free(vecs);
    engine_model_free(model);
    dk_free(texts);
    return status;
fail:
    dk_free(texts);
    return 1;
}
