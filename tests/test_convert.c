/*
 * test_convert: the convert module. Re-quantizing a kit F32 model to every type (the file
 * loads, every weight has the type asked for or the documented fallback, and its values are
 * within the type's quantization error of the source), synth shapes, and the tokenizer.json
 * converter on the hand-written fixtures in tests/data (plus a malformed one).
 */
#include <math.h>
#include <string.h>

#include "convert/convert.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "test.h"

static const char *tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", test_tmpdir(), name);
    return buf;
}

/* Relative RMS error of tensor b against a (same shape), both dequantized. */
static double rel_rms(const gguf_tensor *a, const gguf_tensor *b)
{
    int64_t ne0 = a->ne[0], rows = a->n_elements / (ne0 ? ne0 : 1);
    size_t ra = 0, rb = 0;
    if (gguf_row_bytes(a->type, ne0, &ra) != DK_OK || gguf_row_bytes(b->type, ne0, &rb) != DK_OK) return 1e9;
    float *x = dk_malloc_array((size_t)ne0, sizeof(float)), *y = dk_malloc_array((size_t)ne0, sizeof(float));
    double se = 0, ss = 0;
    for (int64_t r = 0; x && y && r < rows; r++) {
        kern_dequantize_row(a->type, (const char *)a->data + (size_t)r * ra, x, ne0);
        kern_dequantize_row(b->type, (const char *)b->data + (size_t)r * rb, y, ne0);
        for (int64_t i = 0; i < ne0; i++) {
            se += (double)(x[i] - y[i]) * (x[i] - y[i]);
            ss += (double)x[i] * x[i];
        }
    }
    dk_free(x);
    dk_free(y);
    return ss > 0 ? sqrt(se / ss) : sqrt(se);
}

TEST(convert, quantize_every_type)
{
    static const struct { const char *name; double tol; } types[] = {
        {"F32", 0.0}, {"F16", 1e-3}, {"BF16", 8e-3}, {"Q8_0", 0.01}, {"Q6_K", 0.03}, {"Q5_0", 0.06},
        {"Q5_1", 0.06}, {"Q5_K", 0.06}, {"Q4_0", 0.12}, {"Q4_1", 0.12}, {"Q4_K", 0.12}, {"Q3_K", 0.25},
        {"Q2_K", 0.5}, {"Q4_K_M", 0.12}, {"Q5_K_M", 0.06}, {"Q3_K_M", 0.25}, {"Q4_K_S", 0.12},
    };
    char src_path[512], out[512], err[DK_ERRLEN];
    test_kit_file(src_path, sizeof src_path, "forward/llama-tiny/llama-tiny.F32.gguf");
    gguf_file *src = NULL;
    REQUIRE_MSG(gguf_open(&src, src_path, err) == DK_OK, "%s", err);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        tmp_path(out, sizeof out, "q.gguf");
        int rc = convert_quantize(src_path, out, types[k].name, 2, NULL, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", types[k].name, err);
        if (rc != DK_OK) continue;
        gguf_file *q = NULL;
        rc = gguf_open(&q, out, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", types[k].name, err);
        if (rc != DK_OK) continue;
        CHECK_EQ_INT(gguf_n_tensors(q), gguf_n_tensors(src));
        CHECK_EQ_INT(gguf_n_kv(q), gguf_n_kv(src));
        enum gguf_tensor_type base;
        int ftype = convert_ftype_from_name(types[k].name, &base);
        uint32_t ft = 99;
        CHECK(gguf_get_u32(q, "general.file_type", &ft) == DK_OK && ft == (uint32_t)ftype);
        uint32_t n_layers = 0;
        gguf_get_u32(src, "llama.block_count", &n_layers);
        int n_base = 0;
        for (int64_t i = 0; i < gguf_n_tensors(src); i++) {
            const gguf_tensor *a = gguf_get_tensor(src, i);
            const gguf_tensor *b = gguf_find_tensor(q, a->name);
            REQUIRE(b);
            CHECK(b->n_dims == a->n_dims && b->ne[0] == a->ne[0] && b->ne[1] == a->ne[1]);
            bool fb;
            enum gguf_tensor_type want = convert_pick_type(types[k].name, a->name, a->n_dims, a->ne[0], (int)n_layers, true, &fb);
            CHECK_MSG(b->type == want, "%s %s: type %s, want %s", types[k].name, a->name, gguf_type_name(b->type), gguf_type_name(want));
            if (a->n_dims == 1) CHECK(b->type == GGUF_TYPE_F32);
            if (b->type == base) n_base++;
            double e = rel_rms(a, b);
            CHECK_MSG(e <= types[k].tol + 1e-9, "%s %s (%s): rel rms error %g > %g", types[k].name, a->name,
                      gguf_type_name(b->type), e, types[k].tol);
        }
        CHECK_MSG(n_base > 0, "%s: no tensor got the base type", types[k].name);
        gguf_close(q);
    }
    gguf_close(src);
}

TEST(convert, pick_type_rules)
{
    bool fb;
    CHECK(convert_pick_type("Q4_K_M", "token_embd.weight", 2, 512, 4, false, &fb) == GGUF_TYPE_Q6_K);
    CHECK(convert_pick_type("Q4_K_M", "token_embd.weight", 2, 512, 4, true, &fb) == GGUF_TYPE_Q4_K);
    CHECK(convert_pick_type("Q4_K", "token_embd.weight", 2, 512, 4, false, &fb) == GGUF_TYPE_Q4_K);
    CHECK(convert_pick_type("Q4_K", "blk.0.attn_norm.weight", 1, 64, 4, true, &fb) == GGUF_TYPE_F32);
    CHECK(convert_pick_type("Q4_K", "blk.0.attn_q.weight", 2, 512, 4, true, &fb) == GGUF_TYPE_Q4_K && !fb);
    CHECK(convert_pick_type("Q4_K", "blk.0.attn_q.weight", 2, 896, 4, true, &fb) == GGUF_TYPE_Q5_0 && fb);
    CHECK(convert_pick_type("Q6_K", "x.weight", 2, 96, 4, true, &fb) == GGUF_TYPE_Q8_0 && fb);
    CHECK(convert_pick_type("Q4_0", "x.weight", 2, 48, 4, true, &fb) == GGUF_TYPE_F16 && fb);
    CHECK(convert_pick_type("Q4_K_M", "output.weight", 2, 512, 4, true, &fb) == GGUF_TYPE_Q6_K);
    CHECK(convert_pick_type("Q4_K_M", "blk.0.ffn_down.weight", 2, 512, 16, true, &fb) == GGUF_TYPE_Q6_K);
    CHECK(convert_pick_type("Q4_K_M", "blk.3.ffn_down.weight", 2, 512, 16, true, &fb) == GGUF_TYPE_Q4_K);
    CHECK(convert_ftype_from_name("q4_k_m", NULL) == 15);
    CHECK(convert_ftype_from_name("Q9_X", NULL) == -1);
    char err[DK_ERRLEN], out[512];
    CHECK(convert_quantize("/nonexistent.gguf", tmp_path(out, sizeof out, "x.gguf"), "Q4_0", 1, NULL, err) != DK_OK);
    CHECK(convert_quantize("/nonexistent.gguf", out, "Q9_X", 1, NULL, err) == DK_ERR_ARG);
}

/* Our mix rules give the same type as llama.cpp's quantizer did for the kit's models. */
TEST(convert, mixes_match_llama_cpp)
{
    static const char *models[] = {"llama-tiny", "llama3-tiny", "qwen2-tiny", "qwen3-tiny", "gemma2-tiny", "gemma3-tiny", "phi3-tiny", "bert-tiny"};
    static const char *mixes[] = {"Q4_K_M", "Q5_K_M", "Q3_K_M"};
    int checked = 0;
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        for (size_t k = 0; k < 3; k++) {
            char rel[128], path[512], err[DK_ERRLEN];
            snprintf(rel, sizeof rel, "forward/%s/%s.%s.gguf", models[m], models[m], mixes[k]);
            gguf_file *f = NULL;
            if (gguf_open(&f, test_kit_file(path, sizeof path, rel), err) != DK_OK) continue;
            char key[64];
            gguf_str a;
            uint32_t nl = 0;
            if (gguf_get_str(f, "general.architecture", &a) == DK_OK) {
                snprintf(key, sizeof key, "%.*s.block_count", (int)a.len, a.ptr);
                gguf_get_u32(f, key, &nl);
            }
            bool has_output = gguf_find_tensor(f, "output.weight") != NULL;
            for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
                const gguf_tensor *t = gguf_get_tensor(f, i);
                bool fb;
                enum gguf_tensor_type want = convert_pick_type(mixes[k], t->name, t->n_dims, t->ne[0], (int)nl, has_output, &fb);
                CHECK_MSG(want == t->type, "%s %s: llama.cpp %s, ours %s", rel, t->name, gguf_type_name(t->type), gguf_type_name(want));
            }
            checked++;
            gguf_close(f);
        }
    }
    CHECK(checked >= 20);
}

static void check_ne(const gguf_file *f, const char *name, int64_t ne0, int64_t ne1)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    CHECK_MSG(t != NULL, "missing tensor %s", name);
    if (!t) return;
    CHECK_MSG(t->ne[0] == ne0 && t->ne[1] == ne1, "%s: [%lld, %lld], want [%lld, %lld]", name, (long long)t->ne[0],
              (long long)t->ne[1], (long long)ne0, (long long)ne1);
}

TEST(convert, synth_smollm2_shapes)
{
    char out[512], err[DK_ERRLEN];
    convert_synth_opts o = {.preset = "smollm2-135m", .quant = "Q8_0", .out_path = tmp_path(out, sizeof out, "s.gguf"),
                            .seed = 7, .n_layers = 2, .n_threads = 2};
    REQUIRE_MSG(convert_synth(&o, NULL, err) == DK_OK, "%s", err);
    gguf_file *f = NULL;
    REQUIRE_MSG(gguf_open(&f, out, err) == DK_OK, "%s", err);
    gguf_str s;
    REQUIRE(gguf_get_str(f, "general.architecture", &s) == DK_OK);
    CHECK(s.len == 5 && memcmp(s.ptr, "llama", 5) == 0);
    uint32_t v = 0;
    CHECK(gguf_get_u32(f, "llama.block_count", &v) == DK_OK && v == 2);
    CHECK(gguf_get_u32(f, "llama.embedding_length", &v) == DK_OK && v == 576);
    CHECK(gguf_get_u32(f, "llama.attention.head_count", &v) == DK_OK && v == 9);
    CHECK(gguf_get_u32(f, "llama.attention.head_count_kv", &v) == DK_OK && v == 3);
    CHECK(gguf_get_u32(f, "llama.feed_forward_length", &v) == DK_OK && v == 1536);
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens")), 49152);
    check_ne(f, "token_embd.weight", 576, 49152);
    check_ne(f, "output_norm.weight", 576, 1);
    CHECK(gguf_find_tensor(f, "output.weight") == NULL); /* tied */
    check_ne(f, "blk.1.attn_q.weight", 576, 576);
    check_ne(f, "blk.1.attn_k.weight", 576, 192);
    check_ne(f, "blk.1.attn_v.weight", 576, 192);
    check_ne(f, "blk.1.attn_output.weight", 576, 576);
    check_ne(f, "blk.1.ffn_gate.weight", 576, 1536);
    check_ne(f, "blk.1.ffn_up.weight", 576, 1536);
    check_ne(f, "blk.1.ffn_down.weight", 1536, 576);
    CHECK(gguf_find_tensor(f, "blk.2.attn_q.weight") == NULL);
    CHECK_EQ_INT(gguf_n_tensors(f), 2 + 2 * 9);
    const gguf_tensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
    REQUIRE(q && q->type == GGUF_TYPE_Q8_0);
    /* values finite, std near 1/sqrt(576) */
    float row[576];
    double ss = 0;
    int finite = 1;
    for (int r = 0; r < 16; r++) {
        kern_dequantize_row(q->type, (const char *)q->data + (size_t)r * 612, row, 576);
        for (int i = 0; i < 576; i++) { finite &= isfinite(row[i]) != 0; ss += (double)row[i] * row[i]; }
    }
    CHECK(finite);
    CHECK_NEAR(sqrt(ss / (16 * 576)), 1.0 / 24.0, 0.01);
    gguf_close(f);

    /* same seed: same bytes; bert preset shapes */
    convert_synth_opts b = {.preset = "bge-small", .quant = "F16", .out_path = tmp_path(out, sizeof out, "b.gguf"),
                            .seed = 1, .n_layers = 1, .n_threads = 1};
    REQUIRE_MSG(convert_synth(&b, NULL, err) == DK_OK, "%s", err);
    REQUIRE_MSG(gguf_open(&f, out, err) == DK_OK, "%s", err);
    check_ne(f, "token_embd.weight", 384, 30522);
    check_ne(f, "token_types.weight", 384, 2);
    check_ne(f, "position_embd.weight", 384, 512);
    check_ne(f, "blk.0.ffn_up.weight", 384, 1536);
    check_ne(f, "blk.0.layer_output_norm.bias", 384, 1);
    gguf_close(f);
    CHECK(convert_find_preset("qwen3-0.6b") && convert_find_preset("qwen3-0.6b")->head_dim == 128);
    convert_synth_opts bad = {.preset = "nope", .quant = "Q8_0", .out_path = out};
    CHECK(convert_synth(&bad, NULL, err) == DK_ERR_NOTFOUND);
}

static int tok_index(const gguf_file *f, const char *text)
{
    uint64_t n = gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens"));
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &s) == DK_OK && s.len == strlen(text) &&
            memcmp(s.ptr, text, s.len) == 0)
            return (int)i;
    }
    return -1;
}

static int64_t arr_i(const gguf_file *f, const char *key, uint64_t i)
{
    enum gguf_value_type t;
    uint64_t n;
    const void *d;
    if (gguf_get_arr(f, key, &t, &n, &d) != DK_OK || i >= n) return -999;
    return gguf_arr_get_i64(t, d, i);
}

static double arr_f(const gguf_file *f, const char *key, uint64_t i)
{
    enum gguf_value_type t;
    uint64_t n;
    const void *d;
    if (gguf_get_arr(f, key, &t, &n, &d) != DK_OK || i >= n) return -999;
    return gguf_arr_get_f64(t, d, i);
}

static bool str_is(const gguf_file *f, const char *key, const char *want)
{
    gguf_str s;
    return gguf_get_str(f, key, &s) == DK_OK && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

TEST(convert, tokenizer_bpe_fixture)
{
    char out[512], err[DK_ERRLEN];
    convert_tok_opts o = {.tokenizer_json = "tests/data/convert_bpe_tokenizer.json",
                          .config_json = "tests/data/convert_bpe_tokenizer_config.json",
                          .out_path = tmp_path(out, sizeof out, "t.gguf"), .pad_vocab_to = 14};
    REQUIRE_MSG(convert_tokenizer(&o, NULL, err) == DK_OK, "%s", err);
    gguf_file *f = NULL;
    REQUIRE_MSG(gguf_open(&f, out, err) == DK_OK, "%s", err);
    CHECK(str_is(f, "tokenizer.ggml.model", "gpt2"));
    CHECK(str_is(f, "tokenizer.ggml.pre", "llama-bpe"));
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens")), 14);
    CHECK_EQ_INT(tok_index(f, "hell"), 7);
    CHECK_EQ_INT(tok_index(f, "\xc4\xa0h"), 8);
    CHECK_EQ_INT(tok_index(f, "<|begin_of_text|>"), 9);
    CHECK_EQ_INT(tok_index(f, "[PAD13]"), 13);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 0), 1);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 9), 3);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 10), 3);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 11), 4);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 13), 5);
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.merges")), 4);
    gguf_str m;
    REQUIRE(gguf_get_arr_str(f, "tokenizer.ggml.merges", 1, &m) == DK_OK);
    CHECK(m.len == 3 && memcmp(m.ptr, "l l", 3) == 0);
    REQUIRE(gguf_get_arr_str(f, "tokenizer.ggml.merges", 2, &m) == DK_OK);
    CHECK(m.len == 5 && memcmp(m.ptr, "he ll", 5) == 0);
    uint32_t v = 0;
    bool b = false;
    CHECK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &v) == DK_OK && v == 9);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &v) == DK_OK && v == 10);
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == DK_OK && b);
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b) == DK_OK && !b);
    gguf_str ct;
    CHECK(gguf_get_str(f, "tokenizer.chat_template", &ct) == DK_OK && ct.len > 10);
    gguf_close(f);
}

TEST(convert, tokenizer_spm_fixture)
{
    char out[512], err[DK_ERRLEN];
    convert_tok_opts o = {.tokenizer_json = "tests/data/convert_spm_tokenizer.json",
                          .config_json = "tests/data/convert_spm_tokenizer_config.json",
                          .out_path = tmp_path(out, sizeof out, "g.gguf"), .arch = "gemma3"};
    REQUIRE_MSG(convert_tokenizer(&o, NULL, err) == DK_OK, "%s", err);
    gguf_file *f = NULL;
    REQUIRE_MSG(gguf_open(&f, out, err) == DK_OK, "%s", err);
    CHECK(str_is(f, "tokenizer.ggml.model", "llama"));
    CHECK(str_is(f, "general.architecture", "gemma3"));
    bool b = true;
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &b) == DK_OK && !b);
    CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) == DK_OK && b);
    CHECK(gguf_find_key(f, "tokenizer.ggml.merges") < 0);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 4), 6);   /* <0x00> BYTE */
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 2), 3);   /* <bos> CONTROL */
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 10), 3);  /* <start_of_turn> */
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 7), 1);
    /* scores: merge rank order, single characters 0 */
    CHECK_NEAR(arr_f(f, "tokenizer.ggml.scores", 9), 0.0, 0);    /* ab: merge 0 */
    CHECK_NEAR(arr_f(f, "tokenizer.ggml.scores", 11), -1.0, 0);  /* ▁ab: merge 1 */
    CHECK_NEAR(arr_f(f, "tokenizer.ggml.scores", 12), -2.0, 0);  /* ba: merge 2 */
    CHECK_NEAR(arr_f(f, "tokenizer.ggml.scores", 7), 0.0, 0);
    uint32_t v = 0;
    CHECK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &v) == DK_OK && v == 2);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.unknown_token_id", &v) == DK_OK && v == 3);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.padding_token_id", &v) == DK_OK && v == 0);
    gguf_close(f);
}

TEST(convert, tokenizer_malformed)
{
    char out[512], err[DK_ERRLEN] = "";
    convert_tok_opts o = {.tokenizer_json = "tests/data/convert_bad_tokenizer.json",
                          .out_path = tmp_path(out, sizeof out, "bad.gguf")};
    CHECK(convert_tokenizer(&o, NULL, err) == DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "merges") != NULL, "err: %s", err);
    char path[512];
    const char *junk = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0";
    REQUIRE(dk_file_write(tmp_path(path, sizeof path, "trunc.json"), junk, strlen(junk), err) == DK_OK);
    o.tokenizer_json = path;
    CHECK(convert_tokenizer(&o, NULL, err) == DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "trunc.json") != NULL, "err: %s", err);
    const char *wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    REQUIRE(dk_file_write(path, wp, strlen(wp), err) == DK_OK);
    CHECK(convert_tokenizer(&o, NULL, err) == DK_ERR_UNSUPPORTED);
    const char *neg = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}}}";
    REQUIRE(dk_file_write(path, neg, strlen(neg), err) == DK_OK);
    CHECK(convert_tokenizer(&o, NULL, err) == DK_ERR_FORMAT);
    o.tokenizer_json = "/nonexistent/tokenizer.json";
    CHECK(convert_tokenizer(&o, NULL, err) == DK_ERR_FORMAT);
    FILE *t = fopen(out, "rb");
    CHECK(t == NULL); /* no output left behind */
    if (t) fclose(t);
}

TEST(convert, synth_vocab_from_pads)
{
    char vocab[512], out[512], err[DK_ERRLEN];
    convert_tok_opts t = {.tokenizer_json = "tests/data/convert_bpe_tokenizer.json",
                          .config_json = "tests/data/convert_bpe_tokenizer_config.json",
                          .out_path = tmp_path(vocab, sizeof vocab, "v.gguf")};
    REQUIRE_MSG(convert_tokenizer(&t, NULL, err) == DK_OK, "%s", err);
    convert_synth_opts o = {.preset = "smollm2-135m", .quant = "Q4_0", .out_path = tmp_path(out, sizeof out, "sv.gguf"),
                            .seed = 3, .n_layers = 1, .vocab_from = vocab, .n_threads = 2};
    REQUIRE_MSG(convert_synth(&o, NULL, err) == DK_OK, "%s", err);
    gguf_file *f = NULL;
    REQUIRE_MSG(gguf_open(&f, out, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens")), 49152);
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.token_type")), 49152);
    CHECK_EQ_INT(tok_index(f, "hell"), 7);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 9), 3);
    CHECK_EQ_INT(arr_i(f, "tokenizer.ggml.token_type", 49151), 5);
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.merges")), 4);
    CHECK(str_is(f, "tokenizer.ggml.pre", "llama-bpe"));
    check_ne(f, "token_embd.weight", 576, 49152);
    gguf_close(f);
}

/* Synth models load in the model layer and give finite logits (causal) / a finite pooled
 * embedding (bert). One layer, presets with the smaller vocabularies to keep it quick. */
TEST(convert, synth_forward_finite)
{
    static const char *presets[] = {"smollm2-135m", "tinyllama-1.1b", "phi3-mini", "bge-small"};
    for (size_t k = 0; k < sizeof presets / sizeof presets[0]; k++) {
        char out[512], err[DK_ERRLEN];
        convert_synth_opts o = {.preset = presets[k], .quant = "Q8_0", .out_path = tmp_path(out, sizeof out, "fw.gguf"),
                                .seed = 11, .n_layers = 1, .n_threads = 2};
        REQUIRE_MSG(convert_synth(&o, NULL, err) == DK_OK, "%s: %s", presets[k], err);
        model_weights *m = NULL;
        int rc = model_load(&m, out, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", presets[k], err);
        if (rc != DK_OK) continue;
        model_ctx_params cp = model_ctx_default_params();
        cp.n_ctx = 16;
        cp.n_threads = 2;
        model_ctx *c = NULL;
        rc = model_ctx_new(&c, m, &cp, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", presets[k], err);
        const convert_preset *p = convert_find_preset(presets[k]);
        size_t n_out = strcmp(p->arch, "bert") == 0 ? (size_t)p->n_embd : (size_t)p->n_vocab;
        float *v = dk_malloc_array(n_out, sizeof(float));
        int32_t toks[4] = {1, 300, 301, 2};
        if (rc == DK_OK && v) {
            if (strcmp(p->arch, "bert") == 0) rc = model_encode(c, toks, 4, MODEL_POOLING_UNSPECIFIED, true, v, err);
            else rc = model_decode(c, toks, 4, false, v, err);
            CHECK_MSG(rc == DK_OK, "%s: %s", presets[k], err);
            int bad = 0;
            double amax = 0;
            for (size_t i = 0; rc == DK_OK && i < n_out; i++) {
                if (!isfinite(v[i])) bad++;
                else if (fabs(v[i]) > amax) amax = fabs(v[i]);
            }
            CHECK_MSG(bad == 0 && amax > 0 && amax < 1e4, "%s: %d non-finite, max |x| %g", presets[k], bad, amax);
        }
        dk_free(v);
        model_ctx_free(c);
        model_free(m);
    }
}

/* Every allocation failure along the way gives an error, never a crash (run under ASan). */
TEST(convert, alloc_failures)
{
    char out[512], err[DK_ERRLEN];
    int n_ok = 0;
    for (long n = 0; n < 400 && n_ok < 2; n++) {
        convert_tok_opts o = {.tokenizer_json = "tests/data/convert_bpe_tokenizer.json",
                              .config_json = "tests/data/convert_bpe_tokenizer_config.json",
                              .out_path = tmp_path(out, sizeof out, "af.gguf"), .pad_vocab_to = 20};
        dk_alloc_fail_after(n);
        int rc = convert_tokenizer(&o, NULL, err);
        dk_alloc_fail_after(-1);
        if (rc == DK_OK) n_ok++;
        else CHECK_MSG(rc < 0 && err[0], "n=%ld: rc %d without message", n, rc);
    }
    CHECK(n_ok >= 1);
    n_ok = 0;
    /* the synthetic vocabulary makes ~30k allocations: every one early, then sparser */
    for (long n = 0; n < 1000000 && n_ok < 2; n = n < 100 ? n + 1 : n * 3 / 2) {
        convert_synth_opts o = {.preset = "bge-small", .quant = "Q8_0", .out_path = tmp_path(out, sizeof out, "af2.gguf"),
                                .seed = 1, .n_layers = 1, .n_threads = 1};
        dk_alloc_fail_after(n);
        int rc = convert_synth(&o, NULL, err);
        dk_alloc_fail_after(-1);
        if (rc == DK_OK) n_ok++;
        else CHECK_MSG(rc < 0 && err[0], "n=%ld: rc %d without message", n, rc);
    }
    CHECK(n_ok >= 1);
}
