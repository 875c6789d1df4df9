/*
 * fuzz_openai_reply.c: fuzz target for the reply parser of the OpenAI-compatible agent backend
 * (agent_openai_reply_parse, the reply_read of src/agent/llm_openai.c): the input is the body
 * of a 2xx reply to POST /chat/completions, as an endpoint would send it. Beyond not crashing,
 * leaking or reading out of bounds, the result must keep agent.h's promises: on DK_OK a
 * NUL-terminated content string and an array of tool calls, each with an id, type "function",
 * a non-empty function name and arguments that are an object or a string; on an error a
 * non-empty message and a cleared reply. A broken promise aborts, so libFuzzer reports it.
 */
#include "fuzz.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_internal.h"

static bool fuzz_openai_call_ok(const json_t *call)
{
    const json_t *fn = json_object_get(call, "function");
    const char *id = json_string_value(json_object_get(call, "id"));
    const char *type = json_string_value(json_object_get(call, "type"));
    const char *name = json_string_value(json_object_get(fn, "name"));
    const json_t *args = json_object_get(fn, "arguments");
    return id && *id && type && strcmp(type, "function") == 0 && name && *name &&
           (json_is_object(args) || json_is_string(args));
}

static bool fuzz_openai_reply_ok(const agent_llm_reply *reply)
{
    if (!reply->content.data || reply->content.data[reply->content.len] != 0) return false;
    if (!json_is_array(reply->tool_calls)) return false;
    size_t i;
    const json_t *call;
    json_array_foreach(reply->tool_calls, i, call)
        if (!fuzz_openai_call_ok(call)) return false;
    return true;
}

static bool fuzz_openai_error_ok(int rc, const agent_llm_reply *reply, const char *err)
{
    bool known = rc == DK_ERR_FORMAT || rc == DK_ERR_IO || rc == DK_ERR_NOMEM;
    return known && err[0] && !reply->tool_calls && !reply->content.data && reply->n_logprobs == 0;
}

int fuzz_openai_reply_one(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so that a read past the body's end is one ASan sees. */
    char *body = dk_malloc(size ? size : 1);
    if (!body) return 0;
    memcpy(body, data, size);
    agent_llm_reply reply;
    char err[DK_ERRLEN] = "";
    int rc = agent_openai_reply_parse(body, size, &reply, err);
    bool ok = rc == DK_OK ? fuzz_openai_reply_ok(&reply) : fuzz_openai_error_ok(rc, &reply, err);
    agent_llm_reply_free(&reply);
    dk_free(body);
    if (!ok) abort();
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_openai_reply_one(data, size); }
#endif
