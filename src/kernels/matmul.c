/*
 * matmul.c: kern_matmul_many, the driver of the matrix products of a forward pass. It
 * quantizes the shared input once per activation format (FAST), splits the output rows of
 * all the products of one call into tasks of one parallel run (so q/k/v or gate/up cost one
 * synchronisation, not three), and in each task picks the code:
 *
 *   - weights repacked at load (kern_pack, model_prepare_fast): the 16- or 32-row
 *     group micro-kernels, for one token (decode) as for a batch (prefill);
 *   - other weights, a few tokens (decode): row dot products straight from the file;
 *   - other weights, a batch: 32 rows are unpacked once into a panel that stays in L1/L2 and
 *     a register-blocked micro-kernel multiplies it with every token.
 *
 * EXACT goes to kern_matmul. The kernels (dots, quantizers, micro-kernels) come from the ISA
 * table.
 */
#include <string.h>

#include "kernels/kern_internal.h"

/* Tokens from which a batch goes through panels; below, row dots re-read rows from cache. */
#define GEMM_MIN_TOK 8
/* Values of a float panel chunk: 32 rows x 256 floats = 32 KB, an L1-sized block. */
#define FPANEL_K 256
/* Activation buffers (distinct formats) per call; more formats are handled in rounds. */
#define ACT_SLOTS 2

struct kern_workspace {
    int64_t max_tok, max_in;
    int n_threads;
    size_t act_slot_bytes;
    uint8_t *act[ACT_SLOTS];    /* quantized activations: (max_tok, row bytes) each */
    uint8_t **panels;           /* (n_threads) int8 panels of panel_bytes */
    float **fpanels;            /* (n_threads) float panels of FPANEL_K * 32 */
    size_t panel_bytes;
};

/* Upper bound of a quantized activation row of n values over every geometry: 1 byte per
 * value, a float sum per 16 values, a float scale per 32. */
static size_t act_row_bound(int64_t n) { return (size_t)n + (size_t)n / 4 + (size_t)n / 8 + 64; }

kern_workspace *kern_workspace_new(int64_t max_tok, int64_t max_in, int n_threads)
{
    if (max_tok < 1 || max_in < 1 || n_threads < 1) return NULL;
    kern_workspace *ws = dk_calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->max_tok = max_tok;
    ws->max_in = max_in;
    ws->n_threads = n_threads;
    ws->act_slot_bytes = act_row_bound(max_in) * (size_t)max_tok;
    /* the 16-value sub-blocks (Q6_K's) take the most panel bytes per value */
    ws->panel_bytes = kern_panel_bytes(kern_qgeom_of(GGUF_TYPE_Q6_K), max_in);
    bool fail = false;
    for (int i = 0; i < ACT_SLOTS; i++) fail |= !(ws->act[i] = dk_malloc(ws->act_slot_bytes));
    ws->panels = dk_calloc((size_t)n_threads, sizeof *ws->panels);
    ws->fpanels = dk_calloc((size_t)n_threads, sizeof *ws->fpanels);
    fail |= !ws->panels || !ws->fpanels;
    for (int i = 0; !fail && i < n_threads; i++) {
        fail |= !(ws->panels[i] = dk_malloc(ws->panel_bytes));
        fail |= !(ws->fpanels[i] = dk_malloc_array(FPANEL_K * KERN_PANEL_ROWS, sizeof(float)));
    }
    if (fail) {
        kern_workspace_free(ws);
        return NULL;
    }
    return ws;
}

void kern_workspace_free(kern_workspace *ws)
{
    if (!ws) return;
    for (int i = 0; i < ACT_SLOTS; i++) dk_free(ws->act[i]);
    for (int i = 0; ws->panels && i < ws->n_threads; i++) dk_free(ws->panels[i]);
    for (int i = 0; ws->fpanels && i < ws->n_threads; i++) dk_free(ws->fpanels[i]);
    dk_free(ws->panels);
    dk_free(ws->fpanels);
    dk_free(ws);
}

float kern_dot_row_fast(enum gguf_tensor_type type, const void *row, const float *x, int64_t n)
{
    const kern_qgeom *g = gguf_type_is_known((int)type) ? kern_qgeom_of(type) : NULL;
    if (!g) return kern_dot_row(type, row, x, n);
    if (n <= 0 || n % g->sbk != 0) return 0.0f;
    uint8_t *xa = dk_malloc(kern_act_sb_bytes(g) * (size_t)(n / g->sbk));
    if (!xa) return 0.0f;
    const kern_isa_ops *ops = kern_ops();
    ops->act_quant(g, x, xa, n);
    float v = ops->qdot[type](row, xa, n);
    dk_free(xa);
    return v;
}

/* ------------------------------------------------------------------ one call */

typedef struct mm_item {
    const kern_matrix *w;
    const kern_packed *packed;
    float *y;
    const kern_qgeom *g;     /* NULL: float weights */
    const uint8_t *act;      /* quantized x for g */
    size_t act_stride;
    int64_t rows_per_task;
    int first_task;          /* tasks [first_task, first_task + n_tasks) */
    int n_tasks;
} mm_item;

typedef struct mm_call {
    mm_item item[KERN_MM_MAX];
    int n_item;
    const float *x;
    int64_t n_tok;
    bool panels;
    const kern_isa_ops *ops;
    kern_workspace *ws;
} mm_call;

typedef struct act_job {
    const kern_qgeom *g;
    const float *x;
    int64_t n_in, n_tok;
    uint8_t *dst;
    size_t stride;
    kern_act_quant_fn quant;
} act_job;

static void act_task(void *ctx, int i_task, int n_tasks)
{
    const act_job *j = ctx;
    int64_t t0 = j->n_tok * i_task / n_tasks, t1 = j->n_tok * (i_task + 1) / n_tasks;
    for (int64_t t = t0; t < t1; t++) j->quant(j->g, j->x + t * j->n_in, j->dst + (size_t)t * j->stride, j->n_in);
}

static void rows_dot(const mm_call *c, const mm_item *it, int64_t o0, int64_t o1)
{
    const kern_matrix *w = it->w;
    for (int64_t o = o0; o < o1; o++) {
        const void *row = (const uint8_t *)w->data + (size_t)o * w->row_bytes;
        for (int64_t t = 0; t < c->n_tok; t++) {
            float v = it->g ? c->ops->qdot[w->type](row, it->act + (size_t)t * it->act_stride, w->n_in)
                            : c->ops->dot[w->type](row, c->x + t * w->n_in, w->n_in);
            it->y[t * w->n_out + o] = v;
        }
    }
}

static void rows_panel(const mm_call *c, const mm_item *it, int64_t o0, int64_t o1, int i_thread)
{
    const kern_matrix *w = it->w;
    for (int64_t o = o0; o < o1; o += KERN_PANEL_ROWS) {
        int n_rows = (int)(o1 - o < KERN_PANEL_ROWS ? o1 - o : KERN_PANEL_ROWS);
        if (it->g) {
            uint8_t *panel = c->ws->panels[i_thread];
            kern_panel_pack(w, o, n_rows, panel);
            c->ops->gemm_q(it->g, panel, w->n_in, it->act, it->act_stride, c->n_tok, it->y + o, w->n_out, n_rows);
        } else {
            float *panel = c->ws->fpanels[i_thread];
            for (int64_t k0 = 0; k0 < w->n_in; k0 += FPANEL_K) {
                int64_t n_k = w->n_in - k0 < FPANEL_K ? w->n_in - k0 : FPANEL_K;
                kern_panel_pack_f(w, o, n_rows, k0, n_k, panel);
                c->ops->gemm_f(panel, n_k, c->x + k0, w->n_in, c->n_tok, it->y + o, w->n_out, n_rows, k0 > 0);
            }
        }
    }
}

/* Packed weights: groups of 16 rows, any number of tokens. */
static void rows_packed(const mm_call *c, const mm_item *it, int64_t o0, int64_t o1)
{
    const kern_packed *p = it->packed;
    kern_gemm_p_fn f = c->ops->gemm_p[p->type];
    const uint8_t *xa = it->g ? it->act : (const uint8_t *)c->x;
    size_t stride = it->g ? it->act_stride : (size_t)it->w->n_in * sizeof(float);
    int gr = p->group_rows;
    for (int64_t o = o0; o < o1; o += gr) {
        int n_rows = (int)(o1 - o < gr ? o1 - o : gr);
        f(p, o / gr, xa, stride, c->n_tok, it->y + o, it->w->n_out, n_rows);
    }
}

static void mm_task(void *ctx, int i_task, int n_tasks, int i_thread)
{
    const mm_call *c = ctx;
    (void)n_tasks;
    const mm_item *it = c->item;
    while (i_task >= it->first_task + it->n_tasks) it++;
    int64_t o0 = (int64_t)(i_task - it->first_task) * it->rows_per_task;
    int64_t o1 = o0 + it->rows_per_task < it->w->n_out ? o0 + it->rows_per_task : it->w->n_out;
    if (it->packed) rows_packed(c, it, o0, o1);
    else if (c->panels) rows_panel(c, it, o0, o1, i_thread);
    else rows_dot(c, it, o0, o1);
}

/* Rows per task: panels go 32 at a time, packed batches 16; otherwise (decode) about 8
 * tasks per thread so that threads finishing early pick up the rest. */
static int64_t rows_per_task(const mm_call *c, const mm_item *it, int n_threads)
{
    const kern_matrix *w = it->w;
    if (c->panels) return it->packed ? it->packed->group_rows : KERN_PANEL_ROWS;
    int64_t r = w->n_out / ((int64_t)n_threads * 8);
    if (r < 32) r = 32;
    return (r + 31) / 32 * 32;
}

static void matmul_fast(const kern_mm *mm, int n_mm, const float *x, int64_t n_tok, kern_workspace *ws, kern_pool *pool)
{
    mm_call c = {.x = x, .n_tok = n_tok, .ops = kern_ops(), .ws = ws, .panels = n_tok >= GEMM_MIN_TOK};
    const kern_qgeom *slot_geom[ACT_SLOTS] = {NULL};
    int n_slots = 0, n_threads = kern_pool_threads(pool), n_tasks = 0, rest = n_mm;
    for (int j = 0; j < n_mm; j++) {
        mm_item *it = &c.item[c.n_item];
        it->w = mm[j].w;
        it->packed = mm[j].packed;
        it->y = mm[j].y;
        it->g = kern_qgeom_of(it->w->type);
        if (it->g) {
            /* types with the same block geometry share their quantized activations */
            int s = 0;
            while (s < n_slots && (slot_geom[s]->sbk != it->g->sbk || slot_geom[s]->bk != it->g->bk)) s++;
            if (s == ACT_SLOTS) { /* a third format: the rest goes in another round, after this one */
                rest = j;
                break;
            }
            it->act = ws->act[s];
            it->act_stride = kern_act_sb_bytes(it->g) * (size_t)(it->w->n_in / it->g->sbk);
            if (s == n_slots) {
                slot_geom[n_slots++] = it->g;
                act_job aj = {it->g, x, it->w->n_in, n_tok, ws->act[s], it->act_stride, c.ops->act_quant};
                int n_act_tasks = n_tok < n_threads ? (int)n_tok : n_threads;
                kern_pool_run(pool, act_task, &aj, n_act_tasks);
            }
        }
        it->rows_per_task = rows_per_task(&c, it, n_threads);
        it->first_task = n_tasks;
        it->n_tasks = (int)((it->w->n_out + it->rows_per_task - 1) / it->rows_per_task);
        n_tasks += it->n_tasks;
        c.n_item++;
    }
    kern_pool_run_threads(pool, mm_task, &c, n_tasks);
    if (rest < n_mm) matmul_fast(mm + rest, n_mm - rest, x, n_tok, ws, pool);
}

void kern_matmul_many(const kern_mm *mm, int n_mm, const float *x, int64_t n_tok, enum kern_precision prec,
                      kern_workspace *ws, kern_pool *pool)
{
    if (n_mm <= 0 || n_tok <= 0) return;
    if (n_mm > KERN_MM_MAX) {
        kern_matmul_many(mm + KERN_MM_MAX, n_mm - KERN_MM_MAX, x, n_tok, prec, ws, pool);
        n_mm = KERN_MM_MAX;
    }
    bool fits = ws && n_tok <= ws->max_tok && (!pool || kern_pool_threads(pool) <= ws->n_threads);
    for (int j = 0; j < n_mm; j++) {
        const kern_matrix *w = mm[j].w;
        fits = fits && w->n_in <= ws->max_in && w->n_in == mm[0].w->n_in && gguf_type_is_known((int)w->type) &&
               kern_ops()->dot[w->type];
    }
    if (prec == KERN_PRECISION_FAST && fits) {
        matmul_fast(mm, n_mm, x, n_tok, ws, pool);
        return;
    }
    for (int j = 0; j < n_mm; j++) kern_matmul(mm[j].w, x, n_tok, mm[j].y, pool);
}
