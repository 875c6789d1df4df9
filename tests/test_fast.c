/*
 * test_fast.c: the fast path of the kernels (kernels.h, KERN_PRECISION_FAST) in every ISA
 * variant: activation quantization and integer dots against an independent double-precision
 * model of the scheme written here, the repacked (16/32-row) layouts and the panel GEMMs
 * against the row dots for batch sizes that exercise every micro-kernel tail, EXACT matmuls
 * bit for bit against kern_matmul, the attention products against a plain loop, the
 * vectorised softmax and SiLU, and the thread pool's thread ids and sleeping path.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "base/base.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"
#include "test.h"

static const enum gguf_tensor_type quant_types[] = {
    GGUF_TYPE_Q8_0, GGUF_TYPE_Q4_0, GGUF_TYPE_Q4_1, GGUF_TYPE_Q5_0, GGUF_TYPE_Q5_1,
    GGUF_TYPE_Q2_K, GGUF_TYPE_Q3_K, GGUF_TYPE_Q4_K, GGUF_TYPE_Q5_K, GGUF_TYPE_Q6_K,
};
#define N_QUANT ((int)(sizeof quant_types / sizeof quant_types[0]))
static const enum gguf_tensor_type float_types[] = {GGUF_TYPE_F32, GGUF_TYPE_F16, GGUF_TYPE_BF16};

static uint64_t rng = 0x243F6A8885A308D3ull;
static float rnd_gauss(void)
{
    double u, v;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    u = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    v = ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}
static void fill(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++) x[i] = rnd_gauss() * scale;
}

static int block_of(enum gguf_tensor_type t) { return (int)gguf_type_block_size(t); }

/* A matrix of n_out random rows quantized to t; the caller frees m->data. */
static bool make_matrix(kern_matrix *m, enum gguf_tensor_type t, int64_t n_in, int64_t n_out)
{
    size_t rb;
    if (gguf_row_bytes(t, n_in, &rb) != DK_OK) return false;
    uint8_t *q = dk_malloc(rb * (size_t)n_out);
    float *w = dk_malloc_array((size_t)n_in, sizeof(float));
    if (!q || !w) {
        dk_free(q);
        dk_free(w);
        return false;
    }
    for (int64_t o = 0; o < n_out; o++) {
        fill(w, n_in, 0.5f);
        kern_quantize_row(t, w, q + (size_t)o * rb, n_in);
    }
    dk_free(w);
    *m = (kern_matrix){t, n_in, n_out, rb, q};
    return true;
}

/* The scheme of kern_internal.h computed here in double: x quantized per activation block
 * (32 values for the legacy types, 256 for the K-quants) with d = max|x| / 127 and q =
 * round-to-even(x * 127 / max|x|), times the dequantized weights. */
static double model_dot(enum gguf_tensor_type t, const void *row, const float *x, int64_t n, double *mag)
{
    float *w = dk_malloc_array((size_t)n, sizeof(float));
    *mag = 0;
    if (!w) return NAN;
    kern_dequantize_row(t, row, w, n);
    int ab = block_of(t) == 256 ? 256 : 32;
    double sum = 0;
    *mag = 0;
    for (int64_t b = 0; b < n; b += ab) {
        float amax = 0;
        for (int i = 0; i < ab; i++) amax = fmaxf(amax, fabsf(x[b + i]));
        float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        for (int i = 0; i < ab; i++) {
            double xq = (double)d * (double)lrintf(x[b + i] * id);
            sum += (double)w[b + i] * xq;
            *mag += fabs((double)w[b + i] * xq);
        }
    }
    dk_free(w);
    return sum;
}

TEST(fast, dots_match_the_quantized_scheme)
{
    enum kern_isa isa_before = kern_isa_active(); /* DUCKLING_ISA may have chosen it */
    const int64_t n = 256 * 4;
    float *x = dk_malloc_array((size_t)n, sizeof(float));
    REQUIRE(x);
    int n_checked = 0;
    for (int k = 0; k < N_QUANT; k++) {
        kern_matrix m;
        REQUIRE(make_matrix(&m, quant_types[k], n, 3));
        for (int r = 0; r < 3; r++) {
            fill(x, n, r == 2 ? 30.0f : 1.0f);
            if (r == 1) for (int64_t i = 0; i < n; i += 7) x[i] = 0.0f; /* zeros and all-zero tails */
            const uint8_t *row = (const uint8_t *)m.data + (size_t)r * m.row_bytes;
            double mag = 0, want = model_dot(m.type, row, x, n, &mag);
            for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
                if (!kern_isa_supported((enum kern_isa)isa)) continue;
                REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
                double got = kern_dot_row_fast(m.type, row, x, n);
                CHECK_MSG(fabs(got - want) <= 2e-6 * mag, "%s on %s: %.9g vs %.9g (mag %g)", gguf_type_name(m.type),
                          kern_isa_name((enum kern_isa)isa), got, want, mag);
                n_checked++;
            }
        }
        dk_free((void *)m.data);
    }
    /* an all-zero activation block quantizes to zero, not NaN */
    for (int64_t i = 0; i < n; i++) x[i] = 0.0f;
    kern_matrix m;
    REQUIRE(make_matrix(&m, GGUF_TYPE_Q4_K, n, 1));
    CHECK(kern_dot_row_fast(GGUF_TYPE_Q4_K, m.data, x, n) == 0.0f);
    CHECK(kern_dot_row_fast(GGUF_TYPE_Q4_K, m.data, x, 100) == 0.0f); /* not whole blocks */
    dk_free((void *)m.data);
    kern_isa_force(isa_before);
    test_log("fast dots checked: %d (type x row x isa)", n_checked);
    dk_free(x);
}

/* y (n_tok, n_out) through kern_matmul_many with the given packing and precision */
static void run_mm(const kern_matrix *m, const kern_packed *p, const float *x, int64_t n_tok, enum kern_precision prec,
                   float *y, kern_pool *pool, int n_threads)
{
    kern_workspace *ws = kern_workspace_new(n_tok, m->n_in, n_threads);
    kern_mm mm = {m, p, y};
    kern_matmul_many(&mm, 1, x, n_tok, prec, ws, pool);
    kern_workspace_free(ws);
}

/* Every micro-kernel (packed groups, panels, row dots) against the row dots of the same
 * ISA, for batch sizes that hit every token-tile tail and a row count that is not a whole
 * group; and EXACT bit for bit against kern_matmul. */
TEST(fast, matmuls_agree_with_row_dots)
{
    enum kern_isa isa_before = kern_isa_active(); /* DUCKLING_ISA may have chosen it */
    const int64_t n_in = 512, n_out = 37;
    static const int64_t toks[] = {1, 2, 3, 5, 7, 8, 13, 19};
    enum gguf_tensor_type types[N_QUANT + 3];
    int n_types = 0;
    for (int k = 0; k < N_QUANT; k++) types[n_types++] = quant_types[k];
    for (int k = 0; k < 3; k++) types[n_types++] = float_types[k];
    float *x = dk_malloc_array(19 * (size_t)n_in, sizeof(float));
    float *y = dk_malloc_array(19 * (size_t)n_out, sizeof(float));
    float *e = dk_malloc_array(19 * (size_t)n_out, sizeof(float));
    kern_pool *pool = kern_pool_new(3);
    REQUIRE(x && y && e && pool);
    fill(x, 19 * n_in, 1.0f);
    int n_checked = 0;
    for (int k = 0; k < n_types; k++) {
        kern_matrix m;
        REQUIRE(make_matrix(&m, types[k], n_in, n_out));
        kern_packed *p = NULL;
        if (kern_packable(m.type)) REQUIRE(kern_pack(&m, &p, pool) == DK_OK);
        CHECK(kern_packable(m.type));
        for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
            if (!kern_isa_supported((enum kern_isa)isa)) continue;
            REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
            for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
                int64_t n_tok = toks[ti];
                for (int packed = 0; packed <= (p != NULL); packed++) {
                    for (int64_t i = 0; i < n_tok * n_out; i++) y[i] = NAN;
                    run_mm(&m, packed ? p : NULL, x, n_tok, KERN_PRECISION_FAST, y, ti % 2 ? pool : NULL, 3);
                    double worst = 0;
                    for (int64_t t = 0; t < n_tok; t++)
                        for (int64_t o = 0; o < n_out; o++) {
                            const void *row = (const uint8_t *)m.data + (size_t)o * m.row_bytes;
                            double want = kern_dot_row_fast(m.type, row, x + t * n_in, n_in);
                            double mag = 0;
                            float *wr = dk_malloc_array((size_t)n_in, sizeof(float));
                            REQUIRE(wr);
                            kern_dequantize_row(m.type, row, wr, n_in);
                            for (int64_t i = 0; i < n_in; i++) mag += fabs((double)wr[i] * x[t * n_in + i]);
                            dk_free(wr);
                            double d = fabs((double)y[t * n_out + o] - want) / (mag > 0 ? mag : 1);
                            if (!(d <= worst)) worst = d; /* NaN sticks */
                        }
                    CHECK_MSG(worst <= 2e-6, "%s on %s, %lld tokens%s: relative error %g", gguf_type_name(m.type),
                              kern_isa_name((enum kern_isa)isa), (long long)n_tok, packed ? " (packed)" : "", worst);
                    n_checked++;
                }
                /* EXACT: kern_matmul's bits, packed weights ignored */
                run_mm(&m, p, x, n_tok, KERN_PRECISION_EXACT, y, pool, 3);
                kern_matmul(&m, x, n_tok, e, NULL);
                CHECK_MSG(memcmp(y, e, (size_t)(n_tok * n_out) * sizeof(float)) == 0, "%s exact on %s, %lld tokens",
                          gguf_type_name(m.type), kern_isa_name((enum kern_isa)isa), (long long)n_tok);
            }
        }
        kern_packed_free(p);
        dk_free((void *)m.data);
    }
    kern_isa_force(isa_before);
    test_log("fast matmul configurations checked: %d", n_checked);
    kern_pool_free(pool);
    dk_free(x);
    dk_free(y);
    dk_free(e);
}

/* Several products in one call (different types, so several activation formats). */
TEST(fast, matmul_many_mixes_types)
{
    const int64_t n_in = 512;
    static const enum gguf_tensor_type mix[] = {GGUF_TYPE_Q5_0, GGUF_TYPE_Q4_K, GGUF_TYPE_F16, GGUF_TYPE_Q6_K};
    kern_matrix m[4];
    kern_packed *p[4] = {NULL};
    float *y[4], *x = dk_malloc_array(9 * (size_t)n_in, sizeof(float));
    kern_pool *pool = kern_pool_new(2);
    REQUIRE(x && pool);
    fill(x, 9 * n_in, 1.0f);
    for (int j = 0; j < 4; j++) {
        REQUIRE(make_matrix(&m[j], mix[j], n_in, 48 + 16 * j));
        REQUIRE(kern_pack(&m[j], &p[j], pool) == DK_OK);
        y[j] = dk_malloc_array(9 * (size_t)m[j].n_out, sizeof(float));
        REQUIRE(y[j]);
    }
    kern_workspace *ws = kern_workspace_new(9, n_in, 2);
    REQUIRE(ws);
    for (int64_t n_tok = 1; n_tok <= 9; n_tok += 8) {
        kern_mm mm[4];
        for (int j = 0; j < 4; j++) mm[j] = (kern_mm){&m[j], j % 2 ? p[j] : NULL, y[j]};
        kern_matmul_many(mm, 4, x, n_tok, KERN_PRECISION_FAST, ws, pool);
        for (int j = 0; j < 4; j++)
            for (int64_t t = 0; t < n_tok; t++)
                for (int64_t o = 0; o < m[j].n_out; o++) {
                    double want = kern_dot_row_fast(m[j].type, (const uint8_t *)m[j].data + (size_t)o * m[j].row_bytes,
                                                    x + t * n_in, n_in);
                    CHECK_MSG(fabs(y[j][t * m[j].n_out + o] - want) <= 1e-4 * (1 + fabs(want)), "%s tok %lld row %lld",
                              gguf_type_name(m[j].type), (long long)t, (long long)o);
                }
    }
    kern_workspace_free(ws);
    for (int j = 0; j < 4; j++) {
        kern_packed_free(p[j]);
        dk_free((void *)m[j].data);
        dk_free(y[j]);
    }
    kern_pool_free(pool);
    dk_free(x);
}

/* ------------------------------------------------------------------ attention */

static float kv_elem(const void *base, bool f16, size_t i)
{
    return f16 ? kern_fp16_to_fp32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

TEST(fast, attention_products)
{
    enum kern_isa isa_before = kern_isa_active(); /* DUCKLING_ISA may have chosen it */
    static const int dims[] = {8, 64, 80, 128};
    const int64_t n_pos = 70;
    int n_checked = 0;
    for (int f16 = 0; f16 <= 1; f16++)
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
            int dim = dims[di];
            size_t n_el = (size_t)((n_pos + 15) / 16 * 16) * (size_t)dim;
            void *kt = dk_calloc(n_el, 4), *v = dk_calloc(n_el, 4);
            float *k = dk_malloc_array((size_t)dim, sizeof(float)), *q = dk_malloc_array(7 * (size_t)dim, sizeof(float));
            float *sc = dk_malloc_array(7 * 80, sizeof(float)), *out = dk_malloc_array(7 * (size_t)dim, sizeof(float));
            REQUIRE(kt && v && k && q && sc && out);
            for (int64_t p = 0; p < n_pos; p++) {
                fill(k, dim, 1.0f);
                kern_kv_store_k(kt, f16, dim, p, k);
                fill(k, dim, 1.0f);
                kern_kv_store_v(v, f16, dim, p, k);
            }
            fill(q, 7 * dim, 1.0f);
            /* the transposed layout: key p, dimension d at (p / 16) * dim * 16 + d * 16 + p % 16 */
            for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
                if (!kern_isa_supported((enum kern_isa)isa)) continue;
                REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
                for (int n_head = 1; n_head <= 7; n_head += 3)
                    for (int64_t p0 = 0; p0 < 20; p0 += 7)
                        for (int64_t p1 = p0; p1 < n_pos; p1 += 11) {
                            kern_attn_scores(q, n_head, dim, kt, f16, p0, p1, sc, 80);
                            for (int h = 0; h < n_head; h++)
                                for (int64_t p = p0; p <= p1; p++) {
                                    double s = 0, mag = 0;
                                    for (int d = 0; d < dim; d++) {
                                        double kv = kv_elem(kt, f16, (size_t)(p / 16) * (size_t)dim * 16 + (size_t)d * 16 + (size_t)(p % 16));
                                        s += q[h * dim + d] * kv;
                                        mag += fabs(q[h * dim + d] * kv);
                                    }
                                    CHECK_MSG(fabs(sc[h * 80 + (p - p0)] - s) <= 1e-5 * (mag + 1), "scores %s dim %d h %d p %lld",
                                              kern_isa_name((enum kern_isa)isa), dim, h, (long long)p);
                                }
                            for (int h = 0; h < n_head; h++)
                                for (int64_t p = p0; p <= p1; p++) sc[h * 80 + (p - p0)] = 1.0f / (float)(p1 - p0 + 1) * (float)(1 + h);
                            kern_attn_values(sc, 80, n_head, dim, v, f16, p0, p1, out, dim);
                            for (int h = 0; h < n_head; h++)
                                for (int d = 0; d < dim; d++) {
                                    double s = 0, mag = 0;
                                    for (int64_t p = p0; p <= p1; p++) {
                                        double e = sc[h * 80 + (p - p0)] * kv_elem(v, f16, (size_t)p * (size_t)dim + (size_t)d);
                                        s += e;
                                        mag += fabs(e);
                                    }
                                    CHECK_MSG(fabs(out[h * dim + d] - s) <= 1e-5 * (mag + 1e-3), "values %s dim %d h %d d %d",
                                              kern_isa_name((enum kern_isa)isa), dim, h, d);
                                }
                            n_checked++;
                        }
            }
            dk_free(kt);
            dk_free(v);
            dk_free(k);
            dk_free(q);
            dk_free(sc);
            dk_free(out);
        }
    kern_isa_force(isa_before);
    test_log("attention configurations checked: %d", n_checked);
}

TEST(fast, softmax_and_silu_variants)
{
    enum kern_isa isa_before = kern_isa_active(); /* DUCKLING_ISA may have chosen it */
    float x[100], a[100], b[100];
    for (int n = 1; n <= 100; n += 9) {
        fill(x, n, 6.0f);
        if (n > 3) x[2] = -200.0f; /* underflows to 0 */
        for (int isa = 0; isa < KERN_ISA_COUNT; isa++) {
            if (!kern_isa_supported((enum kern_isa)isa)) continue;
            REQUIRE(kern_isa_force((enum kern_isa)isa) == DK_OK);
            memcpy(a, x, sizeof x);
            kern_softmax(a, n);
            double max = -INFINITY, sum = 0, total = 0;
            for (int i = 0; i < n; i++) max = fmax(max, x[i]);
            for (int i = 0; i < n; i++) sum += exp((double)x[i] - max);
            for (int i = 0; i < n; i++) {
                double want = exp((double)x[i] - max) / sum;
                /* x - max is rounded to float first: its error scales with |x - max| */
                double tol = (1e-6 + 1.2e-7 * fabs((double)x[i] - max)) * want + 1e-30;
                CHECK_MSG(fabs(a[i] - want) <= tol, "softmax %s n %d i %d: %g vs %g", kern_isa_name((enum kern_isa)isa), n,
                          i, a[i], want);
                total += a[i];
            }
            CHECK_NEAR(total, 1.0, 1e-5);
            memcpy(b, x, sizeof x);
            kern_silu(b, n);
            for (int i = 0; i < n; i++) {
                double want = (double)x[i] / (1.0 + exp(-(double)x[i]));
                CHECK_MSG(fabs(b[i] - want) <= 1e-6 * fabs(want) + 1e-30, "silu %s: %g vs %g", kern_isa_name((enum kern_isa)isa), b[i],
                          want);
            }
        }
    }
    /* all -inf (a fully masked row) gives zeros, not NaN */
    for (int i = 0; i < 10; i++) a[i] = -INFINITY;
    kern_softmax(a, 10);
    for (int i = 0; i < 10; i++) CHECK(a[i] == 0.0f);
    kern_isa_force(isa_before);
}

/* ------------------------------------------------------------------ pool */

typedef struct tid_job {
    _Atomic int hits[64];
    _Atomic int bad_thread;
    int n_threads;
} tid_job;

static void tid_task(void *ctx, int i_task, int n_tasks, int i_thread)
{
    tid_job *j = ctx;
    (void)n_tasks;
    if (i_thread < 0 || i_thread >= j->n_threads) atomic_fetch_add(&j->bad_thread, 1);
    atomic_fetch_add(&j->hits[i_task], 1);
}

TEST(fast, pool_thread_ids_and_sleep)
{
    for (int nt = 1; nt <= 3; nt++) {
        kern_pool *p = kern_pool_new(nt);
        REQUIRE(p);
        for (int round = 0; round < 40; round++) {
            tid_job j = {.n_threads = nt};
            int n_tasks = 1 + round % 64;
            kern_pool_run_threads(p, tid_task, &j, n_tasks);
            for (int i = 0; i < n_tasks; i++) CHECK_EQ_INT(atomic_load(&j.hits[i]), 1);
            CHECK_EQ_INT(atomic_load(&j.bad_thread), 0);
            if (round % 10 == 9) { /* long enough for workers to stop spinning and sleep */
                struct timespec ts = {0, 30 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        kern_pool_free(p);
    }
}
