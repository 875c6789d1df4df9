/*
 * test_fuzz.c: replays every fuzz corpus as ordinary tests (suite `fuzz`).
 *
 * Each row of fuzz_targets names a directory under fuzz/corpus/ and the function of
 * fuzz/fuzz.h that takes its inputs; a new fuzz target only adds a row. Run from the
 * repository root (as `make test` does). The corpora hold inputs libFuzzer found
 * interesting, so replaying them under ASan/UBSan is a cheap regression test.
 */
#include <dirent.h>
#include <stdint.h>

#include "../fuzz/fuzz.h"
#include "base/base.h"
#include "test.h"

typedef struct fuzz_target {
    const char *corpus;                          /* directory name under fuzz/corpus/ */
    int (*one)(const uint8_t *data, size_t size);
} fuzz_target;

static const fuzz_target fuzz_targets[] = {
    {"gguf", fuzz_gguf_one},
    {"grammar", fuzz_grammar_one},
    {"json_schema", fuzz_json_schema_one},
    {"modelfile", fuzz_modelfile_one},
    {"openai_reply", fuzz_openai_reply_one},
    {"rag_read", fuzz_rag_read_one},
    {"request", fuzz_request_one},
    {"sql_guard", fuzz_sql_guard_one},
    {"sql_text", fuzz_sql_text_one},
    {"template", fuzz_template_one},
    {"toolcall", fuzz_toolcall_one},
};

TEST(fuzz, corpus_replay)
{
    for (size_t k = 0; k < sizeof fuzz_targets / sizeof fuzz_targets[0]; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "fuzz/corpus/%s", fuzz_targets[k].corpus);
        DIR *d = opendir(dir);
        CHECK_MSG(d != NULL, "cannot open %s (run the tests from the repository root)", dir);
        if (!d) continue;
        int n_files = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            char *data = NULL;
            size_t len = 0;
            char err[DK_ERRLEN];
            int rc = dk_file_read(path, (size_t)1 << 24, &data, &len, err);
            CHECK_MSG(rc == DK_OK, "%s", err);
            if (rc) continue;
            CHECK_EQ_INT(fuzz_targets[k].one((const uint8_t *)data, len), 0);
            dk_free(data);
            n_files++;
        }
        closedir(d);
        CHECK_MSG(n_files > 0, "corpus %s is empty", dir);
        test_log("%s: %d inputs replayed", fuzz_targets[k].corpus, n_files);
    }
}
