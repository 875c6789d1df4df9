/*
 * kit_vocab.c: kit_sample_vocab (see kit_vocab.h).
 */
#include "kit_vocab.h"

#include "test.h"

const sample_vocab *kit_sample_vocab(const char *relative, engine_model **model)
{
    char path[512], err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.vocab_only = true;
    const sample_vocab *v = NULL;
    *model = NULL;
    test_kit_file(path, sizeof path, relative);
    if (engine_model_load(model, path, &lp, err) != DK_OK || engine_sample_vocab(*model, &v, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "%s: %s", path, err);
        engine_model_free(*model);
        *model = NULL;
        return NULL;
    }
    return v;
}
