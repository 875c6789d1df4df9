/*
 * quants_fast.c: the scalar reference of the fast path (see kern_internal.h): the geometry
 * of each quantized type, activation quantization, the unpacking of a weight super-block
 * into unsigned bytes with float sub-block scales and offsets, the reference dot product
 * built on them, panel packing for the GEMM micro-kernels (shared by every ISA), and the
 * reference GEMMs over panels. The ISA variants must compute the same integers; only the
 * order of float additions may differ.
 */
#include <math.h>
#include <string.h>

#include "kernels/kern_internal.h"

#define H2F kern_fp16_to_fp32

static const kern_qgeom geom_q8_0 = {32, 32, 255};
static const kern_qgeom geom_q4_0 = {32, 32, 15};
static const kern_qgeom geom_q4_1 = {32, 32, 15};
static const kern_qgeom geom_q5_0 = {32, 32, 31};
static const kern_qgeom geom_q5_1 = {32, 32, 31};
static const kern_qgeom geom_q2_k = {256, 16, 3};
static const kern_qgeom geom_q3_k = {256, 16, 7};
static const kern_qgeom geom_q4_k = {256, 32, 15};
static const kern_qgeom geom_q5_k = {256, 32, 31};
static const kern_qgeom geom_q6_k = {256, 16, 63};

const kern_qgeom *kern_qgeom_of(enum gguf_tensor_type type)
{
    switch (type) {
    case GGUF_TYPE_Q8_0: return &geom_q8_0;
    case GGUF_TYPE_Q4_0: return &geom_q4_0;
    case GGUF_TYPE_Q4_1: return &geom_q4_1;
    case GGUF_TYPE_Q5_0: return &geom_q5_0;
    case GGUF_TYPE_Q5_1: return &geom_q5_1;
    case GGUF_TYPE_Q2_K: return &geom_q2_k;
    case GGUF_TYPE_Q3_K: return &geom_q3_k;
    case GGUF_TYPE_Q4_K: return &geom_q4_k;
    case GGUF_TYPE_Q5_K: return &geom_q5_k;
    case GGUF_TYPE_Q6_K: return &geom_q6_k;
    default: return NULL;
    }
}

/* ------------------------------------------------------------------ activations */

void kern_ref_act_quant(const kern_qgeom *g, const float *x, void *dst, int64_t n)
{
    uint8_t *out = dst;
    int n_sub = g->sbk / g->bk;
    for (int64_t i = 0; i + g->sbk <= n; i += g->sbk, x += g->sbk, out += kern_act_sb_bytes(g)) {
        float amax = 0.0f;
        for (int k = 0; k < g->sbk; k++) amax = fmaxf(amax, fabsf(x[k]));
        float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int8_t *q = (int8_t *)(out + kern_act_q_offset(g));
        float s[16];
        for (int j = 0; j < n_sub; j++) {
            int sum = 0;
            for (int k = j * g->bk; k < (j + 1) * g->bk; k++) {
                long v = lrintf(x[k] * id);
                v = v < -127 ? -127 : v > 127 ? 127 : v;
                q[k] = (int8_t)v;
                sum += (int)v;
            }
            s[j] = (float)sum;
        }
        memcpy(out, &d, 4);
        memcpy(out + 4, s, 4 * (size_t)n_sub);
    }
}

/* ------------------------------------------------------------------ weights */

static uint32_t load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int q3_k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

void kern_ref_unpack_sb(enum gguf_tensor_type type, const void *row, int64_t i_sb, uint8_t *u, float *ws, float *mw)
{
    const uint8_t *base = row;
    switch (type) {
    case GGUF_TYPE_Q8_0: {
        const kern_block_q8_0 *b = (const kern_block_q8_0 *)base + i_sb;
        for (int k = 0; k < 32; k++) u[k] = (uint8_t)(b->qs[k] + 128);
        ws[0] = H2F(b->d);
        mw[0] = -128.0f * ws[0];
        break;
    }
    case GGUF_TYPE_Q4_0:
    case GGUF_TYPE_Q4_1: {
        const uint8_t *qs;
        if (type == GGUF_TYPE_Q4_0) {
            const kern_block_q4_0 *b = (const kern_block_q4_0 *)base + i_sb;
            qs = b->qs;
            ws[0] = H2F(b->d);
            mw[0] = -8.0f * ws[0];
        } else {
            const kern_block_q4_1 *b = (const kern_block_q4_1 *)base + i_sb;
            qs = b->qs;
            ws[0] = H2F(b->d);
            mw[0] = H2F(b->m);
        }
        for (int k = 0; k < 16; k++) {
            u[k] = qs[k] & 0xF;
            u[k + 16] = qs[k] >> 4;
        }
        break;
    }
    case GGUF_TYPE_Q5_0:
    case GGUF_TYPE_Q5_1: {
        const uint8_t *qs;
        uint32_t qh;
        if (type == GGUF_TYPE_Q5_0) {
            const kern_block_q5_0 *b = (const kern_block_q5_0 *)base + i_sb;
            qs = b->qs;
            qh = load_u32le(b->qh);
            ws[0] = H2F(b->d);
            mw[0] = -16.0f * ws[0];
        } else {
            const kern_block_q5_1 *b = (const kern_block_q5_1 *)base + i_sb;
            qs = b->qs;
            qh = load_u32le(b->qh);
            ws[0] = H2F(b->d);
            mw[0] = H2F(b->m);
        }
        for (int k = 0; k < 16; k++) {
            u[k] = (uint8_t)((qs[k] & 0xF) | ((qh >> k) & 1) << 4);
            u[k + 16] = (uint8_t)((qs[k] >> 4) | ((qh >> (k + 16)) & 1) << 4);
        }
        break;
    }
    case GGUF_TYPE_Q2_K: {
        const kern_block_q2_k *b = (const kern_block_q2_k *)base + i_sb;
        float d = H2F(b->d), dmin = H2F(b->dmin);
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) u[128 * n + 32 * j + l] = (b->qs[32 * n + l] >> (2 * j)) & 3;
        for (int s = 0; s < 16; s++) {
            ws[s] = d * (float)(b->scales[s] & 0xF);
            mw[s] = -dmin * (float)(b->scales[s] >> 4);
        }
        break;
    }
    case GGUF_TYPE_Q3_K: {
        const kern_block_q3_k *b = (const kern_block_q3_k *)base + i_sb;
        float d = H2F(b->d);
        for (int n = 0; n < 2; n++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int lo = (b->qs[32 * n + l] >> (2 * j)) & 3;
                    int hi = (b->hmask[l] >> (4 * n + j)) & 1;
                    u[128 * n + 32 * j + l] = (uint8_t)(lo + 4 * hi);
                }
        for (int s = 0; s < 16; s++) {
            ws[s] = d * (float)q3_k_scale(b->scales, s);
            mw[s] = -4.0f * ws[s];
        }
        break;
    }
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        if (type == GGUF_TYPE_Q4_K) {
            const kern_block_q4_k *b = (const kern_block_q4_k *)base + i_sb;
            scales = b->scales, qs = b->qs, d = H2F(b->d), dmin = H2F(b->dmin);
        } else {
            const kern_block_q5_k *b = (const kern_block_q5_k *)base + i_sb;
            scales = b->scales, qs = b->qs, qh = b->qh, d = H2F(b->d), dmin = H2F(b->dmin);
        }
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int h0 = qh ? ((qh[l] >> (2 * k)) & 1) << 4 : 0, h1 = qh ? ((qh[l] >> (2 * k + 1)) & 1) << 4 : 0;
                u[64 * k + l] = (uint8_t)((qs[32 * k + l] & 0xF) | h0);
                u[64 * k + 32 + l] = (uint8_t)((qs[32 * k + l] >> 4) | h1);
            }
        kern_k4_sub_scales(scales, d, dmin, ws, mw);
        break;
    }
    case GGUF_TYPE_Q6_K: {
        const kern_block_q6_k *b = (const kern_block_q6_k *)base + i_sb;
        float d = H2F(b->d);
        for (int n = 0; n < 2; n++) {
            const uint8_t *ql = b->ql + 64 * n, *qh = b->qh + 32 * n;
            uint8_t *uu = u + 128 * n;
            for (int l = 0; l < 32; l++) {
                uu[l] = (uint8_t)((ql[l] & 0xF) | ((qh[l] & 3) << 4));
                uu[l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                uu[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                uu[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
        for (int s = 0; s < 16; s++) {
            ws[s] = d * (float)b->scales[s];
            mw[s] = -32.0f * ws[s];
        }
        break;
    }
    default:
        break;
    }
}

/* ------------------------------------------------------------------ reference dot */

static float qdot_ref(enum gguf_tensor_type type, const void *row, const void *xa, int64_t n)
{
    const kern_qgeom *g = kern_qgeom_of(type);
    const uint8_t *a = xa;
    int n_sub = g->sbk / g->bk;
    uint8_t u[256];
    float ws[16], mw[16], sum = 0.0f;
    for (int64_t sb = 0; sb < n / g->sbk; sb++, a += kern_act_sb_bytes(g)) {
        kern_ref_unpack_sb(type, row, sb, u, ws, mw);
        float d, s[16];
        memcpy(&d, a, 4);
        memcpy(s, a + 4, 4 * (size_t)n_sub);
        const int8_t *q = (const int8_t *)(a + kern_act_q_offset(g));
        float t = 0.0f;
        for (int j = 0; j < n_sub; j++) {
            int32_t dot = 0;
            for (int k = j * g->bk; k < (j + 1) * g->bk; k++) dot += (int32_t)u[k] * q[k];
            t += ws[j] * (float)dot + mw[j] * s[j];
        }
        sum += d * t;
    }
    return sum;
}

#define DEF_QDOT(name, TYPE) \
    static float qdot_ref_##name(const void *row, const void *xa, int64_t n) { return qdot_ref(TYPE, row, xa, n); }
DEF_QDOT(q8_0, GGUF_TYPE_Q8_0)
DEF_QDOT(q4_0, GGUF_TYPE_Q4_0)
DEF_QDOT(q4_1, GGUF_TYPE_Q4_1)
DEF_QDOT(q5_0, GGUF_TYPE_Q5_0)
DEF_QDOT(q5_1, GGUF_TYPE_Q5_1)
DEF_QDOT(q2_k, GGUF_TYPE_Q2_K)
DEF_QDOT(q3_k, GGUF_TYPE_Q3_K)
DEF_QDOT(q4_k, GGUF_TYPE_Q4_K)
DEF_QDOT(q5_k, GGUF_TYPE_Q5_K)
DEF_QDOT(q6_k, GGUF_TYPE_Q6_K)

/* ------------------------------------------------------------------ panels */

void kern_panel_pack(const kern_matrix *w, int64_t r0, int n_rows, uint8_t *panel)
{
    const kern_qgeom *g = kern_qgeom_of(w->type);
    int n_sub = g->sbk / g->bk;
    size_t sub_bytes = kern_panel_sub_bytes(g);
    uint8_t u[KERN_PANEL_ROWS][256];
    float ws[KERN_PANEL_ROWS][16], mw[KERN_PANEL_ROWS][16];
    for (int64_t sb = 0; sb < w->n_in / g->sbk; sb++) {
        for (int r = 0; r < KERN_PANEL_ROWS; r++) {
            if (r < n_rows) {
                kern_ref_unpack_sb(w->type, (const uint8_t *)w->data + (size_t)(r0 + r) * w->row_bytes, sb, u[r], ws[r], mw[r]);
            } else {
                memset(u[r], 0, sizeof u[r]);
                memset(ws[r], 0, sizeof ws[r]);
                memset(mw[r], 0, sizeof mw[r]);
            }
        }
        for (int j = 0; j < n_sub; j++) {
            uint8_t *dst = panel + (size_t)(sb * n_sub + j) * sub_bytes;
            for (int g4 = 0; g4 < g->bk / 4; g4++)
                for (int r = 0; r < KERN_PANEL_ROWS; r++) memcpy(dst + ((size_t)g4 * KERN_PANEL_ROWS + (size_t)r) * 4, u[r] + j * g->bk + g4 * 4, 4);
            float *fws = (float *)(dst + (size_t)g->bk * KERN_PANEL_ROWS), *fmw = fws + KERN_PANEL_ROWS;
            for (int r = 0; r < KERN_PANEL_ROWS; r++) {
                fws[r] = ws[r][j];
                fmw[r] = mw[r][j];
            }
        }
    }
}

void kern_panel_pack_f(const kern_matrix *w, int64_t r0, int n_rows, int64_t k0, int64_t n_k, float *dst)
{
    for (int r = 0; r < KERN_PANEL_ROWS; r++) {
        if (r >= n_rows) {
            for (int64_t k = 0; k < n_k; k++) dst[k * KERN_PANEL_ROWS + r] = 0.0f;
            continue;
        }
        const uint8_t *row = (const uint8_t *)w->data + (size_t)(r0 + r) * w->row_bytes;
        for (int64_t k = 0; k < n_k; k++) {
            float v;
            if (w->type == GGUF_TYPE_F32) memcpy(&v, row + (size_t)(k0 + k) * 4, 4);
            else {
                uint16_t h;
                memcpy(&h, row + (size_t)(k0 + k) * 2, 2);
                v = w->type == GGUF_TYPE_F16 ? kern_fp16_to_fp32(h) : kern_bf16_to_fp32(h);
            }
            dst[k * KERN_PANEL_ROWS + r] = v;
        }
    }
}

static void gemm_q_ref(const kern_qgeom *g, const uint8_t *panel, int64_t n_in, const uint8_t *xa, size_t xa_stride,
                       int64_t n_tok, float *y, int64_t y_stride, int n_rows)
{
    int n_sub = g->sbk / g->bk;
    size_t sub_bytes = kern_panel_sub_bytes(g);
    for (int64_t t = 0; t < n_tok; t++) {
        float acc[KERN_PANEL_ROWS] = {0};
        const uint8_t *a = xa + (size_t)t * xa_stride;
        for (int64_t sb = 0; sb < n_in / g->sbk; sb++, a += kern_act_sb_bytes(g)) {
            float d, s[16], tmp[KERN_PANEL_ROWS] = {0};
            memcpy(&d, a, 4);
            memcpy(s, a + 4, 4 * (size_t)n_sub);
            const int8_t *q = (const int8_t *)(a + kern_act_q_offset(g));
            for (int j = 0; j < n_sub; j++) {
                const uint8_t *p = panel + (size_t)(sb * n_sub + j) * sub_bytes;
                const float *ws = (const float *)(p + (size_t)g->bk * KERN_PANEL_ROWS), *mw = ws + KERN_PANEL_ROWS;
                for (int r = 0; r < KERN_PANEL_ROWS; r++) {
                    int32_t dot = 0;
                    for (int g4 = 0; g4 < g->bk / 4; g4++)
                        for (int b = 0; b < 4; b++)
                            dot += (int32_t)p[((size_t)g4 * KERN_PANEL_ROWS + (size_t)r) * 4 + (size_t)b] * q[j * g->bk + g4 * 4 + b];
                    tmp[r] += ws[r] * (float)dot + mw[r] * s[j];
                }
            }
            for (int r = 0; r < KERN_PANEL_ROWS; r++) acc[r] += d * tmp[r];
        }
        for (int r = 0; r < n_rows; r++) y[t * y_stride + r] = acc[r];
    }
}

static void gemm_f_ref(const float *panel, int64_t n_in, const float *x, int64_t x_stride, int64_t n_tok, float *y,
                       int64_t y_stride, int n_rows, bool accumulate)
{
    for (int64_t t = 0; t < n_tok; t++) {
        const float *xt = x + t * x_stride;
        for (int r = 0; r < n_rows; r++) {
            float s = 0.0f;
            for (int64_t k = 0; k < n_in; k++) s += panel[k * KERN_PANEL_ROWS + r] * xt[k];
            y[t * y_stride + r] = accumulate ? y[t * y_stride + r] + s : s;
        }
    }
}

void kern_ref_fill_fast_ops(kern_isa_ops *ops)
{
    ops->qdot[GGUF_TYPE_Q8_0] = qdot_ref_q8_0;
    ops->qdot[GGUF_TYPE_Q4_0] = qdot_ref_q4_0;
    ops->qdot[GGUF_TYPE_Q4_1] = qdot_ref_q4_1;
    ops->qdot[GGUF_TYPE_Q5_0] = qdot_ref_q5_0;
    ops->qdot[GGUF_TYPE_Q5_1] = qdot_ref_q5_1;
    ops->qdot[GGUF_TYPE_Q2_K] = qdot_ref_q2_k;
    ops->qdot[GGUF_TYPE_Q3_K] = qdot_ref_q3_k;
    ops->qdot[GGUF_TYPE_Q4_K] = qdot_ref_q4_k;
    ops->qdot[GGUF_TYPE_Q5_K] = qdot_ref_q5_k;
    ops->qdot[GGUF_TYPE_Q6_K] = qdot_ref_q6_k;
    ops->act_quant = kern_ref_act_quant;
    ops->gemm_q = gemm_q_ref;
    ops->gemm_f = gemm_f_ref;
    for (int t = 0; t < GGUF_TYPE_COUNT; t++)
        if (gguf_type_is_known(t) && kern_packable((enum gguf_tensor_type)t)) ops->gemm_p[t] = kern_ref_gemm_packed;
    ops->softmax = kern_ref_softmax;
    ops->silu = kern_ref_silu;
    ops->attn_scores = kern_ref_attn_scores;
    ops->attn_values = kern_ref_attn_values;
}
