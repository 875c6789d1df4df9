/*
 * cmd_synth: `duckling synth --preset NAME --quant TYPE --out F.gguf [--seed S] [--layers N]
 * [--vocab-from TOKENIZER.gguf] [--threads N]` writes a random-weight model of a preset's
 * true shape (see convert_synth). `duckling synth --list` prints the presets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/convert.h"

int cli_synth(int argc, char **argv)
{
    convert_synth_opts o = {0};
    o.quant = "F32";
    o.seed = 1;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--list") == 0) {
            printf("%-15s %-7s %6s %6s %5s %5s %6s %7s  %s\n", "preset", "arch", "n_embd", "layers", "heads", "kv", "n_ff", "vocab", "vocabulary");
            for (const convert_preset *p = convert_presets(); p->name; p++)
                printf("%-15s %-7s %6d %6d %5d %5d %6d %7d  %s\n", p->name, p->arch, p->n_embd, p->n_layer, p->n_head,
                       p->n_head_kv, p->n_ff, p->n_vocab, p->vocab_note);
            return 0;
        }
        if (!v) { fprintf(stderr, "synth: %s needs a value\n", a); return 2; }
        if (strcmp(a, "--preset") == 0) o.preset = v;
        else if (strcmp(a, "--quant") == 0) o.quant = v;
        else if (strcmp(a, "--out") == 0 || strcmp(a, "-o") == 0) o.out_path = v;
        else if (strcmp(a, "--seed") == 0) o.seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--layers") == 0) o.n_layers = atoi(v);
        else if (strcmp(a, "--vocab-from") == 0) o.vocab_from = v;
        else if (strcmp(a, "--threads") == 0) o.n_threads = atoi(v);
        else { fprintf(stderr, "synth: unknown option %s\n", a); return 2; }
    }
    if (!o.preset || !o.out_path) {
        fprintf(stderr, "usage: duckling synth --preset NAME --quant TYPE --out F.gguf [--seed S] [--layers N] "
                        "[--vocab-from TOKENIZER.gguf] [--threads N] | --list\n");
        return 2;
    }
    char err[DK_ERRLEN] = "";
    uint64_t t0 = dk_now_ns();
    int rc = convert_synth(&o, stderr, err);
    if (rc != DK_OK) { fprintf(stderr, "%s\n", err); return 1; }
    printf("wrote %s (%s, %s) in %.2f s\n", o.out_path, o.preset, o.quant, (double)(dk_now_ns() - t0) / 1e9);
    return 0;
}
