/*
 * test_gguf.c: tests of the GGUF reader and writer (suite `gguf`).
 *
 * Real files: every .gguf of the kit opens and its tensors' sizes add up. Round trips through
 * the writer of every value type, arrays and tensors. Hostile input: truncation at every
 * length, deterministic mutations, hand-built malicious headers, allocation failures.
 */
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

#include "../fuzz/fuzz.h"
#include "gguf/gguf.h"
#include "test.h"

/* Opens every .gguf in kit/<dir> and checks the tensors; returns how many were opened. */
static int check_kit_dir(const char *dir)
{
    char path[1024];
    test_kit_file(path, sizeof path, dir);
    DIR *d = opendir(path);
    if (!d) {
        test_fail_at(__FILE__, __LINE__, "cannot open kit dir %s", path);
        return 0;
    }
    int n_opened = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0) continue;
        char file[1280];
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        char err[DK_ERRLEN];
        gguf_file *f = NULL;
        int rc = gguf_open(&f, file, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", file, err);
        if (rc) continue;
        n_opened++;
        CHECK(gguf_version(f) == 2 || gguf_version(f) == 3);
        CHECK(gguf_n_kv(f) > 0);
        gguf_str arch;
        CHECK_MSG(gguf_get_str(f, "general.architecture", &arch) == DK_OK, "%s: no architecture", file);
        for (int64_t i = 0; i < gguf_n_kv(f); i++) CHECK(gguf_find_key(f, gguf_kv_key(f, i)) == i);
        /* tensors: sizes from type and shape, inside the file, not overlapping, in order */
        uint64_t end = 0;
        for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
            const gguf_tensor *t = gguf_get_tensor(f, i);
            CHECK(gguf_find_tensor(f, t->name) == t);
            size_t row;
            CHECK(gguf_row_bytes(t->type, t->ne[0], &row) == DK_OK);
            CHECK_EQ_INT(t->n_bytes, row * (size_t)(t->n_elements / t->ne[0]));
            /* ggml lays tensors out back to back, each padded to the alignment: a wrong block
             * size in our type table would break this chain */
            uint64_t expect = (end + gguf_alignment(f) - 1) / gguf_alignment(f) * gguf_alignment(f);
            CHECK_MSG(t->offset == expect, "%s: tensor %s at %llu, expected %llu", file, t->name,
                      (unsigned long long)t->offset, (unsigned long long)expect);
            end = t->offset + t->n_bytes;
            CHECK(gguf_data_offset(f) + end <= gguf_file_size(f));
            CHECK(((uintptr_t)t->data - (uintptr_t)gguf_get_tensor(f, 0)->data) % gguf_alignment(f) == 0);
        }
        if (gguf_n_tensors(f) > 0)
            CHECK_MSG(gguf_file_size(f) - gguf_data_offset(f) - end < gguf_alignment(f), "%s: %zu bytes after the last tensor",
                      file, (size_t)(gguf_file_size(f) - gguf_data_offset(f) - end));
        /* string arrays are indexed: the last token is reachable */
        enum gguf_value_type et;
        uint64_t n;
        const void *data;
        if (gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n, &data) == DK_OK) {
            CHECK(et == GGUF_VAL_STRING);
            gguf_str s;
            CHECK(n > 0 && gguf_get_arr_str(f, "tokenizer.ggml.tokens", n - 1, &s) == DK_OK);
            CHECK(gguf_get_arr_str(f, "tokenizer.ggml.tokens", n, &s) == DK_ERR_FORMAT);
        }
        gguf_close(f);
    }
    closedir(d);
    return n_opened;
}

TEST(gguf, kit_files_open)
{
    static const char *const dirs[] = {
        "tokenizer", "forward/llama-tiny", "forward/llama3-tiny", "forward/qwen2-tiny", "forward/qwen3-tiny",
        "forward/gemma2-tiny", "forward/gemma3-tiny", "forward/phi3-tiny", "forward/bert-tiny", "forward/stories260K",
    };
    int total = 0;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        int n = check_kit_dir(dirs[i]);
        CHECK_MSG(n > 0, "no .gguf opened in %s", dirs[i]);
        total += n;
    }
    test_log("%d kit files opened", total);
}

TEST(gguf, kit_qwen2_vocab)
{
    char path[1024];
    test_kit_file(path, sizeof path, "tokenizer/ggml-vocab-qwen2.gguf");
    char err[DK_ERRLEN];
    gguf_file *f;
    REQUIRE_MSG(gguf_open(&f, path, err) == DK_OK, "%s", err);
    gguf_str s;
    REQUIRE(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 151643, &s) == DK_OK);
    CHECK(s.len == strlen("<|endoftext|>") && memcmp(s.ptr, "<|endoftext|>", s.len) == 0);
    CHECK_EQ_INT(gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens")), 151936);
    uint32_t bos;
    CHECK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos) == DK_OK && bos == 151643);
    CHECK(gguf_find_key(f, "no.such.key") == -1);
    CHECK(gguf_get_u32(f, "no.such.key", &bos) == DK_ERR_NOTFOUND);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.model", &bos) == DK_ERR_FORMAT);
    gguf_close(f);
}

TEST(gguf, type_traits)
{
    CHECK_EQ_INT(gguf_type_block_size(GGUF_TYPE_Q4_K), 256);
    CHECK_EQ_INT(gguf_type_block_bytes(GGUF_TYPE_Q4_K), 144);
    CHECK_EQ_INT(gguf_type_block_bytes(GGUF_TYPE_Q8_K), 292);
    CHECK_EQ_INT(gguf_type_block_bytes(GGUF_TYPE_Q6_K), 210);
    CHECK_EQ_INT(gguf_type_block_bytes(GGUF_TYPE_BF16), 2);
    CHECK(!gguf_type_is_known(4) && !gguf_type_is_known(16) && !gguf_type_is_known(31) && !gguf_type_is_known(-1));
    CHECK_EQ_INT(gguf_type_block_size((enum gguf_tensor_type)5), 0);
    CHECK(gguf_type_name((enum gguf_tensor_type)5) == NULL);
    CHECK_EQ_STR(gguf_type_name(GGUF_TYPE_Q5_K), "Q5_K");
    CHECK_EQ_INT(gguf_type_from_name("q4_k"), GGUF_TYPE_Q4_K);
    CHECK_EQ_INT(gguf_type_from_name("bf16"), GGUF_TYPE_BF16);
    CHECK_EQ_INT(gguf_type_from_name("Q4_K_M"), -1);
    CHECK_EQ_INT(gguf_type_from_name(""), -1);
    size_t b;
    CHECK(gguf_row_bytes(GGUF_TYPE_Q8_0, 64, &b) == DK_OK && b == 68);
    CHECK(gguf_row_bytes(GGUF_TYPE_Q8_0, 65, &b) != DK_OK && b == 0);
    CHECK(gguf_row_bytes(GGUF_TYPE_F32, INT64_MAX, &b) != DK_OK);
}

/* ------------------------------------------------------------------ writer round trip */

static int fill_ramp(void *user, const char *name, void *dst, size_t n_bytes, char *err)
{
    (void)name;
    (void)err;
    uint8_t *p = dst;
    for (size_t i = 0; i < n_bytes; i++) p[i] = (uint8_t)(i * 7 + (uintptr_t)user);
    return DK_OK;
}

static int fill_fail(void *user, const char *name, void *dst, size_t n_bytes, char *err)
{
    (void)user;
    (void)dst;
    (void)n_bytes;
    return dk_fail(err, DK_ERR_IO, "cannot produce %s", name);
}

/* Fills w with one of every value type, arrays and tensors of several types. DK_OK or the
 * first error (allocation failures under injection). */
static int fill_sample(gguf_writer *w)
{
    static const int32_t ints[] = {1, -2, 3, INT32_MIN, INT32_MAX};
    static const float floats[] = {0.5f, -1.25f, 3e38f};
    static const uint8_t bytes[] = {0, 255, 7};
    static const int16_t shorts[] = {-32768, 32767};
    static const uint64_t longs[] = {0, UINT64_MAX};
    static const double doubles[] = {3.141592653589793, -1e300};
    static const bool bools[] = {true, false, true};
    static const char *const strs[] = {"alpha", "", "gamma\xc3\xa9"};
    static const char *const strs_len[] = {"a\0b", "xyz"};
    static const size_t lens[] = {3, 2};
    int rc = DK_OK;
#define TRY(x) do { if (!rc) rc = (x); } while (0)
    TRY(gguf_writer_set_str(w, "general.architecture", "llama"));
    TRY(gguf_writer_set_u32(w, "k.u32", 4000000000u));
    TRY(gguf_writer_set_i32(w, "k.i32", -123456));
    TRY(gguf_writer_set_u64(w, "k.u64", 0x123456789abcdefull));
    TRY(gguf_writer_set_f32(w, "k.f32", 1.5f));
    TRY(gguf_writer_set_bool(w, "k.bool", true));
    TRY(gguf_writer_set_str(w, "k.str", "hello, world"));
    TRY(gguf_writer_set_str(w, "k.empty", ""));
    TRY(gguf_writer_set_arr(w, "a.i32", GGUF_VAL_INT32, ints, 5));
    TRY(gguf_writer_set_arr(w, "a.f32", GGUF_VAL_FLOAT32, floats, 3));
    TRY(gguf_writer_set_arr(w, "a.u8", GGUF_VAL_UINT8, bytes, 3));
    TRY(gguf_writer_set_arr(w, "a.i8", GGUF_VAL_INT8, bytes, 3));
    TRY(gguf_writer_set_arr(w, "a.i16", GGUF_VAL_INT16, shorts, 2));
    TRY(gguf_writer_set_arr(w, "a.u16", GGUF_VAL_UINT16, shorts, 2));
    TRY(gguf_writer_set_arr(w, "a.u64", GGUF_VAL_UINT64, longs, 2));
    TRY(gguf_writer_set_arr(w, "a.i64", GGUF_VAL_INT64, longs, 2));
    TRY(gguf_writer_set_arr(w, "a.f64", GGUF_VAL_FLOAT64, doubles, 2));
    TRY(gguf_writer_set_arr(w, "a.bool", GGUF_VAL_BOOL, bools, 3));
    TRY(gguf_writer_set_arr(w, "a.empty", GGUF_VAL_UINT32, NULL, 0));
    TRY(gguf_writer_set_arr_str(w, "a.str", strs, NULL, 3));
    TRY(gguf_writer_set_arr_str(w, "a.strlen", strs_len, lens, 2));
    TRY(gguf_writer_set_u32(w, "k.replaced", 1));
    TRY(gguf_writer_set_str(w, "k.replaced", "now a string"));
    TRY(gguf_writer_set_u32(w, "k.removed", 1));
    TRY(gguf_writer_remove_key(w, "k.removed"));
    float f32[6] = {1, 2, 3, 4, 5, 6};
    uint8_t q8[2 * 34], q4k[144], f16[2 * 3];
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)i;
    for (size_t i = 0; i < sizeof q4k; i++) q4k[i] = (uint8_t)(200 - i);
    for (size_t i = 0; i < sizeof f16; i++) f16[i] = (uint8_t)(i + 1);
    TRY(gguf_writer_add_tensor(w, "t.f32", GGUF_TYPE_F32, 2, (const int64_t[]){3, 2}, f32, sizeof f32));
    TRY(gguf_writer_add_tensor(w, "t.q8_0", GGUF_TYPE_Q8_0, 2, (const int64_t[]){32, 2}, q8, sizeof q8));
    TRY(gguf_writer_add_tensor(w, "t.q4_k", GGUF_TYPE_Q4_K, 1, (const int64_t[]){256}, q4k, sizeof q4k));
    TRY(gguf_writer_add_tensor(w, "t.f16", GGUF_TYPE_F16, 3, (const int64_t[]){1, 3, 1}, f16, sizeof f16));
    TRY(gguf_writer_add_tensor_fill(w, "t.bf16", GGUF_TYPE_BF16, 4, (const int64_t[]){5, 1, 2, 1}, fill_ramp, (void *)3));
    TRY(gguf_writer_add_tensor_fill(w, "t.q6_k", GGUF_TYPE_Q6_K, 2, (const int64_t[]){256, 1}, fill_ramp, (void *)1));
#undef TRY
    return rc;
}

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", test_tmpdir(), name);
}

/* Writes the sample file; returns its bytes (dk_free) or NULL. */
static char *sample_bytes(size_t *len)
{
    char path[512];
    tmp_path(path, sizeof path, "sample.gguf");
    gguf_writer *w = gguf_writer_new();
    char err[DK_ERRLEN];
    char *data = NULL;
    if (w && fill_sample(w) == DK_OK && gguf_writer_write(w, path, err) == DK_OK)
        if (dk_file_read(path, 1 << 20, &data, len, err) != DK_OK) data = NULL;
    gguf_writer_free(w);
    return data;
}

static bool str_is(gguf_str s, const char *want, size_t want_len)
{
    return s.len == want_len && memcmp(s.ptr, want, want_len) == 0;
}

static void check_sample(const gguf_file *f)
{
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    bool b;
    gguf_str s;
    CHECK_EQ_INT(gguf_version(f), 3);
    CHECK_EQ_INT(gguf_alignment(f), 32);
    CHECK_EQ_INT(gguf_n_kv(f), 22);
    CHECK_EQ_STR(gguf_kv_key(f, 0), "general.architecture");
    CHECK(gguf_get_u32(f, "k.u32", &u32) == DK_OK && u32 == 4000000000u);
    CHECK(gguf_get_i32(f, "k.u32", &i32) == DK_ERR_FORMAT);
    CHECK(gguf_get_u64(f, "k.u32", &u64) == DK_OK && u64 == 4000000000u);
    CHECK(gguf_get_i32(f, "k.i32", &i32) == DK_OK && i32 == -123456);
    CHECK(gguf_get_u32(f, "k.i32", &u32) == DK_ERR_FORMAT);
    CHECK(gguf_get_u64(f, "k.u64", &u64) == DK_OK && u64 == 0x123456789abcdefull);
    CHECK(gguf_get_u32(f, "k.u64", &u32) == DK_ERR_FORMAT);
    CHECK(gguf_get_f32(f, "k.f32", &f32) == DK_OK && f32 == 1.5f);
    CHECK(gguf_get_f32(f, "k.u32", &f32) == DK_ERR_FORMAT);
    CHECK(gguf_get_bool(f, "k.bool", &b) == DK_OK && b);
    CHECK(gguf_get_bool(f, "k.u32", &b) == DK_ERR_FORMAT);
    CHECK(gguf_get_str(f, "k.str", &s) == DK_OK && str_is(s, "hello, world", 12));
    CHECK(gguf_get_str(f, "k.empty", &s) == DK_OK && s.len == 0);
    CHECK(gguf_get_str(f, "k.replaced", &s) == DK_OK && str_is(s, "now a string", 12));
    CHECK(gguf_find_key(f, "k.removed") == -1);
    CHECK(gguf_get_str(f, "k.removed", &s) == DK_ERR_NOTFOUND);
    enum gguf_value_type et;
    uint64_t n;
    const void *data;
    CHECK(gguf_get_arr(f, "a.i32", &et, &n, &data) == DK_OK && et == GGUF_VAL_INT32 && n == 5);
    CHECK(gguf_arr_get_i64(et, data, 3) == INT32_MIN && gguf_arr_get_i64(et, data, 1) == -2);
    CHECK(gguf_get_arr(f, "a.f32", &et, &n, &data) == DK_OK && et == GGUF_VAL_FLOAT32 && n == 3);
    CHECK(gguf_arr_get_f64(et, data, 1) == -1.25 && gguf_arr_get_f64(et, data, 2) == (double)3e38f);
    CHECK(gguf_get_arr(f, "a.u8", &et, &n, &data) == DK_OK && gguf_arr_get_i64(et, data, 1) == 255);
    CHECK(gguf_get_arr(f, "a.i8", &et, &n, &data) == DK_OK && gguf_arr_get_i64(et, data, 1) == -1);
    CHECK(gguf_get_arr(f, "a.i16", &et, &n, &data) == DK_OK && gguf_arr_get_i64(et, data, 0) == -32768);
    CHECK(gguf_get_arr(f, "a.u16", &et, &n, &data) == DK_OK && gguf_arr_get_i64(et, data, 0) == 32768);
    CHECK(gguf_get_arr(f, "a.u64", &et, &n, &data) == DK_OK && gguf_arr_get_f64(et, data, 1) == (double)UINT64_MAX);
    CHECK(gguf_get_arr(f, "a.i64", &et, &n, &data) == DK_OK && gguf_arr_get_i64(et, data, 1) == -1);
    CHECK(gguf_get_arr(f, "a.f64", &et, &n, &data) == DK_OK && gguf_arr_get_f64(et, data, 0) == 3.141592653589793);
    CHECK(gguf_get_arr(f, "a.bool", &et, &n, &data) == DK_OK && et == GGUF_VAL_BOOL && n == 3);
    CHECK(gguf_arr_get_i64(et, data, 0) == 1 && gguf_arr_get_i64(et, data, 1) == 0);
    CHECK(gguf_get_arr(f, "a.empty", &et, &n, &data) == DK_OK && et == GGUF_VAL_UINT32 && n == 0);
    CHECK(gguf_get_arr(f, "k.str", &et, &n, &data) == DK_ERR_FORMAT);
    int64_t i_str = gguf_find_key(f, "a.str");
    CHECK(gguf_kv_type(f, i_str) == GGUF_VAL_ARRAY && gguf_kv_arr_type(f, i_str) == GGUF_VAL_STRING);
    CHECK_EQ_INT(gguf_kv_arr_n(f, i_str), 3);
    CHECK(gguf_get_arr_str(f, "a.str", 0, &s) == DK_OK && str_is(s, "alpha", 5));
    CHECK(gguf_get_arr_str(f, "a.str", 1, &s) == DK_OK && s.len == 0);
    CHECK(gguf_get_arr_str(f, "a.str", 2, &s) == DK_OK && str_is(s, "gamma\xc3\xa9", 7));
    CHECK(gguf_get_arr_str(f, "a.str", 3, &s) == DK_ERR_FORMAT);
    CHECK(gguf_get_arr_str(f, "a.i32", 0, &s) == DK_ERR_FORMAT);
    CHECK(gguf_get_arr_str(f, "a.strlen", 0, &s) == DK_OK && str_is(s, "a\0b", 3));
    CHECK(gguf_get_arr_str(f, "a.strlen", 1, &s) == DK_OK && str_is(s, "xy", 2));
    CHECK(gguf_kv_key(f, -1) == NULL && gguf_kv_key(f, 22) == NULL && gguf_kv_type(f, 99) == GGUF_VAL_COUNT);

    CHECK_EQ_INT(gguf_n_tensors(f), 6);
    const gguf_tensor *t = gguf_find_tensor(f, "t.f32");
    REQUIRE(t != NULL);
    CHECK(t->type == GGUF_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 3 && t->ne[1] == 2 && t->ne[2] == 1);
    CHECK(t->n_elements == 6 && t->n_bytes == 24 && t->offset == 0);
    float v[6];
    memcpy(v, t->data, sizeof v);
    CHECK(v[0] == 1 && v[5] == 6);
    t = gguf_find_tensor(f, "t.q8_0");
    REQUIRE(t != NULL);
    CHECK(t->offset == 32 && t->n_bytes == 68 && ((const uint8_t *)t->data)[67] == 67);
    t = gguf_find_tensor(f, "t.q4_k");
    REQUIRE(t != NULL);
    CHECK(t->n_bytes == 144 && ((const uint8_t *)t->data)[1] == 199);
    t = gguf_find_tensor(f, "t.f16");
    REQUIRE(t != NULL);
    CHECK(t->n_dims == 3 && t->ne[1] == 3 && t->n_bytes == 6 && ((const uint8_t *)t->data)[5] == 6);
    t = gguf_find_tensor(f, "t.bf16");
    REQUIRE(t != NULL);
    CHECK(t->n_dims == 4 && t->ne[2] == 2 && t->n_bytes == 20 && ((const uint8_t *)t->data)[2] == 17);
    t = gguf_find_tensor(f, "t.q6_k");
    REQUIRE(t != NULL);
    CHECK(t->n_bytes == 210 && ((const uint8_t *)t->data)[1] == 8);
    CHECK(gguf_get_tensor(f, 5) == t && gguf_get_tensor(f, 6) == NULL && gguf_get_tensor(f, -1) == NULL);
    CHECK(gguf_find_tensor(f, "t.none") == NULL);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++)
        CHECK((gguf_data_offset(f) + gguf_get_tensor(f, i)->offset) % 32 == 0);
}

TEST(gguf, writer_round_trip)
{
    char path[512], path2[512], err[DK_ERRLEN];
    tmp_path(path, sizeof path, "round.gguf");
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL);
    REQUIRE(fill_sample(w) == DK_OK);
    REQUIRE_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    gguf_writer_free(w);
    gguf_file *f;
    REQUIRE_MSG(gguf_open(&f, path, err) == DK_OK, "%s", err);
    check_sample(f);

    /* copy every kv and tensor into a second file: identical content */
    w = gguf_writer_new();
    REQUIRE(w != NULL);
    for (int64_t i = 0; i < gguf_n_kv(f); i++) CHECK(gguf_writer_copy_kv(w, f, i) == DK_OK);
    CHECK(gguf_writer_copy_kv(w, f, gguf_n_kv(f)) == DK_ERR_ARG);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_get_tensor(f, i);
        CHECK(gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->n_bytes) == DK_OK);
    }
    tmp_path(path2, sizeof path2, "round2.gguf");
    REQUIRE_MSG(gguf_writer_write(w, path2, err) == DK_OK, "%s", err);
    gguf_writer_free(w);
    gguf_file *g;
    REQUIRE_MSG(gguf_open(&g, path2, err) == DK_OK, "%s", err);
    check_sample(g);
    CHECK(gguf_file_size(f) == gguf_file_size(g));
    gguf_close(g);
    gguf_close(f);
}

TEST(gguf, writer_rejects_bad_input)
{
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL);
    float x[32] = {0};
    char err[DK_ERRLEN];
    CHECK(gguf_writer_add_tensor(w, "a", GGUF_TYPE_F32, 1, (const int64_t[]){4}, x, 16) == DK_OK);
    CHECK(gguf_writer_add_tensor(w, "a", GGUF_TYPE_F32, 1, (const int64_t[]){4}, x, 16) == DK_ERR_ARG);
    CHECK(gguf_writer_add_tensor(w, "b", GGUF_TYPE_F32, 1, (const int64_t[]){4}, x, 12) == DK_ERR_ARG);
    CHECK(gguf_writer_add_tensor(w, "c", GGUF_TYPE_Q8_0, 1, (const int64_t[]){16}, x, 17) == DK_ERR_ARG);
    CHECK(gguf_writer_add_tensor(w, "d", (enum gguf_tensor_type)4, 1, (const int64_t[]){4}, x, 16) == DK_ERR_ARG);
    CHECK(gguf_writer_add_tensor(w, "e", GGUF_TYPE_F32, 0, (const int64_t[]){4}, x, 16) == DK_ERR_ARG);
    CHECK(gguf_writer_add_tensor(w, "f", GGUF_TYPE_F32, 5, (const int64_t[]){4, 1, 1, 1, 1}, x, 16) == DK_ERR_ARG);
    CHECK(gguf_writer_add_tensor(w, "g", GGUF_TYPE_F32, 1, (const int64_t[]){-4}, x, 16) == DK_ERR_ARG);
    char long_name[80];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    CHECK(gguf_writer_add_tensor(w, long_name, GGUF_TYPE_F32, 1, (const int64_t[]){4}, x, 16) == DK_ERR_ARG);
    long_name[GGUF_WRITER_MAX_NAME] = 0;
    CHECK(gguf_writer_add_tensor(w, long_name, GGUF_TYPE_F32, 1, (const int64_t[]){4}, x, 16) == DK_OK);
    CHECK(gguf_writer_set_u32(w, "", 1) == DK_ERR_ARG);
    CHECK(gguf_writer_set_arr(w, "k", GGUF_VAL_STRING, x, 1) == DK_ERR_ARG);
    CHECK(gguf_writer_set_arr(w, "k", GGUF_VAL_ARRAY, x, 1) == DK_ERR_ARG);
    CHECK(gguf_writer_remove_key(w, "nope") == DK_ERR_NOTFOUND);
    /* a failing fill callback fails the write and leaves no file behind */
    CHECK(gguf_writer_add_tensor_fill(w, "h", GGUF_TYPE_F32, 1, (const int64_t[]){8}, fill_fail, NULL) == DK_OK);
    char path[512];
    tmp_path(path, sizeof path, "failed.gguf");
    CHECK(gguf_writer_write(w, path, err) == DK_ERR_IO);
    CHECK(strstr(err, "cannot produce h") != NULL);
    CHECK(access(path, F_OK) != 0);
    CHECK(gguf_writer_write(w, "/nonexistent-dir/x.gguf", err) == DK_ERR_IO);
    gguf_writer_free(w);
}

/* ------------------------------------------------------------------ hostile input */

TEST(gguf, truncated_at_every_length)
{
    size_t len = 0;
    char *data = sample_bytes(&len);
    REQUIRE(data != NULL);
    gguf_file *f;
    char err[DK_ERRLEN];
    REQUIRE(gguf_open_memory(&f, data, len, err) == DK_OK);
    const gguf_tensor *last = gguf_get_tensor(f, gguf_n_tensors(f) - 1);
    size_t end = gguf_data_offset(f) + last->offset + last->n_bytes;
    gguf_close(f);
    for (size_t n = 0; n < len; n++) {
        /* a private copy of exactly n bytes, so ASan sees any read past the end */
        char *copy = dk_malloc(n ? n : 1);
        REQUIRE(copy != NULL);
        memcpy(copy, data, n);
        err[0] = 0;
        int rc = gguf_open_memory(&f, copy, n, err);
        if (n < end) {
            CHECK_MSG(rc == DK_ERR_FORMAT, "prefix %zu: rc %d", n, rc);
            CHECK_MSG(err[0] != 0 && strchr(err, '\n') == NULL, "prefix %zu: message '%s'", n, err);
        } else {
            CHECK_MSG(rc == DK_OK, "prefix %zu (only padding cut): %s", n, err);
        }
        if (rc == DK_OK) gguf_close(f);
        dk_free(copy);
        if (test_failures() > 5) break;
    }
    dk_free(data);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

TEST(gguf, random_mutations_never_crash)
{
    size_t len = 0;
    char *data = sample_bytes(&len);
    REQUIRE(data != NULL);
    uint8_t *copy = dk_malloc(len);
    REQUIRE(copy != NULL);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int n_ok = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(copy, data, len);
        int n_mut = 1 + (int)(rng_next(&seed) % 4);
        for (int m = 0; m < n_mut; m++) {
            size_t pos = (size_t)(rng_next(&seed) % len);
            /* header bytes are where the parser lives: aim half the mutations there */
            if (rng_next(&seed) & 1) pos %= 600;
            switch (rng_next(&seed) % 4) {
            case 0: copy[pos] ^= (uint8_t)(1u << (rng_next(&seed) % 8)); break;
            case 1: copy[pos] = (uint8_t)rng_next(&seed); break;
            case 2: copy[pos] = 0xff; break;
            default: copy[pos] = 0; break;
            }
        }
        gguf_file *f;
        char err[DK_ERRLEN];
        if (gguf_open_memory(&f, copy, len, err) == DK_OK) {
            n_ok++;
            gguf_close(f);
        }
        fuzz_gguf_one(copy, len);
    }
    test_log("%d of 4000 mutants still valid", n_ok);
    dk_free(copy);
    dk_free(data);
}

/* A little builder for hand-made headers. */
static void b_u32(dk_buf *b, uint32_t v)
{
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    dk_buf_append(b, t, 4);
}
static void b_u64(dk_buf *b, uint64_t v)
{
    b_u32(b, (uint32_t)v);
    b_u32(b, (uint32_t)(v >> 32));
}
static void b_str(dk_buf *b, const char *s)
{
    b_u64(b, strlen(s));
    dk_buf_puts(b, s);
}
static void b_head(dk_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    b_u32(b, GGUF_MAGIC);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_kv_u32(dk_buf *b, const char *key, uint32_t v)
{
    b_str(b, key);
    b_u32(b, GGUF_VAL_UINT32);
    b_u32(b, v);
}
static void b_tensor(dk_buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, offset);
}
/* Pads to `align` and appends n zero data bytes. */
static void b_data(dk_buf *b, size_t align, size_t n)
{
    while (b->len % align) dk_buf_putc(b, 0);
    for (size_t i = 0; i < n; i++) dk_buf_putc(b, 0);
}

/* Expects the bytes to fail with DK_ERR_FORMAT and a message containing `want`. */
static void expect_format(dk_buf *b, const char *want, const char *what)
{
    gguf_file *f = NULL;
    char err[DK_ERRLEN] = "";
    int rc = gguf_open_memory(&f, b->data, b->len, err);
    CHECK_MSG(rc == DK_ERR_FORMAT, "%s: rc %d (%s)", what, rc, err);
    CHECK_MSG(strstr(err, want) != NULL, "%s: message '%s' lacks '%s'", what, err, want);
    if (rc == DK_OK) gguf_close(f);
    dk_buf_free(b);
}

TEST(gguf, hostile_headers)
{
    dk_buf b = {0};
    /* the baseline the cases below break: one key, one F32 tensor of 8 values */
    b_head(&b, 3, 1, 1);
    b_kv_u32(&b, "k", 1);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    gguf_file *f;
    char err[DK_ERRLEN];
    CHECK_MSG(gguf_open_memory(&f, b.data, b.len, err) == DK_OK, "baseline: %s", err);
    gguf_close(f);
    dk_buf_free(&b);
    b_head(&b, 2, 1, 1); /* version 2 is the same layout */
    b_kv_u32(&b, "k", 1);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    CHECK_MSG(gguf_open_memory(&f, b.data, b.len, err) == DK_OK, "v2: %s", err);
    if (!test_failures()) gguf_close(f);
    dk_buf_free(&b);

    b_u32(&b, 0x46554746);
    b_u32(&b, 3);
    b_u64(&b, 0);
    b_u64(&b, 0);
    expect_format(&b, "bad magic", "wrong magic");
    b_head(&b, 1, 0, 0);
    expect_format(&b, "version 1", "version 1");
    b_head(&b, 4, 0, 0);
    expect_format(&b, "version 4", "version 4");
    b_head(&b, 3, 0, UINT64_MAX);
    expect_format(&b, "keys", "absurd n_kv");
    b_head(&b, 3, (uint64_t)1 << 40, 0);
    b_data(&b, 32, 64);
    expect_format(&b, "tensors", "absurd n_tensors");

    b_head(&b, 3, 0, 1);
    b_u64(&b, UINT64_MAX);
    b_u64(&b, 0);
    b_u64(&b, 0);
    expect_format(&b, "key at byte 24 has length 18446744073709551615", "key length 2^64-1");
    b_head(&b, 3, 0, 1);
    b_str(&b, "s");
    b_u32(&b, GGUF_VAL_STRING);
    b_u64(&b, UINT64_MAX);
    expect_format(&b, "past the end", "string value length 2^64-1");
    b_head(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, GGUF_VAL_ARRAY);
    b_u32(&b, GGUF_VAL_UINT32);
    b_u64(&b, (uint64_t)1 << 62);
    expect_format(&b, "past the end", "array n huge");
    b_head(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, GGUF_VAL_ARRAY);
    b_u32(&b, GGUF_VAL_STRING);
    b_u64(&b, UINT64_MAX);
    expect_format(&b, "more than the file", "string array n huge");
    b_head(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, GGUF_VAL_ARRAY);
    b_u32(&b, GGUF_VAL_STRING);
    b_u64(&b, 2);
    b_str(&b, "x");
    b_u64(&b, 1000);
    b_u64(&b, 0);
    expect_format(&b, "string array element", "string array element too long");
    b_head(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, GGUF_VAL_ARRAY);
    b_u32(&b, GGUF_VAL_ARRAY);
    b_u64(&b, 1);
    b_u32(&b, GGUF_VAL_UINT8);
    b_u64(&b, 0);
    expect_format(&b, "array of arrays", "array of arrays");
    b_head(&b, 3, 0, 1);
    b_str(&b, "a");
    b_u32(&b, GGUF_VAL_ARRAY);
    b_u32(&b, 13);
    b_u64(&b, 0);
    expect_format(&b, "unknown type 13", "array of unknown type");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u32(&b, 0);
    expect_format(&b, "unknown value type 13", "unknown value type");
    b_head(&b, 3, 0, 2);
    b_kv_u32(&b, "dup", 1);
    b_kv_u32(&b, "dup", 2);
    expect_format(&b, "duplicate key 'dup'", "duplicate key");
    b_head(&b, 3, 0, 1);
    b_str(&b, "k\0");
    b.data[b.len - 1] = 0; /* ("k\0" is just "k": patch a NUL in) */
    b.data[b.len - 9] = 2;
    b_u32(&b, GGUF_VAL_UINT8);
    dk_buf_putc(&b, 1);
    expect_format(&b, "NUL", "NUL in key");

    static const uint32_t bad_alignments[] = {0, 3, 48};
    for (int i = 0; i < 3; i++) {
        b_head(&b, 3, 0, 1);
        b_kv_u32(&b, "general.alignment", bad_alignments[i]);
        expect_format(&b, "power of two", "bad alignment");
    }
    b_head(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_VAL_UINT64);
    b_u64(&b, 32);
    expect_format(&b, "expected u32", "alignment of type u64");

    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 0, NULL, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    expect_format(&b, "0 dimensions", "n_dims 0");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 5, (const uint64_t[]){1, 1, 1, 1, 1}, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    expect_format(&b, "5 dimensions", "n_dims 5");
    static const uint32_t bad_types[] = {4, 5, 16, 29, 31, 0xffffffffu};
    for (int i = 0; i < 6; i++) {
        b_head(&b, 3, 1, 0);
        b_tensor(&b, "t", 1, (const uint64_t[]){32}, bad_types[i], 0);
        b_data(&b, 32, 128);
        expect_format(&b, "unknown type", "unknown tensor type");
    }
    b_head(&b, 3, 2, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 32);
    b_data(&b, 32, 64);
    expect_format(&b, "duplicate tensor name 't'", "duplicate tensor");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 4);
    b_data(&b, 32, 64);
    expect_format(&b, "not a multiple of the alignment", "misaligned offset");
    b_head(&b, 3, 1, 1);
    b_kv_u32(&b, "general.alignment", 64);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 32);
    b_data(&b, 64, 128);
    expect_format(&b, "alignment 64", "offset misaligned for a custom alignment");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, 32);
    b_data(&b, 32, 32);
    expect_format(&b, "lies outside the file", "data beyond the file");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){8}, GGUF_TYPE_F32, UINT64_MAX - 31);
    b_data(&b, 32, 32);
    expect_format(&b, "lies outside the file", "offset near 2^64");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 3, (const uint64_t[]){(uint64_t)1 << 32, (uint64_t)1 << 32, (uint64_t)1 << 32}, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    expect_format(&b, "overflows", "ne product overflow");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 2, (const uint64_t[]){(uint64_t)1 << 62, 2}, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    expect_format(&b, "overflows", "byte size overflow");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){UINT64_MAX}, GGUF_TYPE_F32, 0);
    b_data(&b, 32, 32);
    expect_format(&b, "negative", "negative ne");
    b_head(&b, 3, 1, 0);
    b_tensor(&b, "t", 1, (const uint64_t[]){33}, GGUF_TYPE_Q4_0, 0);
    b_data(&b, 32, 64);
    expect_format(&b, "not a multiple of the Q4_0 block size", "row not a multiple of the block");
}

TEST(gguf, allocation_failures)
{
    size_t len = 0;
    char *data = sample_bytes(&len);
    REQUIRE(data != NULL);
    char err[DK_ERRLEN], path[512];
    tmp_path(path, sizeof path, "allocfail.gguf");
    int n;
    /* reader */
    for (n = 0; n < 10000; n++) {
        gguf_file *f = NULL;
        dk_alloc_fail_after(n);
        int rc = gguf_open_memory(&f, data, len, err);
        dk_alloc_fail_after(-1);
        if (rc == DK_OK) {
            check_sample(f);
            gguf_close(f);
            break;
        }
        CHECK_MSG(rc == DK_ERR_NOMEM, "n=%d: rc %d (%s)", n, rc, err);
    }
    test_log("reader succeeded after %d allocations", n);
    /* writer: building and writing */
    for (n = 0; n < 10000; n++) {
        dk_alloc_fail_after(n);
        gguf_writer *w = gguf_writer_new();
        int rc = w ? fill_sample(w) : DK_ERR_NOMEM;
        if (!rc) rc = gguf_writer_write(w, path, err);
        dk_alloc_fail_after(-1);
        gguf_writer_free(w);
        if (rc == DK_OK) break;
        CHECK_MSG(rc == DK_ERR_NOMEM, "n=%d: rc %d", n, rc);
    }
    test_log("writer succeeded after %d allocations", n);
    gguf_file *f;
    REQUIRE_MSG(gguf_open(&f, path, err) == DK_OK, "%s", err);
    check_sample(f);
    gguf_close(f);
    dk_free(data);
}

static void check_opens(const char *path)
{
    gguf_file *f;
    char err[DK_ERRLEN];
    CHECK_MSG(gguf_open(&f, path, err) == DK_OK, "%s", err);
    if (!test_failures()) gguf_close(f);
}

/* Writes small seed files for fuzz/corpus/gguf/ when DK_WRITE_FUZZ_SEEDS names a directory. */
TEST(gguf, write_fuzz_seeds)
{
    const char *dir = getenv("DK_WRITE_FUZZ_SEEDS");
    if (!dir || !*dir) return;
    char path[512], err[DK_ERRLEN];
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w && fill_sample(w) == DK_OK);
    snprintf(path, sizeof path, "%s/sample.gguf", dir);
    CHECK_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    check_opens(path);
    gguf_writer_free(w);
    w = gguf_writer_new();
    REQUIRE(w != NULL);
    snprintf(path, sizeof path, "%s/empty.gguf", dir);
    CHECK_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    check_opens(path);
    static const char *const toks[] = {"<s>", "</s>", "a", "b", "ab", "\xe2\x96\x81the"};
    static const float scores[] = {0, 0, -1, -2, -3, -4};
    static const int32_t types[] = {3, 3, 1, 1, 1, 1};
    CHECK(gguf_writer_set_str(w, "tokenizer.ggml.model", "llama") == DK_OK);
    CHECK(gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 6) == DK_OK);
    CHECK(gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VAL_FLOAT32, scores, 6) == DK_OK);
    CHECK(gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VAL_INT32, types, 6) == DK_OK);
    CHECK(gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0) == DK_OK);
    snprintf(path, sizeof path, "%s/vocab.gguf", dir);
    CHECK_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    check_opens(path);
    gguf_writer_free(w);
    w = gguf_writer_new();
    REQUIRE(w != NULL);
    CHECK(gguf_writer_set_u32(w, "general.alignment", 64) == DK_OK);
    for (int t = 0; t < GGUF_TYPE_COUNT; t++) {
        if (!gguf_type_is_known(t)) continue;
        char name[32];
        snprintf(name, sizeof name, "t.%s", gguf_type_name((enum gguf_tensor_type)t));
        CHECK(gguf_writer_add_tensor_fill(w, name, (enum gguf_tensor_type)t, 1,
                                          (const int64_t[]){(int64_t)gguf_type_block_size((enum gguf_tensor_type)t)},
                                          fill_ramp, NULL) == DK_OK);
    }
    snprintf(path, sizeof path, "%s/types.gguf", dir);
    CHECK_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    check_opens(path);
    gguf_writer_free(w);
}

TEST(gguf, writer_alignment)
{
    char path[512], err[DK_ERRLEN];
    tmp_path(path, sizeof path, "align64.gguf");
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL);
    REQUIRE(fill_sample(w) == DK_OK);
    CHECK(gguf_writer_set_u32(w, "general.alignment", 64) == DK_OK);
    REQUIRE_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    gguf_file *f;
    REQUIRE_MSG(gguf_open(&f, path, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(gguf_alignment(f), 64);
    CHECK_EQ_INT(gguf_data_offset(f) % 64, 0);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) CHECK_EQ_INT(gguf_get_tensor(f, i)->offset % 64, 0);
    CHECK(gguf_find_tensor(f, "t.q6_k") && ((const uint8_t *)gguf_find_tensor(f, "t.q6_k")->data)[1] == 8);
    gguf_close(f);
    CHECK(gguf_writer_set_u32(w, "general.alignment", 48) == DK_OK);
    CHECK(gguf_writer_write(w, path, err) == DK_ERR_ARG);
    CHECK(gguf_writer_set_u64(w, "general.alignment", 64) == DK_OK);
    CHECK(gguf_writer_write(w, path, err) == DK_ERR_ARG);
    gguf_writer_free(w);
}

TEST(gguf, open_errors_name_the_file)
{
    char path[512], err[DK_ERRLEN];
    gguf_file *f = (gguf_file *)1;
    CHECK(gguf_open(&f, "/nonexistent/x.gguf", err) == DK_ERR_IO && f == NULL);
    tmp_path(path, sizeof path, "garbage.gguf");
    REQUIRE(dk_file_write(path, "GGUF\x01\0\0\0", 8, err) == DK_OK);
    CHECK(gguf_open(&f, path, err) == DK_ERR_FORMAT && f == NULL);
    CHECK_MSG(strstr(err, path) != NULL && strstr(err, "version 1") != NULL, "message: %s", err);
    CHECK(gguf_open(&f, test_tmpdir(), err) == DK_ERR_IO);
    CHECK(gguf_open_memory(&f, NULL, 0, err) == DK_ERR_FORMAT);
}

/* Copying every key of a real vocabulary reproduces every value byte for byte. */
TEST(gguf, copy_kit_vocab)
{
    char src_path[1024], path[512], err[DK_ERRLEN];
    test_kit_file(src_path, sizeof src_path, "tokenizer/ggml-vocab-llama-spm.gguf");
    gguf_file *src;
    REQUIRE_MSG(gguf_open(&src, src_path, err) == DK_OK, "%s", err);
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w != NULL);
    for (int64_t i = 0; i < gguf_n_kv(src); i++) CHECK(gguf_writer_copy_kv(w, src, i) == DK_OK);
    CHECK(gguf_writer_set_str(w, "general.name", "copied") == DK_OK);
    tmp_path(path, sizeof path, "copy.gguf");
    REQUIRE_MSG(gguf_writer_write(w, path, err) == DK_OK, "%s", err);
    gguf_writer_free(w);
    gguf_file *f;
    REQUIRE_MSG(gguf_open(&f, path, err) == DK_OK, "%s", err);
    for (int64_t i = 0; i < gguf_n_kv(src); i++) {
        const char *key = gguf_kv_key(src, i);
        if (strcmp(key, "general.name") == 0) continue;
        int64_t j = gguf_find_key(f, key);
        REQUIRE_MSG(j >= 0, "key %s lost", key);
        const void *a, *b;
        size_t na, nb;
        CHECK(gguf_kv_raw(src, i, &a, &na) == DK_OK && gguf_kv_raw(f, j, &b, &nb) == DK_OK);
        CHECK_MSG(gguf_kv_type(src, i) == gguf_kv_type(f, j) && na == nb && memcmp(a, b, na) == 0, "key %s differs", key);
    }
    gguf_str s;
    CHECK(gguf_get_str(f, "general.name", &s) == DK_OK && str_is(s, "copied", 6));
    gguf_close(f);
    gguf_close(src);
}
