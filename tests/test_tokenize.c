/*
 * test_tokenize.c: the tokenizers against the conformance kit's vectors (exact ids) for the
 * vocabularies implemented so far, detokenization, and bad vocabularies.
 */
#include "test.h"

#include <stdlib.h>

#include "tokenize/tokenize.h"

/* Splits a kit .inp file into its tests (separator "\n__ggml_vocab_test__\n"). */
static size_t split_inp(char *data, char **texts, size_t max)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    size_t n = 0;
    char *p = data;
    while (n < max) {
        char *s = strstr(p, sep);
        if (!s) break;
        *s = 0;
        texts[n++] = p;
        p = s + sizeof sep - 1;
    }
    return n;
}

static int check_vector(const char *vocab, const char *inp, const char *out_suffix, bool add_special, bool parse_special)
{
    char path[512], err[DK_ERRLEN];
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", vocab);
    gguf_file *f;
    if (gguf_open(&f, test_kit_file(path, sizeof path, rel), err) != DK_OK) {
        CHECK_MSG(0, "%s", err);
        return -1;
    }
    tok_vocab *v;
    int rc = tok_vocab_load(&v, f, err);
    CHECK_MSG(rc == DK_OK, "%s", err);
    char *in_text = NULL, *out_text = NULL;
    snprintf(rel, sizeof rel, "tokenizer/%s", inp);
    CHECK(dk_file_read(test_kit_file(path, sizeof path, rel), 1 << 24, &in_text, NULL, err) == DK_OK);
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf%s", vocab, out_suffix);
    CHECK(dk_file_read(test_kit_file(path, sizeof path, rel), 1 << 24, &out_text, NULL, err) == DK_OK);
    int n_bad = 0, n_cases = 0;
    if (rc == DK_OK && in_text && out_text) {
        char *texts[512];
        size_t n = split_inp(in_text, texts, 512);
        char *line = out_text;
        for (size_t i = 0; i < n && line; i++) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = 0;
            int32_t *ids;
            size_t n_ids;
            dk_buf got = {0};
            if (tok_encode(v, texts[i], strlen(texts[i]), add_special, parse_special, &ids, &n_ids, err) == DK_OK) {
                for (size_t k = 0; k < n_ids; k++) dk_buf_printf(&got, " %d", ids[k]);
                dk_free(ids);
            }
            const char *g = got.data ? got.data : "";
            n_cases++;
            if (strcmp(g, line) != 0) {
                if (n_bad++ < 3) test_log("%s%s case %zu \"%.60s\": got [%.120s] want [%.120s]", vocab, out_suffix, i, texts[i], g, line);
            }
            dk_buf_free(&got);
            line = nl ? nl + 1 : NULL;
        }
    }
    CHECK_MSG(n_cases > 0 && n_bad == 0, "%s%s: %d of %d cases differ", vocab, out_suffix, n_bad, n_cases);
    dk_free(in_text);
    dk_free(out_text);
    tok_vocab_free(v);
    gguf_close(f);
    return n_bad;
}

static void check_all_vectors(const char *vocab)
{
    char inp[128];
    snprintf(inp, sizeof inp, "ggml-vocab-%s.gguf.inp", vocab);
    check_vector(vocab, inp, ".out", false, false);
    check_vector(vocab, "extra.inp", ".extra.out", false, false);
    check_vector(vocab, "extra.inp", ".extra.special.out", false, true);
    check_vector(vocab, "extra.inp", ".extra.addspecial.out", true, true);
}

TEST(tokenize, llama_spm_matches_kit) { check_all_vectors("llama-spm"); }

TEST(tokenize, spm_pieces_and_stories_prompt)
{
    char path[512], err[DK_ERRLEN];
    gguf_file *f;
    REQUIRE(gguf_open(&f, test_kit_file(path, sizeof path, "forward/stories260K/stories260K.F32.gguf"), err) == DK_OK);
    tok_vocab *v;
    REQUIRE_MSG(tok_vocab_load(&v, f, err) == DK_OK, "%s", err);
    int32_t *ids;
    size_t n;
    REQUIRE(tok_encode(v, "Once upon a time", 16, true, false, &ids, &n, err) == DK_OK);
    static const int32_t want[] = {1, 403, 407, 261, 378};
    CHECK(n == 5 && memcmp(ids, want, sizeof want) == 0);
    dk_buf text = {0};
    for (size_t i = 0; i < n; i++) CHECK(tok_piece(v, ids[i], &text, err) == DK_OK);
    CHECK_EQ_STR(text.data, " Once upon a time"); /* BOS is a control token: no text */
    dk_buf_free(&text);
    dk_free(ids);
    CHECK(tok_piece(v, 100000, &text, err) == DK_ERR_ARG);
    CHECK(tok_is_eog(v, tok_eos(v)));
    tok_vocab_free(v);
    gguf_close(f);
}

TEST(tokenize, phi3_spm_matches_kit) { check_all_vectors("phi-3"); }

TEST(tokenize, gpt2_bpe_matches_kit) { check_all_vectors("gpt-2"); }
TEST(tokenize, qwen2_bpe_matches_kit) { check_all_vectors("qwen2"); }

TEST(tokenize, bert_wordpiece_matches_kit) { check_all_vectors("bert-bge"); }
TEST(tokenize, starcoder_bpe_matches_kit) { check_all_vectors("starcoder"); }
TEST(tokenize, falcon_bpe_matches_kit) { check_all_vectors("falcon"); }
TEST(tokenize, deepseek_coder_bpe_matches_kit) { check_all_vectors("deepseek-coder"); }
TEST(tokenize, deepseek_llm_bpe_matches_kit) { check_all_vectors("deepseek-llm"); }
