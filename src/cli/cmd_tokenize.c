/*
 * cmd_tokenize.c: `duckling tokenize MODEL (TEXT | --file F) [--json] [--parse-special]
 * [--add-special]`: prints the token ids the model's tokenizer makes of a text, as one line of
 * ids separated by spaces or as a JSON array. Only the vocabulary is loaded, so vocab-only
 * GGUFs work. By default special-token texts are plain text and no BOS/EOS is added.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#define CMD "tokenize"

#define TOKENIZE_MAX_FILE_BYTES ((size_t)1 << 30)

int cli_tokenize(int argc, char **argv)
{
    const char *model_path = NULL, *text = NULL, *file = NULL;
    bool json = false, parse_special = false, add_special = false, only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (only_positional || a[0] != '-' || a[1] == 0) {
            if (!model_path) model_path = a;
            else if (!text) text = a;
            else return cli_error(CMD, "unexpected argument '%s' (quote the text)", a);
            continue;
        }
        if (strcmp(a, "--") == 0) { only_positional = true; continue; }
        if (strcmp(a, "--json") == 0) { json = true; continue; }
        if (strcmp(a, "--parse-special") == 0) { parse_special = true; continue; }
        if (strcmp(a, "--add-special") == 0) { add_special = true; continue; }
        if ((r = cli_opt_value(CMD, argc, argv, &i, "--file", &v)) != 0) {
            if (r < 0) return 1;
            file = v;
            continue;
        }
        return cli_error(CMD, "unknown option '%s' (see duckling help tokenize)", a);
    }
    if (!model_path) return cli_error(CMD, "missing MODEL (usage: duckling tokenize MODEL TEXT)");
    if (!text == !file) return cli_error(CMD, "give either TEXT or --file F");

    char err[DK_ERRLEN];
    char *file_text = NULL;
    size_t n_bytes = text ? strlen(text) : 0;
    if (file) {
        if (dk_file_read(file, TOKENIZE_MAX_FILE_BYTES, &file_text, &n_bytes, err) != DK_OK) return cli_error(CMD, "%s", err);
        text = file_text;
    }
    engine_model *model = NULL;
    int status = 1;
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    if (cli_load_model(CMD, model_path, true, 1, true, &model)) goto done;
    if (engine_tokenize(model, text, n_bytes, add_special, parse_special, &tokens, &n_tokens, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    if (json) putchar('[');
    for (size_t i = 0; i < n_tokens; i++) printf(json ? (i ? ",%d" : "%d") : (i ? " %d" : "%d"), (int)tokens[i]);
    if (json) putchar(']');
    putchar('\n');
    status = fflush(stdout) == 0 ? 0 : cli_error(CMD, "cannot write the output");
done:
    dk_free(tokens);
    dk_free(file_text);
    engine_model_free(model);
    return status;
}
