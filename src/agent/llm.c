/*
 * llm.c: the agent_llm handle, the same for every backend: it dispatches a turn to the
 * backend's operations (llm_local.c: a session of a loaded model; llm_openai.c: an
 * OpenAI-compatible endpoint) and owns the name that answers report.
 */
#include "agent/agent_internal.h"

#include <string.h>

int agent_llm_wrap(agent_llm **out, const agent_llm_ops *ops, const char *name, void *impl, char *err)
{
    *out = NULL;
    agent_llm *llm = dk_calloc(1, sizeof *llm);
    char *copy = dk_strdup(name ? name : "");
    if (!llm || !copy) {
        dk_free(llm);
        dk_free(copy);
        if (ops->free) {
            agent_llm tmp = {.ops = ops, .impl = impl};
            ops->free(&tmp);
        }
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    llm->ops = ops;
    llm->name = copy;
    llm->impl = impl;
    *out = llm;
    return DK_OK;
}

int agent_llm_set_name(agent_llm *llm, const char *name, char *err)
{
    char *copy = dk_strdup(name);
    if (!copy) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    dk_free(llm->name);
    llm->name = copy;
    return DK_OK;
}

int agent_llm_chat(agent_llm *llm, const agent_llm_request *req, agent_llm_reply *reply, char *err)
{
    memset(reply, 0, sizeof *reply);
    if (!llm || !req || !req->messages) return dk_fail(err, DK_ERR_ARG, "agent: no model or no messages");
    return llm->ops->chat(llm, req, reply, err);
}

void agent_llm_reply_free(agent_llm_reply *reply)
{
    if (!reply) return;
    dk_buf_free(&reply->content);
    json_decref(reply->tool_calls);
    reply->tool_calls = NULL;
}

const char *agent_llm_name(const agent_llm *llm) { return llm ? llm->name : ""; }
bool agent_llm_is_local(const agent_llm *llm) { return llm && llm->ops->is_local; }

bool agent_spec_is_url(const char *s)
{
    return s && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0);
}

void agent_llm_free(agent_llm *llm)
{
    if (!llm) return;
    if (llm->ops->free) llm->ops->free(llm);
    dk_free(llm->name);
    dk_free(llm);
}
