/*
 * cmd_quantize: `duckling quantize IN.gguf OUT.gguf TYPE [--threads N]` re-quantizes a model
 * (see convert_quantize). Fallbacks are reported on stderr; the one error line too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "convert/convert.h"

int cli_quantize(int argc, char **argv)
{
    const char *pos[3] = {NULL, NULL, NULL};
    int n_pos = 0, n_threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) n_threads = atoi(argv[++i]);
        else if (argv[i][0] == '-' && argv[i][1]) { fprintf(stderr, "quantize: unknown option %s\n", argv[i]); return 2; }
        else if (n_pos < 3) pos[n_pos++] = argv[i];
        else { fprintf(stderr, "quantize: too many arguments\n"); return 2; }
    }
    if (n_pos != 3) {
        fprintf(stderr, "usage: duckling quantize IN.gguf OUT.gguf TYPE (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 "
                        "Q2_K Q3_K Q4_K Q5_K Q6_K Q3_K_M Q4_K_S Q4_K_M Q5_K_S Q5_K_M)\n");
        return 2;
    }
    char err[DK_ERRLEN] = "";
    uint64_t t0 = dk_now_ns();
    int rc = convert_quantize(pos[0], pos[1], pos[2], n_threads, stderr, err);
    if (rc != DK_OK) { fprintf(stderr, "%s\n", err); return 1; }
    printf("wrote %s (%s) in %.2f s\n", pos[1], pos[2], (double)(dk_now_ns() - t0) / 1e9);
    return 0;
}
