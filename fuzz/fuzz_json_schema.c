/*
 * fuzz_json_schema.c: fuzz target for the JSON-schema to GBNF converter.
 *
 * Parses the input as JSON and converts it as a schema; whenever conversion succeeds the
 * GBNF it wrote must parse (a converter bug otherwise, so the target traps), and a matcher
 * over a few JSON-ish pieces is started and stepped a little. Not a test of what the
 * schemas mean.
 */
#include "fuzz.h"

#include <jansson.h>
#include <string.h>

#include "sample/sample.h"

static const char *const fuzz_schema_pieces[] = {"{", "}", "\"", "a", "1", "0", "-", ",", ":", "[", "]", " ", "true", "null", ""};
#define FUZZ_SCHEMA_N_VOCAB (sizeof fuzz_schema_pieces / sizeof fuzz_schema_pieces[0])

int fuzz_json_schema_one(const uint8_t *data, size_t size)
{
    json_t *schema = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!schema) return 0;
    char err[DK_ERRLEN];
    dk_buf gbnf = {0};
    if (sample_json_schema_to_gbnf(schema, "root", &gbnf, err) == DK_OK) {
        sample_grammar *g = NULL;
        if (sample_grammar_parse(&g, gbnf.data, gbnf.len, "root", err) != DK_OK) __builtin_trap();
        const char *pieces[FUZZ_SCHEMA_N_VOCAB];
        size_t lens[FUZZ_SCHEMA_N_VOCAB];
        bool eog[FUZZ_SCHEMA_N_VOCAB];
        for (size_t i = 0; i < FUZZ_SCHEMA_N_VOCAB; i++) {
            pieces[i] = fuzz_schema_pieces[i];
            lens[i] = strlen(pieces[i]);
            eog[i] = i == FUZZ_SCHEMA_N_VOCAB - 1;
        }
        sample_vocab *v = NULL;
        sample_matcher *m = NULL;
        if (sample_vocab_new(&v, FUZZ_SCHEMA_N_VOCAB, pieces, lens, eog, err) == DK_OK &&
            sample_matcher_new(&m, g, v, err) == DK_OK) {
            for (int step = 0; step < 16; step++) {
                int32_t pick = -1;
                for (size_t t = 0; t < FUZZ_SCHEMA_N_VOCAB && pick < 0; t++)
                    if (sample_matcher_allows(m, (int32_t)((t + (size_t)step) % FUZZ_SCHEMA_N_VOCAB))) pick = (int32_t)((t + (size_t)step) % FUZZ_SCHEMA_N_VOCAB);
                if (pick < 0 || sample_matcher_accept(m, pick, err) != DK_OK || pick == (int32_t)FUZZ_SCHEMA_N_VOCAB - 1) break;
            }
        }
        sample_matcher_free(m);
        sample_vocab_free(v);
        sample_grammar_free(g);
    }
    dk_buf_free(&gbnf);
    json_decref(schema);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_json_schema_one(data, size); }
#endif
