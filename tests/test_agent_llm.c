/*
 * test_agent_llm.c: the OpenAI-compatible backend of agent_llm (suite `agent_llm`), over real
 * HTTP against the scripted stand-in of openai_standin.h: content and tool-call replies (an
 * arguments string that is not a JSON object kept as the string), what went over the wire
 * (arguments as strings, content null for a calling turn, tool messages with tool_call_id,
 * every tool_choice form, the Bearer key from the argument or the environment), logprobs and
 * usage, the model taken from GET /models, HTTP errors with the endpoint's message, an
 * unreachable port, a timeout, bad specs, and hostile replies (wrong types, no choices, not
 * JSON, over 16 MiB) that must fail cleanly; and the stand-in serving several threads at once.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "base/base.h"
#include "openai_standin.h"
#include "test.h"

/* ---- the environment the backend reads, cleared for a test and restored after ---- */

static const char *const env_names[] = {"DUCKLING_API_KEY", "OPENAI_API_KEY", "DUCKLING_REMOTE_TIMEOUT"};
#define N_ENV (sizeof env_names / sizeof env_names[0])

typedef struct env_saved {
    char *values[N_ENV]; /* dk_strdup'ed, NULL when unset */
} env_saved;

static void env_clear(env_saved *saved)
{
    for (size_t i = 0; i < N_ENV; i++) {
        const char *v = getenv(env_names[i]);
        saved->values[i] = v ? dk_strdup(v) : NULL;
        unsetenv(env_names[i]);
    }
}

static void env_restore(env_saved *saved)
{
    for (size_t i = 0; i < N_ENV; i++) {
        if (saved->values[i]) setenv(env_names[i], saved->values[i], 1);
        else unsetenv(env_names[i]);
        dk_free(saved->values[i]);
        saved->values[i] = NULL;
    }
}

/* ---- helpers ---- */

static standin *standin_or_fail(const char *script)
{
    standin *s = NULL;
    char err[DK_ERRLEN];
    if (standin_start(&s, script, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "standin_start: %s", err);
    return s;
}

/* The endpoint of s, with "#model" unless model is NULL. */
static agent_llm *llm_or_fail(const standin *s, const char *model, const char *api_key)
{
    char spec[256];
    snprintf(spec, sizeof spec, "%s%s%s", standin_url(s), model ? "#" : "", model ? model : "");
    agent_llm *llm = NULL;
    char err[DK_ERRLEN];
    if (agent_llm_openai(&llm, spec, api_key, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "agent_llm_openai(%s): %s", spec, err);
    return llm;
}

static json_t *one_user_message(const char *text) { return json_pack("[{s:s, s:s}]", "role", "user", "content", text); }

static int chat_simple(agent_llm *llm, const char *text, agent_llm_reply *reply, char *err)
{
    json_t *messages = one_user_message(text);
    agent_llm_request req = {.messages = messages};
    int rc = agent_llm_chat(llm, &req, reply, err);
    json_decref(messages);
    return rc;
}

/* The last chat request the stand-in recorded (new reference), or NULL. */
static json_t *last_request(standin *s)
{
    json_t *all = standin_requests(s);
    size_t n = json_array_size(all);
    json_t *last = n ? json_incref(json_array_get(all, n - 1)) : NULL;
    json_decref(all);
    return last;
}

static json_t *sql_tools(void)
{
    return json_pack("[{s:s, s:{s:s, s:s, s:{s:s, s:{s:{s:s}}, s:[s]}}}]", "type", "function", "function", "name",
                     "run_sql", "description", "Run one SELECT", "parameters", "type", "object", "properties", "sql",
                     "type", "string", "required", "sql");
}

/* ---- replies ---- */

TEST(agent_llm, content_reply)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"small\": [{\"content\": \"There are 42 rows.\", \"prompt_tokens\": 17, "
                                 "\"completion_tokens\": 5}]}");
    agent_llm *llm = s ? llm_or_fail(s, "small", NULL) : NULL;
    if (llm) {
        CHECK(!agent_llm_is_local(llm));
        CHECK_EQ_STR(agent_llm_name(llm), "small");
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        int rc = chat_simple(llm, "How many rows?", &reply, err);
        CHECK_MSG(rc == DK_OK, "chat: %s", err);
        CHECK_EQ_STR(reply.content.data, "There are 42 rows.");
        CHECK(json_is_array(reply.tool_calls));
        CHECK_EQ_INT(json_array_size(reply.tool_calls), 0);
        CHECK_EQ_INT(reply.prompt_tokens, 17);
        CHECK_EQ_INT(reply.completion_tokens, 5);
        CHECK_EQ_INT(reply.n_logprobs, 0);
        CHECK(reply.ms > 0);
        agent_llm_reply_free(&reply);

        json_t *rq = last_request(s);
        json_t *body = json_object_get(rq, "body");
        CHECK_EQ_STR(json_string_value(json_object_get(body, "model")), "small");
        CHECK(json_is_false(json_object_get(body, "stream")));
        CHECK(json_is_true(json_object_get(body, "logprobs")));
        CHECK_EQ_INT(json_integer_value(json_object_get(body, "max_tokens")), 512);
        CHECK(json_is_number(json_object_get(body, "temperature")));
        CHECK(json_is_integer(json_object_get(body, "seed")));
        CHECK(!json_object_get(body, "tools"));       /* no tools given: neither tools */
        CHECK(!json_object_get(body, "tool_choice")); /* nor a choice among them */
        json_t *m0 = json_array_get(json_object_get(body, "messages"), 0);
        CHECK_EQ_STR(json_string_value(json_object_get(m0, "role")), "user");
        CHECK_EQ_STR(json_string_value(json_object_get(m0, "content")), "How many rows?");
        CHECK_EQ_STR(json_string_value(json_object_get(rq, "content_type")), "application/json");
        json_decref(rq);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

TEST(agent_llm, tool_call_reply)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail(
        "{\"m\": [{\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT 1\"}},"
        "                          {\"name\": \"run_sql\", \"arguments\": \"SELECT * FROM t\"},"
        "                          {\"name\": \"describe_table\", \"arguments\": \"[1, 2]\"},"
        "                          {\"name\": \"describe_table\", \"arguments\": \"\"}]}]}");
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        int rc = chat_simple(llm, "q", &reply, err);
        CHECK_MSG(rc == DK_OK, "chat: %s", err);
        CHECK_EQ_STR(reply.content.data, ""); /* null content: empty, still a string */
        REQUIRE(json_array_size(reply.tool_calls) == 4);
        json_t *c0 = json_array_get(reply.tool_calls, 0);
        CHECK_EQ_STR(json_string_value(json_object_get(c0, "id")), "call_1");
        CHECK_EQ_STR(json_string_value(json_object_get(c0, "type")), "function");
        json_t *f0 = json_object_get(c0, "function");
        CHECK_EQ_STR(json_string_value(json_object_get(f0, "name")), "run_sql");
        json_t *args0 = json_object_get(f0, "arguments");
        CHECK(json_is_object(args0));
        CHECK_EQ_STR(json_string_value(json_object_get(args0, "sql")), "SELECT 1");
        /* not JSON at all, and JSON that is not an object: the string as the model wrote it */
        json_t *f1 = json_object_get(json_array_get(reply.tool_calls, 1), "function");
        CHECK_EQ_STR(json_string_value(json_object_get(f1, "arguments")), "SELECT * FROM t");
        json_t *f2 = json_object_get(json_array_get(reply.tool_calls, 2), "function");
        CHECK_EQ_STR(json_string_value(json_object_get(f2, "arguments")), "[1, 2]");
        CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(reply.tool_calls, 2), "id")), "call_3");
        /* an empty string: no arguments */
        json_t *f3 = json_object_get(json_array_get(reply.tool_calls, 3), "function");
        CHECK(json_is_object(json_object_get(f3, "arguments")));
        CHECK_EQ_INT(json_object_size(json_object_get(f3, "arguments")), 0);
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

TEST(agent_llm, logprobs_and_usage)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"m\": [{\"content\": \"SELECT 1\", \"logprobs\": [-0.5, -0.25, -1.0, 0],"
                                 " \"prompt_tokens\": 100, \"completion_tokens\": 4},"
                                 "         {\"content\": \"x\", \"prompt_tokens\": 7}]}");
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_MSG(chat_simple(llm, "q", &reply, err) == DK_OK, "chat: %s", err);
        CHECK_EQ_INT(reply.n_logprobs, 4);
        CHECK_NEAR(reply.logprob_sum, -1.75, 1e-9);
        CHECK_EQ_INT(reply.prompt_tokens, 100);
        CHECK_EQ_INT(reply.completion_tokens, 4);
        agent_llm_reply_free(&reply);
        CHECK_MSG(chat_simple(llm, "q", &reply, err) == DK_OK, "chat: %s", err);
        CHECK_EQ_INT(reply.n_logprobs, 0); /* the endpoint sent logprobs: null */
        CHECK_NEAR(reply.logprob_sum, 0, 0);
        CHECK_EQ_INT(reply.prompt_tokens, 7);
        CHECK_EQ_INT(reply.completion_tokens, 1); /* the stand-in's default for "x" */
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

/* ---- the request on the wire ---- */

TEST(agent_llm, wire_form)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"m\": [{\"content\": \"a\"}, {\"content\": \"b\"}, {\"content\": \"c\"}, {\"content\": \"d\"}]}");
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    json_t *messages = json_pack(
        "[{s:s, s:s}, {s:s, s:s}, {s:s, s:s, s:[{s:s, s:s, s:{s:s, s:{s:s}}}]}, {s:s, s:s, s:s}, {s:s, s:s, s:[{s:s, s:{s:s, s:{}}}]}, {s:s, s:s}]",
        "role", "system", "content", "You write SQL.", "role", "user", "content", "How many?",
        "role", "assistant", "content", "", "tool_calls", "id", "call_7", "type", "function", "function", "name",
        "run_sql", "arguments", "sql", "SELECT count(*) FROM t",
        "role", "tool", "tool_call_id", "call_7", "content", "count\n3",
        /* a call without an id, answered by a tool message without tool_call_id */
        "role", "assistant", "content", "checking", "tool_calls", "type", "function", "function", "name",
        "describe_table", "arguments",
        "role", "tool", "content", "t(a INTEGER)");
    json_t *tools = sql_tools();
    REQUIRE(messages && tools);
    const enum engine_tool_choice choices[4] = {ENGINE_TOOL_AUTO, ENGINE_TOOL_NONE, ENGINE_TOOL_REQUIRED, ENGINE_TOOL_NAMED};
    for (int i = 0; llm && i < 4; i++) {
        agent_llm_request req = {.messages = messages, .tools = tools, .tool_choice = choices[i], .tool_name = "run_sql",
                                 .max_tokens = 64, .temperature = 0.5f, .seed = 1234};
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_MSG(agent_llm_chat(llm, &req, &reply, err) == DK_OK, "chat %d: %s", i, err);
        agent_llm_reply_free(&reply);
    }
    json_t *all = standin_requests(s);
    CHECK_EQ_INT(json_array_size(all), 4);
    json_t *body = json_object_get(json_array_get(all, 0), "body");
    CHECK_EQ_INT(json_integer_value(json_object_get(body, "max_tokens")), 64);
    CHECK_NEAR(json_number_value(json_object_get(body, "temperature")), 0.5, 1e-9);
    CHECK_EQ_INT(json_integer_value(json_object_get(body, "seed")), 1234);
    CHECK(json_equal(json_object_get(body, "tools"), tools));
    json_t *wire = json_object_get(body, "messages");
    REQUIRE(json_array_size(wire) == 6);
    /* the calling assistant turn: content null, arguments a JSON string */
    json_t *asst = json_array_get(wire, 2);
    CHECK(json_is_null(json_object_get(asst, "content")));
    json_t *call = json_array_get(json_object_get(asst, "tool_calls"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(call, "id")), "call_7");
    CHECK_EQ_STR(json_string_value(json_object_get(call, "type")), "function");
    json_t *args = json_object_get(json_object_get(call, "function"), "arguments");
    REQUIRE(json_is_string(args));
    json_t *parsed = json_loads(json_string_value(args), 0, NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(parsed, "sql")), "SELECT count(*) FROM t");
    json_decref(parsed);
    json_t *tool = json_array_get(wire, 3);
    CHECK_EQ_STR(json_string_value(json_object_get(tool, "role")), "tool");
    CHECK_EQ_STR(json_string_value(json_object_get(tool, "tool_call_id")), "call_7");
    CHECK_EQ_STR(json_string_value(json_object_get(tool, "content")), "count\n3");
    /* content kept when there is some; a made-up id, shared by the call and its answer */
    json_t *asst2 = json_array_get(wire, 4);
    CHECK_EQ_STR(json_string_value(json_object_get(asst2, "content")), "checking");
    json_t *call2 = json_array_get(json_object_get(asst2, "tool_calls"), 0);
    const char *id2 = json_string_value(json_object_get(call2, "id"));
    CHECK(id2 && *id2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(call2, "function"), "arguments")), "{}");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(wire, 5), "tool_call_id")), id2);
    /* the four tool_choice forms */
    CHECK_EQ_STR(json_string_value(json_object_get(body, "tool_choice")), "auto");
    body = json_object_get(json_array_get(all, 1), "body");
    CHECK_EQ_STR(json_string_value(json_object_get(body, "tool_choice")), "none");
    body = json_object_get(json_array_get(all, 2), "body");
    CHECK_EQ_STR(json_string_value(json_object_get(body, "tool_choice")), "required");
    body = json_object_get(json_array_get(all, 3), "body");
    json_t *named = json_object_get(body, "tool_choice");
    CHECK_EQ_STR(json_string_value(json_object_get(named, "type")), "function");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(named, "function"), "name")), "run_sql");
    json_decref(all);
    json_decref(tools);
    json_decref(messages);
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

TEST(agent_llm, request_errors)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"m\": [{\"content\": \"never sent\"}]}");
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    if (llm) {
        json_t *messages = one_user_message("q");
        json_t *tools = sql_tools();
        json_t *not_array = json_object();
        json_t *no_role = json_pack("[{s:s}]", "content", "x");
        agent_llm_reply reply;
        char err[DK_ERRLEN];
        agent_llm_request req = {.messages = not_array};
        CHECK_EQ_INT(agent_llm_chat(llm, &req, &reply, err), DK_ERR_ARG);
        agent_llm_reply_free(&reply);
        req = (agent_llm_request){.messages = no_role};
        CHECK_EQ_INT(agent_llm_chat(llm, &req, &reply, err), DK_ERR_ARG);
        agent_llm_reply_free(&reply);
        req = (agent_llm_request){.messages = messages, .tools = tools, .tool_choice = ENGINE_TOOL_NAMED};
        CHECK_EQ_INT(agent_llm_chat(llm, &req, &reply, err), DK_ERR_ARG); /* no tool_name */
        agent_llm_reply_free(&reply);
        req = (agent_llm_request){.messages = messages, .tool_choice = ENGINE_TOOL_REQUIRED};
        CHECK_EQ_INT(agent_llm_chat(llm, &req, &reply, err), DK_ERR_ARG); /* no tools to require */
        agent_llm_reply_free(&reply);
        CHECK_EQ_INT(standin_n_requests(s, NULL), 0);
        json_decref(messages);
        json_decref(tools);
        json_decref(not_array);
        json_decref(no_role);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

/* ---- the model, the key ---- */

TEST(agent_llm, model_from_list)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"big-model\": [{\"content\": \"one\"}, {\"content\": \"two\"}], \"other\": []}");
    agent_llm *llm = s ? llm_or_fail(s, NULL, NULL) : NULL;
    if (llm) {
        CHECK_EQ_INT(standin_n_model_lists(s), 0); /* nothing connected before the first turn */
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_MSG(chat_simple(llm, "q", &reply, err) == DK_OK, "chat: %s", err);
        CHECK_EQ_STR(reply.content.data, "one");
        agent_llm_reply_free(&reply);
        CHECK_EQ_STR(agent_llm_name(llm), "big-model");
        CHECK_MSG(chat_simple(llm, "q", &reply, err) == DK_OK, "chat: %s", err);
        CHECK_EQ_STR(reply.content.data, "two");
        agent_llm_reply_free(&reply);
        CHECK_EQ_INT(standin_n_model_lists(s), 1); /* asked once */
        CHECK_EQ_INT(standin_n_requests(s, "big-model"), 2);
    }
    agent_llm_free(llm);
    standin_stop(s);

    /* an endpoint that lists no model */
    s = standin_or_fail("{}");
    llm = s ? llm_or_fail(s, NULL, NULL) : NULL;
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_EQ_INT(chat_simple(llm, "q", &reply, err), DK_ERR_FORMAT);
        CHECK_MSG(strstr(err, "no model"), "err: %s", err);
        agent_llm_reply_free(&reply);
        CHECK_EQ_INT(standin_n_requests(s, NULL), 0);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

/* The Authorization header of the stand-in's last request, or NULL (into buf). */
static const char *last_authorization(standin *s, char *buf, size_t n)
{
    json_t *rq = last_request(s);
    const char *v = json_string_value(json_object_get(rq, "authorization"));
    if (v) dk_strlcpy(buf, v, n);
    json_decref(rq);
    return v ? buf : NULL;
}

static void chat_once(standin *s, const char *api_key)
{
    agent_llm *llm = llm_or_fail(s, "m", api_key);
    agent_llm_reply reply;
    char err[DK_ERRLEN] = "";
    if (llm) CHECK_MSG(chat_simple(llm, "q", &reply, err) == DK_OK, "chat: %s", err);
    if (llm) agent_llm_reply_free(&reply);
    agent_llm_free(llm);
}

TEST(agent_llm, api_key)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"m\": [{}, {}, {}, {}, {}]}");
    REQUIRE(s);
    char buf[128];
    chat_once(s, NULL);
    CHECK(last_authorization(s, buf, sizeof buf) == NULL); /* no key: no header */
    setenv("OPENAI_API_KEY", "sk-openai", 1);
    chat_once(s, NULL);
    CHECK_EQ_STR(last_authorization(s, buf, sizeof buf), "Bearer sk-openai");
    setenv("DUCKLING_API_KEY", "sk-duckling", 1); /* before OPENAI_API_KEY */
    chat_once(s, NULL);
    CHECK_EQ_STR(last_authorization(s, buf, sizeof buf), "Bearer sk-duckling");
    chat_once(s, "sk-argument"); /* the argument before both */
    CHECK_EQ_STR(last_authorization(s, buf, sizeof buf), "Bearer sk-argument");
    CHECK_EQ_INT(standin_n_requests(s, "m"), 4);
    /* a key that would start another header line */
    agent_llm *llm = NULL;
    char err[DK_ERRLEN];
    char spec[256];
    snprintf(spec, sizeof spec, "%s#m", standin_url(s));
    CHECK_EQ_INT(agent_llm_openai(&llm, spec, "sk\r\nX-Evil: 1", err), DK_ERR_ARG);
    CHECK(llm == NULL);
    standin_stop(s);
    env_restore(&env);
}

TEST(agent_llm, bad_specs)
{
    env_saved env;
    env_clear(&env);
    static const char *const bad[] = {
        "", "gpt-4o-mini", "ftp://example.com/v1", "http://", "https://", "http:///v1", "http://#m", "http://:8080/v1",
        "http://host:/v1", "http://host:abc/v1", "http://host:99999/v1", "http://host:0/v1", "http://a:1:2/v1",
        "http://[::1/v1", "http://[]:80/v1", "http://host /v1", "http://host/v1?x=1", "http://user:pw@host/v1",
        "127.0.0.1:8080/v1", "HTTP//host/v1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        agent_llm *llm = (agent_llm *)(void *)&env; /* not NULL: agent_llm_openai must reset it */
        char err[DK_ERRLEN] = "";
        int rc = agent_llm_openai(&llm, bad[i], NULL, err);
        CHECK_MSG(rc == DK_ERR_ARG, "'%s': %d (%s)", bad[i], rc, err);
        CHECK_MSG(llm == NULL, "'%s': no llm on error", bad[i]);
        if (rc == DK_OK) agent_llm_free(llm);
    }
    agent_llm *llm = NULL;
    char err[DK_ERRLEN];
    CHECK_EQ_INT(agent_llm_openai(&llm, NULL, NULL, err), DK_ERR_ARG);

    static const char *const good[][2] = {
        {"https://api.openai.com/v1#gpt-4o-mini", "gpt-4o-mini"},
        {"http://127.0.0.1:8080/v1/#qwen2.5:7b", "qwen2.5:7b"},
        {"http://[::1]:8080/v1", "http://[::1]:8080/v1"}, /* the URL until /models names it */
        {"http://localhost", "http://localhost"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        llm = NULL;
        int rc = agent_llm_openai(&llm, good[i][0], NULL, err);
        CHECK_MSG(rc == DK_OK, "'%s': %s", good[i][0], err);
        CHECK_EQ_STR(agent_llm_name(llm), good[i][1]);
        CHECK(llm && !agent_llm_is_local(llm));
        agent_llm_free(llm);
    }
    setenv("DUCKLING_REMOTE_TIMEOUT", "soon", 1);
    llm = NULL;
    CHECK_EQ_INT(agent_llm_openai(&llm, "http://127.0.0.1:1/v1#m", NULL, err), DK_ERR_ARG);
    CHECK_MSG(strstr(err, "DUCKLING_REMOTE_TIMEOUT"), "err: %s", err);
    env_restore(&env);
}

/* ---- failures ---- */

TEST(agent_llm, http_errors)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail(
        "{\"m\": [{\"status\": 500, \"error\": \"the GPU caught fire\"},"
        "         {\"status\": 429, \"body\": {\"error\": \"rate limited, slow down\"}},"
        "         {\"status\": 503, \"raw\": \"<html>busy</html>\"},"
        "         {\"status\": 401, \"body\": {\"error\": {\"message\": \"bad key\\nline two\"}}},"
        "         {\"body\": {\"error\": {\"message\": \"quota exceeded\"}}}]}");
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    static const char *const expect[] = {"the GPU caught fire", "rate limited, slow down", "503", "bad key line two",
                                         "quota exceeded"};
    for (size_t i = 0; llm && i < sizeof expect / sizeof expect[0]; i++) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        int rc = chat_simple(llm, "q", &reply, err);
        CHECK_MSG(rc == DK_ERR_IO, "reply %zu: %d (%s)", i, rc, err);
        CHECK_MSG(strstr(err, expect[i]), "reply %zu: '%s' lacks '%s'", i, err, expect[i]);
        CHECK_MSG(strncmp(err, "m at 127.0.0.1:", 15) == 0, "reply %zu: '%s' names no model and host", i, err);
        CHECK(reply.tool_calls == NULL && reply.content.len == 0);
        agent_llm_reply_free(&reply);
    }
    /* the script is used up: the stand-in's own 500 */
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_EQ_INT(chat_simple(llm, "q", &reply, err), DK_ERR_IO);
        CHECK_MSG(strstr(err, "used up"), "err: %s", err);
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    /* a model the endpoint does not know: 404 with its message */
    llm = s ? llm_or_fail(s, "nope", NULL) : NULL;
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_EQ_INT(chat_simple(llm, "q", &reply, err), DK_ERR_IO);
        CHECK_MSG(strstr(err, "model 'nope' not found"), "err: %s", err);
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

TEST(agent_llm, unreachable)
{
    env_saved env;
    env_clear(&env);
    /* a port that was just free: a stand-in's, stopped */
    standin *s = standin_or_fail("{}");
    REQUIRE(s);
    char spec[256];
    snprintf(spec, sizeof spec, "%s#m", standin_url(s));
    standin_stop(s);
    agent_llm *llm = NULL;
    char err[DK_ERRLEN] = "";
    REQUIRE(agent_llm_openai(&llm, spec, NULL, err) == DK_OK);
    agent_llm_reply reply;
    CHECK_EQ_INT(chat_simple(llm, "q", &reply, err), DK_ERR_IO);
    CHECK_MSG(strncmp(err, "could not reach http://127.0.0.1:", 33) == 0, "err: %s", err);
    agent_llm_reply_free(&reply);
    agent_llm_free(llm);
    env_restore(&env);
}

TEST(agent_llm, timeout)
{
    env_saved env;
    env_clear(&env);
    standin *s = standin_or_fail("{\"slow\": [{\"content\": \"late\", \"delay_ms\": 1500}]}");
    setenv("DUCKLING_REMOTE_TIMEOUT", "0.3", 1);
    agent_llm *llm = s ? llm_or_fail(s, "slow", NULL) : NULL;
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        uint64_t t0 = dk_now_ns();
        CHECK_EQ_INT(chat_simple(llm, "q", &reply, err), DK_ERR_IO);
        double s_taken = (double)(dk_now_ns() - t0) / 1e9;
        CHECK_MSG(s_taken < 1.2, "gave up after %.2f s", s_taken);
        CHECK_MSG(strstr(err, "could not reach") && strstr(err, "imed out"), "err: %s", err);
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

/* Every script reply is a hostile or odd body; the expected status for each, in order. */
TEST(agent_llm, hostile_replies)
{
    env_saved env;
    env_clear(&env);
    static const struct {
        const char *reply;
        int rc;
    } cases[] = {
        {"{\"raw\": \"this is not json\"}", DK_ERR_FORMAT},
        {"{\"raw\": \"\"}", DK_ERR_FORMAT},
        {"{\"raw\": \"{\\\"choices\\\": [\"}", DK_ERR_FORMAT},
        {"{\"body\": [1, 2]}", DK_ERR_FORMAT},
        {"{\"body\": \"choices\"}", DK_ERR_FORMAT},
        {"{\"body\": {}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": \"x\"}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": []}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [1]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": \"hi\"}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": {\"content\": 5}}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": {\"content\": [{\"type\": \"image\"}]}}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": {\"tool_calls\": \"x\"}}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": {\"tool_calls\": [5]}}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": {\"tool_calls\": [{\"function\": {\"name\": 3}}]}}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"choices\": [{\"message\": {\"tool_calls\": [{\"function\": \"f\"}]}}]}}", DK_ERR_FORMAT},
        {"{\"body\": {\"error\": 7}}", DK_ERR_FORMAT},
        /* wrong types where a default will do: accepted */
        {"{\"body\": {\"choices\": [{\"message\": {\"content\": null, \"tool_calls\": null}, \"logprobs\": 3}],"
         " \"usage\": \"lots\"}}", DK_OK},
        {"{\"body\": {\"choices\": [{\"message\": {}, \"logprobs\": {\"content\": [{\"logprob\": \"a\"}, 3, "
         "{\"logprob\": -2}, {}]}}], \"usage\": {\"prompt_tokens\": -5, \"completion_tokens\": 1.5}}}", DK_OK},
        {"{\"body\": {\"choices\": [{\"message\": {\"content\": [{\"type\": \"text\", \"text\": \"a\"}, \"b\"],"
         " \"tool_calls\": [{\"id\": 9, \"function\": {\"name\": \"f\", \"arguments\": 12}}]}}]}}", DK_OK},
    };
    size_t n = sizeof cases / sizeof cases[0];
    dk_buf script = {0};
    dk_buf_puts(&script, "{\"m\": [");
    for (size_t i = 0; i < n; i++) dk_buf_printf(&script, "%s%s", i ? ", " : "", cases[i].reply);
    dk_buf_puts(&script, "]}");
    REQUIRE(!script.failed);
    standin *s = standin_or_fail(script.data);
    dk_buf_free(&script);
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    for (size_t i = 0; llm && i < n; i++) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        int rc = chat_simple(llm, "q", &reply, err);
        CHECK_MSG(rc == cases[i].rc, "case %zu (%s): %d, '%s'", i, cases[i].reply, rc, err);
        if (rc == DK_OK) CHECK(json_is_array(reply.tool_calls) && reply.content.data);
        else CHECK(err[0] && reply.tool_calls == NULL);
        if (i == n - 3 && rc == DK_OK) {
            CHECK_EQ_STR(reply.content.data, "");
            CHECK_EQ_INT(reply.prompt_tokens, 0);
        }
        if (i == n - 2 && rc == DK_OK) {
            CHECK_EQ_INT(reply.n_logprobs, 1);
            CHECK_NEAR(reply.logprob_sum, -2, 0);
            CHECK_EQ_INT(reply.prompt_tokens, 0);
            CHECK_EQ_INT(reply.completion_tokens, 0);
        }
        if (i == n - 1 && rc == DK_OK) {
            CHECK_EQ_STR(reply.content.data, "ab");
            json_t *call = json_array_get(reply.tool_calls, 0);
            CHECK_EQ_STR(json_string_value(json_object_get(call, "id")), "call_0");
            CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(call, "function"), "arguments")), "12");
        }
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

TEST(agent_llm, huge_reply)
{
    env_saved env;
    env_clear(&env);
    size_t n_content = (size_t)17 << 20;
    dk_buf script = {0};
    dk_buf_puts(&script, "{\"m\": [{\"content\": \"");
    REQUIRE(dk_buf_reserve(&script, n_content + 64) == 0);
    memset(script.data + script.len, 'a', n_content);
    script.len += n_content;
    dk_buf_puts(&script, "\"}, {\"content\": \"small again\"}]}");
    REQUIRE(!script.failed);
    standin *s = standin_or_fail(script.data);
    dk_buf_free(&script);
    agent_llm *llm = s ? llm_or_fail(s, "m", NULL) : NULL;
    if (llm) {
        agent_llm_reply reply;
        char err[DK_ERRLEN] = "";
        CHECK_EQ_INT(chat_simple(llm, "q", &reply, err), DK_ERR_FORMAT);
        CHECK_MSG(strstr(err, "larger than 16 MiB"), "err: %s", err);
        agent_llm_reply_free(&reply);
        CHECK_MSG(chat_simple(llm, "q", &reply, err) == DK_OK, "chat: %s", err); /* the next turn is fine */
        CHECK_EQ_STR(reply.content.data, "small again");
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    standin_stop(s);
    env_restore(&env);
}

/* ---- the stand-in itself, from several threads at once ---- */

#define N_CLIENTS 4
#define N_TURNS 5

typedef struct client_run {
    standin *s;
    char contents[N_TURNS][16];
    int n_ok;
} client_run;

static void *client_main(void *arg)
{
    client_run *c = arg;
    agent_llm *llm = NULL;
    char spec[256], err[DK_ERRLEN];
    snprintf(spec, sizeof spec, "%s#m", standin_url(c->s));
    if (agent_llm_openai(&llm, spec, NULL, err) != DK_OK) return NULL;
    for (int i = 0; i < N_TURNS; i++) {
        agent_llm_reply reply;
        if (chat_simple(llm, "q", &reply, err) == DK_OK) {
            dk_strlcpy(c->contents[i], reply.content.data, sizeof c->contents[i]);
            c->n_ok++;
        }
        agent_llm_reply_free(&reply);
    }
    agent_llm_free(llm);
    return NULL;
}

TEST(agent_llm, standin_concurrent)
{
    env_saved env;
    env_clear(&env);
    dk_buf script = {0};
    dk_buf_puts(&script, "{\"m\": [");
    for (int i = 0; i < N_CLIENTS * N_TURNS; i++) dk_buf_printf(&script, "%s{\"content\": \"r%d\"}", i ? ", " : "", i);
    dk_buf_puts(&script, "]}");
    standin *s = script.failed ? NULL : standin_or_fail(script.data);
    dk_buf_free(&script);
    REQUIRE(s);
    client_run runs[N_CLIENTS];
    pthread_t threads[N_CLIENTS];
    memset(runs, 0, sizeof runs);
    for (int i = 0; i < N_CLIENTS; i++) {
        runs[i].s = s;
        CHECK(pthread_create(&threads[i], NULL, client_main, &runs[i]) == 0);
    }
    for (int i = 0; i < N_CLIENTS; i++) pthread_join(threads[i], NULL);
    /* every reply went to exactly one request */
    bool seen[N_CLIENTS * N_TURNS] = {false};
    for (int i = 0; i < N_CLIENTS; i++) {
        CHECK_EQ_INT(runs[i].n_ok, N_TURNS);
        for (int t = 0; t < runs[i].n_ok; t++) {
            int k = atoi(runs[i].contents[t] + 1);
            CHECK_MSG(k >= 0 && k < N_CLIENTS * N_TURNS && !seen[k], "reply '%s' twice or unknown", runs[i].contents[t]);
            if (k >= 0 && k < N_CLIENTS * N_TURNS) seen[k] = true;
        }
    }
    CHECK_EQ_INT(standin_n_requests(s, "m"), N_CLIENTS * N_TURNS);
    standin_stop(s);
    env_restore(&env);
}
