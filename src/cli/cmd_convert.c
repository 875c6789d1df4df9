/*
 * cmd_convert: `duckling convert-tokenizer TOKENIZER.json [TOKENIZER_CONFIG.json] -o OUT.gguf
 * [--arch NAME] [--pad-vocab N]` turns a Hugging Face tokenizer into a vocab-only GGUF (see
 * convert_tokenizer). A summary line goes to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/convert.h"

int cli_convert_tokenizer(int argc, char **argv)
{
    convert_tok_opts o = {0};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if ((strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) && v) { o.out_path = v; i++; }
        else if (strcmp(a, "--arch") == 0 && v) { o.arch = v; i++; }
        else if (strcmp(a, "--pad-vocab") == 0 && v) { o.pad_vocab_to = strtoll(v, NULL, 10); i++; }
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "convert-tokenizer: unknown option %s\n", a); return 2; }
        else if (n_pos == 0) { o.tokenizer_json = a; n_pos++; }
        else if (n_pos == 1) { o.config_json = a; n_pos++; }
        else { fprintf(stderr, "convert-tokenizer: too many arguments\n"); return 2; }
    }
    if (!o.tokenizer_json || !o.out_path) {
        fprintf(stderr, "usage: duckling convert-tokenizer TOKENIZER.json [TOKENIZER_CONFIG.json] -o OUT.gguf "
                        "[--arch NAME] [--pad-vocab N]\n");
        return 2;
    }
    char err[DK_ERRLEN] = "";
    int rc = convert_tokenizer(&o, stderr, err);
    if (rc != DK_OK) { fprintf(stderr, "%s\n", err); return 1; }
    return 0;
}
