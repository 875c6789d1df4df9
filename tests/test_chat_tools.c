/*
 * test_chat_tools.c: the output half of the chat module (suite `chat_tools`): reasoning and
 * tool calls separated from streamed model output, for every family of enum chat_format.
 *
 * The corpus tests/data/chat/toolcalls.json holds, per case, the format, the reasoning flags,
 * the model's output and the expected content, reasoning and calls. Every case is fed whole,
 * byte by byte and in seeded random chunks, and all three must give the expected result (so
 * the parser cannot depend on where chunks are cut); content deltas of well-formed calls must
 * never hold marker text, and every delta of valid UTF-8 output must be valid UTF-8 itself.
 * Also here: chat_format_detect on template excerpts, held-back limits, allocation failures.
 */
#include <stdint.h>
#include <stdlib.h>

#include "base/base.h"
#include "chat/chat.h"
#include "test.h"

#define CORPUS_PATH "tests/data/chat/toolcalls.json"

enum feed_mode { FEED_WHOLE, FEED_BYTES, FEED_RANDOM };

typedef struct run_out {
    dk_buf content, reasoning;
    json_t *calls;     /* deep copy of chat_parser_tool_calls */
    size_t n_counted;  /* sum of n_new_calls over the deltas */
    bool utf8_ok;      /* every delta was valid UTF-8 on its own */
    int rc;
} run_out;

static void run_out_free(run_out *r)
{
    dk_buf_free(&r->content);
    dk_buf_free(&r->reasoning);
    json_decref(r->calls);
    memset(r, 0, sizeof *r);
}

/* Whether s[0..n) is well-formed UTF-8 (no overlongs or surrogates checked: enough here). */
static bool utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || i + len > n) return false;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return false;
        i += len;
    }
    return true;
}

static uint64_t rng_next(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static void check_delta(run_out *r, size_t content_before, size_t reasoning_before)
{
    if (!utf8_valid(r->content.data + content_before, r->content.len - content_before) ||
        !utf8_valid(r->reasoning.data + reasoning_before, r->reasoning.len - reasoning_before))
        r->utf8_ok = false;
}

/* Runs text through a parser in the given chunking; fills r (free with run_out_free). */
static void run_parser(const chat_parse_params *params, const char *text, size_t n, enum feed_mode mode,
                       uint64_t seed, run_out *r)
{
    memset(r, 0, sizeof *r);
    r->utf8_ok = true;
    dk_buf_puts(&r->content, "");
    dk_buf_puts(&r->reasoning, "");
    chat_parser *p;
    char err[DK_ERRLEN];
    r->rc = chat_parser_new(&p, params, err);
    if (r->rc) return;
    uint64_t state = seed * 2654435761u + 1;
    size_t at = 0;
    while (at < n && r->rc == DK_OK) {
        size_t k = n - at;
        if (mode == FEED_BYTES) k = 1;
        if (mode == FEED_RANDOM) {
            uint64_t v = rng_next(&state);
            size_t want = v % 8 == 0 ? (size_t)(v >> 8) % 64 + 1 : (size_t)(v >> 8) % 6 + 1;
            if (want < k) k = want;
        }
        chat_delta d = {&r->content, &r->reasoning, 0};
        size_t c0 = r->content.len, r0 = r->reasoning.len;
        r->rc = chat_parser_feed(p, text + at, k, &d);
        r->n_counted += d.n_new_calls;
        check_delta(r, c0, r0);
        at += k;
    }
    if (r->rc == DK_OK) {
        chat_delta d = {&r->content, &r->reasoning, 0};
        r->rc = chat_parser_finish(p, &d);
        r->n_counted += d.n_new_calls;
    }
    r->calls = json_deep_copy(chat_parser_tool_calls(p));
    chat_parser_free(p);
}

static bool parse_format(const char *name, enum chat_format *out)
{
    for (int f = CHAT_FORMAT_GENERIC; f <= CHAT_FORMAT_GEMMA; f++) {
        if (strcmp(chat_format_name((enum chat_format)f), name) == 0) {
            *out = (enum chat_format)f;
            return true;
        }
    }
    return false;
}

static json_t *load_corpus(void)
{
    char *data = NULL;
    size_t len = 0;
    char err[DK_ERRLEN];
    if (dk_file_read(CORPUS_PATH, (size_t)1 << 24, &data, &len, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "%s", err);
        return NULL;
    }
    json_error_t jerr;
    json_t *cases = json_loadb(data, len, 0, &jerr);
    dk_free(data);
    if (!json_is_array(cases)) test_fail_at(__FILE__, __LINE__, "%s: line %d: %s", CORPUS_PATH, jerr.line, jerr.text);
    return cases;
}

static bool case_params(const json_t *c, chat_parse_params *params)
{
    memset(params, 0, sizeof *params);
    if (!parse_format(json_string_value(json_object_get(c, "format")), &params->format)) return false;
    const json_t *pt = json_object_get(c, "parse_tools");
    params->parse_tools = pt ? json_is_true(pt) : true;
    params->reasoning = json_is_true(json_object_get(c, "think"));
    params->in_reasoning = json_is_true(json_object_get(c, "in_think"));
    return true;
}

/* The parser's calls against the case's [{"name", "arguments", "id"?}]. */
static void check_calls(const char *name, const char *how, const json_t *got, const json_t *want)
{
    CHECK_MSG(json_array_size(got) == json_array_size(want), "%s (%s): %zu calls, expected %zu", name, how,
              json_array_size(got), json_array_size(want));
    for (size_t i = 0; i < json_array_size(got) && i < json_array_size(want); i++) {
        const json_t *g = json_array_get(got, i), *w = json_array_get(want, i);
        const json_t *fn = json_object_get(g, "function");
        CHECK_EQ_STR(json_string_value(json_object_get(g, "type")), "function");
        const char *gname = json_string_value(json_object_get(fn, "name"));
        CHECK_MSG(gname && strcmp(gname, json_string_value(json_object_get(w, "name"))) == 0,
                  "%s (%s): call %zu is %s", name, how, i, gname ? gname : "(null)");
        const json_t *args = json_object_get(fn, "arguments");
        CHECK_MSG(json_is_object(args) && json_equal(args, json_object_get(w, "arguments")),
                  "%s (%s): call %zu arguments differ", name, how, i);
        char want_id[32];
        snprintf(want_id, sizeof want_id, "call_%zu", i);
        const char *wid = json_string_value(json_object_get(w, "id"));
        CHECK_EQ_STR(json_string_value(json_object_get(g, "id")), wid ? wid : want_id);
    }
}

static const char *const markers[] = {
    "<tool_call>", "</tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", "<|tool_call|>",
    "<|/tool_call|>", "```", "<think>", "</think>", "\"name\"", ".call(",
};

static void check_case(const json_t *c, size_t index)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    chat_parse_params params;
    REQUIRE_MSG(name && case_params(c, &params), "case %zu: bad name or format", index);
    const json_t *output = json_object_get(c, "output");
    const char *text = json_string_value(output);
    size_t n = json_string_length(output);
    const char *want_content = json_string_value(json_object_get(c, "content"));
    const char *want_reasoning = json_string_value(json_object_get(c, "reasoning"));
    const json_t *want_calls = json_object_get(c, "calls");
    REQUIRE_MSG(text && want_content && want_reasoning && json_is_array(want_calls), "case %s: incomplete", name);
    static const char *const how[] = {"whole", "bytes", "random 1", "random 2", "random 3", "random 4"};
    for (int m = 0; m < 6; m++) {
        enum feed_mode mode = m == 0 ? FEED_WHOLE : m == 1 ? FEED_BYTES : FEED_RANDOM;
        run_out r;
        run_parser(&params, text, n, mode, index * 31u + (uint64_t)m, &r);
        CHECK_MSG(r.rc == DK_OK, "%s (%s): rc %d", name, how[m], r.rc);
        CHECK_MSG(strcmp(r.content.data, want_content) == 0, "%s (%s): content \"%s\", expected \"%s\"", name, how[m],
                  r.content.data, want_content);
        CHECK_MSG(strcmp(r.reasoning.data, want_reasoning) == 0, "%s (%s): reasoning \"%s\", expected \"%s\"", name,
                  how[m], r.reasoning.data, want_reasoning);
        check_calls(name, how[m], r.calls, want_calls);
        CHECK_MSG(r.n_counted == json_array_size(r.calls), "%s (%s): deltas counted %zu calls", name, how[m], r.n_counted);
        if (utf8_valid(text, n)) CHECK_MSG(r.utf8_ok, "%s (%s): a delta cut a UTF-8 sequence", name, how[m]);
        if (json_array_size(want_calls) && !json_is_true(json_object_get(c, "markers_in_content"))) {
            for (size_t k = 0; k < sizeof markers / sizeof markers[0]; k++)
                CHECK_MSG(!strstr(r.content.data, markers[k]), "%s (%s): content holds %s", name, how[m], markers[k]);
        }
        run_out_free(&r);
    }
}

TEST(chat_tools, corpus)
{
    json_t *cases = load_corpus();
    REQUIRE(cases);
    CHECK_MSG(json_array_size(cases) >= 60, "only %zu cases", json_array_size(cases));
    size_t n_formats[CHAT_FORMAT_GEMMA + 1] = {0};
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        chat_parse_params params;
        if (case_params(c, &params)) n_formats[params.format]++;
        check_case(c, i);
        if (test_failures() > 40) break;
    }
    for (int f = 0; f <= CHAT_FORMAT_GEMMA; f++)
        CHECK_MSG(n_formats[f] >= 5, "format %s has %zu cases", chat_format_name((enum chat_format)f), n_formats[f]);
    test_log("%zu cases, each fed 6 ways", json_array_size(cases));
    json_decref(cases);
}

/* More random chunkings of every case against the whole-text result. */
TEST(chat_tools, chunking_invariance)
{
    json_t *cases = load_corpus();
    REQUIRE(cases);
    for (size_t i = 0; i < json_array_size(cases) && test_failures() == 0; i++) {
        const json_t *c = json_array_get(cases, i);
        chat_parse_params params;
        if (!case_params(c, &params)) continue;
        const char *text = json_string_value(json_object_get(c, "output"));
        size_t n = strlen(text);
        run_out whole;
        run_parser(&params, text, n, FEED_WHOLE, 0, &whole);
        for (uint64_t seed = 100; seed < 140; seed++) {
            run_out r;
            run_parser(&params, text, n, FEED_RANDOM, seed + i * 1000, &r);
            CHECK_MSG(strcmp(r.content.data, whole.content.data) == 0 &&
                          strcmp(r.reasoning.data, whole.reasoning.data) == 0 && json_equal(r.calls, whole.calls),
                      "case %zu differs with seed %llu", i, (unsigned long long)seed);
            run_out_free(&r);
        }
        run_out_free(&whole);
    }
    json_decref(cases);
}

/* Streaming: a call's text is held back while it is open, and content flows while it cannot
 * be a call. */
TEST(chat_tools, streaming_holds_back)
{
    chat_parse_params params = {CHAT_FORMAT_HERMES, true, false, false};
    chat_parser *p;
    char err[DK_ERRLEN];
    REQUIRE(chat_parser_new(&p, &params, err) == DK_OK);
    dk_buf content = {0};
    chat_delta d = {&content, NULL, 0};
    CHECK_EQ_INT(chat_parser_feed(p, "Hello <tool", 11, &d), DK_OK);
    CHECK_EQ_STR(content.data, "Hello ");
    CHECK_EQ_INT(chat_parser_feed(p, "_call>\n{\"name\": \"f\", \"arguments\": {}}", 37, &d), DK_OK);
    CHECK_EQ_STR(content.data, "Hello ");
    CHECK_EQ_INT(d.n_new_calls, 0);
    CHECK_EQ_INT(chat_parser_feed(p, "\n</tool_call>", 13, &d), DK_OK);
    CHECK_EQ_INT(d.n_new_calls, 1);
    CHECK_EQ_INT(json_array_size(chat_parser_tool_calls(p)), 1);
    CHECK_EQ_INT(chat_parser_feed(p, "\nok", 3, &d), DK_OK);
    CHECK_EQ_STR(content.data, "Hello \nok");
    CHECK_EQ_INT(chat_parser_finish(p, &d), DK_OK);
    CHECK_EQ_INT(chat_parser_feed(p, "x", 1, &d), DK_ERR_ARG); /* after finish */
    chat_parser_free(p);
    dk_buf_free(&content);

    /* bare JSON that stops being a call is released at the byte that decides it */
    params.format = CHAT_FORMAT_LLAMA3;
    REQUIRE(chat_parser_new(&p, &params, err) == DK_OK);
    content = (dk_buf){0};
    d = (chat_delta){&content, NULL, 0};
    CHECK_EQ_INT(chat_parser_feed(p, "{\"a\": 1", 7, &d), DK_OK);
    CHECK(content.len == 0);
    CHECK_EQ_INT(chat_parser_feed(p, "} then text", 11, &d), DK_OK);
    CHECK_EQ_STR(content.data, "{\"a\": 1} then text");
    CHECK_EQ_INT(chat_parser_feed(p, "{x", 2, &d), DK_OK); /* JSON here is ordinary content */
    CHECK_EQ_STR(content.data, "{\"a\": 1} then text{x");
    chat_parser_free(p);
    dk_buf_free(&content);

    /* reasoning flows while it is open; NULL buffers and a NULL delta discard */
    params = (chat_parse_params){CHAT_FORMAT_HERMES, true, true, false};
    REQUIRE(chat_parser_new(&p, &params, err) == DK_OK);
    dk_buf reasoning = {0};
    d = (chat_delta){NULL, &reasoning, 0};
    CHECK_EQ_INT(chat_parser_feed(p, "<think>abc def", 14, &d), DK_OK);
    CHECK_EQ_STR(reasoning.data, "abc def");
    CHECK_EQ_INT(chat_parser_feed(p, "</think>x", 9, NULL), DK_OK);
    CHECK_EQ_INT(chat_parser_finish(p, NULL), DK_OK);
    chat_parser_free(p);
    dk_buf_free(&reasoning);
}

/* A would-be call longer than the hold-back limit is given up on and released as content. */
TEST(chat_tools, hold_back_limit)
{
    size_t n_fill = ((size_t)1 << 20) + 1000;
    dk_buf text = {0};
    dk_buf_puts(&text, "<tool_call>{\"name\": \"f\", \"arguments\": {\"s\": \"");
    for (size_t i = 0; i < n_fill; i++) dk_buf_putc(&text, (char)('a' + i % 26));
    dk_buf_puts(&text, "\"}}</tool_call>");
    REQUIRE(!text.failed);
    chat_parse_params params = {CHAT_FORMAT_HERMES, true, false, false};
    for (int chunk = 0; chunk < 2; chunk++) {
        chat_parser *p;
        char err[DK_ERRLEN];
        REQUIRE(chat_parser_new(&p, &params, err) == DK_OK);
        dk_buf content = {0};
        chat_delta d = {&content, NULL, 0};
        size_t step = chunk ? 4093 : text.len;
        for (size_t at = 0; at < text.len; at += step)
            CHECK_EQ_INT(chat_parser_feed(p, text.data + at, at + step < text.len ? step : text.len - at, &d), DK_OK);
        CHECK_EQ_INT(chat_parser_finish(p, &d), DK_OK);
        CHECK(content.len == text.len && memcmp(content.data, text.data, text.len) == 0);
        CHECK_EQ_INT(json_array_size(chat_parser_tool_calls(p)), 0);
        chat_parser_free(p);
        dk_buf_free(&content);
    }
    /* a long call within the limit still works */
    dk_buf_clear(&text);
    dk_buf_puts(&text, "{\"name\": \"f\", \"parameters\": {\"s\": \"");
    for (size_t i = 0; i < 500000; i++) dk_buf_putc(&text, 'x');
    dk_buf_puts(&text, "\"}}");
    params.format = CHAT_FORMAT_LLAMA3;
    run_out r;
    run_parser(&params, text.data, text.len, FEED_WHOLE, 0, &r);
    CHECK_EQ_INT(json_array_size(r.calls), 1);
    CHECK(r.content.len == 0);
    run_out_free(&r);
    dk_buf_free(&text);
}

/* Deeply nested JSON is refused (as content), never overflowing anything. */
TEST(chat_tools, deep_nesting)
{
    dk_buf text = {0};
    dk_buf_puts(&text, "<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": ");
    for (int i = 0; i < 5000; i++) dk_buf_putc(&text, '[');
    for (int i = 0; i < 5000; i++) dk_buf_putc(&text, ']');
    dk_buf_puts(&text, "}}</tool_call>");
    chat_parse_params params = {CHAT_FORMAT_HERMES, true, false, false};
    run_out r;
    run_parser(&params, text.data, text.len, FEED_RANDOM, 7, &r);
    CHECK_EQ_INT(r.rc, DK_OK);
    CHECK_EQ_INT(json_array_size(r.calls), 0);
    CHECK(r.content.len == text.len);
    run_out_free(&r);
    dk_buf_free(&text);
}

TEST(chat_tools, format_names)
{
    CHECK_EQ_STR(chat_format_name(CHAT_FORMAT_GENERIC), "generic");
    CHECK_EQ_STR(chat_format_name(CHAT_FORMAT_HERMES), "hermes");
    CHECK_EQ_STR(chat_format_name(CHAT_FORMAT_LLAMA3), "llama3");
    CHECK_EQ_STR(chat_format_name(CHAT_FORMAT_MISTRAL), "mistral");
    CHECK_EQ_STR(chat_format_name(CHAT_FORMAT_PHI4), "phi4");
    CHECK_EQ_STR(chat_format_name(CHAT_FORMAT_GEMMA), "gemma");
    chat_parser *p = (chat_parser *)1;
    chat_parse_params bad = {(enum chat_format)42, true, false, false};
    char err[DK_ERRLEN];
    CHECK_EQ_INT(chat_parser_new(&p, &bad, err), DK_ERR_ARG);
    CHECK(p == NULL);
    chat_parser_free(NULL);
}

/* Excerpts of the templates the families ship (the lines that print their markers). */
TEST(chat_tools, format_detect)
{
    static const struct {
        const char *source, *arch;
        enum chat_format want;
    } cases[] = {
        /* Qwen 2.5 / Qwen 3 */
        {"{%- if tools %}\n{{- '<|im_start|>system\\n' }}...\n{{- \"\\n</tools>\\n\\nFor each function call, return a "
         "json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
         "{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}",
         "qwen2", CHAT_FORMAT_HERMES},
        /* SmolLM3 / Hermes 3 */
        {"{{- '<tool_call>\\n' }}{{- tool_call | tojson }}{{- '\\n</tool_call>' }}", "llama", CHAT_FORMAT_HERMES},
        /* Llama 3.1 */
        {"{%- if builtin_tools is defined or tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n"
         "{{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}<|start_header_id|>",
         "llama", CHAT_FORMAT_LLAMA3},
        /* Llama 3.2 (no python_tag) */
        {"{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n{{- \"Respond in the format {\\\"name\\\": function "
         "name, \\\"parameters\\\": dictionary of argument name and its value}.\" }}\n"
         "{{- \"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}",
         "llama", CHAT_FORMAT_LLAMA3},
        /* Llama 3 without tools */
        {"{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}",
         "llama", CHAT_FORMAT_GENERIC},
        /* Mistral Nemo / v3 */
        {"{%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- \"[TOOL_CALLS][\" }}",
         "llama", CHAT_FORMAT_MISTRAL},
        /* Mistral Small 3.2 (v11) */
        {"{{- '[TOOL_CALLS]' + tool['function']['name'] + '[ARGS]' + tool['function']['arguments'] }}", NULL,
         CHAT_FORMAT_MISTRAL},
        /* Phi-4-mini */
        {"{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
         "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + "
         "'<|end|>' }}",
         "phi3", CHAT_FORMAT_PHI4},
        {"{{ '<|tool_call|>' + message['tool_calls'] | tojson + '<|/tool_call|>' }}", "phi3", CHAT_FORMAT_PHI4},
        /* Gemma 2 / 3 */
        {"{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}", "gemma3",
         CHAT_FORMAT_GEMMA},
        {NULL, "gemma2", CHAT_FORMAT_GEMMA},
        {"{% for m in messages %}<|user|>{{ m.content }}{% endfor %}", "gemma", CHAT_FORMAT_GEMMA},
        /* Phi-3 and plain ChatML without tools */
        {"{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n'}}",
         "phi3", CHAT_FORMAT_GENERIC},
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
         "'<|im_end|>' + '\\n'}}{% endfor %}",
         "qwen2", CHAT_FORMAT_GENERIC},
        {NULL, NULL, CHAT_FORMAT_GENERIC},
        {"", "llama", CHAT_FORMAT_GENERIC},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum chat_format got = chat_format_detect(cases[i].source, cases[i].arch);
        CHECK_MSG(got == cases[i].want, "case %zu: %s, expected %s", i, chat_format_name(got),
                  chat_format_name(cases[i].want));
    }
}

/* Every allocation of a run failing in turn: DK_ERR_NOMEM or the right answer, never a crash
 * or a leak (ASan checks the leaks). */
TEST(chat_tools, alloc_failures)
{
    static const struct {
        enum chat_format format;
        bool reasoning;
        const char *text;
    } cases[] = {
        {CHAT_FORMAT_HERMES, true,
         "<think>hm</think>Sure.<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": \"z\"}]}}\n</tool_call>"
         "<tool_call>{bad}</tool_call>"},
        {CHAT_FORMAT_LLAMA3, false, "{\"name\": \"a\", \"parameters\": {}}; <|python_tag|>b.call(q=\"x\", n=2)"},
        {CHAT_FORMAT_MISTRAL, false, "[TOOL_CALLS]a[CALL_ID]id1[ARGS]{\"k\": 1}[TOOL_CALLS][{\"name\": \"b\"}]"},
        {CHAT_FORMAT_GEMMA, false, "```tool_code\n{\"name\": \"a\", \"parameters\": {\"k\": \"v\"}}\n```"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        chat_parse_params params = {cases[c].format, true, cases[c].reasoning, false};
        run_out ref;
        run_parser(&params, cases[c].text, strlen(cases[c].text), FEED_BYTES, 0, &ref);
        REQUIRE(ref.rc == DK_OK);
        int n_ok = 0;
        for (long n = 0; n < 400; n++) {
            run_out r;
            dk_alloc_fail_after(n);
            run_parser(&params, cases[c].text, strlen(cases[c].text), n % 2 ? FEED_BYTES : FEED_RANDOM, (uint64_t)n, &r);
            dk_alloc_fail_after(-1);
            bool nomem = r.rc == DK_ERR_NOMEM || r.content.failed || r.reasoning.failed;
            CHECK_MSG(nomem || r.rc == DK_OK, "case %zu, failing after %ld: rc %d", c, n, r.rc);
            if (!nomem) {
                CHECK_MSG(strcmp(r.content.data, ref.content.data) == 0 && json_equal(r.calls, ref.calls),
                          "case %zu, failing after %ld: a different result", c, n);
                n_ok++;
            }
            run_out_free(&r);
            if (n_ok > 3) break;
        }
        CHECK_MSG(n_ok > 0, "case %zu never succeeded", c);
        run_out_free(&ref);
    }
}
