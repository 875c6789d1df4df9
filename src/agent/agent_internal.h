/*
 * agent_internal.h: what the files of agent/ share and nothing outside sees: the table of
 * operations behind an agent_llm (llm.c dispatches to llm_local.c or llm_openai.c), and one
 * entry point that tests and fuzz targets use: the OpenAI reply parser.
 */
#ifndef DK_AGENT_INTERNAL_H
#define DK_AGENT_INTERNAL_H

#include "agent/agent.h"

typedef struct agent_llm_ops {
    int (*chat)(agent_llm *llm, const agent_llm_request *req, agent_llm_reply *reply, char *err);
    void (*free)(agent_llm *llm); /* frees what the backend owns, not llm itself */
    bool is_local;
} agent_llm_ops;

struct agent_llm {
    const agent_llm_ops *ops;
    char *name;    /* dk_strdup'ed; freed by agent_llm_free */
    void *impl;    /* the backend's state */
};

/* Makes an agent_llm around impl (which ops->free releases); name is copied. */
int agent_llm_wrap(agent_llm **out, const agent_llm_ops *ops, const char *name, void *impl, char *err);

/* The model's name once known (an endpoint without #MODEL learns it at its first turn). */
int agent_llm_set_name(agent_llm *llm, const char *name, char *err);

/* Internal, for tests and fuzzing (llm_openai.c): the reply parser of the OpenAI backend.
 * body: n bytes as an endpoint's 2xx reply to POST /chat/completions would carry them
 * (untrusted; need not be NUL-terminated). reply is zeroed, then filled exactly as a turn
 * fills it (content, tool_calls with their arguments parsed, usage, logprobs, cut), except
 * ms; on error it is cleared again. The caller frees it with agent_llm_reply_free either way.
 * Errors: DK_ERR_FORMAT for a reply that is not what the API says, DK_ERR_IO for an error
 * object the endpoint sent instead, DK_ERR_NOMEM. */
int agent_openai_reply_parse(const char *body, size_t n, agent_llm_reply *reply, char *err);

#endif
