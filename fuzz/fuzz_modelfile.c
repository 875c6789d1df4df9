/*
 * fuzz_modelfile.c: fuzz target for the Modelfile parser (store_modelfile_parse) and its
 * writer (store_modelfile_text).
 *
 * The input is a Modelfile. If it parses, the model it describes is written back as text
 * (as `show --modelfile` does) and parsed again: the second parse must succeed and give the
 * same FROM, template, system, license, parameters and messages, so that whatever the parser
 * accepts the writer can quote. A difference aborts (a crash for libFuzzer, a failed replay).
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

static int same_text(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static int same_json(const json_t *a, const json_t *b) { return (!a && !b) || (a && b && json_equal((json_t *)a, (json_t *)b)); }

int fuzz_modelfile_one(const uint8_t *data, size_t size)
{
    char *text = dk_malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    char err[DK_ERRLEN];
    store_modelfile mf;
    if (store_modelfile_parse(text, &mf, err) == DK_OK) {
        store_model m = {
            .name = (char *)"fuzz:latest",
            .gguf_path = mf.from,
            .template_text = mf.template_text,
            .system = mf.system,
            .license = mf.license,
            .params = mf.params,
            .messages = mf.messages,
        };
        char *again = store_modelfile_text(&m);
        store_modelfile mf2;
        if (!again || store_modelfile_parse(again, &mf2, err) != DK_OK) abort();
        if (!same_text(mf.from, mf2.from) || !same_text(mf.template_text, mf2.template_text) ||
            !same_text(mf.system, mf2.system) || !same_text(mf.license, mf2.license) ||
            !same_json(mf.params, mf2.params) || !same_json(mf.messages, mf2.messages))
            abort();
        store_modelfile_free(&mf2);
        dk_free(again);
        store_modelfile_free(&mf);
    }
    dk_free(text);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_modelfile_one(data, size); }
#endif
