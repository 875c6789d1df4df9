/*
 * kit_vocab.c: the vocabularies and the model the grammar, chat and server suites share (see
 * kit_vocab.h).
 */
#include "kit_vocab.h"

#include <stdio.h>
#include <string.h>

#include "convert/convert.h"

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

const char *kit_qwen_vocab_model(void)
{
    static char path[512];
    char vocab[512], err[DK_ERRLEN];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s/qwen-vocab-tiny.gguf", test_tmpdir());
        convert_synth_opts o = {.preset = "qwen-vocab-tiny", .quant = "Q8_0", .out_path = path, .seed = 7,
                                .vocab_from = test_kit_file(vocab, sizeof vocab, "tokenizer/ggml-vocab-qwen2.gguf"),
                                .n_threads = 1};
        if (convert_synth(&o, NULL, err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "synth: %s", err);
            path[0] = 0;
            return NULL;
        }
    }
    return path;
}

sample_vocab *test_byte_vocab(void)
{
    static char bytes[256];
    const char *pieces[257];
    size_t lens[257];
    bool eog[257] = {0};
    for (int i = 0; i < 256; i++) {
        bytes[i] = (char)i;
        pieces[i] = &bytes[i];
        lens[i] = 1;
    }
    pieces[256] = "";
    lens[256] = 0;
    eog[256] = true;
    sample_vocab *v = NULL;
    char err[DK_ERRLEN];
    if (sample_vocab_new(&v, 257, pieces, lens, eog, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "%s", err);
    return v;
}

bool test_grammar_accepts(const sample_grammar *g, const sample_vocab *v, const char *text)
{
    sample_matcher *m = NULL;
    char err[DK_ERRLEN];
    if (sample_matcher_new(&m, g, v, err) != DK_OK) return false;
    bool ok = sample_matcher_accept_bytes(m, text, strlen(text), err) == DK_OK && sample_matcher_accepting(m);
    sample_matcher_free(m);
    return ok;
}
