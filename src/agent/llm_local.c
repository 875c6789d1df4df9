/*
 * llm_local.c: an agent_llm that is a model running here. A turn is one engine_chat on the
 * borrowed session: the model's own chat template shows the tools, its own call format is
 * parsed, a required or named tool_choice is enforced by grammar, and the rules of
 * grammar_extra (the DuckDB SELECT grammar that run_sql's "sql" argument names with "x-gbnf")
 * join that grammar, so a call's SQL always parses. Token log-probabilities are summed for
 * the router's confidence.
 */
#include "agent/agent_internal.h"

#include <string.h>

typedef struct local_llm {
    engine_session *session; /* borrowed */
} local_llm;

typedef struct logprob_sum {
    double sum;
    size_t n;
} logprob_sum;

static int local_on_token(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    (void)token;
    (void)top;
    (void)n_top;
    logprob_sum *acc = user;
    acc->sum += logprob;
    acc->n++;
    return 0;
}

static int local_chat(agent_llm *llm, const agent_llm_request *req, agent_llm_reply *reply, char *err)
{
    local_llm *l = llm->impl;
    engine_chat_params p;
    engine_chat_params_default(&p);
    p.messages = req->messages;
    p.tools = req->tools;
    p.tool_choice = req->tool_choice;
    p.tool_name = req->tool_name;
    p.parallel_tool_calls = false; /* one step at a time: the agent answers each call */
    p.grammar_extra = req->grammar_extra;
    p.think = 0;                   /* the agent wants SQL and answers, not reasoning */
    p.gen.num_predict = req->max_tokens > 0 ? req->max_tokens : 512;
    p.gen.sampling.temperature = req->temperature;
    p.gen.sampling.seed = req->seed;
    logprob_sum acc = {0};
    p.gen.on_token = local_on_token;
    p.gen.user = &acc;

    uint64_t t0 = dk_now_ns();
    engine_chat_result res = {0};
    int rc = engine_chat(l->session, &p, &res, err);
    reply->ms = (double)(dk_now_ns() - t0) / 1e6;
    if (rc == DK_OK) {
        reply->content = res.content;
        memset(&res.content, 0, sizeof res.content);
        reply->tool_calls = res.tool_calls;
        res.tool_calls = NULL;
        reply->prompt_tokens = res.timings.n_prompt + res.n_prompt_reused;
        reply->completion_tokens = res.timings.n_eval;
        reply->logprob_sum = acc.sum;
        reply->n_logprobs = acc.n;
        reply->cut = res.timings.done == ENGINE_DONE_LENGTH || res.timings.done == ENGINE_DONE_CONTEXT;
    }
    engine_chat_result_free(&res);
    return rc;
}

static void local_free(agent_llm *llm) { dk_free(llm->impl); }

static const agent_llm_ops local_ops = {.chat = local_chat, .free = local_free, .is_local = true};

int agent_llm_local(agent_llm **out, engine_session *session, const char *name, char *err)
{
    *out = NULL;
    if (!session) return dk_fail(err, DK_ERR_ARG, "agent: no session");
    local_llm *l = dk_calloc(1, sizeof *l);
    if (!l) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    l->session = session;
    return agent_llm_wrap(out, &local_ops, name, l, err);
}
