/*
 * test_kernels.c: the kernels suite. Conversions (exhaustive fp16, bf16 rounding), every
 * block type's quantize/dequantize error and dot product, hand-made blocks with known values
 * (layout errors), dequantization of real ggml-quantized tensors from the kit against the
 * F32 originals, every ISA variant against the scalar reference, matmul, the thread pool,
 * and the row kernels on hand-checkable values.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "base/base.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "test.h"

static const enum gguf_tensor_type all_types[] = {
    GGUF_TYPE_F32, GGUF_TYPE_F16, GGUF_TYPE_BF16, GGUF_TYPE_Q8_0, GGUF_TYPE_Q4_0, GGUF_TYPE_Q4_1,
    GGUF_TYPE_Q5_0, GGUF_TYPE_Q5_1, GGUF_TYPE_Q2_K, GGUF_TYPE_Q3_K, GGUF_TYPE_Q4_K, GGUF_TYPE_Q5_K,
    GGUF_TYPE_Q6_K, GGUF_TYPE_Q8_K,
};
#define N_TYPES ((int)(sizeof(all_types) / sizeof(all_types[0])))

/* Bounds on RMSE / RMS(x) for Gaussian data, per type (measured values are 3-15% lower). */
static double rmse_bound(enum gguf_tensor_type t)
{
    switch (t) {
    case GGUF_TYPE_F32: return 0.0;
    case GGUF_TYPE_F16: return 3e-4;
    case GGUF_TYPE_BF16: return 2.5e-3;
    case GGUF_TYPE_Q8_0: return 0.006;
    case GGUF_TYPE_Q8_K: return 0.008;
    case GGUF_TYPE_Q6_K: return 0.020;
    case GGUF_TYPE_Q5_0: return 0.045;
    case GGUF_TYPE_Q5_1: return 0.040;
    case GGUF_TYPE_Q5_K: return 0.040;
    case GGUF_TYPE_Q4_0: return 0.090;
    case GGUF_TYPE_Q4_1: return 0.080;
    case GGUF_TYPE_Q4_K: return 0.080;
    case GGUF_TYPE_Q3_K: return 0.15;
    case GGUF_TYPE_Q2_K: return 0.30;
    default: return 0.0;
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rng_uniform(void) { return ((float)rng_u32() + 0.5f) / 4294967296.0f; }
static float rng_gauss(void)
{
    float u = rng_uniform(), v = rng_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
static void fill_gauss(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++) x[i] = rng_gauss() * scale;
}

static uint8_t *quantize_new(enum gguf_tensor_type t, const float *x, int64_t n)
{
    size_t bytes;
    if (gguf_row_bytes(t, n, &bytes) != DK_OK) return NULL;
    uint8_t *q = dk_malloc(bytes);
    if (q) kern_quantize_row(t, x, q, n);
    return q;
}

static double rel_rmse(const float *a, const float *b, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* ------------------------------------------------------------------ conversions */

static double fp16_formula(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1F, m = h & 0x3FF;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1.0 + m / 1024.0, e - 15);
    return s ? -v : v;
}

TEST(kernels, fp16_exhaustive)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kern_fp16_to_fp32((uint16_t)h);
        double r = fp16_formula((uint16_t)h);
        if (isnan(r)) {
            if (!isnan(f) || !isnan(kern_fp16_to_fp32(kern_fp32_to_fp16(f)))) bad++;
            continue;
        }
        if ((double)f != r || !signbit(f) != !signbit(r)) bad++;
        if (kern_fp32_to_fp16(f) != h) bad++;
        /* rounding: midpoints to the next half go to the even one, anything off them to the nearer */
        uint16_t hn = (uint16_t)(h + 1);
        if ((h & 0x7FFF) < 0x7BFF) {
            float a = f, b = kern_fp16_to_fp32(hn);
            float mid = (float)(((double)a + b) / 2);  /* exact in float */
            uint16_t even = (h & 1) ? hn : (uint16_t)h;
            if (kern_fp32_to_fp16(mid) != even) bad++;
            if (kern_fp32_to_fp16(nextafterf(mid, a)) != h) bad++;
            if (kern_fp32_to_fp16(nextafterf(mid, b)) != hn) bad++;
        }
        if (bad > 10) break;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(kern_fp32_to_fp16(65504.0f), 0x7BFF);
    CHECK_EQ_INT(kern_fp32_to_fp16(65519.99f), 0x7BFF);
    CHECK_EQ_INT(kern_fp32_to_fp16(65520.0f), 0x7C00);
    CHECK_EQ_INT(kern_fp32_to_fp16(1e10f), 0x7C00);
    CHECK_EQ_INT(kern_fp32_to_fp16(-INFINITY), 0xFC00);
    CHECK_EQ_INT(kern_fp32_to_fp16(1e-10f), 0x0000);
    CHECK_EQ_INT(kern_fp32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(kern_fp32_to_fp16(2.9802322e-8f), 0x0000);  /* 2^-25: tie, to even 0 */
    CHECK_EQ_INT(kern_fp32_to_fp16(2.99e-8f), 0x0001);
    CHECK(isnan(kern_fp16_to_fp32(kern_fp32_to_fp16(NAN))));
}

static float f_of_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

TEST(kernels, bf16_rounding)
{
    CHECK_EQ_INT(kern_fp32_to_bf16(1.0f), 0x3F80);
    CHECK_EQ_INT(kern_fp32_to_bf16(f_of_bits(0x3F808000)), 0x3F80);  /* tie, even down */
    CHECK_EQ_INT(kern_fp32_to_bf16(f_of_bits(0x3F818000)), 0x3F82);  /* tie, even up */
    CHECK_EQ_INT(kern_fp32_to_bf16(f_of_bits(0x3F808001)), 0x3F81);
    CHECK_EQ_INT(kern_fp32_to_bf16(f_of_bits(0x3F807FFF)), 0x3F80);
    CHECK_EQ_INT(kern_fp32_to_bf16(-2.0f), 0xC000);
    CHECK_EQ_INT(kern_fp32_to_bf16(f_of_bits(0x7F7FFFFF)), 0x7F80);  /* FLT_MAX rounds to inf */
    CHECK_EQ_INT(kern_fp32_to_bf16(INFINITY), 0x7F80);
    uint16_t n = kern_fp32_to_bf16(f_of_bits(0x7F800001));            /* NaN stays NaN */
    CHECK(isnan(kern_bf16_to_fp32(n)));
    CHECK(kern_bf16_to_fp32(0x3F80) == 1.0f);
    CHECK(kern_bf16_to_fp32(0xC040) == -3.0f);
}

/* ------------------------------------------------------------------ block types */

TEST(kernels, quantize_rmse)
{
    const int64_t n = 256 * 64;
    float *x = dk_malloc(n * sizeof(float)), *y = dk_malloc(n * sizeof(float));
    REQUIRE(x && y);
    fill_gauss(x, n, 1.0f);
    for (int k = 0; k < N_TYPES; k++) {
        enum gguf_tensor_type t = all_types[k];
        uint8_t *q = quantize_new(t, x, n);
        REQUIRE(q);
        kern_dequantize_row(t, q, y, n);
        double r = rel_rmse(y, x, n);
        test_log("%-5s relative RMSE %.5f (bound %.4g)", gguf_type_name(t), r, rmse_bound(t));
        CHECK_MSG(r <= rmse_bound(t), "%s: relative RMSE %g > %g", gguf_type_name(t), r, rmse_bound(t));
        /* zeros and a constant row survive */
        float z[256], zz[256];
        for (int i = 0; i < 256; i++) z[i] = 0.0f;
        uint8_t *qz = quantize_new(t, z, 256);
        REQUIRE(qz);
        kern_dequantize_row(t, qz, zz, 256);
        for (int i = 0; i < 256; i++) CHECK(zz[i] == 0.0f);
        dk_free(qz);
        dk_free(q);
    }
    dk_free(x);
    dk_free(y);
}

TEST(kernels, dot_row_matches_dequantized)
{
    const int64_t n = 256 * 8;
    float *w = dk_malloc(n * sizeof(float)), *x = dk_malloc(n * sizeof(float)), *d = dk_malloc(n * sizeof(float));
    REQUIRE(w && x && d);
    fill_gauss(w, n, 0.5f);
    fill_gauss(x, n, 1.0f);
    for (int k = 0; k < N_TYPES; k++) {
        enum gguf_tensor_type t = all_types[k];
        if (t == GGUF_TYPE_Q8_K) continue;
        uint8_t *q = quantize_new(t, w, n);
        REQUIRE(q);
        kern_dequantize_row(t, q, d, n);
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < n; i++) {
            ref += (double)d[i] * x[i];
            mag += fabs((double)d[i] * x[i]);
        }
        for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
            if (!kern_isa_supported((enum kern_isa)isa)) continue;
            REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
            float got = kern_dot_row(t, q, x, n);
            CHECK_MSG(fabs(got - ref) <= 1e-5 * mag, "%s/%s: dot %g vs %g", gguf_type_name(t),
                      kern_isa_name((enum kern_isa)isa), got, ref);
        }
        kern_isa_force(kern_isa_best());
        dk_free(q);
    }
    dk_free(w);
    dk_free(x);
    dk_free(d);
}

/* Every ISA variant against the reference: NMSE of many dot products. */
TEST(kernels, isa_variants_vs_scalar)
{
    const int64_t n_in = 512, n_rows = 16;
    float *w = dk_malloc(n_in * n_rows * sizeof(float)), *x = dk_malloc(n_in * sizeof(float));
    REQUIRE(w && x);
    fill_gauss(w, n_in * n_rows, 1.0f);
    fill_gauss(x, n_in, 1.0f);
    int n_variants = 0;
    for (int k = 0; k < N_TYPES; k++) {
        enum gguf_tensor_type t = all_types[k];
        if (t == GGUF_TYPE_Q8_K) continue;
        size_t rb;
        REQUIRE(gguf_row_bytes(t, n_in, &rb) == DK_OK);
        uint8_t *q = dk_malloc(rb * n_rows);
        REQUIRE(q);
        for (int64_t r = 0; r < n_rows; r++) kern_quantize_row(t, w + r * n_in, q + r * rb, n_in);
        float ref[16], got[16];
        REQUIRE(kern_isa_force(KERN_ISA_SCALAR) == DK_OK);
        for (int64_t r = 0; r < n_rows; r++) ref[r] = kern_dot_row(t, q + r * rb, x, n_in);
        for (int isa = 1; isa < KERN_ISA_COUNT; isa++) {
            if (!kern_isa_supported((enum kern_isa)isa)) continue;
            REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
            n_variants++;
            double e = 0, s = 0;
            for (int64_t r = 0; r < n_rows; r++) {
                got[r] = kern_dot_row(t, q + r * rb, x, n_in);
                e += ((double)got[r] - ref[r]) * ((double)got[r] - ref[r]);
                s += (double)ref[r] * ref[r];
            }
            double nmse = e / s;
            CHECK_MSG(nmse < 1e-10, "%s on %s: NMSE %g", gguf_type_name(t), kern_isa_name((enum kern_isa)isa), nmse);
        }
        dk_free(q);
    }
    test_log("variants checked: %d (type x isa)", n_variants);
    kern_isa_force(kern_isa_best());
    dk_free(w);
    dk_free(x);
}

static uint16_t h16(float f) { return kern_fp32_to_fp16(f); }

TEST(kernels, handmade_q4_0_q8_0)
{
    uint8_t b4[18];
    uint16_t d = h16(1.5f);
    memcpy(b4, &d, 2);
    for (int j = 0; j < 16; j++) b4[2 + j] = (uint8_t)(j | (15 - j) << 4);
    float y[32];
    kern_dequantize_row(GGUF_TYPE_Q4_0, b4, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == 1.5f * (float)(j - 8));
        CHECK(y[j + 16] == 1.5f * (float)(7 - j));
    }
    uint8_t b8[34];
    d = h16(0.5f);
    memcpy(b8, &d, 2);
    for (int j = 0; j < 32; j++) b8[2 + j] = (uint8_t)(int8_t)(j - 16);
    kern_dequantize_row(GGUF_TYPE_Q8_0, b8, y, 32);
    for (int j = 0; j < 32; j++) CHECK(y[j] == 0.5f * (float)(j - 16));
}

TEST(kernels, handmade_q4_k)
{
    /* ggml block_q4_K: d, dmin (fp16), scales[12], qs[128] */
    uint8_t b[144] = {0};
    uint16_t d = h16(1.0f), dmin = h16(0.5f);
    memcpy(b, &d, 2);
    memcpy(b + 2, &dmin, 2);
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = 8 * j + 3;   /* 3..59: uses the high bits for j >= 2 */
        mn[j] = 63 - 7 * j;  /* 63..14 */
    }
    uint8_t *s = b + 4;
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)(mn[j] | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 0xF) | (mn[j + 4] & 0xF) << 4);
    }
    int q[256];
    for (int e = 0; e < 256; e++) q[e] = (e * 7 + 3) % 16;
    for (int k = 0; k < 4; k++)
        for (int l = 0; l < 32; l++) b[16 + 32 * k + l] = (uint8_t)(q[64 * k + l] | q[64 * k + 32 + l] << 4);
    float y[256];
    kern_dequantize_row(GGUF_TYPE_Q4_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        float want = 1.0f * (float)sc[e / 32] * (float)q[e] - 0.5f * (float)mn[e / 32];
        if (y[e] != want) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(kernels, handmade_q6_k)
{
    /* ggml block_q6_K: ql[128], qh[64], int8 scales[16], fp16 d */
    uint8_t b[210] = {0};
    int q[256];
    for (int e = 0; e < 256; e++) q[e] = (e * 5 + 1) % 64;
    for (int n = 0; n < 2; n++) {
        for (int l = 0; l < 32; l++) {
            const int *qq = q + 128 * n;
            b[64 * n + l] = (uint8_t)((qq[l] & 0xF) | (qq[l + 64] & 0xF) << 4);
            b[64 * n + l + 32] = (uint8_t)((qq[l + 32] & 0xF) | (qq[l + 96] & 0xF) << 4);
            b[128 + 32 * n + l] = (uint8_t)((qq[l] >> 4) | (qq[l + 32] >> 4) << 2 | (qq[l + 64] >> 4) << 4 | (qq[l + 96] >> 4) << 6);
        }
    }
    for (int j = 0; j < 16; j++) b[192 + j] = (uint8_t)(int8_t)(j - 8);
    uint16_t d = h16(0.25f);
    memcpy(b + 208, &d, 2);
    float y[256];
    kern_dequantize_row(GGUF_TYPE_Q6_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++) {
        float want = 0.25f * (float)(e / 16 - 8) * (float)(q[e] - 32);
        if (y[e] != want) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(kernels, handmade_q3_k_q2_k)
{
    /* block_q3_K: hmask[32], qs[64], scales[12], d */
    uint8_t b[110] = {0};
    int q[256], sc[16];
    for (int e = 0; e < 256; e++) q[e] = (e * 3 + 1) % 8;  /* 0..7, value q - 4 */
    for (int j = 0; j < 16; j++) sc[j] = 4 * j + 1;        /* 1..61 stored, value sc - 32 */
    for (int e = 0; e < 256; e++) {
        int n = e / 128, j = (e % 128) / 32, l = e % 32;
        b[32 + 32 * n + l] |= (uint8_t)((q[e] & 3) << (2 * j));
        if (q[e] & 4) b[l] |= (uint8_t)(1 << (4 * n + j));
    }
    for (int j = 0; j < 16; j++) {
        if (j < 8) b[96 + j] |= (uint8_t)(sc[j] & 0xF);
        else b[96 + j - 8] |= (uint8_t)((sc[j] & 0xF) << 4);
        b[96 + 8 + j % 4] |= (uint8_t)((sc[j] >> 4) << (2 * (j / 4)));
    }
    uint16_t d = h16(0.125f);
    memcpy(b + 108, &d, 2);
    float y[256];
    kern_dequantize_row(GGUF_TYPE_Q3_K, b, y, 256);
    int bad = 0;
    for (int e = 0; e < 256; e++)
        if (y[e] != 0.125f * (float)(sc[e / 16] - 32) * (float)(q[e] - 4)) bad++;
    CHECK_EQ_INT(bad, 0);

    /* block_q2_K: scales[16] (lo scale, hi min), qs[64], d, dmin */
    uint8_t c[84] = {0};
    for (int j = 0; j < 16; j++) c[j] = (uint8_t)((j & 0xF) | ((15 - j) << 4));
    for (int e = 0; e < 256; e++) {
        int n = e / 128, j = (e % 128) / 32, l = e % 32;
        c[16 + 32 * n + l] |= (uint8_t)((q[e] & 3) << (2 * j));
    }
    d = h16(2.0f);
    uint16_t dm = h16(0.25f);
    memcpy(c + 80, &d, 2);
    memcpy(c + 82, &dm, 2);
    kern_dequantize_row(GGUF_TYPE_Q2_K, c, y, 256);
    bad = 0;
    for (int e = 0; e < 256; e++)
        if (y[e] != 2.0f * (float)(e / 16) * (float)(q[e] & 3) - 0.25f * (float)(15 - e / 16)) bad++;
    CHECK_EQ_INT(bad, 0);
}

/* Real files quantized by llama.cpp: every quantized tensor must dequantize close to the F32
 * original (a layout error gives an error of order 1), and our own quantizer should do about
 * as well as ggml's on the same data. */
TEST(kernels, kit_ggml_quantized_tensors)
{
    static const char *files[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M",
                                  "Q4_K_M", "Q5_K_M", "Q6_K", "F16", "BF16"};
    char path[1024], err[DK_ERRLEN];
    gguf_file *f32 = NULL;
    test_kit_file(path, sizeof(path), "forward/llama-tiny/llama-tiny.F32.gguf");
    if (gguf_open(&f32, path, err) != DK_OK) {
        test_log("kit not available (%s): skipped", err);
        return;
    }
    double worst[GGUF_TYPE_COUNT] = {0}, ours[GGUF_TYPE_COUNT] = {0};
    int seen[GGUF_TYPE_COUNT] = {0};
    for (size_t fi = 0; fi < sizeof(files) / sizeof(files[0]); fi++) {
        char rel[256];
        snprintf(rel, sizeof(rel), "forward/llama-tiny/llama-tiny.%s.gguf", files[fi]);
        test_kit_file(path, sizeof(path), rel);
        gguf_file *g = NULL;
        if (gguf_open(&g, path, err) != DK_OK) {
            CHECK_MSG(0, "open %s: %s", rel, err);
            continue;
        }
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor *t = gguf_get_tensor(g, i);
            const gguf_tensor *r = gguf_find_tensor(f32, t->name);
            if (!r || t->type == GGUF_TYPE_F32 || r->type != GGUF_TYPE_F32 || r->n_elements != t->n_elements) continue;
            int64_t n = t->n_elements;
            float *y = dk_malloc((size_t)n * sizeof(float)), *y2 = dk_malloc((size_t)n * sizeof(float));
            REQUIRE(y && y2);
            kern_dequantize_row(t->type, t->data, y, n);
            double e = rel_rmse(y, r->data, n);
            if (e > worst[t->type]) worst[t->type] = e;
            uint8_t *q = quantize_new(t->type, r->data, n);
            REQUIRE(q);
            kern_dequantize_row(t->type, q, y2, n);
            double e2 = rel_rmse(y2, r->data, n);
            if (e2 > ours[t->type]) ours[t->type] = e2;
            seen[t->type]++;
            CHECK_MSG(e <= rmse_bound(t->type) * 1.5, "%s %s: ggml-quantized relative RMSE %g", rel, t->name, e);
            CHECK_MSG(e2 <= e * 1.15 + 1e-6, "%s %s: our RMSE %g vs ggml's %g", rel, t->name, e2, e);
            /* round-to-nearest types: byte-identical to llama-quantize's output */
            bool rtn = t->type == GGUF_TYPE_Q8_0 || t->type == GGUF_TYPE_Q4_0 || t->type == GGUF_TYPE_Q4_1 ||
                       t->type == GGUF_TYPE_Q5_0 || t->type == GGUF_TYPE_Q5_1 || t->type == GGUF_TYPE_F16 ||
                       t->type == GGUF_TYPE_BF16;
            if (rtn) CHECK_MSG(memcmp(q, t->data, t->n_bytes) == 0, "%s %s: bytes differ from ggml's", rel, t->name);
            dk_free(q);
            dk_free(y);
            dk_free(y2);
        }
        gguf_close(g);
    }
    for (int t = 0; t < GGUF_TYPE_COUNT; t++)
        if (seen[t]) test_log("%-5s %3d tensors: ggml worst rel RMSE %.5f, ours %.5f", gguf_type_name(t), seen[t], worst[t], ours[t]);
    gguf_close(f32);
}

/* ------------------------------------------------------------------ matmul and pool */

TEST(kernels, matmul_equals_row_dots)
{
    const int64_t n_in = 256, n_out = 37, n_tok = 3;
    float *w = dk_malloc(n_in * n_out * sizeof(float)), *x = dk_malloc(n_in * n_tok * sizeof(float));
    float *y = dk_malloc(n_out * n_tok * sizeof(float));
    REQUIRE(w && x && y);
    fill_gauss(w, n_in * n_out, 1.0f);
    fill_gauss(x, n_in * n_tok, 1.0f);
    static const enum gguf_tensor_type types[] = {GGUF_TYPE_F32, GGUF_TYPE_F16, GGUF_TYPE_Q8_0, GGUF_TYPE_Q4_K, GGUF_TYPE_Q6_K, GGUF_TYPE_Q2_K};
    for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++) {
        enum gguf_tensor_type t = types[k];
        size_t rb;
        REQUIRE(gguf_row_bytes(t, n_in, &rb) == DK_OK);
        uint8_t *q = dk_malloc(rb * n_out);
        REQUIRE(q);
        for (int64_t o = 0; o < n_out; o++) kern_quantize_row(t, w + o * n_in, q + o * rb, n_in);
        kern_matrix m = {t, n_in, n_out, rb, q};
        for (int nt = 0; nt <= 3; nt++) {
            kern_pool *p = nt ? kern_pool_new(nt) : NULL;
            if (nt) REQUIRE(p);
            for (int64_t i = 0; i < n_out * n_tok; i++) y[i] = NAN;
            kern_matmul(&m, x, n_tok, y, p);
            int bad = 0;
            for (int64_t tk = 0; tk < n_tok; tk++)
                for (int64_t o = 0; o < n_out; o++)
                    if (y[tk * n_out + o] != kern_dot_row(t, q + o * rb, x + tk * n_in, n_in)) bad++;
            CHECK_MSG(bad == 0, "%s threads %d: %d mismatches", gguf_type_name(t), nt, bad);
            kern_pool_free(p);
        }
        dk_free(q);
    }
    dk_free(w);
    dk_free(x);
    dk_free(y);
}

TEST(kernels, matrix_from_tensor)
{
    gguf_tensor t = {0};
    float data[64] = {0};
    t.name = "w";
    t.type = GGUF_TYPE_Q8_0;
    t.n_dims = 2;
    t.ne[0] = 33;
    t.ne[1] = 2;
    t.ne[2] = t.ne[3] = 1;
    t.data = data;
    kern_matrix m;
    char err[DK_ERRLEN];
    CHECK(kern_matrix_from_tensor(&m, &t, err) != DK_OK);
    t.ne[0] = 64;
    REQUIRE(kern_matrix_from_tensor(&m, &t, err) == DK_OK);
    CHECK_EQ_INT(m.n_in, 64);
    CHECK_EQ_INT(m.n_out, 2);
    CHECK_EQ_INT(m.row_bytes, 68);
}

typedef struct pool_ctx {
    atomic_int counts[1000];
    atomic_int bad_n;
    int n_expect;
} pool_ctx;

static void pool_task(void *ctx, int i_task, int n_tasks)
{
    pool_ctx *c = ctx;
    if (n_tasks != c->n_expect || i_task < 0 || i_task >= n_tasks) atomic_fetch_add(&c->bad_n, 1);
    else atomic_fetch_add(&c->counts[i_task], 1);
}

TEST(kernels, pool_runs_each_task_once)
{
    static pool_ctx c;
    static const int sizes[] = {1, 2, 3, 7, 64, 1000};
    for (int nt = 1; nt <= 4; nt++) {
        kern_pool *p = kern_pool_new(nt);
        REQUIRE(p);
        CHECK_EQ_INT(kern_pool_threads(p), nt);
        for (int rep = 0; rep < 20; rep++) {
            for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                int n = sizes[s];
                for (int i = 0; i < 1000; i++) atomic_store(&c.counts[i], 0);
                atomic_store(&c.bad_n, 0);
                c.n_expect = n;
                kern_pool_run(p, pool_task, &c, n);
                int bad = atomic_load(&c.bad_n);
                for (int i = 0; i < 1000; i++)
                    if (atomic_load(&c.counts[i]) != (i < n ? 1 : 0)) bad++;
                CHECK_MSG(bad == 0, "threads %d tasks %d: %d bad", nt, n, bad);
            }
        }
        kern_pool_free(p);
    }
    CHECK(kern_pool_new(0) == NULL);
    CHECK_EQ_INT(kern_pool_threads(NULL), 1);
}

/* ------------------------------------------------------------------ row kernels */

TEST(kernels, rope_normal_and_neox)
{
    /* one head of 4, n_rot 4, base 100: theta_0 = pos, theta_1 = pos / 10 */
    float x[4] = {1, 2, 3, 4}, y[4] = {1, 2, 3, 4};
    kern_rope(x, 1, 4, 4, 1, 100.0f, NULL, false);
    CHECK_NEAR(x[0], cos(1.0) - 2 * sin(1.0), 1e-6);
    CHECK_NEAR(x[1], sin(1.0) + 2 * cos(1.0), 1e-6);
    CHECK_NEAR(x[2], 3 * cos(0.1) - 4 * sin(0.1), 1e-6);
    CHECK_NEAR(x[3], 3 * sin(0.1) + 4 * cos(0.1), 1e-6);
    kern_rope(y, 1, 4, 4, 1, 100.0f, NULL, true);  /* pairs (0,2), (1,3) */
    CHECK_NEAR(y[0], cos(1.0) - 3 * sin(1.0), 1e-6);
    CHECK_NEAR(y[2], sin(1.0) + 3 * cos(1.0), 1e-6);
    CHECK_NEAR(y[1], 2 * cos(0.1) - 4 * sin(0.1), 1e-6);
    CHECK_NEAR(y[3], 2 * sin(0.1) + 4 * cos(0.1), 1e-6);
    /* freq factors divide theta; pos 0 is the identity; n_rot < head_dim leaves the tail */
    float z[8] = {1, 2, 3, 4, 5, 6, 7, 8}, ff[2] = {2.0f, 1.0f};
    kern_rope(z, 2, 4, 2, 3, 100.0f, ff, false);
    CHECK_NEAR(z[0], cos(1.5) - 2 * sin(1.5), 1e-6);
    CHECK_NEAR(z[1], sin(1.5) + 2 * cos(1.5), 1e-6);
    CHECK(z[2] == 3 && z[3] == 4 && z[6] == 7 && z[7] == 8);
    CHECK_NEAR(z[4], 5 * cos(1.5) - 6 * sin(1.5), 1e-6);
    float w[4] = {1, 2, 3, 4};
    kern_rope(w, 1, 4, 4, 0, 1e4f, NULL, true);
    CHECK(w[0] == 1 && w[1] == 2 && w[2] == 3 && w[3] == 4);
}

TEST(kernels, gelu_table_semantics)
{
    float x[] = {-10.0f, -9.99f, 0.0f, 0.5f, 1.0f, -1.0f, 3.14159f, 9.99f, 10.0f, 12.5f, -20.0f};
    int n = (int)(sizeof(x) / sizeof(x[0]));
    float y[16], e[16];
    memcpy(y, x, sizeof(x));
    memcpy(e, x, sizeof(x));
    kern_gelu(y, n);
    kern_gelu_exact_tanh(e, n);
    for (int i = 0; i < n; i++) {
        float want;
        if (x[i] <= -10.0f) want = 0.0f;
        else if (x[i] >= 10.0f) want = x[i];
        else {
            float v = kern_fp16_to_fp32(kern_fp32_to_fp16(x[i]));
            kern_gelu_exact_tanh(&v, 1);
            want = kern_fp16_to_fp32(kern_fp32_to_fp16(v));
        }
        CHECK_MSG(y[i] == want, "gelu(%g) = %g, want %g", x[i], y[i], want);
        if (x[i] > -10.0f && x[i] < 10.0f) CHECK_NEAR(y[i], e[i], 1e-2 * fabsf(e[i]) + 1e-4);
    }
    CHECK(y[0] == 0.0f);
    CHECK(y[8] == 10.0f);
    CHECK_NEAR(y[4], 0.8411920f, 1e-3);  /* gelu_tanh(1) = 0.841192 */
    CHECK(y[2] == 0.0f);
}

TEST(kernels, softmax_norms_activations)
{
    float x[5] = {1, 2, 3, 4, 1000};
    kern_softmax(x, 5);
    double s = 0;
    for (int i = 0; i < 5; i++) s += x[i];
    CHECK_NEAR(s, 1.0, 1e-6);
    CHECK_NEAR(x[4], 1.0, 1e-6);
    float a[4] = {0, 1, 2, 3};
    kern_softmax(a, 4);
    CHECK_NEAR(a[1] / a[0], exp(1.0), 1e-5);
    CHECK_NEAR(a[0] + a[1] + a[2] + a[3], 1.0, 1e-6);

    float r[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f};
    kern_rmsnorm(r, r, w, 4, 0.0f);  /* rms = sqrt(7.5) */
    CHECK_NEAR(r[0], 1 / sqrt(7.5), 1e-6);
    CHECK_NEAR(r[2], 6 / sqrt(7.5), 1e-6);
    CHECK_NEAR(r[3], 2 / sqrt(7.5), 1e-6);
    float l[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 0};
    kern_layernorm(l, l, NULL, b, 4, 0.0f);  /* mean 2.5, var 1.25 */
    CHECK_NEAR(l[0], -1.5 / sqrt(1.25) + 1, 1e-6);
    CHECK_NEAR(l[3], 1.5 / sqrt(1.25), 1e-6);

    float v[3] = {0, 2, -2};
    kern_silu(v, 3);
    CHECK(v[0] == 0);
    CHECK_NEAR(v[1], 2 / (1 + exp(-2.0)), 1e-6);
    CHECK_NEAR(v[2], -2 / (1 + exp(2.0)), 1e-6);
    float c[2] = {100, -1};
    kern_softcap(c, 30, 2);
    CHECK_NEAR(c[0], 30 * tanh(100.0 / 30), 1e-5);
    CHECK_NEAR(c[1], 30 * tanh(-1.0 / 30), 1e-6);
    float m[2] = {2, 3}, n2[2] = {4, 5}, o[2];
    kern_mul(o, m, n2, 2);
    CHECK(o[0] == 8 && o[1] == 15);
    kern_add(o, m, n2, 2);
    CHECK(o[0] == 6 && o[1] == 8);
    kern_scale(o, 0.5f, 2);
    CHECK(o[0] == 3 && o[1] == 4);
}

TEST(kernels, isa_selection)
{
    CHECK(kern_isa_supported(KERN_ISA_SCALAR));
    CHECK(kern_isa_supported(kern_isa_best()));
    CHECK_EQ_STR(kern_isa_name(KERN_ISA_AVX512), "avx512");
    enum kern_isa was = kern_isa_active();
    CHECK(kern_isa_force(KERN_ISA_SCALAR) == DK_OK);
    CHECK(kern_isa_active() == KERN_ISA_SCALAR);
    for (int i = 0; i < KERN_ISA_COUNT; i++)
        if (!kern_isa_supported((enum kern_isa)i)) CHECK(kern_isa_force((enum kern_isa)i) == DK_ERR_UNSUPPORTED);
    kern_isa_force(was);
    test_log("best ISA: %s", kern_isa_name(kern_isa_best()));
}

/* Element types have no block: every length, including the vector tails, in every variant. */
TEST(kernels, isa_variants_odd_lengths)
{
    float w[80], x[80];
    uint16_t h[80], bf[80];
    fill_gauss(w, 80, 1.0f);
    fill_gauss(x, 80, 1.0f);
    for (int i = 0; i < 80; i++) {
        h[i] = kern_fp32_to_fp16(w[i]);
        bf[i] = kern_fp32_to_bf16(w[i]);
    }
    for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
        if (!kern_isa_supported((enum kern_isa)isa)) continue;
        REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
        for (int n = 1; n <= 80; n++) {
            double r32 = 0, r16 = 0, rbf = 0, mag = 0;
            for (int i = 0; i < n; i++) {
                r32 += (double)w[i] * x[i];
                r16 += (double)kern_fp16_to_fp32(h[i]) * x[i];
                rbf += (double)kern_bf16_to_fp32(bf[i]) * x[i];
                mag += fabs((double)w[i] * x[i]);
            }
            CHECK_MSG(fabs(kern_dot_row(GGUF_TYPE_F32, w, x, n) - r32) <= 1e-5 * mag, "f32 %s n=%d", kern_isa_name((enum kern_isa)isa), n);
            CHECK_MSG(fabs(kern_dot_row(GGUF_TYPE_F16, h, x, n) - r16) <= 1e-5 * mag, "f16 %s n=%d", kern_isa_name((enum kern_isa)isa), n);
            CHECK_MSG(fabs(kern_dot_row(GGUF_TYPE_BF16, bf, x, n) - rbf) <= 1e-5 * mag, "bf16 %s n=%d", kern_isa_name((enum kern_isa)isa), n);
        }
    }
    kern_isa_force(kern_isa_best());
}
