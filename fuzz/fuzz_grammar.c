/*
 * fuzz_grammar.c: fuzz target for the GBNF parser and the grammar matcher.
 *
 * Parses the input as GBNF; if it parses, runs a matcher over a small built-in vocabulary
 * (single ASCII characters, a few multi-byte and partial UTF-8 pieces, words, an EOG
 * token) for some steps, taking each step's first allowed token in an order drawn from
 * the input's bytes, and checks that the mask and the per-token answers agree. Not a test
 * of what the grammars mean.
 */
#include "fuzz.h"

#include <math.h>
#include <string.h>

#include "sample/sample.h"

static const char *const fuzz_grammar_pieces[] = {
    "a", "b", "c", "x", "0", "1", "9", " ", "\n", "\"", "\\", "{", "}", "[", "]", ",", ":", "-", ".",
    "ab", "true", "null", "\": ", "\xc3\xa9", "\xe4\xb8\xad", "\xe4", "\xb8\xad", "\xf0\x9f\x98\x80", "\xff", "",
};
#define FUZZ_GRAMMAR_N_VOCAB (sizeof fuzz_grammar_pieces / sizeof fuzz_grammar_pieces[0])

static void fuzz_grammar_run(const sample_grammar *g, const sample_vocab *v, const uint8_t *data, size_t size)
{
    char err[DK_ERRLEN];
    sample_matcher *m = NULL;
    if (sample_matcher_new(&m, g, v, err) != DK_OK) return;
    float logits[FUZZ_GRAMMAR_N_VOCAB];
    for (size_t step = 0; step < 24; step++) {
        for (size_t i = 0; i < FUZZ_GRAMMAR_N_VOCAB; i++) logits[i] = 0.0f;
        if (sample_matcher_apply(m, logits, err) != DK_OK) break;
        int32_t pick = -1;
        size_t start = size ? data[step % size] % FUZZ_GRAMMAR_N_VOCAB : 0;
        for (size_t k = 0; k < FUZZ_GRAMMAR_N_VOCAB; k++) {
            int32_t t = (int32_t)((start + k) % FUZZ_GRAMMAR_N_VOCAB);
            bool allowed = sample_matcher_allows(m, t);
            if (allowed == (isinf(logits[t]) != 0)) __builtin_trap(); /* mask and check disagree */
            if (allowed && pick < 0) pick = t;
        }
        if (pick < 0 || sample_matcher_accept(m, pick, err) != DK_OK) break;
        (void)sample_matcher_accepting(m);
        (void)sample_matcher_finished(m);
        if (pick == (int32_t)FUZZ_GRAMMAR_N_VOCAB - 1) break; /* EOG */
    }
    (void)sample_matcher_accept_bytes(m, (const char *)data, size < 64 ? size : 64, err);
    sample_matcher_free(m);
}

int fuzz_grammar_one(const uint8_t *data, size_t size)
{
    char err[DK_ERRLEN];
    sample_grammar *g = NULL;
    if (sample_grammar_parse(&g, (const char *)data, size, NULL, err) != DK_OK) return 0;
    const char *pieces[FUZZ_GRAMMAR_N_VOCAB];
    size_t lens[FUZZ_GRAMMAR_N_VOCAB];
    bool eog[FUZZ_GRAMMAR_N_VOCAB];
    for (size_t i = 0; i < FUZZ_GRAMMAR_N_VOCAB; i++) {
        pieces[i] = fuzz_grammar_pieces[i];
        lens[i] = strlen(fuzz_grammar_pieces[i]);
        eog[i] = i == FUZZ_GRAMMAR_N_VOCAB - 1;
    }
    sample_vocab *v = NULL;
    if (sample_vocab_new(&v, FUZZ_GRAMMAR_N_VOCAB, pieces, lens, eog, err) == DK_OK) fuzz_grammar_run(g, v, data, size);
    sample_vocab_free(v);
    sample_grammar_free(g);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_grammar_one(data, size); }
#endif
