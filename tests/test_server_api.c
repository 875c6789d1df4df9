/*
 * test_server_api.c: the generation and embedding endpoints of `duckling serve` (suite
 * `server_api`). First the request parsers of src/server/request.c as pure functions
 * (keep_alive durations, options types and layering, messages of both APIs, tools,
 * tool_choice, response_format), then, in-process, a server on a free port with a temporary
 * models directory, spoken to over HTTP with libcurl: /api/generate, /api/chat,
 * /v1/completions and /v1/chat/completions streamed and not on the kit's stories260K (greedy:
 * the same text over every API and as engine_generate), JSON format, logprobs, tool calls on a
 * tiny model with the Qwen template, embeddings of the kit's bert (float and base64), and bad
 * requests, after which the server still serves.
 */
#include "kit_vocab.h"
#include "test.h"
#include "test_serve.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "server/srv_internal.h"

/* ---- parsers ---- */

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v) test_fail_at(__FILE__, __LINE__, "bad test JSON %s: %s", text, je.text);
    return v;
}

static int keep_alive_of(const char *json, int64_t *ns, char *err)
{
    json_t *v = parse(json);
    int rc = srv_parse_keep_alive(v, ns, err);
    json_decref(v);
    return rc;
}

TEST(server_api, keep_alive_durations)
{
    static const struct { const char *json; int64_t ns; } good[] = {
        {"\"5m\"", 300000000000LL},   {"\"1h30m\"", 5400000000000LL}, {"\"10s\"", 10000000000LL},
        {"\"1.5h\"", 5400000000000LL}, {"\"300ms\"", 300000000LL},    {"\"0\"", 0},
        {"\"-1\"", -1},               {"\"-5m\"", -1},                {"300", 300000000000LL},
        {"0", 0},                     {"-1", -1},                     {"2.5", 2500000000LL},
        {"\"45\"", 45000000000LL},    {"\"1h2m3s\"", 3723000000000LL},
    };
    char err[DK_ERRLEN];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t ns = 12345;
        int rc = keep_alive_of(good[i].json, &ns, err);
        CHECK_MSG(rc == DK_OK, "%s: %s", good[i].json, err);
        CHECK_MSG(ns == good[i].ns, "%s: %lld != %lld", good[i].json, (long long)ns, (long long)good[i].ns);
    }
    int64_t ns;
    CHECK(srv_parse_keep_alive(NULL, &ns, err) == DK_OK && ns == SRV_KEEP_ALIVE_DEFAULT);
    CHECK(keep_alive_of("null", &ns, err) == DK_OK && ns == SRV_KEEP_ALIVE_DEFAULT);
    static const char *const bad[] = {"\"5x\"", "\"\"", "\"m\"", "\"1e3s\"", "\"5m3\"", "\"abc\"", "true", "[1]",
                                      "{}", "\"1h 30m\"", "\"99999999999h\"", "1e300", "\"inf\"", "\"-\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_MSG(keep_alive_of(bad[i], &ns, err) == DK_ERR_ARG, "%s accepted", bad[i]);
        CHECK_MSG(strstr(err, "keep_alive") != NULL, "%s: message \"%s\" does not name the field", bad[i], err);
    }
}

TEST(server_api, options_types_and_layering)
{
    char err[DK_ERRLEN];
    srv_gen_options o;
    json_t *opts = parse("{\"temperature\":0,\"top_k\":5,\"top_p\":0.5,\"min_p\":0.1,\"seed\":42,\"num_predict\":7,"
                         "\"stop\":[\"a\",\"bc\"],\"num_ctx\":512,\"num_thread\":2,\"repeat_penalty\":1.2,"
                         "\"repeat_last_n\":32,\"presence_penalty\":0.5,\"frequency_penalty\":0.25,"
                         "\"mirostat\":0,\"unknown_key\":\"ignored\",\"typical_p\":1.0}");
    REQUIRE(opts);
    REQUIRE_MSG(srv_options_layered(NULL, opts, &o, err) == DK_OK, "%s", err);
    CHECK_NEAR(o.sampling.temperature, 0, 0);
    CHECK_EQ_INT(o.sampling.top_k, 5);
    CHECK_NEAR(o.sampling.top_p, 0.5, 1e-6);
    CHECK_NEAR(o.sampling.min_p, 0.1, 1e-6);
    CHECK_EQ_INT(o.sampling.seed, 42);
    CHECK_EQ_INT(o.num_predict, 7);
    CHECK_EQ_INT(o.n_stops, 2);
    if (o.n_stops == 2) {
        CHECK_EQ_STR(o.stops[0], "a");
        CHECK_EQ_STR(o.stops[1], "bc");
    }
    CHECK_EQ_INT(o.num_ctx, 512);
    CHECK_EQ_INT(o.num_thread, 2);
    CHECK_NEAR(o.sampling.repeat_penalty, 1.2, 1e-6);
    CHECK_EQ_INT(o.sampling.repeat_last_n, 32);
    CHECK_NEAR(o.sampling.presence_penalty, 0.5, 1e-6);
    CHECK_NEAR(o.sampling.frequency_penalty, 0.25, 1e-6);

    /* the Modelfile's params are defaults under the request's options */
    json_t *params = parse("{\"temperature\":0.3,\"stop\":[\"<end>\"],\"top_k\":9}");
    json_t *req = parse("{\"top_k\":3}");
    REQUIRE_MSG(srv_options_layered(params, req, &o, err) == DK_OK, "%s", err);
    CHECK_NEAR(o.sampling.temperature, 0.3, 1e-6);
    CHECK_EQ_INT(o.sampling.top_k, 3);
    CHECK(o.n_stops == 1 && strcmp(o.stops[0], "<end>") == 0);
    json_decref(req);
    req = parse("{\"stop\":[\"x\"]}");
    REQUIRE(srv_options_layered(params, req, &o, err) == DK_OK);
    CHECK(o.n_stops == 1 && strcmp(o.stops[0], "x") == 0); /* replaces, does not add */
    json_decref(req);
    json_decref(params);
    json_decref(opts);

    /* defaults: unlimited, a random seed per request */
    srv_gen_options a, b;
    srv_gen_options_default(&a);
    srv_gen_options_default(&b);
    CHECK_EQ_INT(a.num_predict, -1);
    CHECK(a.sampling.seed != b.sampling.seed);

    static const struct { const char *json, *field; } bad[] = {
        {"{\"temperature\":\"hot\"}", "temperature"}, {"{\"top_k\":1.5}", "top_k"},
        {"{\"seed\":\"1\"}", "seed"},                 {"{\"stop\":[1]}", "stop"},
        {"{\"stop\":5}", "stop"},                     {"{\"num_predict\":true}", "num_predict"},
        {"{\"num_ctx\":-4}", "num_ctx"},              {"{\"top_p\":[0.5]}", "top_p"},
        {"[1]", "options"},                           {"\"x\"", "options"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = parse(bad[i].json);
        err[0] = 0;
        CHECK_MSG(srv_options_layered(NULL, v, &o, err) == DK_ERR_ARG, "%s accepted", bad[i].json);
        CHECK_MSG(strstr(err, bad[i].field) != NULL, "%s: \"%s\" does not name %s", bad[i].json, err, bad[i].field);
        json_decref(v);
    }
    /* integral reals are integers; seed -1 is random */
    json_t *v = parse("{\"top_k\":4.0,\"seed\":-1}");
    CHECK(srv_options_layered(NULL, v, &o, err) == DK_OK && o.sampling.top_k == 4);
    json_decref(v);
}

TEST(server_api, ollama_messages_normalised)
{
    char err[DK_ERRLEN];
    json_t *in = parse("[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"q\"},"
                       "{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"hmm\",\"tool_calls\":"
                       "[{\"function\":{\"name\":\"get\",\"arguments\":{\"city\":\"Paris\"}}}]},"
                       "{\"role\":\"tool\",\"tool_name\":\"get\",\"content\":\"18C\"},{\"role\":\"user\"}]");
    json_t *out = NULL;
    REQUIRE_MSG(srv_ollama_messages(in, &out, err) == DK_OK, "%s", err);
    REQUIRE(json_array_size(out) == 5);
    json_t *a = json_array_get(out, 2);
    CHECK_EQ_STR(json_string_value(json_object_get(a, "reasoning_content")), "hmm");
    json_t *call = json_array_get(json_object_get(a, "tool_calls"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(call, "type")), "function");
    CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(json_object_get(call, "function"), "arguments"), "city")), "Paris");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(out, 3), "name")), "get");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(out, 4), "content")), ""); /* missing content: "" */
    json_decref(out);
    json_decref(in);

    static const struct { const char *json, *needle; } bad[] = {
        {"{}", "messages must be an array"},
        {"[1]", "messages[0] must be an object"},
        {"[{\"content\":\"x\"}]", "messages[0].role"},
        {"[{\"role\":\"robot\",\"content\":\"x\"}]", "robot"},
        {"[{\"role\":\"user\",\"content\":5}]", "messages[0].content"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}]", "messages[0].content"},
        {"[{\"role\":\"user\",\"content\":\"x\",\"images\":[\"aGk=\"]}]", "images"},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":{}}]", "tool_calls must be an array"},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"arguments\":{}}}]}]", "name"},
        {"[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":[1]}}]}]", "arguments"},
        {"[{\"role\":\"user\",\"content\":\"x\",\"thinking\":3}]", "thinking"},
        {"[{\"role\":\"developer\",\"content\":\"x\"}]", "developer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = parse(bad[i].json);
        err[0] = 0;
        out = NULL;
        CHECK_MSG(srv_ollama_messages(v, &out, err) == DK_ERR_ARG, "%s accepted", bad[i].json);
        CHECK_MSG(strstr(err, bad[i].needle) != NULL, "%s: \"%s\" lacks \"%s\"", bad[i].json, err, bad[i].needle);
        CHECK(out == NULL);
        json_decref(v);
    }
}

TEST(server_api, openai_messages_normalised)
{
    char err[DK_ERRLEN];
    json_t *in = parse("[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"be \"},{\"type\":\"text\",\"text\":\"brief\"}]},"
                       "{\"role\":\"user\",\"content\":\"q\",\"name\":\"bob\"},"
                       "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_9\",\"type\":\"function\","
                       "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\": [1, 2]}\"}}]},"
                       "{\"role\":\"tool\",\"tool_call_id\":\"call_9\",\"content\":\"ok\"}]");
    json_t *out = NULL;
    REQUIRE_MSG(srv_openai_messages(in, &out, err) == DK_OK, "%s", err);
    REQUIRE(json_array_size(out) == 4);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(out, 0), "role")), "system");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(out, 0), "content")), "be brief");
    json_t *a = json_array_get(out, 2);
    CHECK_EQ_STR(json_string_value(json_object_get(a, "content")), "");
    json_t *call = json_array_get(json_object_get(a, "tool_calls"), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(call, "id")), "call_9");
    json_t *args = json_object_get(json_object_get(call, "function"), "arguments");
    CHECK(json_is_object(args) && json_array_size(json_object_get(args, "x")) == 2); /* the string parsed */
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(out, 3), "tool_call_id")), "call_9");
    json_decref(out);
    json_decref(in);

    static const struct { const char *json, *needle; } bad[] = {
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]", "image_url"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]", "text"},
        {"[{\"role\":\"user\",\"content\":[\"x\"]}]", "content[0]"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"1\",\"function\":{\"name\":\"f\",\"arguments\":\"{nope\"}}]}]", "arguments"},
        {"[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":3,\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]", "id"},
        {"[{\"role\":\"tool\",\"tool_call_id\":7,\"content\":\"x\"}]", "tool_call_id"},
        {"[{\"role\":\"function\",\"content\":\"x\"}]", "function"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = parse(bad[i].json);
        err[0] = 0;
        out = NULL;
        CHECK_MSG(srv_openai_messages(v, &out, err) == DK_ERR_ARG, "%s accepted", bad[i].json);
        CHECK_MSG(strstr(err, bad[i].needle) != NULL, "%s: \"%s\" lacks \"%s\"", bad[i].json, err, bad[i].needle);
        json_decref(v);
    }
}

TEST(server_api, conversation_with_model_record)
{
    char err[DK_ERRLEN];
    store_model info = {.system = "You are a duck."};
    info.messages = parse("[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"quack\"}]");
    json_t *msgs = parse("[{\"role\":\"user\",\"content\":\"q\"}]");
    json_t *conv = NULL;
    REQUIRE(srv_conversation_with_model(&info, msgs, &conv, err) == DK_OK);
    REQUIRE(json_array_size(conv) == 4);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(conv, 0), "content")), "You are a duck.");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(conv, 2), "content")), "quack");
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(conv, 3), "content")), "q");
    json_decref(conv);
    json_decref(msgs);
    /* the request's own system message wins */
    msgs = parse("[{\"role\":\"system\",\"content\":\"mine\"},{\"role\":\"user\",\"content\":\"q\"}]");
    REQUIRE(srv_conversation_with_model(&info, msgs, &conv, err) == DK_OK);
    CHECK_EQ_INT(json_array_size(conv), 4);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(conv, 0), "role")), "user");
    json_decref(conv);
    json_decref(msgs);
    json_decref(info.messages);
}

TEST(server_api, tools_and_tool_choice)
{
    char err[DK_ERRLEN];
    enum engine_tool_choice c;
    const char *name;
    static const struct { const char *json; enum engine_tool_choice choice; const char *name; } good[] = {
        {"null", ENGINE_TOOL_AUTO, NULL},
        {"\"auto\"", ENGINE_TOOL_AUTO, NULL},
        {"\"none\"", ENGINE_TOOL_NONE, NULL},
        {"\"required\"", ENGINE_TOOL_REQUIRED, NULL},
        {"{\"type\":\"function\",\"function\":{\"name\":\"get\"}}", ENGINE_TOOL_NAMED, "get"},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        json_t *v = parse(good[i].json);
        CHECK_MSG(srv_parse_tool_choice(v, &c, &name, err) == DK_OK, "%s: %s", good[i].json, err);
        CHECK_EQ_INT(c, good[i].choice);
        if (good[i].name) CHECK_EQ_STR(name, good[i].name);
        else CHECK(name == NULL);
        json_decref(v);
    }
    static const char *const bad[] = {"\"sometimes\"", "5", "{\"type\":\"function\"}", "{\"type\":\"x\",\"function\":{\"name\":\"f\"}}",
                                      "{\"type\":\"function\",\"function\":{\"name\":\"\"}}", "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *v = parse(bad[i]);
        err[0] = 0;
        CHECK_MSG(srv_parse_tool_choice(v, &c, &name, err) == DK_ERR_ARG, "%s accepted", bad[i]);
        CHECK_MSG(strstr(err, "tool_choice") != NULL, "%s: %s", bad[i], err);
        json_decref(v);
    }
    /* tools: normalised to {"type":"function","function":{...}}; a named choice must exist */
    json_t *tv = parse("[{\"type\":\"function\",\"function\":{\"name\":\"get\",\"parameters\":{\"type\":\"object\"}}},"
                       "{\"function\":{\"name\":\"put\"}}]");
    json_t *tools = NULL;
    REQUIRE_MSG(srv_parse_tools(tv, &tools, err) == DK_OK, "%s", err);
    CHECK_EQ_INT(json_array_size(tools), 2);
    CHECK_EQ_STR(json_string_value(json_object_get(json_array_get(tools, 1), "type")), "function");
    CHECK(srv_check_tool_choice(tools, ENGINE_TOOL_NAMED, "put", err) == DK_OK);
    CHECK(srv_check_tool_choice(tools, ENGINE_TOOL_NAMED, "del", err) == DK_ERR_ARG && strstr(err, "del"));
    CHECK(srv_check_tool_choice(NULL, ENGINE_TOOL_REQUIRED, NULL, err) == DK_ERR_ARG);
    CHECK(srv_check_tool_choice(NULL, ENGINE_TOOL_AUTO, NULL, err) == DK_OK);
    json_decref(tools);
    json_decref(tv);
    static const char *const bad_tools[] = {"{}", "[1]", "[{\"type\":\"function\"}]", "[{\"function\":{\"name\":3}}]",
                                            "[{\"type\":\"code\",\"function\":{\"name\":\"f\"}}]",
                                            "[{\"function\":{\"name\":\"f\",\"parameters\":[]}}]"};
    for (size_t i = 0; i < sizeof bad_tools / sizeof bad_tools[0]; i++) {
        json_t *v = parse(bad_tools[i]);
        tools = NULL;
        CHECK_MSG(srv_parse_tools(v, &tools, err) == DK_ERR_ARG && strstr(err, "tools"), "%s: %s", bad_tools[i], err);
        json_decref(v);
    }
    json_t *empty = parse("[]");
    CHECK(srv_parse_tools(empty, &tools, err) == DK_OK && tools == NULL);
    json_decref(empty);
}

TEST(server_api, response_format_and_think)
{
    char err[DK_ERRLEN];
    json_t *f = NULL, *v;
    v = parse("{\"type\":\"text\"}");
    CHECK(srv_openai_response_format(v, &f, err) == DK_OK && f == NULL);
    json_decref(v);
    v = parse("{\"type\":\"json_object\"}");
    CHECK(srv_openai_response_format(v, &f, err) == DK_OK && json_is_string(f) && strcmp(json_string_value(f), "json") == 0);
    json_decref(f);
    json_decref(v);
    v = parse("{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\",\"strict\":true,\"schema\":{\"type\":\"object\",\"required\":[\"a\"]}}}");
    CHECK(srv_openai_response_format(v, &f, err) == DK_OK && json_is_object(f) && json_object_get(f, "required"));
    json_decref(f);
    json_decref(v);
    static const char *const bad[] = {"\"json\"", "{}", "{\"type\":\"xml\"}", "{\"type\":\"json_schema\"}",
                                      "{\"type\":\"json_schema\",\"json_schema\":{\"schema\":[]}}",
                                      "{\"type\":\"json_schema\",\"json_schema\":{\"strict\":\"yes\"}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = parse(bad[i]);
        f = NULL;
        CHECK_MSG(srv_openai_response_format(v, &f, err) == DK_ERR_ARG && strstr(err, "response_format"), "%s: %s", bad[i], err);
        CHECK(f == NULL);
        json_decref(v);
    }
    /* Ollama's format */
    v = parse("\"json\"");
    CHECK(srv_parse_format(v, &f, err) == DK_OK && f);
    json_decref(f);
    json_decref(v);
    v = parse("\"yaml\"");
    CHECK(srv_parse_format(v, &f, err) == DK_ERR_ARG && strstr(err, "format"));
    json_decref(v);
    v = parse("7");
    CHECK(srv_parse_format(v, &f, err) == DK_ERR_ARG);
    json_decref(v);
    /* think */
    static const struct { const char *json; int think; } th[] = {{"true", 1}, {"false", 0}, {"\"high\"", 1}, {"\"low\"", 1}, {"null", -1}};
    for (size_t i = 0; i < sizeof th / sizeof th[0]; i++) {
        int t = 9;
        v = parse(th[i].json);
        CHECK(srv_parse_think(v, &t, err) == DK_OK && t == th[i].think);
        json_decref(v);
    }
    int t;
    v = parse("\"extreme\"");
    CHECK(srv_parse_think(v, &t, err) == DK_ERR_ARG && strstr(err, "think"));
    json_decref(v);
}

TEST(server_api, openai_sampling_fields)
{
    char err[DK_ERRLEN];
    json_t *req = parse("{\"temperature\":0,\"top_p\":0.9,\"seed\":11,\"max_tokens\":5,\"stop\":\"END\","
                        "\"presence_penalty\":0.5,\"frequency_penalty\":0.1,\"n\":1,\"user\":\"u\"}");
    json_t *opts = NULL;
    REQUIRE_MSG(srv_openai_options(req, -1, &opts, err) == DK_OK, "%s", err);
    srv_gen_options o;
    REQUIRE_MSG(srv_options_layered(NULL, opts, &o, err) == DK_OK, "%s", err);
    CHECK_NEAR(o.sampling.temperature, 0, 0);
    CHECK_EQ_INT(o.sampling.seed, 11);
    CHECK_EQ_INT(o.num_predict, 5);
    CHECK(o.n_stops == 1 && strcmp(o.stops[0], "END") == 0);
    CHECK_NEAR(o.sampling.presence_penalty, 0.5, 1e-6);
    json_decref(opts);
    json_decref(req);
    /* completions default to 16 tokens; max_completion_tokens is max_tokens */
    req = parse("{}");
    REQUIRE(srv_openai_options(req, 16, &opts, err) == DK_OK);
    CHECK_EQ_INT(json_integer_value(json_object_get(opts, "num_predict")), 16);
    json_decref(opts);
    json_decref(req);
    req = parse("{\"max_completion_tokens\":3}");
    REQUIRE(srv_openai_options(req, 16, &opts, err) == DK_OK);
    CHECK_EQ_INT(json_integer_value(json_object_get(opts, "num_predict")), 3);
    json_decref(opts);
    json_decref(req);
    static const struct { const char *json, *needle; } bad[] = {
        {"{\"n\":2}", "n"}, {"{\"temperature\":\"0\"}", "temperature"}, {"{\"stop\":[1]}", "stop"},
        {"{\"max_tokens\":1.5}", "max_tokens"}, {"{\"seed\":true}", "seed"}, {"{\"user\":1}", "user"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        req = parse(bad[i].json);
        opts = NULL;
        CHECK_MSG(srv_openai_options(req, -1, &opts, err) == DK_ERR_ARG && strstr(err, bad[i].needle), "%s: %s", bad[i].json, err);
        CHECK(opts == NULL);
        json_decref(req);
    }
    int think;
    req = parse("{\"reasoning_effort\":\"medium\"}");
    CHECK(srv_openai_reasoning_effort(req, &think, err) == DK_OK && think == 1);
    json_decref(req);
    req = parse("{\"reasoning_effort\":\"max\"}");
    CHECK(srv_openai_reasoning_effort(req, &think, err) == DK_ERR_ARG);
    json_decref(req);
}

TEST(server_api, body_and_model)
{
    char err[DK_ERRLEN];
    json_t *b = NULL;
    CHECK(srv_parse_body("{\"model\":", 9, &b, err) == DK_ERR_ARG && strstr(err, "invalid JSON") && !b);
    CHECK(srv_parse_body("[1]", 3, &b, err) == DK_ERR_ARG && !b);
    CHECK(srv_parse_body("", 0, &b, err) == DK_ERR_ARG);
    REQUIRE(srv_parse_body("{\"model\":\"\"}", 12, &b, err) == DK_OK);
    const char *m;
    CHECK(srv_parse_model(b, &m, err) == DK_ERR_ARG && strcmp(err, "model is required") == 0);
    json_decref(b);
    REQUIRE(srv_parse_body("{\"model\":3}", 11, &b, err) == DK_OK);
    CHECK(srv_parse_model(b, &m, err) == DK_ERR_ARG && strstr(err, "model must be a string"));
    json_decref(b);
}

TEST(server_api, base64_floats)
{
    const float v[3] = {1.0f, -2.5f, 0.15625f};
    dk_buf b = {0};
    REQUIRE(srv_base64_floats(v, 3, &b) == 0);
    /* 00 00 80 3f | 00 00 20 c0 | 00 00 20 3e */
    CHECK_EQ_STR(b.data, "AACAPwAAIMAAACA+");
    dk_buf_free(&b);
    REQUIRE(srv_base64_floats(v, 1, &b) == 0);
    CHECK_EQ_STR(b.data, "AACAPw==");
    dk_buf_free(&b);
}

/* ---- in-process server ---- */

#include "convert/convert.h"
#include "engine/engine.h"

#define STORIES "forward/stories260K/stories260K.F32.gguf"
#define BERT "forward/bert-tiny/bert-tiny.F32.gguf"

static srv *server_up(void) { return test_server_up("server_api_models"); }

typedef struct http_reply {
    long status;
    dk_buf body;
} http_reply;

static size_t http_on_body(char *p, size_t size, size_t n, void *user)
{
    dk_buf_append(user, p, size * n);
    return size * n;
}

/* POSTs body (a string) to path; the reply's status and whole body. */
static int http_post(const srv *s, const char *path, const char *body, http_reply *r)
{
    memset(r, 0, sizeof(*r));
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv_port(s), path);
    CURL *c = curl_easy_init();
    if (!c) return -1;
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    if (!r->body.data) dk_buf_puts(&r->body, "");
    return rc == CURLE_OK ? 0 : -1;
}

/* POSTs a JSON body (stolen) and parses a JSON reply; NULL (and a failure) when the status
 * is not want_status or the body is not JSON. */
static json_t *post_json(const srv *s, const char *path, json_t *body, long want_status, const char *file, int line)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    http_reply r;
    int rc = http_post(s, path, text ? text : "", &r);
    free(text);
    json_t *v = NULL;
    if (rc != 0) test_fail_at(file, line, "POST %s failed", path);
    else if (r.status != want_status) test_fail_at(file, line, "POST %s: status %ld, not %ld: %s", path, r.status, want_status, r.body.data);
    else if (!(v = json_loads(r.body.data, 0, NULL))) test_fail_at(file, line, "POST %s: not JSON: %s", path, r.body.data);
    dk_buf_free(&r.body);
    return v;
}
#define POST_JSON(s, path, body, status) post_json(s, path, body, status, __FILE__, __LINE__)

/* A streamed reply as an array of its objects: NDJSON lines, or SSE "data:" events (up to
 * [DONE], whose presence *done records). */
static json_t *post_stream(const srv *s, const char *path, json_t *body, bool sse, bool *done, const char *file, int line)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    http_reply r;
    int rc = http_post(s, path, text ? text : "", &r);
    free(text);
    json_t *out = json_array();
    if (done) *done = false;
    if (rc != 0 || r.status != 200) {
        test_fail_at(file, line, "POST %s: status %ld: %s", path, r.status, r.body.data);
        dk_buf_free(&r.body);
        return out;
    }
    const char *sep = sse ? "\n\n" : "\n";
    for (char *p = r.body.data; p && *p;) {
        char *end = strstr(p, sep);
        if (end) *end = 0;
        if (sse && strncmp(p, "data: ", 6) != 0) test_fail_at(file, line, "not an SSE event: %s", p);
        const char *payload = sse ? p + 6 : p;
        if (sse && strcmp(payload, "[DONE]") == 0) {
            if (done) *done = true;
        } else if (*payload) {
            json_t *v = json_loads(payload, 0, NULL);
            if (!v) test_fail_at(file, line, "not JSON: %s", payload);
            else json_array_append_new(out, v);
        }
        p = end ? end + strlen(sep) : NULL;
    }
    dk_buf_free(&r.body);
    return out;
}
#define POST_STREAM(s, path, body, sse, done) post_stream(s, path, body, sse, done, __FILE__, __LINE__)

static const char *str_at(const json_t *v, const char *a, const char *b)
{
    const json_t *x = json_object_get(v, a);
    if (b) x = json_object_get(x, b);
    return json_string_value(x);
}

static int collect_text(void *user, const char *text, size_t n)
{
    dk_buf_append(user, text, n);
    return 0;
}

/* The text engine_generate makes of prompt (BOS added, as the raw APIs do), greedily: what
 * the server must reproduce. */
static int engine_greedy(const char *model_path, const char *prompt, long n_predict, dk_buf *out)
{
    char err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    engine_model *m = NULL;
    engine_session *s = NULL;
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    engine_session_params sp;
    engine_session_params_default(&sp);
    engine_generate_params g;
    engine_generate_params_default(&g);
    g.sampling.temperature = 0;
    g.num_predict = n_predict;
    g.on_text = collect_text;
    g.user = out;
    int rc = engine_model_load(&m, model_path, &lp, err);
    if (rc == DK_OK) rc = engine_session_new(&s, m, &sp, err);
    if (rc == DK_OK) rc = engine_tokenize(m, prompt, strlen(prompt), true, true, &tokens, &n_tokens, err);
    if (rc == DK_OK) rc = engine_generate(s, tokens, n_tokens, &g, NULL, err);
    if (rc != DK_OK) test_fail_at(__FILE__, __LINE__, "%s", err);
    if (!out->data) dk_buf_puts(out, "");
    dk_free(tokens);
    engine_session_free(s);
    engine_model_free(m);
    return rc;
}

/* Concatenates a field of every object of a stream (a.b, or a.b inside choices[0] when
 * in_choice). */
static void stream_concat(const json_t *objs, bool in_choice, const char *a, const char *b, dk_buf *out)
{
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o) {
        const json_t *base = in_choice ? json_array_get(json_object_get(o, "choices"), 0) : o;
        const char *t = base ? str_at(base, a, b) : NULL;
        if (t) dk_buf_puts(out, t);
    }
    if (!out->data) dk_buf_puts(out, "");
}

static json_t *last_of(const json_t *arr) { return json_array_get(arr, json_array_size(arr) ? json_array_size(arr) - 1 : 0); }

TEST(server_api, generate_greedy_same_everywhere)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    const char *prompt = "Once upon a time";
    dk_buf want = {0};
    REQUIRE(engine_greedy(path, prompt, 24, &want) == DK_OK);
    REQUIRE(want.len > 0);
    srv *s = server_up();
    REQUIRE(s);

    json_t *r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:b,s:{s:i,s:i}}", "model", path, "prompt", prompt, "raw", 1,
                                                        "stream", 0, "options", "temperature", 0, "num_predict", 24), 200);
    json_t *context = NULL;
    if (r) {
        CHECK_EQ_STR(str_at(r, "response", NULL), want.data);
        CHECK(json_is_true(json_object_get(r, "done")));
        CHECK_EQ_STR(str_at(r, "done_reason", NULL), "length");
        CHECK_EQ_STR(str_at(r, "model", NULL), path);
        CHECK(str_at(r, "created_at", NULL) && strlen(str_at(r, "created_at", NULL)) >= 20);
        CHECK_EQ_INT(json_integer_value(json_object_get(r, "eval_count")), 24);
        json_int_t n_prompt = json_integer_value(json_object_get(r, "prompt_eval_count"));
        CHECK(n_prompt > 0);
        context = json_incref(json_object_get(r, "context"));
        CHECK_EQ_INT(json_array_size(context), n_prompt + 24);
        CHECK(json_integer_value(json_object_get(r, "total_duration")) >= json_integer_value(json_object_get(r, "eval_duration")));
        CHECK(json_integer_value(json_object_get(r, "eval_duration")) > 0);
        json_decref(r);
    }
    CHECK(atomic_load(&s->n_gen_tokens) >= 24 && atomic_load(&s->n_prompt_tokens) > 0);

    /* streamed: the same text in pieces, one final object */
    json_t *objs = POST_STREAM(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:{s:i,s:i}}", "model", path, "prompt", prompt, "raw", 1,
                                                             "options", "temperature", 0, "num_predict", 24), false, NULL);
    dk_buf got = {0};
    stream_concat(objs, false, "response", NULL, &got);
    CHECK_EQ_STR(got.data, want.data);
    CHECK(json_array_size(objs) > 2);
    size_t i;
    json_t *o;
    json_array_foreach(objs, i, o) CHECK(json_is_true(json_object_get(o, "done")) == (i + 1 == json_array_size(objs)));
    CHECK_EQ_STR(str_at(last_of(objs), "done_reason", NULL), "length");
    json_decref(objs);
    dk_buf_free(&got);

    /* OpenAI's completions: a raw prompt too */
    r = POST_JSON(s, "/v1/completions", json_pack("{s:s,s:s,s:i,s:i}", "model", path, "prompt", prompt, "temperature", 0,
                                                  "max_tokens", 24), 200);
    if (r) {
        json_t *c = json_array_get(json_object_get(r, "choices"), 0);
        CHECK_EQ_STR(str_at(c, "text", NULL), want.data);
        CHECK_EQ_STR(str_at(c, "finish_reason", NULL), "length");
        CHECK(json_is_null(json_object_get(c, "logprobs")));
        CHECK_EQ_STR(str_at(r, "object", NULL), "text_completion");
        CHECK(strncmp(str_at(r, "id", NULL) ? str_at(r, "id", NULL) : "", "cmpl-", 5) == 0);
        CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(r, "usage"), "completion_tokens")), 24);
        json_decref(r);
    }
    bool done = false;
    objs = POST_STREAM(s, "/v1/completions", json_pack("{s:s,s:s,s:i,s:i,s:b,s:{s:b}}", "model", path, "prompt", prompt,
                                                       "temperature", 0, "max_tokens", 24, "stream", 1, "stream_options",
                                                       "include_usage", 1), true, &done);
    stream_concat(objs, true, "text", NULL, &got);
    CHECK_EQ_STR(got.data, want.data);
    CHECK(done);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(last_of(objs), "usage"), "completion_tokens")), 24);
    json_decref(objs);
    dk_buf_free(&got);

    /* echo puts the prompt first */
    r = POST_JSON(s, "/v1/completions", json_pack("{s:s,s:[s],s:i,s:i,s:b}", "model", path, "prompt", prompt, "temperature", 0,
                                                  "max_tokens", 24, "echo", 1), 200);
    if (r) {
        dk_buf both = {0};
        dk_buf_printf(&both, "%s%s", prompt, want.data);
        CHECK_EQ_STR(str_at(json_array_get(json_object_get(r, "choices"), 0), "text", NULL), both.data);
        dk_buf_free(&both);
        json_decref(r);
    }

    /* context: the next request continues the exchange */
    if (context) {
        r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:b,s:O,s:{s:i,s:i}}", "model", path, "prompt", " The end.",
                                                    "raw", 1, "stream", 0, "context", context, "options", "temperature", 0,
                                                    "num_predict", 4), 200);
        if (r) CHECK(json_integer_value(json_object_get(r, "prompt_eval_count")) > (json_int_t)json_array_size(context));
        json_decref(r);
    }
    json_decref(context);
    dk_buf_free(&want);
    srv_free(s);
}

TEST(server_api, chat_greedy_same_both_apis)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    const char *user = "Once upon a time";
    json_t *r = POST_JSON(s, "/api/chat", json_pack("{s:s,s:[{s:s,s:s}],s:b,s:{s:i,s:i}}", "model", path, "messages", "role", "user",
                                                    "content", user, "stream", 0, "options", "temperature", 0, "num_predict", 16), 200);
    REQUIRE(r);
    char *want = dk_strdup(str_at(r, "message", "content") ? str_at(r, "message", "content") : "");
    CHECK(strlen(want) > 0);
    CHECK_EQ_STR(str_at(r, "message", "role"), "assistant");
    CHECK_EQ_STR(str_at(r, "done_reason", NULL), "length");
    CHECK_EQ_INT(json_integer_value(json_object_get(r, "eval_count")), 16);
    CHECK(json_object_get(r, "context") == NULL);
    json_decref(r);

    r = POST_JSON(s, "/v1/chat/completions", json_pack("{s:s,s:[{s:s,s:s}],s:i,s:i}", "model", path, "messages", "role", "user",
                                                       "content", user, "temperature", 0, "max_tokens", 16), 200);
    if (r) {
        json_t *c = json_array_get(json_object_get(r, "choices"), 0);
        CHECK_EQ_STR(str_at(c, "message", "content"), want);
        CHECK_EQ_STR(str_at(c, "message", "role"), "assistant");
        CHECK(json_object_get(json_object_get(c, "message"), "tool_calls") == NULL);
        CHECK_EQ_STR(str_at(c, "finish_reason", NULL), "length");
        CHECK_EQ_STR(str_at(r, "object", NULL), "chat.completion");
        CHECK_EQ_STR(str_at(r, "system_fingerprint", NULL), "fp_duckling");
        CHECK(strncmp(str_at(r, "id", NULL) ? str_at(r, "id", NULL) : "", "chatcmpl-", 9) == 0);
        json_t *u = json_object_get(r, "usage");
        CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 16);
        CHECK_EQ_INT(json_integer_value(json_object_get(u, "total_tokens")),
                     json_integer_value(json_object_get(u, "prompt_tokens")) + 16);
        json_decref(r);
    }

    /* both streamed */
    json_t *objs = POST_STREAM(s, "/api/chat", json_pack("{s:s,s:[{s:s,s:s}],s:{s:i,s:i}}", "model", path, "messages", "role", "user",
                                                         "content", user, "options", "temperature", 0, "num_predict", 16), false, NULL);
    dk_buf got = {0};
    stream_concat(objs, false, "message", "content", &got);
    CHECK_EQ_STR(got.data, want);
    CHECK(json_is_true(json_object_get(last_of(objs), "done")));
    CHECK_EQ_INT(json_integer_value(json_object_get(last_of(objs), "eval_count")), 16);
    json_decref(objs);
    dk_buf_free(&got);
    bool done;
    objs = POST_STREAM(s, "/v1/chat/completions", json_pack("{s:s,s:[{s:s,s:s}],s:i,s:i,s:b}", "model", path, "messages", "role",
                                                            "user", "content", user, "temperature", 0, "max_tokens", 16, "stream", 1),
                       true, &done);
    CHECK(done);
    CHECK_EQ_STR(str_at(json_array_get(json_object_get(json_array_get(objs, 0), "choices"), 0), "delta", "role"), "assistant");
    CHECK_EQ_STR(str_at(json_array_get(objs, 0), "object", NULL), "chat.completion.chunk");
    stream_concat(objs, true, "delta", "content", &got);
    CHECK_EQ_STR(got.data, want);
    CHECK_EQ_STR(str_at(json_array_get(json_object_get(last_of(objs), "choices"), 0), "finish_reason", NULL), "length");
    json_decref(objs);
    dk_buf_free(&got);

    /* /api/generate without raw renders the same one-message conversation */
    r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:{s:i,s:i}}", "model", path, "prompt", user, "stream", 0, "options",
                                                "temperature", 0, "num_predict", 16), 200);
    if (r) CHECK_EQ_STR(str_at(r, "response", NULL), want);
    json_decref(r);
    dk_free(want);
    srv_free(s);
}

TEST(server_api, format_json_output_parses)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    int n_finished = 0;
    for (int seed = 1; seed <= 4; seed++) {
        json_t *r = POST_JSON(s, "/api/chat", json_pack("{s:s,s:[{s:s,s:s}],s:s,s:b,s:{s:i,s:i,s:f}}", "model", path, "messages",
                                                        "role", "user", "content", "Tell me a story as JSON", "format", "json",
                                                        "stream", 0, "options", "seed", seed, "num_predict", 96, "temperature", 0.7),
                              200);
        if (!r) continue;
        const char *content = str_at(r, "message", "content");
        if (strcmp(str_at(r, "done_reason", NULL), "stop") == 0) {
            json_t *v = json_loads(content ? content : "", 0, NULL);
            CHECK_MSG(json_is_object(v), "seed %d: not a JSON object: %s", seed, content);
            json_decref(v);
            n_finished++;
        }
        json_decref(r);
    }
    /* a schema through OpenAI's response_format */
    for (int seed = 1; seed <= 4; seed++) {
        json_t *fmt = json_pack("{s:s,s:{s:s,s:b,s:{s:s,s:{s:{s:s,s:i,s:i}},s:[s],s:b}}}", "type", "json_schema", "json_schema", "name",
                                "n", "strict", 1, "schema", "type", "object", "properties", "n", "type", "integer", "minimum", 0,
                                "maximum", 99, "required", "n", "additionalProperties", 0);
        json_t *r = POST_JSON(s, "/v1/chat/completions", json_pack("{s:s,s:[{s:s,s:s}],s:o,s:i,s:i,s:f}", "model", path, "messages",
                                                                   "role", "user", "content", "A number", "response_format", fmt,
                                                                   "seed", seed, "max_tokens", 64, "temperature", 0.7), 200);
        if (!r) continue;
        json_t *c = json_array_get(json_object_get(r, "choices"), 0);
        if (strcmp(str_at(c, "finish_reason", NULL), "stop") == 0) {
            const char *content = str_at(c, "message", "content");
            json_t *v = json_loads(content ? content : "", 0, NULL);
            json_t *n = json_object_get(v, "n");
            CHECK_MSG(json_is_integer(n) && json_integer_value(n) >= 0 && json_integer_value(n) <= 99 && json_object_size(v) == 1,
                      "seed %d: not valid under the schema: %s", seed, content);
            json_decref(v);
            n_finished++;
        }
        json_decref(r);
    }
    CHECK_MSG(n_finished >= 4, "only %d of 8 constrained outputs finished", n_finished);
    srv_free(s);
}

/* Every entry: token a string, logprob <= 0, bytes the token's bytes, n_top alternatives best
 * first with the chosen (greedy) token first. */
static void check_logprob_entries(const json_t *entries, size_t n_top, bool greedy)
{
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e) {
        const char *token = str_at(e, "token", NULL);
        double lp = json_number_value(json_object_get(e, "logprob"));
        CHECK_MSG(token && lp <= 0 && isfinite(lp), "entry %zu: token %s logprob %g", i, token ? token : "(null)", lp);
        json_t *bytes = json_object_get(e, "bytes");
        CHECK(json_is_array(bytes) && (!token || json_array_size(bytes) >= strlen(token) || strstr(token, "\xef\xbf\xbd")));
        json_t *top = json_object_get(e, "top_logprobs");
        CHECK_EQ_INT(json_array_size(top), n_top);
        for (size_t k = 1; k < json_array_size(top); k++)
            CHECK(json_number_value(json_object_get(json_array_get(top, k - 1), "logprob")) >=
                  json_number_value(json_object_get(json_array_get(top, k), "logprob")));
        if (greedy && n_top) CHECK_EQ_STR(str_at(json_array_get(top, 0), "token", NULL), token);
    }
}

TEST(server_api, logprobs_present_and_negative)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    json_t *r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:b,s:b,s:i,s:{s:i,s:i}}", "model", path, "prompt",
                                                        "Once upon a time", "raw", 1, "stream", 0, "logprobs", 1, "top_logprobs", 3,
                                                        "options", "temperature", 0, "num_predict", 12), 200);
    if (r) {
        json_t *lp = json_object_get(r, "logprobs");
        CHECK_EQ_INT(json_array_size(lp), 12);
        check_logprob_entries(lp, 3, true);
        dk_buf joined = {0};
        size_t i;
        json_t *e;
        json_array_foreach(lp, i, e) dk_buf_puts(&joined, str_at(e, "token", NULL));
        CHECK_EQ_STR(joined.data ? joined.data : "", str_at(r, "response", NULL));
        dk_buf_free(&joined);
        json_decref(r);
    }
    /* streamed chat: the entries ride on the chunks */
    json_t *objs = POST_STREAM(s, "/api/chat", json_pack("{s:s,s:[{s:s,s:s}],s:b,s:{s:i,s:i}}", "model", path, "messages", "role",
                                                         "user", "content", "Hi", "logprobs", 1, "options", "temperature", 0,
                                                         "num_predict", 10), false, NULL);
    size_t n_entries = 0, i;
    json_t *o;
    json_array_foreach(objs, i, o) {
        check_logprob_entries(json_object_get(o, "logprobs"), 0, true);
        n_entries += json_array_size(json_object_get(o, "logprobs"));
    }
    CHECK_EQ_INT(n_entries, 10);
    json_decref(objs);

    r = POST_JSON(s, "/v1/chat/completions", json_pack("{s:s,s:[{s:s,s:s}],s:b,s:i,s:i,s:i}", "model", path, "messages", "role",
                                                       "user", "content", "Hi", "logprobs", 1, "top_logprobs", 2, "temperature", 0,
                                                       "max_tokens", 8), 200);
    if (r) {
        json_t *lp = json_object_get(json_object_get(json_array_get(json_object_get(r, "choices"), 0), "logprobs"), "content");
        CHECK_EQ_INT(json_array_size(lp), 8);
        check_logprob_entries(lp, 2, true);
        json_decref(r);
    }
    r = POST_JSON(s, "/v1/completions", json_pack("{s:s,s:s,s:i,s:i,s:i}", "model", path, "prompt", "Once upon a time", "logprobs", 2,
                                                  "temperature", 0, "max_tokens", 8), 200);
    if (r) {
        json_t *c = json_array_get(json_object_get(r, "choices"), 0);
        json_t *lp = json_object_get(c, "logprobs");
        CHECK_EQ_INT(json_array_size(json_object_get(lp, "tokens")), 8);
        CHECK_EQ_INT(json_array_size(json_object_get(lp, "top_logprobs")), 8);
        CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 0)), 0);
        json_t *v;
        json_array_foreach(json_object_get(lp, "token_logprobs"), i, v) CHECK(json_number_value(v) <= 0);
        CHECK_EQ_INT(json_object_size(json_array_get(json_object_get(lp, "top_logprobs"), 0)), 2);
        json_decref(r);
    }
    srv_free(s);
}

/* Decodes base64 of little-endian float32 values, as the openai client does. */
static size_t decode_base64_floats(const char *text, float *out, size_t max)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char bytes[4096];
    size_t n_bytes = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (const char *p = text; *p && *p != '='; p++) {
        const char *at = strchr(alphabet, *p);
        if (!at) return 0;
        acc = (acc << 6) | (uint32_t)(at - alphabet);
        bits += 6;
        if (bits >= 8 && n_bytes < sizeof bytes) {
            bits -= 8;
            bytes[n_bytes++] = (unsigned char)(acc >> bits);
        }
    }
    size_t n = n_bytes / 4 < max ? n_bytes / 4 : max;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)bytes[4 * i] | (uint32_t)bytes[4 * i + 1] << 8 | (uint32_t)bytes[4 * i + 2] << 16 |
                     (uint32_t)bytes[4 * i + 3] << 24;
        memcpy(&out[i], &u, 4);
    }
    return n;
}

static double norm_of(const json_t *v)
{
    double sum = 0;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) sum += json_number_value(x) * json_number_value(x);
    return sqrt(sum);
}

TEST(server_api, embeddings_float_base64_and_errors)
{
    char bert[512], stories[512], err[DK_ERRLEN];
    test_kit_file(bert, sizeof bert, BERT);
    test_kit_file(stories, sizeof stories, STORIES);
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    engine_model *m = NULL;
    REQUIRE_MSG(engine_model_load(&m, bert, &lp, err) == DK_OK, "%s", err);
    size_t n_embd = engine_n_embd(m);
    float *ref = dk_malloc_array(n_embd, sizeof(float));
    REQUIRE(ref && engine_embed(m, "hello world", 11, true, ref, err) == DK_OK);
    engine_model_free(m);
    srv *s = server_up();
    REQUIRE(s);

    json_t *r = POST_JSON(s, "/api/embed", json_pack("{s:s,s:[s,s]}", "model", bert, "input", "hello world", "duck"), 200);
    if (r) {
        json_t *e = json_object_get(r, "embeddings");
        CHECK_EQ_INT(json_array_size(e), 2);
        json_t *first = json_array_get(e, 0);
        CHECK_EQ_INT(json_array_size(first), n_embd);
        for (size_t d = 0; d < n_embd && d < json_array_size(first); d++) CHECK_NEAR(json_number_value(json_array_get(first, d)), ref[d], 1e-6);
        CHECK_NEAR(norm_of(json_array_get(e, 1)), 1.0, 1e-4);
        CHECK(json_integer_value(json_object_get(r, "prompt_eval_count")) > 2);
        CHECK(json_is_integer(json_object_get(r, "total_duration")) && json_is_integer(json_object_get(r, "load_duration")));
        json_decref(r);
    }
    r = POST_JSON(s, "/api/embed", json_pack("{s:s,s:s,s:i}", "model", bert, "input", "hello world", "dimensions", 8), 200);
    if (r) {
        json_t *v = json_array_get(json_object_get(r, "embeddings"), 0);
        CHECK_EQ_INT(json_array_size(v), 8);
        CHECK_NEAR(norm_of(v), 1.0, 1e-4);
        json_decref(r);
    }
    r = POST_JSON(s, "/api/embeddings", json_pack("{s:s,s:s}", "model", bert, "prompt", "hello world"), 200);
    if (r) {
        json_t *v = json_object_get(r, "embedding");
        CHECK_EQ_INT(json_array_size(v), n_embd);
        CHECK_NEAR(json_number_value(json_array_get(v, 0)), ref[0], 1e-6);
        json_decref(r);
    }
    /* OpenAI: float, then base64 that decodes to the same float32 values */
    json_t *floats = POST_JSON(s, "/v1/embeddings", json_pack("{s:s,s:[s,s]}", "model", bert, "input", "hello world", "duck"), 200);
    json_t *b64 = POST_JSON(s, "/v1/embeddings", json_pack("{s:s,s:[s,s],s:s}", "model", bert, "input", "hello world", "duck",
                                                           "encoding_format", "base64"), 200);
    if (floats && b64) {
        CHECK_EQ_STR(str_at(floats, "object", NULL), "list");
        CHECK(json_integer_value(json_object_get(json_object_get(floats, "usage"), "prompt_tokens")) > 2);
        for (size_t k = 0; k < 2; k++) {
            json_t *fd = json_array_get(json_object_get(floats, "data"), k), *bd = json_array_get(json_object_get(b64, "data"), k);
            CHECK_EQ_STR(str_at(fd, "object", NULL), "embedding");
            CHECK_EQ_INT(json_integer_value(json_object_get(bd, "index")), k);
            json_t *fv = json_object_get(fd, "embedding");
            const char *text = str_at(bd, "embedding", NULL);
            REQUIRE(text && json_array_size(fv) == n_embd);
            float decoded[1024];
            REQUIRE(n_embd <= 1024);
            CHECK_EQ_INT(decode_base64_floats(text, decoded, 1024), n_embd);
            for (size_t d = 0; d < n_embd; d++) CHECK(decoded[d] == (float)json_number_value(json_array_get(fv, d)));
            if (k == 0) CHECK_NEAR(decoded[0], ref[0], 1e-6);
        }
    }
    json_decref(floats);
    json_decref(b64);

    /* too long: cut by default, refused with truncate false */
    dk_buf longer = {0};
    for (int i = 0; i < 700; i++) dk_buf_puts(&longer, "duck ");
    r = POST_JSON(s, "/api/embed", json_pack("{s:s,s:s}", "model", bert, "input", longer.data), 200);
    json_decref(r);
    r = POST_JSON(s, "/api/embed", json_pack("{s:s,s:s,s:b}", "model", bert, "input", longer.data, "truncate", 0), 400);
    json_decref(r);
    dk_buf_free(&longer);
    /* the wrong kind of model */
    r = POST_JSON(s, "/api/embed", json_pack("{s:s,s:s}", "model", stories, "input", "x"), 400);
    if (r) CHECK_EQ_STR(str_at(r, "error", NULL), "this model does not support embeddings");
    json_decref(r);
    r = POST_JSON(s, "/v1/embeddings", json_pack("{s:s,s:s}", "model", stories, "input", "x"), 400);
    if (r) CHECK_EQ_STR(str_at(r, "error", "message"), "this model does not support embeddings");
    json_decref(r);
    r = POST_JSON(s, "/api/chat", json_pack("{s:s,s:[{s:s,s:s}]}", "model", bert, "messages", "role", "user", "content", "x"), 400);
    json_decref(r);
    r = POST_JSON(s, "/v1/completions", json_pack("{s:s,s:s}", "model", bert, "prompt", "x"), 400);
    json_decref(r);
    dk_free(ref);
    srv_free(s);
}

/* A tiny qwen3 with the real Qwen vocabulary and chat template (tools in the Hermes style). */
static const char *qwen_tiny_path(void) { return kit_qwen_vocab_model(); }

static const char *const weather_tools =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather of a city\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12}},"
    "\"required\":[\"city\"],\"additionalProperties\":false}}}]";

/* choices[0].message.tool_calls: one or more valid calls to get_weather. */
static void check_openai_calls(const json_t *calls)
{
    CHECK(json_array_size(calls) >= 1);
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c) {
        CHECK_EQ_STR(str_at(c, "type", NULL), "function");
        CHECK(str_at(c, "id", NULL) && strlen(str_at(c, "id", NULL)) > 0);
        CHECK_EQ_STR(str_at(c, "function", "name"), "get_weather");
        const char *args = str_at(c, "function", "arguments");
        json_t *a = json_loads(args ? args : "", 0, NULL);
        CHECK_MSG(json_is_string(json_object_get(a, "city")) && json_object_size(a) == 1, "arguments: %s", args ? args : "(null)");
        json_decref(a);
    }
}

TEST(server_api, tool_calls_with_tool_choice)
{
    const char *path = qwen_tiny_path();
    REQUIRE(path);
    srv *s = server_up();
    REQUIRE(s);
    json_t *tools = json_loads(weather_tools, 0, NULL);
    REQUIRE(tools);
    json_t *named = json_pack("{s:s,s:{s:s}}", "type", "function", "function", "name", "get_weather");
    json_t *choices[2] = {json_string("required"), named};
    for (int k = 0; k < 2; k++) {
        json_t *r = POST_JSON(s, "/v1/chat/completions",
                              json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s}],s:O,s:O,s:s,s:i,s:i}", "model", path, "messages", "role", "system",
                                        "content", "You are helpful.", "role", "user", "content", "Weather in Paris?", "tools", tools,
                                        "tool_choice", choices[k], "reasoning_effort", "none", "temperature", 0, "max_tokens", 200),
                              200);
        if (!r) continue;
        json_t *c = json_array_get(json_object_get(r, "choices"), 0);
        CHECK_EQ_STR(str_at(c, "finish_reason", NULL), "tool_calls");
        check_openai_calls(json_object_get(json_object_get(c, "message"), "tool_calls"));
        json_decref(r);
    }
    /* streamed: the calls come as delta.tool_calls with an index */
    bool done;
    json_t *objs = POST_STREAM(s, "/v1/chat/completions",
                               json_pack("{s:s,s:[{s:s,s:s}],s:O,s:s,s:s,s:i,s:i,s:b}", "model", path, "messages", "role", "user",
                                         "content", "Weather in Paris?", "tools", tools, "tool_choice", "required",
                                         "reasoning_effort", "none", "temperature", 0, "max_tokens", 200, "stream", 1),
                               true, &done);
    CHECK(done);
    size_t n_calls = 0, i;
    json_t *o;
    json_array_foreach(objs, i, o) {
        json_t *calls = json_object_get(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta"), "tool_calls");
        if (!calls) continue;
        check_openai_calls(calls);
        CHECK(json_is_integer(json_object_get(json_array_get(calls, 0), "index")));
        n_calls += json_array_size(calls);
    }
    CHECK(n_calls >= 1);
    CHECK_EQ_STR(str_at(json_array_get(json_object_get(last_of(objs), "choices"), 0), "finish_reason", NULL), "tool_calls");
    json_decref(objs);

    /* Ollama: a conversation with a call and its result renders and answers */
    json_t *r = POST_JSON(s, "/api/chat",
                          json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s,s:[{s:{s:s,s:{s:s}}}]},{s:s,s:s,s:s}],s:O,s:b,s:b,s:{s:i,s:i}}",
                                    "model", path, "messages", "role", "user", "content", "Weather in Paris?", "role", "assistant",
                                    "content", "", "tool_calls", "function", "name", "get_weather", "arguments", "city", "Paris",
                                    "role", "tool", "tool_name", "get_weather", "content", "18 C", "tools", tools, "think", 0,
                                    "stream", 0, "options", "temperature", 0, "num_predict", 8), 200);
    if (r) CHECK_EQ_STR(str_at(r, "message", "role"), "assistant");
    json_decref(r);
    /* a named choice must be one of the tools */
    r = POST_JSON(s, "/v1/chat/completions",
                  json_pack("{s:s,s:[{s:s,s:s}],s:O,s:{s:s,s:{s:s}}}", "model", path, "messages", "role", "user", "content", "x", "tools",
                            tools, "tool_choice", "type", "function", "function", "name", "nope"), 400);
    json_decref(r);
    json_decref(choices[0]);
    json_decref(choices[1]);
    json_decref(tools);
    srv_free(s);
}

TEST(server_api, bad_requests_get_4xx_and_server_keeps_serving)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    dk_buf sub = {0};
    static const struct { const char *path, *body; long status; const char *needle; } cases[] = {
        {"/api/generate", "{bad", 400, "invalid JSON"},
        {"/api/chat", "[1]", 400, "JSON object"},
        {"/v1/chat/completions", "{\"model\":", 400, "\"error\":{\"message\":\"invalid JSON"},
        {"/api/generate", "{\"prompt\":\"x\"}", 400, "model is required"},
        {"/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "model is required"},
        {"/api/embed", "{\"input\":\"x\"}", 400, "model is required"},
        {"/api/generate", "{\"model\":\"nope-model\",\"prompt\":\"x\"}", 404, "model \\\"nope-model\\\" not found, try pulling it first"},
        {"/api/chat", "{\"model\":\"nope-model\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404, "not found"},
        {"/v1/chat/completions", "{\"model\":\"nope-model\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 404,
         "model 'nope-model' not found"},
        {"/v1/embeddings", "{\"model\":\"nope-model\",\"input\":\"x\"}", 404, "not found"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":5}", 400, "prompt must be a string"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "stream must be a boolean"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"options\":{\"temperature\":\"hot\"}}", 400, "options.temperature"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"keep_alive\":\"5 parsecs\"}", 400, "keep_alive"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"images\":[\"aGk=\"]}", 400, "images"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "suffix"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"context\":[\"a\"]}", 400, "context"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"context\":[99999999]}", 400, "context[0]"},
        {"/api/generate", "{\"model\":\"M\",\"prompt\":\"x\",\"format\":\"yaml\"}", 400, "format"},
        {"/api/chat", "{\"model\":\"M\",\"messages\":\"hi\"}", 400, "messages must be an array"},
        {"/api/chat", "{\"model\":\"M\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"images\":[\"aGk=\"]}]}", 400, "images"},
        {"/api/chat", "{\"model\":\"M\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"think\":\"very\"}", 400, "think"},
        {"/v1/chat/completions", "{\"model\":\"M\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400, "n: only 1"},
        {"/v1/chat/completions", "{\"model\":\"M\",\"messages\":[]}", 400, "messages is required"},
        {"/v1/chat/completions", "{\"model\":\"M\",\"tool_choice\":\"sometimes\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         400, "tool_choice"},
        {"/v1/chat/completions", "{\"model\":\"M\",\"response_format\":{\"type\":\"xml\"},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         400, "response_format"},
        {"/v1/chat/completions", "{\"model\":\"M\",\"temperature\":\"0\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400,
         "temperature"},
        {"/v1/chat/completions", "{\"model\":\"M\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
         "image_url"},
        {"/v1/completions", "{\"model\":\"M\",\"prompt\":5}", 400, "prompt must be"},
        {"/v1/completions", "{\"model\":\"M\"}", 400, "prompt is required"},
        {"/v1/embeddings", "{\"model\":\"M\",\"input\":\"x\",\"encoding_format\":\"hex\"}", 400, "encoding_format"},
        {"/v1/embeddings", "{\"model\":\"M\",\"input\":5}", 400, "input"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        dk_buf_clear(&sub);
        for (const char *p = cases[k].body; *p; p++) { /* "M" is the model path */
            if (p[0] == '"' && p[1] == 'M' && p[2] == '"') {
                dk_buf_printf(&sub, "\"%s\"", path);
                p += 2;
            } else {
                dk_buf_putc(&sub, *p);
            }
        }
        http_reply r;
        CHECK(http_post(s, cases[k].path, sub.data, &r) == 0);
        CHECK_MSG(r.status == cases[k].status, "%s %s: status %ld, not %ld (%s)", cases[k].path, cases[k].body, r.status,
                  cases[k].status, r.body.data);
        CHECK_MSG(strstr(r.body.data, cases[k].needle) != NULL, "%s %s: %s lacks %s", cases[k].path, cases[k].body, r.body.data,
                  cases[k].needle);
        json_t *v = json_loads(r.body.data, 0, NULL);
        bool openai = strncmp(cases[k].path, "/v1/", 4) == 0;
        CHECK_MSG(v && (openai ? json_is_object(json_object_get(v, "error")) : json_is_string(json_object_get(v, "error"))),
                  "%s: error shape: %s", cases[k].path, r.body.data);
        json_decref(v);
        dk_buf_free(&r.body);
    }
    dk_buf_free(&sub);
    json_t *r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:{s:i}}", "model", path, "prompt", "Hi", "stream", 0, "options",
                                                        "num_predict", 4), 200);
    if (r) CHECK(json_is_true(json_object_get(r, "done")));
    json_decref(r);
    srv_free(s);
}

TEST(server_api, load_unload_and_context_fit)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    json_t *r = POST_JSON(s, "/api/generate", json_pack("{s:s}", "model", path), 200);
    if (r) {
        CHECK_EQ_STR(str_at(r, "done_reason", NULL), "load");
        CHECK(json_is_true(json_object_get(r, "done")) && str_at(r, "response", NULL) && !*str_at(r, "response", NULL));
    }
    json_decref(r);
    r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:i}", "model", path, "keep_alive", 0), 200);
    if (r) CHECK_EQ_STR(str_at(r, "done_reason", NULL), "unload");
    json_decref(r);
    r = POST_JSON(s, "/api/chat", json_pack("{s:s,s:[],s:s}", "model", path, "messages", "keep_alive", "10m"), 200);
    if (r) CHECK_EQ_STR(str_at(r, "done_reason", NULL), "load");
    json_decref(r);
    r = POST_JSON(s, "/api/generate", json_pack("{s:s}", "model", "no-such-model"), 404);
    json_decref(r);

    /* stories260K holds 128 positions: a long conversation loses its oldest turns and fits */
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", "Tell stories."));
    for (int i = 0; i < 12; i++) {
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", "Once upon a time there was a little girl."));
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "assistant", "content", "She liked to play with her ball outside."));
    }
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "user", "content", "And then?"));
    r = POST_JSON(s, "/api/chat", json_pack("{s:s,s:O,s:b,s:{s:i,s:i}}", "model", path, "messages", msgs, "stream", 0, "options",
                                            "temperature", 0, "num_predict", 4), 200);
    if (r) CHECK(json_integer_value(json_object_get(r, "prompt_eval_count")) < 128);
    json_decref(r);
    r = POST_JSON(s, "/v1/chat/completions", json_pack("{s:s,s:O,s:i}", "model", path, "messages", msgs, "max_tokens", 4), 200);
    json_decref(r);
    json_decref(msgs);
    /* but not when the last user message alone is too long */
    dk_buf big = {0};
    for (int i = 0; i < 200; i++) dk_buf_puts(&big, "little girl ");
    r = POST_JSON(s, "/api/chat", json_pack("{s:s,s:[{s:s,s:s}],s:b}", "model", path, "messages", "role", "user", "content", big.data,
                                            "stream", 0), 400);
    if (r) CHECK(strstr(str_at(r, "error", NULL), "too long") != NULL);
    json_decref(r);
    r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:b,s:b}", "model", path, "prompt", big.data, "raw", 1, "stream", 0), 400);
    json_decref(r);
    dk_buf_free(&big);
    srv_free(s);
}

TEST(server_api, generate_template_override_and_thinking)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    /* a request template that opens a reasoning section: with think on, the output is thinking */
    const char *tmpl = "{% for m in messages %}{{ m.content }}{% endfor %} a time<think>\n";
    json_t *r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:s,s:b,s:b,s:{s:i,s:i}}", "model", path, "prompt", "Once upon",
                                                        "template", tmpl, "think", 1, "stream", 0, "options", "temperature", 0,
                                                        "num_predict", 10), 200);
    char *thought = NULL;
    if (r) {
        CHECK_EQ_STR(str_at(r, "response", NULL), "");
        CHECK(str_at(r, "thinking", NULL) && strlen(str_at(r, "thinking", NULL)) > 0);
        thought = dk_strdup(str_at(r, "thinking", NULL) ? str_at(r, "thinking", NULL) : "");
        json_decref(r);
    }
    /* the same prompt rendered by hand (Jinja drops the one trailing newline) gives the same text */
    dk_buf want = {0};
    REQUIRE(engine_greedy(path, "Once upon a time<think>", 10, &want) == DK_OK);
    if (thought) CHECK_EQ_STR(thought, want.data);
    dk_buf_free(&want);
    /* streamed, the pieces go to "thinking" */
    json_t *objs = POST_STREAM(s, "/api/generate", json_pack("{s:s,s:s,s:s,s:b,s:{s:i,s:i}}", "model", path, "prompt", "Once upon",
                                                             "template", tmpl, "think", 1, "options", "temperature", 0,
                                                             "num_predict", 10), false, NULL);
    dk_buf got = {0}, response = {0};
    stream_concat(objs, false, "thinking", NULL, &got);
    stream_concat(objs, false, "response", NULL, &response);
    if (thought) CHECK_EQ_STR(got.data, thought);
    CHECK_EQ_STR(response.data, "");
    dk_buf_free(&got);
    dk_buf_free(&response);
    json_decref(objs);
    /* think off: no reasoning split, the same text is the response */
    r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:s,s:b,s:b,s:{s:i,s:i}}", "model", path, "prompt", "Once upon", "template",
                                                tmpl, "think", 0, "stream", 0, "options", "temperature", 0, "num_predict", 10), 200);
    if (r && thought) CHECK_EQ_STR(str_at(r, "response", NULL), thought);
    json_decref(r);
    /* a template that is not Jinja (Ollama's Go templates) is refused */
    r = POST_JSON(s, "/api/generate", json_pack("{s:s,s:s,s:s,s:b}", "model", path, "prompt", "x", "template", "{{ .Prompt }}", "stream", 0),
                  400);
    if (r) CHECK(strstr(str_at(r, "error", NULL), "template") != NULL);
    json_decref(r);
    dk_free(thought);
    srv_free(s);
}

/* A model created with a TEMPLATE (a Jinja chat template) renders its chats with it, on both
 * APIs: greedy text equal to the engine's on the prompt that template makes. */
TEST(server_api, stored_template_renders_chat)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    json_t *r = POST_JSON(s, "/api/create",
                          json_pack("{s:s,s:s,s:s,s:b}", "model", "templated", "from", path, "template",
                                    "{% for m in messages %}{{ m.content }}{% endfor %} upon a", "stream", 0),
                          200);
    json_decref(r);
    dk_buf want = {0};
    REQUIRE(engine_greedy(path, "Once upon a", 12, &want) == DK_OK);
    r = POST_JSON(s, "/api/chat",
                  json_pack("{s:s,s:[{s:s,s:s}],s:b,s:{s:i,s:i}}", "model", "templated", "messages", "role", "user", "content",
                            "Once", "stream", 0, "options", "temperature", 0, "num_predict", 12),
                  200);
    if (r) CHECK_EQ_STR(str_at(r, "message", "content"), want.data);
    json_decref(r);
    r = POST_JSON(s, "/v1/chat/completions",
                  json_pack("{s:s,s:[{s:s,s:s}],s:i,s:i}", "model", "templated", "messages", "role", "user", "content", "Once",
                            "temperature", 0, "max_tokens", 12),
                  200);
    if (r) {
        json_t *msg = json_object_get(json_array_get(json_object_get(r, "choices"), 0), "message");
        CHECK_EQ_STR(json_string_value(json_object_get(msg, "content")), want.data);
    }
    json_decref(r);
    dk_buf_free(&want);
    srv_free(s);
}

/* A conversation's next turn lands on the slot that holds its KV prefix: Ollama's
 * prompt_eval_count counts only the new tokens, OpenAI's usage shows the cached ones. */
TEST(server_api, next_turn_reuses_the_kv_prefix)
{
    char path[512];
    test_kit_file(path, sizeof path, STORIES);
    srv *s = server_up();
    REQUIRE(s);
    json_t *r1 = POST_JSON(s, "/api/chat",
                           json_pack("{s:s,s:[{s:s,s:s}],s:b,s:{s:i,s:i}}", "model", path, "messages", "role", "user", "content",
                                     "Once upon a time", "stream", 0, "options", "temperature", 0, "num_predict", 12),
                           200);
    REQUIRE(r1);
    json_int_t first = json_integer_value(json_object_get(r1, "prompt_eval_count"));
    const char *answer = str_at(r1, "message", "content");
    REQUIRE(answer);
    json_t *turn2 = json_pack("[{s:s,s:s},{s:s,s:s},{s:s,s:s}]", "role", "user", "content", "Once upon a time", "role",
                              "assistant", "content", answer, "role", "user", "content", "And then?");
    json_t *r2 = POST_JSON(s, "/api/chat",
                           json_pack("{s:s,s:O,s:b,s:{s:i,s:i}}", "model", path, "messages", turn2, "stream", 0, "options",
                                     "temperature", 0, "num_predict", 4),
                           200);
    json_t *r3 = POST_JSON(s, "/v1/chat/completions",
                           json_pack("{s:s,s:O,s:i,s:i}", "model", path, "messages", turn2, "temperature", 0, "max_tokens", 4), 200);
    if (r2) {
        json_int_t second = json_integer_value(json_object_get(r2, "prompt_eval_count"));
        /* the first turn's prompt is in the cache: only what follows it is evaluated */
        CHECK_MSG(second > 0 && second + first <= 2 * first + 24, "first %lld second %lld", (long long)first, (long long)second);
    }
    if (r3) {
        json_t *usage = json_object_get(r3, "usage");
        json_int_t cached = json_integer_value(json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens"));
        json_int_t total = json_integer_value(json_object_get(usage, "prompt_tokens"));
        CHECK_MSG(cached >= first && cached < total, "cached %lld of %lld (first turn %lld)", (long long)cached, (long long)total,
                  (long long)first);
    }
    json_decref(turn2);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    srv_free(s);
}

/* ---- POST /api/ask: the SQL agent over HTTP ---- */

#include "openai_standin.h"
#include "test_duckdb.h"

static const char *ask_db_path(void)
{
    return test_duckdb_file("server_ask", "CREATE TABLE items (id INTEGER PRIMARY KEY, kind VARCHAR, price DOUBLE);"
                                          "INSERT INTO items VALUES (1, 'tea', 4.5), (2, 'coffee', 7), (3, 'tea', 5.5);");
}

static const char ask_api_script[] =
    "{\"m\": ["
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT kind, avg(price) AS p FROM items GROUP BY kind "
    "ORDER BY kind\"}}]},"
    " {\"content\": \"Coffee costs 7 on average, tea 5.\"},"
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(*) FROM items\"}}]},"
    " {\"content\": \"3 items.\"}]}";

TEST(server_api, ask_runs_the_sql_agent_plain_and_streamed)
{
    const char *db = ask_db_path();
    REQUIRE(db);
    char err[DK_ERRLEN], spec[256];
    standin *st = NULL;
    REQUIRE(standin_start(&st, ask_api_script, err) == DK_OK);
    snprintf(spec, sizeof spec, "%s#m", standin_url(st));
    srv *s = server_up();
    REQUIRE(s);
    json_t *r = POST_JSON(s, "/api/ask", json_pack("{s:s,s:s,s:s}", "model", spec, "db", db, "question", "Average price per kind?"), 200);
    if (r) {
        CHECK_EQ_STR(str_at(r, "answer", NULL), "Coffee costs 7 on average, tea 5.");
        CHECK_EQ_STR(str_at(r, "model", NULL), "m");
        CHECK_EQ_INT(json_array_size(json_object_get(r, "rows")), 2);
        CHECK_NEAR(json_number_value(json_array_get(json_array_get(json_object_get(r, "rows"), 1), 1)), 5.0, 1e-9);
        CHECK_EQ_INT(json_array_size(json_object_get(r, "steps")), 2);
    }
    json_decref(r);
    bool done = false;
    json_t *lines = POST_STREAM(s, "/api/ask", json_pack("{s:s,s:[s],s:s,s:b}", "model", spec, "db", db, "question", "How many?", "stream", 1),
                                false, &done);
    CHECK_EQ_INT(json_array_size(lines), 3);
    CHECK_EQ_STR(str_at(json_array_get(lines, 0), "step", "kind"), "sql");
    CHECK_EQ_STR(str_at(json_array_get(lines, 1), "step", "kind"), "answer");
    const json_t *last = json_array_get(lines, 2);
    CHECK(json_is_true(json_object_get(last, "done")));
    CHECK_EQ_STR(str_at(last, "answer", NULL), "3 items.");
    json_decref(lines);
    srv_free(s);
    standin_stop(st);
}

TEST(server_api, ask_bad_requests_are_4xx_with_a_json_error)
{
    const char *db = ask_db_path();
    REQUIRE(db);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/missing.duckdb", test_tmpdir());
    srv *s = server_up();
    REQUIRE(s);
    struct {
        const char *body;
        long status;
    } cases[8];
    char bufs[8][1024];
    snprintf(bufs[0], 1024, "{\"model\": \"x\", \"db\": \"%s\"}", db);                                      /* no question */
    snprintf(bufs[1], 1024, "{\"model\": \"x\", \"question\": \"q\"}");                                      /* no db */
    snprintf(bufs[2], 1024, "{\"model\": \"x\", \"db\": 42, \"question\": \"q\"}");                          /* db not a path */
    snprintf(bufs[3], 1024, "{\"model\": \"x\", \"db\": \"%s\", \"question\": \"q\"}", missing);            /* no such file */
    snprintf(bufs[4], 1024, "{\"model\": \"no-such-model\", \"db\": \"%s\", \"question\": \"q\"}", db);    /* unknown model */
    snprintf(bufs[5], 1024, "{\"model\": \"x\", \"db\": \"%s\", \"question\": \"q\", \"escalate\": true}", db);
    snprintf(bufs[6], 1024, "{\"model\": \"x\", \"db\": \"%s\", \"question\": \"q\", \"max_repairs\": 99}", db);
    snprintf(bufs[7], 1024, "{\"model\": \"x\", \"db\": [\"%s\", \"%s\"], \"question\": \"q\"}", db, db);
    long want[8] = {400, 400, 400, 404, 404, 400, 400, 400};
    for (int i = 0; i < 8; i++) {
        cases[i].body = bufs[i];
        cases[i].status = want[i];
        http_reply rep;
        REQUIRE(http_post(s, "/api/ask", cases[i].body, &rep) == 0);
        CHECK_MSG(rep.status == cases[i].status, "case %d: %ld: %s", i, rep.status, rep.body.data);
        json_t *v = json_loads(rep.body.data, 0, NULL);
        CHECK_MSG(v && json_is_string(json_object_get(v, "error")), "case %d: %s", i, rep.body.data);
        json_decref(v);
        dk_buf_free(&rep.body);
    }
    srv_free(s);
}

/* ---- POST /api/ask with documents ---- */

#include "docs_corpus.h"

static const char ask_docs_script[] =
    "{\"m\": ["
    " {\"content\": \"Zyxor erupted in 1872 [1], see also [9].\"},"
    " {\"tool_calls\": [{\"name\": \"search_docs\", \"arguments\": {\"query\": \"Brindle tea smoked\"}}]},"
    " {\"tool_calls\": [{\"name\": \"run_sql\", \"arguments\": {\"sql\": \"SELECT count(*) AS n FROM items WHERE kind = 'tea'\"}}]},"
    " {\"content\": \"Brindle tea is smoked over pine [1]; the shop has 2 teas.\"}]}";

TEST(server_api, ask_answers_from_documents_with_sources)
{
    const char *store_path = docs_corpus_store();
    const char *db = ask_db_path();
    REQUIRE(store_path && db);
    char err[DK_ERRLEN], spec[256];
    standin *st = NULL;
    REQUIRE(standin_start(&st, ask_docs_script, err) == DK_OK);
    snprintf(spec, sizeof spec, "%s#m", standin_url(st));
    srv *s = server_up();
    REQUIRE(s);
    /* Documents alone; the store's own embedding model (bert-tiny's path) is leased. */
    json_t *r = POST_JSON(s, "/api/ask",
                          json_pack("{s:s,s:s,s:s,s:{s:i,s:s}}", "model", spec, "docs", store_path, "question",
                                    "When did Mount Zyxor erupt?", "search", "k", 2, "mode", "keyword"),
                          200);
    if (r) {
        CHECK_EQ_STR(str_at(r, "answer", NULL), "Zyxor erupted in 1872 [1], see also [9].");
        const json_t *src = json_object_get(r, "sources");
        CHECK(json_array_size(src) >= 1 && json_array_size(src) <= 2);
        CHECK(strstr(str_at(json_array_get(src, 0), "path", NULL), "volcano.md") != NULL);
        CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(r, "citations"), 0)), 1);
        CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(r, "invalid_citations"), 0)), 9);
    }
    json_decref(r);
    /* Documents and a table: search_docs, then run_sql, then the answer; streamed. */
    bool done = false;
    json_t *lines = POST_STREAM(s, "/api/ask",
                                json_pack("{s:s,s:s,s:s,s:s,s:b}", "model", spec, "docs", store_path, "db", db, "question",
                                          "How is Brindle tea made, and how many teas are there?", "stream", 1),
                                false, &done);
    REQUIRE(json_array_size(lines) >= 3);
    CHECK_EQ_STR(str_at(json_array_get(lines, 0), "step", "kind"), "search");
    CHECK_EQ_STR(str_at(json_array_get(lines, 1), "step", "kind"), "sql");
    const json_t *last = json_array_get(lines, json_array_size(lines) - 1);
    CHECK(json_is_true(json_object_get(last, "done")));
    CHECK(strstr(str_at(last, "answer", NULL) ? str_at(last, "answer", NULL) : "", "pine") != NULL);
    CHECK(strstr(str_at(json_array_get(json_object_get(last, "sources"), 0), "path", NULL), "tea.txt") != NULL);
    CHECK_EQ_INT(json_integer_value(json_array_get(json_array_get(json_object_get(last, "rows"), 0), 0)), 2);
    json_decref(lines);

    /* Bad requests. */
    char missing[512], bufs[6][2048];
    snprintf(missing, sizeof missing, "%s/missing-store.duckdb", test_tmpdir());
    snprintf(bufs[0], sizeof bufs[0], "{\"model\": \"%s\", \"docs\": \"%s\", \"question\": \"q\"}", spec, missing);
    snprintf(bufs[1], sizeof bufs[1], "{\"model\": \"%s\", \"docs\": \"%s\", \"question\": \"q\", \"search\": {\"mode\": \"fuzzy\"}}", spec, store_path);
    snprintf(bufs[2], sizeof bufs[2], "{\"model\": \"%s\", \"docs\": \"%s\", \"question\": \"q\", \"embed_model\": \"no-such-embedder\"}", spec, store_path);
    snprintf(bufs[3], sizeof bufs[3], "{\"model\": \"%s\", \"docs\": \"%s\", \"question\": \"q\", \"escalate_to\": \"%s2\"}", spec, store_path, spec);
    snprintf(bufs[4], sizeof bufs[4], "{\"model\": \"%s\", \"db\": \"%s\", \"question\": \"q\", \"search\": {\"k\": 3}}", spec, db);
    snprintf(bufs[5], sizeof bufs[5], "{\"model\": \"%s\", \"docs\": \"%s\", \"question\": \"q\", \"search\": {\"k\": 0}}", spec, store_path);
    long want[6] = {404, 400, 404, 400, 400, 400};
    for (int i = 0; i < 6; i++) {
        http_reply rep;
        REQUIRE(http_post(s, "/api/ask", bufs[i], &rep) == 0);
        CHECK_MSG(rep.status == want[i], "case %d: %ld: %s", i, rep.status, rep.body.data);
        json_t *v = json_loads(rep.body.data, 0, NULL);
        CHECK_MSG(v && json_is_string(json_object_get(v, "error")), "case %d: %s", i, rep.body.data);
        json_decref(v);
        dk_buf_free(&rep.body);
    }
    srv_free(s);
    standin_stop(st);
}
