/*
 * test_batch.c: continuous batching. model_decode_batch must give every sequence the logits
 * it gets alone (several sequences, prompts and single tokens mixed, each at its own
 * position), and engine sessions sharing a batcher from several threads must generate the
 * same greedy tokens as sessions on their own, in shared forward passes. Also the engine's
 * logprobs and its cancel flag.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"
#include "test.h"

static float max_rel_diff(const float *a, const float *b, size_t n)
{
    float amax = 0, dmax = 0;
    for (size_t i = 0; i < n; i++) {
        amax = fmaxf(amax, fabsf(a[i]));
        dmax = fmaxf(dmax, fabsf(a[i] - b[i]));
    }
    return amax > 0 ? dmax / amax : dmax;
}

/* Three sequences of different lengths go through two shared steps: their prompts
 * together, then one token each; each step's logits against the same sequence alone. */
static void check_batch_model(const char *relative, enum model_numerics numerics, float tol)
{
    char path[1024], err[DK_ERRLEN];
    model_weights *m = NULL;
    REQUIRE_MSG(model_load(&m, test_kit_file(path, sizeof path, relative), err) == DK_OK, "%s", err);
    if (numerics == MODEL_NUMERICS_FAST) REQUIRE(model_prepare_fast(m, 2, err) == DK_OK);
    const model_hparams *hp = model_get_hparams(m);
    int64_t V = hp->n_vocab;
    enum { N_SEQ = 3 };
    int32_t prompts[N_SEQ][12];
    int64_t lens[N_SEQ] = {12, 5, 1};
    for (int s = 0; s < N_SEQ; s++)
        for (int t = 0; t < 12; t++) prompts[s][t] = (int32_t)((7 + s * 31 + t * 13) % V);
    model_ctx_params cp = model_ctx_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 2;
    cp.numerics = numerics;
    model_ctx *alone[N_SEQ], *kv[N_SEQ], *scratch = NULL;
    for (int s = 0; s < N_SEQ; s++) {
        REQUIRE(model_ctx_new(&alone[s], m, &cp, err) == DK_OK);
        model_ctx_params kp = cp;
        kp.kind = MODEL_CTX_KV_ONLY;
        REQUIRE(model_ctx_new(&kv[s], m, &kp, err) == DK_OK);
    }
    model_ctx_params sp = cp;
    sp.kind = MODEL_CTX_SCRATCH_ONLY;
    REQUIRE(model_ctx_new(&scratch, m, &sp, err) == DK_OK);
    float *ref = dk_malloc_array((size_t)V, sizeof(float)), *got = dk_malloc_array((size_t)(N_SEQ * V), sizeof(float));
    REQUIRE(ref && got);

    model_seq seqs[N_SEQ];
    for (int s = 0; s < N_SEQ; s++) seqs[s] = (model_seq){kv[s], prompts[s], lens[s], false};
    REQUIRE_MSG(model_decode_batch(scratch, seqs, N_SEQ, got, err) == DK_OK, "%s", err);
    for (int s = 0; s < N_SEQ; s++) {
        REQUIRE(model_decode(alone[s], prompts[s], lens[s], false, ref, err) == DK_OK);
        CHECK_MSG(max_rel_diff(ref, got + s * V, (size_t)V) <= tol, "%s seq %d prompt: rel diff %g", relative, s,
                  max_rel_diff(ref, got + s * V, (size_t)V));
        CHECK_EQ_INT(model_ctx_n_past(kv[s]), lens[s]);
    }
    int32_t next[N_SEQ] = {3, 4, 5};
    for (int s = 0; s < N_SEQ; s++) seqs[s] = (model_seq){kv[s], &next[s], 1, false};
    /* the middle one wants no logits (a prompt chunk): the others' rows are still right */
    seqs[1].no_logits = true;
    REQUIRE(model_decode_batch(scratch, seqs, N_SEQ, got, err) == DK_OK);
    for (int s = 0; s < N_SEQ; s += 2) {
        REQUIRE(model_decode(alone[s], &next[s], 1, false, ref, err) == DK_OK);
        CHECK_MSG(max_rel_diff(ref, got + s * V, (size_t)V) <= tol, "%s seq %d decode: rel diff %g", relative, s,
                  max_rel_diff(ref, got + s * V, (size_t)V));
    }
    CHECK_EQ_INT(model_ctx_n_past(kv[1]), lens[1] + 1);
    /* bad calls evaluate nothing */
    model_seq dup[2] = {seqs[0], seqs[0]};
    CHECK_EQ_INT(model_decode_batch(scratch, dup, 2, got, err), DK_ERR_ARG);
    CHECK_EQ_INT(model_decode_batch(kv[0], seqs, 1, got, err), DK_ERR_ARG);
    CHECK_EQ_INT(model_decode(kv[0], next, 1, false, got, err), DK_ERR_ARG);
    CHECK_EQ_INT(model_ctx_n_past(kv[0]), lens[0] + 1);

    dk_free(ref);
    dk_free(got);
    for (int s = 0; s < N_SEQ; s++) {
        model_ctx_free(alone[s]);
        model_ctx_free(kv[s]);
    }
    model_ctx_free(scratch);
    model_free(m);
}

TEST(batch, model_decode_batch_matches_alone_exact)
{
    check_batch_model("forward/llama3-tiny/llama3-tiny.F32.gguf", MODEL_NUMERICS_EXACT, 1e-5f);
    check_batch_model("forward/gemma3-tiny/gemma3-tiny.F32.gguf", MODEL_NUMERICS_EXACT, 1e-5f);
    check_batch_model("forward/phi3-tiny/phi3-tiny.F32.gguf", MODEL_NUMERICS_EXACT, 1e-5f);
}

TEST(batch, model_decode_batch_matches_alone_fast)
{
    check_batch_model("forward/qwen2-tiny/qwen2-tiny.Q4_K_M.gguf", MODEL_NUMERICS_FAST, 1e-5f);
    check_batch_model("forward/qwen3-tiny/qwen3-tiny.Q8_0.gguf", MODEL_NUMERICS_FAST, 1e-5f);
}

/* ---- engine sessions sharing a batcher ---- */

typedef struct gen_job {
    engine_session *session;
    int32_t prompt[256];
    size_t n_prompt;
    long n_predict;
    int32_t out[64];
    size_t n_out;
    int rc;
    char err[DK_ERRLEN];
} gen_job;

static int collect_token(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    gen_job *j = user;
    (void)logprob;
    (void)top;
    (void)n_top;
    if (j->n_out < 64) j->out[j->n_out++] = token;
    return 0;
}

static void *gen_thread(void *arg)
{
    gen_job *j = arg;
    engine_generate_params gp;
    engine_generate_params_default(&gp);
    gp.sampling.temperature = 0;
    gp.num_predict = j->n_predict;
    gp.on_token = collect_token;
    gp.user = j;
    j->rc = engine_generate(j->session, j->prompt, j->n_prompt, &gp, NULL, j->err);
    return NULL;
}

static void stories_path(char *buf, size_t n) { test_kit_file(buf, n, "forward/stories260K/stories260K.F32.gguf"); }

TEST(batch, sessions_generate_together_as_alone)
{
    char path[1024], err[DK_ERRLEN];
    stories_path(path, sizeof path);
    engine_model *model = NULL;
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 2;
    REQUIRE_MSG(engine_model_load(&model, path, &lp, err) == DK_OK, "%s", err);
    enum { N = 4 };
    gen_job alone[N], together[N];
    memset(alone, 0, sizeof alone);
    for (int i = 0; i < N; i++) {
        /* the last one's prompt is long: it goes in chunks while the others decode */
        alone[i].n_prompt = i == N - 1 ? 200 : 3 + (size_t)i;
        for (size_t t = 0; t < alone[i].n_prompt; t++) alone[i].prompt[t] = (int32_t)(1 + (i * 37 + (int)t * 11) % 500);
        alone[i].n_predict = 24 + 4 * i; /* they finish at different steps */
    }
    memcpy(together, alone, sizeof alone);
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 300;
    for (int i = 0; i < N; i++) {
        REQUIRE(engine_session_new(&alone[i].session, model, &sp, err) == DK_OK);
        gen_thread(&alone[i]);
        CHECK_EQ_INT(alone[i].rc, DK_OK);
        CHECK_EQ_INT((long)alone[i].n_out, alone[i].n_predict);
    }
    engine_batcher *b = NULL;
    REQUIRE_MSG(engine_batcher_new(&b, model, 300, 0, 2, err) == DK_OK, "%s", err);
    sp.batcher = b;
    pthread_t th[N];
    for (int i = 0; i < N; i++) REQUIRE(engine_session_new(&together[i].session, model, &sp, err) == DK_OK);
    for (int i = 0; i < N; i++) pthread_create(&th[i], NULL, gen_thread, &together[i]);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        CHECK_MSG(together[i].rc == DK_OK, "%s", together[i].err);
        CHECK_EQ_INT((long)together[i].n_out, (long)alone[i].n_out);
        CHECK(memcmp(together[i].out, alone[i].out, alone[i].n_out * sizeof(int32_t)) == 0);
        CHECK_EQ_INT((long)engine_session_n_past(together[i].session), (long)(alone[i].n_prompt + alone[i].n_out));
    }
    engine_batcher_stats st;
    engine_batcher_get_stats(b, &st);
    /* 4 generations of 24..36 tokens: shared steps, so far fewer steps than tokens */
    CHECK_MSG(st.max_rows >= 2, "max rows %llu", (unsigned long long)st.max_rows);
    CHECK_MSG(st.steps < st.rows, "steps %llu rows %llu", (unsigned long long)st.steps, (unsigned long long)st.rows);
    /* a batched session refuses all-position logits, a bad session/batcher pairing is refused */
    float lg[512];
    int32_t one = 5;
    CHECK_EQ_INT(engine_session_eval(together[0].session, &one, 1, lg, err), DK_ERR_UNSUPPORTED);
    sp.n_ctx = 400;
    engine_session *too_big = NULL;
    CHECK_EQ_INT(engine_session_new(&too_big, model, &sp, err), DK_ERR_ARG);
    for (int i = 0; i < N; i++) {
        engine_session_free(alone[i].session);
        engine_session_free(together[i].session);
    }
    engine_batcher_free(b);
    engine_model_free(model);
}

typedef struct lp_probe {
    int n;
    bool ok;
} lp_probe;

static int check_logprob(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    lp_probe *p = user;
    p->n++;
    if (!(logprob <= 0) || n_top != 5 || top[0].token != token || fabsf(top[0].logprob - logprob) > 1e-6f) p->ok = false;
    double total = 0;
    for (size_t i = 0; i < n_top; i++) {
        if (i && top[i].logprob > top[i - 1].logprob) p->ok = false;
        total += exp(top[i].logprob);
    }
    if (total > 1.0 + 1e-4) p->ok = false;
    return 0;
}

TEST(batch, logprobs_of_greedy_tokens)
{
    char path[1024], err[DK_ERRLEN];
    stories_path(path, sizeof path);
    engine_model *model = NULL;
    engine_load_params lp;
    engine_load_params_default(&lp);
    REQUIRE(engine_model_load(&model, path, &lp, err) == DK_OK);
    engine_session *s = NULL;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 64;
    REQUIRE(engine_session_new(&s, model, &sp, err) == DK_OK);
    lp_probe probe = {0, true};
    engine_generate_params gp;
    engine_generate_params_default(&gp);
    gp.sampling.temperature = 0;
    gp.num_predict = 10;
    gp.on_token = check_logprob;
    gp.top_logprobs = 5;
    gp.user = &probe;
    int32_t prompt[2] = {1, 403};
    REQUIRE_MSG(engine_generate(s, prompt, 2, &gp, NULL, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(probe.n, 10);
    CHECK(probe.ok);
    engine_session_free(s);
    engine_model_free(model);
}

static int cancel_after_3(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    (void)token, (void)logprob, (void)top, (void)n_top;
    atomic_int *flag = user;
    static int n;
    if (++n == 3) atomic_store(flag, 1);
    return 0;
}

TEST(batch, cancel_flag_stops_generation)
{
    char path[1024], err[DK_ERRLEN];
    stories_path(path, sizeof path);
    engine_model *model = NULL;
    engine_load_params lp;
    engine_load_params_default(&lp);
    REQUIRE(engine_model_load(&model, path, &lp, err) == DK_OK);
    engine_batcher *b = NULL;
    REQUIRE(engine_batcher_new(&b, model, 64, 0, 1, err) == DK_OK);
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 64;
    sp.batcher = b;
    engine_session *s = NULL;
    REQUIRE(engine_session_new(&s, model, &sp, err) == DK_OK);
    atomic_int flag = 0;
    engine_generate_params gp;
    engine_generate_params_default(&gp);
    gp.sampling.temperature = 0;
    gp.num_predict = 40;
    gp.cancel = &flag;
    gp.on_token = cancel_after_3;
    gp.user = &flag;
    engine_timings t;
    int32_t prompt[2] = {1, 403};
    REQUIRE_MSG(engine_generate(s, prompt, 2, &gp, &t, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(t.done, ENGINE_DONE_CANCEL);
    CHECK_EQ_INT((long)t.n_eval, 3);
    /* already cancelled: the prompt is not evaluated */
    size_t before = engine_session_n_past(s);
    REQUIRE(engine_generate(s, prompt, 2, &gp, &t, err) == DK_OK);
    CHECK_EQ_INT(t.done, ENGINE_DONE_CANCEL);
    CHECK_EQ_INT((long)engine_session_n_past(s), (long)before);
    engine_session_free(s);
    engine_batcher_free(b);
    engine_model_free(model);
}
