/*
 * fuzz_request.c: fuzz target for the server's request parsers (src/server/request.c): the
 * input is a request body. Whatever JSON it holds goes through every parser of the
 * generation endpoints (options layered over a Modelfile's, keep_alive, format, think,
 * tools, tool_choice, response_format, the OpenAI sampling fields, the messages of both
 * APIs and the conversation with a store record's system and messages); the raw bytes are
 * also parsed as a keep_alive duration. Not a test of the results, only of their safety:
 * no crash, no leak, no read out of bounds.
 */
#include "fuzz.h"

#include <string.h>

#include "server/srv_internal.h"


/* Every field parser over one object (a request body, or any object inside one). */
static void fuzz_request_fields(const json_t *req)
{
    char err[DK_ERRLEN];
    srv_gen_options o;
    json_t *params = json_pack("{s:f,s:[s]}", "temperature", 0.5, "stop", "</s>");
    (void)srv_options_layered(params, json_object_get(req, "options"), &o, err);
    (void)srv_options_layered(NULL, req, &o, err);
    json_decref(params);
    int64_t ns;
    (void)srv_parse_keep_alive(json_object_get(req, "keep_alive"), &ns, err);
    int think;
    (void)srv_parse_think(json_object_get(req, "think"), &think, err);
    (void)srv_openai_reasoning_effort(req, &think, err);
    json_t *j = NULL;
    (void)srv_parse_format(json_object_get(req, "format"), &j, err);
    json_decref(j);
    j = NULL;
    (void)srv_openai_response_format(json_object_get(req, "response_format"), &j, err);
    json_decref(j);
    j = NULL;
    (void)srv_openai_options(req, 16, &j, err);
    json_decref(j);
    json_t *tools = NULL;
    (void)srv_parse_tools(json_object_get(req, "tools"), &tools, err);
    enum engine_tool_choice choice;
    const char *name;
    if (srv_parse_tool_choice(json_object_get(req, "tool_choice"), &choice, &name, err) == DK_OK)
        (void)srv_check_tool_choice(tools, choice, name, err);
    json_decref(tools);
    const char *s;
    bool b;
    long long i;
    (void)srv_parse_model(req, &s, err);
    (void)srv_field_bool(req, "stream", true, &b, err);
    (void)srv_field_int(req, "top_logprobs", 0, 20, 0, &i, err);

    store_model info = {.system = "Be brief."};
    info.messages = json_object_get(req, "model_messages");
    for (int openai = 0; openai < 2; openai++) {
        json_t *msgs = NULL, *conv = NULL;
        int rc = openai ? srv_openai_messages(json_object_get(req, "messages"), &msgs, err)
                        : srv_ollama_messages(json_object_get(req, "messages"), &msgs, err);
        if (rc == DK_OK && srv_conversation_with_model(&info, msgs, &conv, err) == DK_OK) json_decref(conv);
        json_decref(msgs);
    }
}

int fuzz_request_one(const uint8_t *data, size_t size)
{
    char err[DK_ERRLEN];
    json_t *req = NULL;
    if (srv_parse_body((const char *)data, size, &req, err) == DK_OK) {
        fuzz_request_fields(req);
        const char *key;
        json_t *v;
        json_object_foreach(req, key, v) /* nested objects as bodies too: options, tool_choice... */
            if (json_is_object(v)) fuzz_request_fields(v);
        json_decref(req);
    }
    /* the bytes as a keep_alive string */
    json_t *text = json_stringn_nocheck((const char *)data, strnlen((const char *)data, size));
    int64_t ns;
    if (text) (void)srv_parse_keep_alive(text, &ns, err);
    json_decref(text);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_request_one(data, size); }
#endif
