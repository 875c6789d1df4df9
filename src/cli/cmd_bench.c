/*
 * cmd_bench.c: `duckling bench MODEL [-p 512] [-n 128] [-d 0] [-t N] [-r 5] [-b 512] [--json]
 * [--exact]`: prompt processing (pp) and generation (tg) speed, measured the way llama-bench
 * measures them so that the two print comparable numbers for the same file:
 *
 *   - one warmup run of each test first;
 *   - every repetition starts from an empty KV cache (after -d DEPTH tokens of context, not
 *     timed); pp evaluates p random tokens (BOS first when the vocabulary adds one) in
 *     batches of b, computing the last position's logits; tg evaluates n tokens one at a
 *     time from that context, each with its logits;
 *   - the result is the mean and sample standard deviation of tokens/s over repetitions.
 *
 * A benchmark, never a test: nothing here asserts a speed.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert/convert.h"
#include "gguf/gguf.h"
#include "kernels/kernels.h"

#define CMD "bench"
#define MAX_REPS 1000

typedef struct bench_opts {
    const char *model;
    long n_prompt, n_gen, n_depth, n_threads, reps, n_batch;
    bool json, exact;
} bench_opts;

typedef struct bench_info {
    char desc[96];       /* "qwen2 Q4_K_M" */
    uint64_t n_bytes;    /* tensor data */
    uint64_t n_params;
} bench_info;

static int parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.n_prompt = 512, .n_gen = 128, .reps = 5, .n_batch = 512};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (strcmp(a, "--json") == 0) { o->json = true; continue; }
        if (strcmp(a, "--exact") == 0) { o->exact = true; continue; }
#define NUM(name, alt, field, lo, hi)                                                                  \
        if ((r = cli_opt_value(CMD, argc, argv, &i, name, &v)) != 0 ||                                 \
            (alt && (r = cli_opt_value(CMD, argc, argv, &i, alt, &v)) != 0)) {                        \
            if (r < 0 || cli_parse_long(CMD, name, v, lo, hi, &o->field)) return -1;                   \
            continue;                                                                                  \
        }
        NUM("-p", "--n-prompt", n_prompt, 0, 1 << 20)
        NUM("-n", "--n-gen", n_gen, 0, 1 << 20)
        NUM("-d", "--n-depth", n_depth, 0, 1 << 22)
        NUM("-t", "--threads", n_threads, 1, 1024)
        NUM("-r", "--repetitions", reps, 1, MAX_REPS)
        NUM("-b", "--batch-size", n_batch, 1, 1 << 16)
#undef NUM
        if (a[0] == '-') {
            cli_error(CMD, "unknown option %s (see duckling bench --help)", a);
            return -1;
        }
        if (o->model) {
            cli_error(CMD, "more than one MODEL: '%s' and '%s'", o->model, a);
            return -1;
        }
        o->model = a;
    }
    if (!o->model) {
        cli_error(CMD, "missing MODEL (see duckling bench --help)");
        return -1;
    }
    if (o->n_prompt == 0 && o->n_gen == 0) {
        cli_error(CMD, "nothing to measure: -p and -n are both 0");
        return -1;
    }
    return 0;
}

/* The file's description, weight bytes and parameter count, as llama-bench reports them. */
static int read_info(const char *path, bench_info *info)
{
    char err[DK_ERRLEN];
    gguf_file *f = NULL;
    if (gguf_open(&f, path, err) != DK_OK) return cli_error(CMD, "%s", err);
    gguf_str arch = {0};
    uint32_t ftype = 0;
    gguf_get_str(f, "general.architecture", &arch);
    const char *tname = gguf_get_u32(f, "general.file_type", &ftype) == DK_OK ? convert_ftype_name((int)ftype) : NULL;
    snprintf(info->desc, sizeof info->desc, "%.*s %s", (int)(arch.len > 32 ? 32 : arch.len), arch.ptr ? arch.ptr : "?",
             tname ? tname : "?");
    info->n_bytes = info->n_params = 0;
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_get_tensor(f, i);
        info->n_bytes += t->n_bytes;
        info->n_params += (uint64_t)t->n_elements;
    }
    gguf_close(f);
    return 0;
}

static int32_t random_token(const engine_model *model) { return (int32_t)((size_t)rand() % engine_n_vocab(model)); }

/* -1 when the vocabulary adds no BOS, else its id */
static int32_t bos_token(const engine_model *model)
{
    char err[DK_ERRLEN];
    int32_t *ids = NULL;
    size_t n = 0, bos = (size_t)-1;
    if (engine_tokenize(model, "", 0, true, false, &ids, &n, err) == DK_OK && n > 0) bos = (size_t)ids[0];
    dk_free(ids);
    return bos == (size_t)-1 ? -1 : (int32_t)bos;
}

/* What the runs share: the session, its model's BOS (looked up once, outside the timings)
 * and a token buffer of n_batch ids. */
typedef struct bench_ctx {
    engine_session *s;
    const engine_model *model;
    int32_t bos;   /* -1: the vocabulary adds none */
    int32_t *buf;  /* (n_batch) */
    long n_batch;
} bench_ctx;

/* n tokens in batches of n_batch, from the session's current position */
static int run_prompt(const bench_ctx *b, long n, char *err)
{
    for (long done = 0; done < n;) {
        long m = n - done < b->n_batch ? n - done : b->n_batch;
        for (long i = 0; i < m; i++) b->buf[i] = (done == 0 && i == 0 && b->bos >= 0) ? b->bos : random_token(b->model);
        int rc = engine_session_eval(b->s, b->buf, (size_t)m, NULL, err);
        if (rc != DK_OK) return rc;
        done += m;
    }
    return DK_OK;
}

static int run_gen(const bench_ctx *b, long n, char *err)
{
    int32_t tok = b->bos >= 0 ? b->bos : random_token(b->model);
    for (long i = 0; i < n; i++) {
        int rc = engine_session_eval(b->s, &tok, 1, NULL, err);
        if (rc != DK_OK) return rc;
        tok = random_token(b->model);
    }
    return DK_OK;
}

typedef struct bench_result {
    char test[48];   /* "pp512", "tg128 @ d4096" */
    long n_prompt, n_gen;
    double avg_ts, stdev_ts, avg_ns, stdev_ns;
    double samples_ts[MAX_REPS];
} bench_result;

static void summarize(bench_result *r, const double *ns, long reps, long n_tokens)
{
    double sum_ts = 0, sum_ns = 0;
    for (long i = 0; i < reps; i++) {
        r->samples_ts[i] = (double)n_tokens * 1e9 / ns[i];
        sum_ts += r->samples_ts[i];
        sum_ns += ns[i];
    }
    r->avg_ts = sum_ts / (double)reps;
    r->avg_ns = sum_ns / (double)reps;
    double v_ts = 0, v_ns = 0;
    for (long i = 0; i < reps; i++) {
        v_ts += (r->samples_ts[i] - r->avg_ts) * (r->samples_ts[i] - r->avg_ts);
        v_ns += (ns[i] - r->avg_ns) * (ns[i] - r->avg_ns);
    }
    r->stdev_ts = reps > 1 ? sqrt(v_ts / (double)(reps - 1)) : 0.0;
    r->stdev_ns = reps > 1 ? sqrt(v_ns / (double)(reps - 1)) : 0.0;
}

/* One test (pp when is_prompt, else tg): warmup, then the timed repetitions. */
static int run_test(const bench_ctx *b, const bench_opts *o, bool is_prompt, bench_result *r, char *err)
{
    long n = is_prompt ? o->n_prompt : o->n_gen;
    int rc;
    engine_session_clear(b->s);
    rc = is_prompt ? run_prompt(b, n, err) : run_gen(b, 1, err);
    if (rc != DK_OK) return rc;
    double ns[MAX_REPS];
    for (long i = 0; i < o->reps; i++) {
        engine_session_clear(b->s);
        if (o->n_depth > 0 && (rc = run_prompt(b, o->n_depth, err)) != DK_OK) return rc;
        uint64_t t0 = dk_now_ns();
        rc = is_prompt ? run_prompt(b, n, err) : run_gen(b, n, err);
        if (rc != DK_OK) return rc;
        ns[i] = (double)(dk_now_ns() - t0);
    }
    if (o->n_depth > 0) snprintf(r->test, sizeof r->test, "%s%ld @ d%ld", is_prompt ? "pp" : "tg", n, o->n_depth);
    else snprintf(r->test, sizeof r->test, "%s%ld", is_prompt ? "pp" : "tg", n);
    r->n_prompt = is_prompt ? n : 0;
    r->n_gen = is_prompt ? 0 : n;
    summarize(r, ns, o->reps, n);
    return DK_OK;
}

static void print_json(const bench_opts *o, const bench_info *info, int n_threads, const bench_result *r, int n_r)
{
    printf("[\n");
    for (int k = 0; k < n_r; k++) {
        printf("  {\"model_filename\": \"");
        for (const char *p = o->model; *p; p++) {
            if (*p == '"' || *p == '\\') putchar('\\');
            if ((unsigned char)*p >= 0x20) putchar(*p);
        }
        printf("\", \"model_type\": \"%s\", \"model_size\": %llu, \"model_n_params\": %llu, ", info->desc,
               (unsigned long long)info->n_bytes, (unsigned long long)info->n_params);
        printf("\"n_threads\": %d, \"n_batch\": %ld, \"isa\": \"%s\", \"numerics\": \"%s\", ", n_threads, o->n_batch,
               kern_isa_name(kern_isa_active()), o->exact ? "exact" : "fast");
        printf("\"test\": \"%s\", \"n_prompt\": %ld, \"n_gen\": %ld, \"n_depth\": %ld, ", r[k].test, r[k].n_prompt, r[k].n_gen,
               o->n_depth);
        printf("\"avg_ns\": %.0f, \"stddev_ns\": %.0f, \"avg_ts\": %.6f, \"stddev_ts\": %.6f, \"samples_ts\": [", r[k].avg_ns,
               r[k].stdev_ns, r[k].avg_ts, r[k].stdev_ts);
        for (long i = 0; i < o->reps; i++) printf("%s%.6f", i ? ", " : "", r[k].samples_ts[i]);
        printf("]}%s\n", k + 1 < n_r ? "," : "");
    }
    printf("]\n");
}

static void print_table(const bench_info *info, int n_threads, const bench_result *r, int n_r)
{
    printf("| model                          |       size |     params | backend    | threads |            test |                  t/s |\n");
    printf("| ------------------------------ | ---------: | ---------: | ---------- | ------: | --------------: | -------------------: |\n");
    for (int k = 0; k < n_r; k++) {
        char size[32], params[32], ts[48], backend[24];
        snprintf(size, sizeof size, "%.2f MiB", (double)info->n_bytes / (1024.0 * 1024.0));
        snprintf(params, sizeof params, "%.2f M", (double)info->n_params / 1e6);
        snprintf(ts, sizeof ts, "%.2f ± %.2f", r[k].avg_ts, r[k].stdev_ts);
        snprintf(backend, sizeof backend, "CPU %s", kern_isa_name(kern_isa_active()));
        printf("| %-30s | %10s | %10s | %-10s | %7d | %15s | %20s |\n", info->desc, size, params, backend, n_threads, r[k].test, ts);
    }
}

int cli_bench(int argc, char **argv)
{
    bench_opts o;
    if (parse(argc, argv, &o) != 0) return 1;
    bench_info info;
    if (read_info(o.model, &info) != 0) return 1;
    engine_model *model = NULL;
    engine_session *s = NULL;
    int32_t *buf = NULL;
    bench_result *res = NULL;
    char err[DK_ERRLEN];
    int status = 1;
    if (cli_load_model(CMD, o.model, false, (int)o.n_threads, o.exact, &model)) goto done;
    if (engine_is_embedding(model)) {
        cli_error(CMD, "%s is an embedding model; bench measures causal models", o.model);
        goto done;
    }
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = (size_t)(o.n_prompt + o.n_gen + o.n_depth);
    sp.n_threads = (int)o.n_threads;
    if (engine_session_new(&s, model, &sp, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    buf = dk_malloc_array((size_t)o.n_batch, sizeof(int32_t));
    res = dk_calloc(2, sizeof *res);
    if (!buf || !res) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    srand(1234);
    int n_r = 0;
    bench_ctx b = {s, model, bos_token(model), buf, o.n_batch};
    if (o.n_prompt > 0 && run_test(&b, &o, true, &res[n_r++], err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    if (o.n_gen > 0 && run_test(&b, &o, false, &res[n_r++], err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    int n_threads = o.n_threads > 0 ? (int)o.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o.json) print_json(&o, &info, n_threads, res, n_r);
    else print_table(&info, n_threads, res, n_r);
    status = 0;
done:
    dk_free(buf);
    dk_free(res);
    engine_session_free(s);
    engine_model_free(model);
    return status;
}
