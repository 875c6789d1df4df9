/*
 * packed.c: weights repacked at load for the fast path, and the scalar reference of the
 * micro-kernel that reads them.
 *
 * Decode reads every weight once per token, so its kernel must spend only a few
 * instructions per byte; prefill wants the multiply-adds of 16 rows x several tokens per
 * instruction. Both are served by one layout: rows in groups of 16, interleaved so that
 * one 64-byte vector holds 4 consecutive values of each of the 16 rows (what vpdpbusd
 * multiplies with 4 broadcast activation bytes). Per group and super-block of sbk values,
 * with "zmm" meaning 64 bytes and byte 4r + j of a zmm belonging to row r and value 4c + j
 * of "k-group" c:
 *
 *   Q8_0  d[16] fp16 | 8 zmm of u = q + 128                                         544 bytes
 *   Q4_0  d[16]      | nib: 4 zmm, zmm i: low nibbles k-group i, high nibbles i + 4    288
 *   Q4_1  d[16] m[16] | nib                                                           320
 *   Q5_0  d[16]      | nib | hb: 1 zmm, bit c of a byte = 5th bit of k-group c        352
 *   Q5_1  d[16] m[16] | nib | hb                                                      384
 *   Q4_K  d[16] dmin[16] sc[8][16] m[8][16] (6-bit values, sub-block major)
 *         | nib: 32 zmm, zmm 8k + e: low nibbles k-group 16k + e, high 16k + 8 + e     2368
 *   Q5_K  Q4_K | hb: 8 zmm, zmm s: bit e = 5th bit of k-group 8s + e                   2880
 *   Q6_K  d[16] sc[16][16] (int8) | nib: 32 zmm, zmm i: low k-group i, high i + 32
 *         | h2: 16 zmm, zmm i: bits 2e..2e+1 = bits 4..5 of k-group i + 16e             3360
 *   Q2_K  d[16] dmin[16] sc[16][16] (the file's scale|min<<4 bytes)
 *         | q2: 16 zmm, zmm i: bits 2e..2e+1 = the value of k-group i + 16e             1344
 *   Q3_K  d[16] sc[16][16] (int8, scale - 32) | q2 (low 2 bits)
 *         | hb: 8 zmm, zmm s: bit e = bit 2 of k-group 8s + e                          1824
 *
 * F32, F16 and BF16 are packed in groups of 32 rows, value-major: for each value k, the
 * 32 rows' elements in a row (64 or 128 bytes), so a prefill step is two vector loads and
 * multiply-adds with a broadcast activation, in the type of the file (converted in
 * registers).
 *
 * Every type keeps its bits per weight (K-quants' packed 6-bit scales become bytes: +4
 * bytes per 256 values), so decode reads as many bytes as from the file. Rows past the
 * matrix end are zero. The unsigned values u and scales are those of kern_ref_unpack_sb,
 * so the results equal the unpacked fast path's up to float rounding order.
 */
#include <string.h>

#include "kernels/kern_internal.h"

int kern_packed_group_sb_bytes(enum gguf_tensor_type type)
{
    switch (type) {
    case GGUF_TYPE_Q8_0: return 544;
    case GGUF_TYPE_Q4_0: return 288;
    case GGUF_TYPE_Q4_1: return 320;
    case GGUF_TYPE_Q5_0: return 352;
    case GGUF_TYPE_Q5_1: return 384;
    case GGUF_TYPE_Q4_K: return 2368;
    case GGUF_TYPE_Q5_K: return 2880;
    case GGUF_TYPE_Q6_K: return 3360;
    case GGUF_TYPE_Q2_K: return 1344;
    case GGUF_TYPE_Q3_K: return 1824;
    default: return 0;
    }
}

static int q3_k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

static uint16_t rd16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* The raw per-row metadata of one super-block (fp16 d, dmin/m, integer sub-block scales). */
static void row_meta(enum gguf_tensor_type type, const uint8_t *row, int64_t sb, uint16_t *d, uint16_t *d2, uint8_t *sc,
                     uint8_t *mn)
{
    switch (type) {
    case GGUF_TYPE_Q8_0: *d = rd16(row + (size_t)sb * 34); break;
    case GGUF_TYPE_Q4_0: *d = rd16(row + (size_t)sb * 18); break;
    case GGUF_TYPE_Q4_1: *d = rd16(row + (size_t)sb * 20), *d2 = rd16(row + (size_t)sb * 20 + 2); break;
    case GGUF_TYPE_Q5_0: *d = rd16(row + (size_t)sb * 22); break;
    case GGUF_TYPE_Q5_1: *d = rd16(row + (size_t)sb * 24), *d2 = rd16(row + (size_t)sb * 24 + 2); break;
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        size_t bb = type == GGUF_TYPE_Q4_K ? sizeof(kern_block_q4_k) : sizeof(kern_block_q5_k);
        const uint8_t *b = row + (size_t)sb * bb;
        *d = rd16(b), *d2 = rd16(b + 2);
        for (int s = 0; s < 8; s++) kern_scale_min_k4(s, b + 4, &sc[s], &mn[s]);
        break;
    }
    case GGUF_TYPE_Q6_K: {
        const kern_block_q6_k *b = (const kern_block_q6_k *)row + sb;
        *d = b->d;
        memcpy(sc, b->scales, 16);
        break;
    }
    case GGUF_TYPE_Q2_K: {
        const kern_block_q2_k *b = (const kern_block_q2_k *)row + sb;
        *d = b->d, *d2 = b->dmin;
        memcpy(sc, b->scales, 16);
        break;
    }
    case GGUF_TYPE_Q3_K: {
        const kern_block_q3_k *b = (const kern_block_q3_k *)row + sb;
        *d = b->d;
        for (int s = 0; s < 16; s++) sc[s] = (uint8_t)(int8_t)q3_k_scale(b->scales, s);
        break;
    }
    default: break;
    }
}

/* Packs one group-super-block from u[16][sbk] and the rows' metadata. */
/* The 4 values of k-group c of one row, as a little-endian word (one byte each). */
static inline uint32_t kgroup(const uint8_t *u, int c)
{
    uint32_t v;
    memcpy(&v, u + 4 * c, 4);
    return v;
}

static inline void put32(uint8_t *zmm, int r, uint32_t v) { memcpy(zmm + 4 * r, &v, 4); }

/* Bits (4 bytes' bit `bit` of k-groups first .. first + n - 1, at stride step) gathered into
 * one word per byte: bit e of each byte comes from k-group first + e * step. */
static inline uint32_t plane(const uint8_t *u, int first, int n, int step, int bit, int width)
{
    uint32_t mask = (1u << width) - 1, m4 = mask * 0x01010101u, out = 0;
    for (int e = 0; e < n; e++) out |= ((kgroup(u, first + e * step) >> bit) & m4) << (e * width);
    return out;
}

/* Packs one group-super-block from u[16][sbk] and the rows' metadata (layouts above), a
 * word (4 values of a row) at a time. */
static void pack_gsb(enum gguf_tensor_type type, uint8_t *o, uint8_t u[16][256], const uint16_t *d, const uint16_t *d2,
                     uint8_t sc[16][16], uint8_t mn[16][16])
{
    memset(o, 0, (size_t)kern_packed_group_sb_bytes(type));
    for (int r = 0; r < 16; r++) memcpy(o + 2 * r, &d[r], 2);
    bool second = type == GGUF_TYPE_Q4_1 || type == GGUF_TYPE_Q5_1 || type == GGUF_TYPE_Q4_K || type == GGUF_TYPE_Q5_K ||
                  type == GGUF_TYPE_Q2_K;
    if (second)
        for (int r = 0; r < 16; r++) memcpy(o + 32 + 2 * r, &d2[r], 2);
    const uint32_t lo4 = 0x0F0F0F0Fu;
    for (int r = 0; r < 16; r++) {
        const uint8_t *ur = u[r];
        switch (type) {
        case GGUF_TYPE_Q8_0:
            for (int c = 0; c < 8; c++) put32(o + 32 + 64 * c, r, kgroup(ur, c));
            break;
        case GGUF_TYPE_Q4_0:
        case GGUF_TYPE_Q4_1:
        case GGUF_TYPE_Q5_0:
        case GGUF_TYPE_Q5_1: {
            uint8_t *nib = o + (second ? 64 : 32);
            for (int c = 0; c < 4; c++) put32(nib + 64 * c, r, (kgroup(ur, c) & lo4) | (kgroup(ur, c + 4) & lo4) << 4);
            if (type == GGUF_TYPE_Q5_0 || type == GGUF_TYPE_Q5_1) put32(nib + 256, r, plane(ur, 0, 8, 1, 4, 1));
            break;
        }
        case GGUF_TYPE_Q4_K:
        case GGUF_TYPE_Q5_K:
            for (int kk = 0; kk < 4; kk++)
                for (int e = 0; e < 8; e++)
                    put32(o + 320 + 64 * (8 * kk + e), r, (kgroup(ur, 16 * kk + e) & lo4) | (kgroup(ur, 16 * kk + 8 + e) & lo4) << 4);
            if (type == GGUF_TYPE_Q5_K)
                for (int s = 0; s < 8; s++) put32(o + 2368 + 64 * s, r, plane(ur, 8 * s, 8, 1, 4, 1));
            break;
        case GGUF_TYPE_Q6_K:
            for (int i = 0; i < 32; i++) put32(o + 288 + 64 * i, r, (kgroup(ur, i) & lo4) | (kgroup(ur, i + 32) & lo4) << 4);
            for (int i = 0; i < 16; i++) put32(o + 2336 + 64 * i, r, plane(ur, i, 4, 16, 4, 2));
            break;
        case GGUF_TYPE_Q2_K:
            for (int i = 0; i < 16; i++) put32(o + 320 + 64 * i, r, plane(ur, i, 4, 16, 0, 2));
            break;
        case GGUF_TYPE_Q3_K:
            for (int i = 0; i < 16; i++) put32(o + 288 + 64 * i, r, plane(ur, i, 4, 16, 0, 2));
            for (int s = 0; s < 8; s++) put32(o + 1312 + 64 * s, r, plane(ur, 8 * s, 8, 1, 2, 1));
            break;
        default: break;
        }
    }
    if (type == GGUF_TYPE_Q4_K || type == GGUF_TYPE_Q5_K) {
        for (int s = 0; s < 8; s++)
            for (int r = 0; r < 16; r++) {
                o[64 + 16 * s + r] = sc[r][s];
                o[192 + 16 * s + r] = mn[r][s];
            }
    } else if (type == GGUF_TYPE_Q6_K || type == GGUF_TYPE_Q3_K) {
        for (int s = 0; s < 16; s++)
            for (int r = 0; r < 16; r++) o[32 + 16 * s + r] = sc[r][s];
    } else if (type == GGUF_TYPE_Q2_K) {
        for (int s = 0; s < 16; s++)
            for (int r = 0; r < 16; r++) o[64 + 16 * s + r] = sc[r][s];
    }
}

static bool is_float(enum gguf_tensor_type type)
{
    return type == GGUF_TYPE_F32 || type == GGUF_TYPE_F16 || type == GGUF_TYPE_BF16;
}

/* Float types: group grp, values [0, n_in) of its 32 rows, transposed. */
static void pack_float_group(const kern_matrix *m, kern_packed *p, int64_t grp)
{
    size_t elem = m->type == GGUF_TYPE_F32 ? 4 : 2;
    uint8_t *dst = p->data + (size_t)(grp * p->n_sb) * p->gsb_bytes;
    memset(dst, 0, (size_t)p->n_sb * p->gsb_bytes);
    for (int r = 0; r < 32; r++) {
        int64_t row = grp * 32 + r;
        if (row >= m->n_out) break;
        const uint8_t *src = (const uint8_t *)m->data + (size_t)row * m->row_bytes;
        for (int64_t k = 0; k < m->n_in; k++) memcpy(dst + (size_t)k * p->gsb_bytes + (size_t)r * elem, src + (size_t)k * elem, elem);
    }
}

typedef struct pack_job {
    const kern_matrix *m;
    kern_packed *p;
} pack_job;

static void pack_groups(const pack_job *job, int64_t g0, int64_t g1)
{
    const kern_matrix *m = job->m;
    kern_packed *p = job->p;
    if (is_float(m->type)) {
        for (int64_t grp = g0; grp < g1; grp++) pack_float_group(m, p, grp);
        return;
    }
    const kern_qgeom *g = kern_qgeom_of(m->type);
    int64_t n_sb = m->n_in / g->sbk;
    uint8_t u[16][256];
    uint16_t d[16], d2[16];
    uint8_t sc[16][16], mn[16][16];
    float ws[16], mw[16];
    for (int64_t grp = g0; grp < g1; grp++) {
        for (int64_t sb = 0; sb < n_sb; sb++) {
            for (int r = 0; r < 16; r++) {
                int64_t row = grp * 16 + r;
                d[r] = d2[r] = 0;
                memset(u[r], 0, sizeof u[r]);
                memset(sc[r], 0, sizeof sc[r]);
                memset(mn[r], 0, sizeof mn[r]);
                if (row >= m->n_out) continue;
                const uint8_t *src = (const uint8_t *)m->data + (size_t)row * m->row_bytes;
                kern_ref_unpack_sb(m->type, src, sb, u[r], ws, mw);
                row_meta(m->type, src, sb, &d[r], &d2[r], sc[r], mn[r]);
            }
            pack_gsb(m->type, p->data + (size_t)(grp * n_sb + sb) * p->gsb_bytes, u, d, d2, sc, mn);
        }
    }
}

static void pack_task(void *ctx, int i_task, int n_tasks)
{
    const pack_job *job = ctx;
    int64_t n = job->p->n_groups;
    pack_groups(job, n * i_task / n_tasks, n * (i_task + 1) / n_tasks);
}

bool kern_packable(enum gguf_tensor_type type) { return is_float(type) || kern_packed_group_sb_bytes(type) > 0; }

int kern_pack(const kern_matrix *m, kern_packed **out, kern_pool *pool)
{
    *out = NULL;
    if (!kern_packable(m->type) || m->n_out <= 0) return DK_ERR_UNSUPPORTED;
    kern_packed *p = dk_calloc(1, sizeof *p);
    if (!p) return DK_ERR_NOMEM;
    p->type = m->type;
    p->n_in = m->n_in;
    p->n_out = m->n_out;
    if (is_float(m->type)) {
        p->group_rows = 32;
        p->n_sb = m->n_in;
        p->gsb_bytes = 32 * (m->type == GGUF_TYPE_F32 ? 4 : 2);
    } else {
        p->group_rows = 16;
        p->n_sb = m->n_in / kern_qgeom_of(m->type)->sbk;
        p->gsb_bytes = (size_t)kern_packed_group_sb_bytes(m->type);
    }
    p->n_groups = (m->n_out + p->group_rows - 1) / p->group_rows;
    size_t n;
    if (dk_mul_size((size_t)p->n_groups, (size_t)p->n_sb, &n) || dk_mul_size(n, p->gsb_bytes, &n) ||
        !(p->data = dk_malloc_huge(n ? n : 1))) {
        dk_free(p);
        return DK_ERR_NOMEM;
    }
    pack_job job = {m, p};
    int n_tasks = kern_pool_threads(pool) * 4;
    if (n_tasks > p->n_groups) n_tasks = (int)p->n_groups;
    kern_pool_run(pool, pack_task, &job, n_tasks);
    *out = p;
    return DK_OK;
}

void kern_packed_free(kern_packed *p)
{
    if (!p) return;
    dk_free(p->data);
    dk_free(p);
}


/* ------------------------------------------------------------------ reference kernel */

static float h2f(const uint8_t *p) { return kern_fp16_to_fp32(rd16(p)); }

/* u of row r, value k (0 <= k < sbk) of a group-super-block */
static int ref_u(enum gguf_tensor_type type, const uint8_t *o, int r, int k)
{
    int c = k / 4, j = k % 4;
    switch (type) {
    case GGUF_TYPE_Q8_0: return o[32 + 64 * c + 4 * r + j];
    case GGUF_TYPE_Q4_0:
    case GGUF_TYPE_Q4_1:
    case GGUF_TYPE_Q5_0:
    case GGUF_TYPE_Q5_1: {
        const uint8_t *nib = o + (type == GGUF_TYPE_Q4_1 || type == GGUF_TYPE_Q5_1 ? 64 : 32);
        int v = (nib[64 * (c & 3) + 4 * r + j] >> (c < 4 ? 0 : 4)) & 0xF;
        if (type == GGUF_TYPE_Q5_0 || type == GGUF_TYPE_Q5_1) v |= ((nib[256 + 4 * r + j] >> c) & 1) << 4;
        return v;
    }
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K: {
        int kk = c / 16, w = c % 16;
        int v = (o[320 + 64 * (8 * kk + w % 8) + 4 * r + j] >> (w < 8 ? 0 : 4)) & 0xF;
        if (type == GGUF_TYPE_Q5_K) v |= ((o[2368 + 64 * (c / 8) + 4 * r + j] >> (c % 8)) & 1) << 4;
        return v;
    }
    case GGUF_TYPE_Q6_K: {
        int v = (o[288 + 64 * (c & 31) + 4 * r + j] >> (c < 32 ? 0 : 4)) & 0xF;
        return v | ((o[2336 + 64 * (c & 15) + 4 * r + j] >> (2 * (c >> 4))) & 3) << 4;
    }
    case GGUF_TYPE_Q2_K: return (o[320 + 64 * (c & 15) + 4 * r + j] >> (2 * (c >> 4))) & 3;
    case GGUF_TYPE_Q3_K:
        return ((o[288 + 64 * (c & 15) + 4 * r + j] >> (2 * (c >> 4))) & 3) | ((o[1312 + 64 * (c / 8) + 4 * r + j] >> (c % 8)) & 1) << 2;
    default: return 0;
    }
}

/* ws and mw of row r, sub-block s */
static void ref_scales(enum gguf_tensor_type type, const uint8_t *o, int r, int s, float *ws, float *mw)
{
    float d = h2f(o + 2 * r);
    switch (type) {
    case GGUF_TYPE_Q8_0: *ws = d, *mw = -128.0f * d; break;
    case GGUF_TYPE_Q4_0: *ws = d, *mw = -8.0f * d; break;
    case GGUF_TYPE_Q5_0: *ws = d, *mw = -16.0f * d; break;
    case GGUF_TYPE_Q4_1:
    case GGUF_TYPE_Q5_1: *ws = d, *mw = h2f(o + 32 + 2 * r); break;
    case GGUF_TYPE_Q4_K:
    case GGUF_TYPE_Q5_K:
        *ws = d * (float)o[64 + 16 * s + r];
        *mw = -h2f(o + 32 + 2 * r) * (float)o[192 + 16 * s + r];
        break;
    case GGUF_TYPE_Q6_K:
        *ws = d * (float)(int8_t)o[32 + 16 * s + r];
        *mw = -32.0f * *ws;
        break;
    case GGUF_TYPE_Q3_K:
        *ws = d * (float)(int8_t)o[32 + 16 * s + r];
        *mw = -4.0f * *ws;
        break;
    case GGUF_TYPE_Q2_K:
        *ws = d * (float)(o[64 + 16 * s + r] & 0xF);
        *mw = -h2f(o + 32 + 2 * r) * (float)(o[64 + 16 * s + r] >> 4);
        break;
    default: *ws = *mw = 0.0f; break;
    }
}

static void ref_gemm_float(const kern_packed *p, int64_t group, const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                           int64_t y_stride, int n_rows)
{
    const uint8_t *base = p->data + (size_t)(group * p->n_sb) * p->gsb_bytes;
    for (int64_t t = 0; t < n_tok; t++) {
        const float *x = (const float *)(xa + (size_t)t * xa_stride);
        for (int r = 0; r < n_rows; r++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < p->n_in; k++) {
                const uint8_t *e = base + (size_t)k * p->gsb_bytes;
                float w;
                if (p->type == GGUF_TYPE_F32) memcpy(&w, e + 4 * r, 4);
                else w = p->type == GGUF_TYPE_F16 ? h2f(e + 2 * r) : kern_bf16_to_fp32(rd16(e + 2 * r));
                acc += w * x[k];
            }
            y[t * y_stride + r] = acc;
        }
    }
}

void kern_ref_gemm_packed(const kern_packed *p, int64_t group, const uint8_t *xa, size_t xa_stride, int64_t n_tok, float *y,
                          int64_t y_stride, int n_rows)
{
    if (is_float(p->type)) {
        ref_gemm_float(p, group, xa, xa_stride, n_tok, y, y_stride, n_rows);
        return;
    }
    const kern_qgeom *g = kern_qgeom_of(p->type);
    int n_sub = g->sbk / g->bk;
    const uint8_t *base = p->data + (size_t)(group * p->n_sb) * p->gsb_bytes;
    for (int64_t t = 0; t < n_tok; t++) {
        const uint8_t *a = xa + (size_t)t * xa_stride;
        for (int r = 0; r < n_rows; r++) {
            float acc = 0.0f;
            for (int64_t sb = 0; sb < p->n_sb; sb++) {
                const uint8_t *o = base + (size_t)sb * p->gsb_bytes, *asb = a + (size_t)sb * kern_act_sb_bytes(g);
                const int8_t *q = (const int8_t *)(asb + kern_act_q_offset(g));
                float d, tmp = 0.0f;
                memcpy(&d, asb, 4);
                for (int s = 0; s < n_sub; s++) {
                    int32_t dot = 0;
                    for (int k = s * g->bk; k < (s + 1) * g->bk; k++) dot += ref_u(p->type, o, r, k) * q[k];
                    float ws, mw, S;
                    ref_scales(p->type, o, r, s, &ws, &mw);
                    memcpy(&S, asb + 4 + 4 * (size_t)s, 4);
                    tmp += ws * (float)dot + mw * S;
                }
                acc += d * tmp;
            }
            y[t * y_stride + r] = acc;
        }
    }
}
