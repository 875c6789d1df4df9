/*
 * kernels_ref.c: scalar kernels that are not per block type: fp16/bf16 conversions, the
 * element-wise and row kernels (norms, softmax, activations, RoPE). They are the reference
 * the numerics are defined by, and fast enough to be used directly (the heavy work is the
 * matmul, see kernels.c and arch/). Sums that set a scale (norms, softmax) are taken in
 * double as ggml does.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels/kern_internal.h"

/* ------------------------------------------------------------------ conversions */

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float kern_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-8f;  /* m * 2^-24, exact */
        return bits_f32(f32_bits(v) | sign);
    }
    if (e == 31) return bits_f32(sign | 0x7F800000u | m << 13);
    return bits_f32(sign | (e + 112) << 23 | m << 13);
}

uint16_t kern_fp32_to_fp16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7FFFFFFFu;
    if (x > 0x7F800000u) return (uint16_t)(sign | 0x7E00 | ((x >> 13) & 0x3FF));  /* NaN, quiet */
    if (x >= 0x47800000u) return (uint16_t)(sign | 0x7C00);                       /* >= 65536: inf */
    if (x < 0x38800000u) {
        /* below the smallest normal half: adding 0.5 rounds to a multiple of 2^-24 (RNE) */
        float v = bits_f32(x) + 0.5f;
        return (uint16_t)(sign | (f32_bits(v) - f32_bits(0.5f)));
    }
    uint32_t odd = (x >> 13) & 1;
    x += 0xC8000FFFu + odd;  /* rebias the exponent by -112, round to nearest even */
    return (uint16_t)(sign | (x >> 13));
}

float kern_bf16_to_fp32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t kern_fp32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 64);  /* quiet NaN */
    return (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
}

/* ------------------------------------------------------------------ row kernels */

void kern_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);  /* float product, double sum (ggml) */
    float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    if (w) {
        for (int64_t i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale;
    }
}

void kern_layernorm(float *out, const float *x, const float *w, const float *b, int64_t n, float eps)
{
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    float mean = (float)(sum / (double)n);
    double var = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += (double)(d * d);
    }
    float scale = 1.0f / sqrtf((float)(var / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) {
        float v = (x[i] - mean) * scale;
        if (w) v *= w[i];
        if (b) v += b[i];
        out[i] = v;
    }
}

double kern_ref_softmax(float *x, int64_t n, float *max_out)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) if (x[i] > max) max = x[i];
    if (max_out) *max_out = max;
    if (n <= 0) return 0.0;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float e = (max == -INFINITY) ? 0.0f : expf(x[i] - max);
        x[i] = e;
        sum += e;
    }
    float inv = sum > 0.0 ? (float)(1.0 / sum) : 0.0f;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
    return sum;
}

void kern_ref_silu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

#define GELU_COEF_A 0.044715f
#define SQRT_2_OVER_PI 0.79788456080286535587989211986876f

static inline float gelu_tanh(float x)
{
    return 0.5f * x * (1.0f + tanhf(SQRT_2_OVER_PI * x * (1.0f + GELU_COEF_A * x * x)));
}

void kern_gelu_exact_tanh(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = gelu_tanh(x[i]);
}

/* ggml's table: for every fp16 value h, fp16(gelu_tanh(float(h))). */
static uint16_t gelu_table[1 << 16];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void)
{
    for (uint32_t i = 0; i < (1u << 16); i++)
        gelu_table[i] = kern_fp32_to_fp16(gelu_tanh(kern_fp16_to_fp32((uint16_t)i)));
}

void kern_gelu(float *x, int64_t n)
{
    pthread_once(&gelu_once, gelu_table_init);
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v <= -10.0f) x[i] = 0.0f;
        else if (v >= 10.0f) x[i] = v;
        else x[i] = kern_fp16_to_fp32(gelu_table[kern_fp32_to_fp16(v)]);
    }
}

void kern_mul(float *out, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

void kern_add(float *out, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void kern_scale(float *x, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

void kern_softcap(float *x, float cap, int64_t n)
{
    float inv = 1.0f / cap;
    for (int64_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] * inv);
}

void kern_rope(float *x, int n_head, int head_dim, int n_rot, int64_t pos, float base,
               const float *freq_factors, bool neox)
{
    if (n_rot <= 0 || n_rot > head_dim || n_rot % 2) return;
    int half = n_rot / 2;
    float theta_scale = powf(base, -2.0f / (float)n_rot);
    float cs[512], sn[512];  /* (half) per call when it fits, else computed per pair */
    float theta = (float)pos;
    bool cached = half <= 512;
    for (int i = 0; cached && i < half; i++) {
        float t = freq_factors ? theta / freq_factors[i] : theta;
        cs[i] = cosf(t);
        sn[i] = sinf(t);
        theta *= theta_scale;
    }
    for (int h = 0; h < n_head; h++) {
        float *v = x + (int64_t)h * head_dim;
        float th = (float)pos;
        for (int i = 0; i < half; i++) {
            float c, s;
            if (cached) {
                c = cs[i];
                s = sn[i];
            } else {
                float t = freq_factors ? th / freq_factors[i] : th;
                c = cosf(t);
                s = sinf(t);
                th *= theta_scale;
            }
            int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
            float a = v[i0], b = v[i1];
            v[i0] = a * c - b * s;
            v[i1] = a * s + b * c;
        }
    }
}
