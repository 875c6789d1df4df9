/*
 * kernels.c: run-time choice of the instruction-set variant (CPUID, overridable with
 * DUCKLING_ISA=scalar|avx2|avx512|neon) and the entry points that go through its dispatch
 * table: row dot products and the matmul. The kernels themselves live in kernels_ref.c,
 * quants_ref.c and arch/<isa>/; no ISA-specific code here.
 */
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "kernels/kern_internal.h"

static kern_isa_ops g_ops;
static enum kern_isa g_isa = KERN_ISA_SCALAR;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static const char *const isa_names[KERN_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};

const char *kern_isa_name(enum kern_isa isa)
{
    return (isa >= 0 && isa < KERN_ISA_COUNT) ? isa_names[isa] : "unknown";
}

#if defined(__x86_64__)
/* CPU and OS support from CPUID and XGETBV (the OS must save the vector state). */
static void x86_features(bool *avx2, bool *avx512)
{
    unsigned a, b, c, d;
    *avx2 = *avx512 = false;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!osxsave || !avx) return;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if ((xlo & 0x6) != 0x6) return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    *avx2 = fma && f16c && (b & (1u << 5));
    bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    bool vnni = c & (1u << 11);
    unsigned max7 = a;
    bool bf16 = false;
    if (max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) bf16 = a & (1u << 5);
    /* every flag dot_avx512.c is compiled with */
    *avx512 = *avx2 && (xlo & 0xE6) == 0xE6 && f && dq && bw && vl && vnni && bf16;
}
#endif

bool kern_isa_supported(enum kern_isa isa)
{
    switch (isa) {
    case KERN_ISA_SCALAR: return true;
#if defined(__x86_64__)
    case KERN_ISA_AVX2:
    case KERN_ISA_AVX512: {
        bool avx2, avx512;
        x86_features(&avx2, &avx512);
        return isa == KERN_ISA_AVX2 ? avx2 : avx512;
    }
#endif
    default: return false;
    }
}

enum kern_isa kern_isa_best(void)
{
    for (int i = KERN_ISA_COUNT - 1; i > 0; i--)
        if (kern_isa_supported((enum kern_isa)i)) return (enum kern_isa)i;
    return KERN_ISA_SCALAR;
}

static void ops_build(enum kern_isa isa)
{
    kern_isa_ops ops;
    kern_ref_fill_ops(&ops);
    kern_ref_fill_fast_ops(&ops);
#if defined(__x86_64__)
    if (isa == KERN_ISA_AVX2) {
        kern_avx2_fill_ops(&ops);
        kern_avx2_fill_fast_ops(&ops);
    }
    if (isa == KERN_ISA_AVX512) {
        kern_avx512_fill_ops(&ops);
        kern_avx512_fill_fast_ops(&ops);
    }
#endif
    g_ops = ops;
    g_isa = isa;
}

static void ops_init_once(void)
{
    enum kern_isa isa = kern_isa_best();
    const char *want = dk_getenv_or("DUCKLING_ISA", "");
    for (int i = 0; i < KERN_ISA_COUNT; i++) {
        if (strcmp(want, isa_names[i]) == 0 && kern_isa_supported((enum kern_isa)i)) isa = (enum kern_isa)i;
    }
    ops_build(isa);
}

const kern_isa_ops *kern_ops(void)
{
    pthread_once(&g_once, ops_init_once);
    return &g_ops;
}

enum kern_isa kern_isa_active(void)
{
    kern_ops();
    return g_isa;
}

int kern_isa_force(enum kern_isa isa)
{
    kern_ops();
    if (!kern_isa_supported(isa)) return DK_ERR_UNSUPPORTED;
    ops_build(isa);
    return DK_OK;
}

/* ------------------------------------------------------------------ rows */

void kern_dequantize_row(enum gguf_tensor_type type, const void *src, float *dst, int64_t n)
{
    kern_ref_dequantize_row(type, src, dst, n);
}

void kern_quantize_row(enum gguf_tensor_type type, const float *src, void *dst, int64_t n)
{
    kern_ref_quantize_row(type, src, dst, n);
}

float kern_dot_row(enum gguf_tensor_type type, const void *row, const float *x, int64_t n)
{
    if (!gguf_type_is_known((int)type)) return 0.0f;
    kern_dot_fn f = kern_ops()->dot[type];
    return f ? f(row, x, n) : 0.0f;
}

/* ------------------------------------------------------------------ matrices */

int kern_matrix_from_tensor(kern_matrix *m, const gguf_tensor *t, char *err)
{
    memset(m, 0, sizeof(*m));
    if (!t || !t->data) return dk_fail(err, DK_ERR_ARG, "kern_matrix_from_tensor: no tensor");
    if (t->n_dims > 2 && (t->ne[2] != 1 || t->ne[3] != 1))
        return dk_fail(err, DK_ERR_FORMAT, "tensor %s: expected 2-D, has %u dims", t->name ? t->name : "?", t->n_dims);
    if (!gguf_type_is_known((int)t->type) || t->type == GGUF_TYPE_Q8_1 || t->type == GGUF_TYPE_Q8_K)
        return dk_fail(err, DK_ERR_UNSUPPORTED, "tensor %s: type %d is not a weight type", t->name ? t->name : "?", (int)t->type);
    size_t rb;
    if (gguf_row_bytes(t->type, t->ne[0], &rb) != DK_OK)
        return dk_fail(err, DK_ERR_FORMAT, "tensor %s: row of %lld values does not fit type %s",
                       t->name ? t->name : "?", (long long)t->ne[0], gguf_type_name(t->type));
    m->type = t->type;
    m->n_in = t->ne[0];
    m->n_out = t->ne[1];
    m->row_bytes = rb;
    m->data = t->data;
    return DK_OK;
}

typedef struct matmul_job {
    const kern_matrix *w;
    const float *x;  /* (n_tok, n_in) */
    float *y;        /* (n_tok, n_out) */
    int64_t n_tok;
    kern_dot_fn dot;
} matmul_job;

/* Rows [o0, o1): each weight row is read once and dotted with every activation row. */
static void matmul_rows(const matmul_job *j, int64_t o0, int64_t o1)
{
    const kern_matrix *w = j->w;
    for (int64_t o = o0; o < o1; o++) {
        const void *row = (const uint8_t *)w->data + (size_t)o * w->row_bytes;
        for (int64_t t = 0; t < j->n_tok; t++)
            j->y[t * w->n_out + o] = j->dot(row, j->x + t * w->n_in, w->n_in);
    }
}

static void matmul_task(void *ctx, int i_task, int n_tasks)
{
    const matmul_job *j = ctx;
    int64_t n = j->w->n_out;
    int64_t o0 = n * i_task / n_tasks, o1 = n * (i_task + 1) / n_tasks;
    matmul_rows(j, o0, o1);
}

void kern_matmul(const kern_matrix *w, const float *x, int64_t n_tok, float *y, kern_pool *pool)
{
    if (!w || n_tok <= 0 || w->n_out <= 0 || !gguf_type_is_known((int)w->type)) return;
    kern_dot_fn dot = kern_ops()->dot[w->type];
    if (!dot) return;
    matmul_job j = {w, x, y, n_tok, dot};
    int n_threads = kern_pool_threads(pool);
    /* a few tasks per thread for balance, but not fewer than 4 rows per task */
    int64_t n_tasks = (int64_t)n_threads * 4;
    if (n_tasks > w->n_out / 4) n_tasks = w->n_out / 4;
    if (n_tasks < 1) n_tasks = 1;
    if (n_tasks == 1 || !pool) matmul_rows(&j, 0, w->n_out);
    else kern_pool_run(pool, matmul_task, &j, (int)n_tasks);
}
