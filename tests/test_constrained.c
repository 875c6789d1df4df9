/*
 * test_constrained.c: constrained decoding end to end (suite `constrained`): real models of
 * the kit (and a tiny model carrying the real 151,936-token Qwen vocabulary and chat template)
 * generate under JSON mode, JSON schemas, GBNF grammars and tool_choice, over many seeds, and
 * every finished output must parse and validate. Also the engine's reasoning handling: the
 * grammar holds after </think>, and a reasoning budget closes the section.
 *
 * The models have random weights (except stories260K), so what they write is noise; only the
 * guarantees count. An output cut by num_predict cannot be checked for completeness; each
 * test requires that most runs finish.
 */
#include "test.h"

#include <dirent.h>
#include <jansson.h>
#include <stdlib.h>

#include "base/base.h"
#include "chat/chat.h"
#include "convert/convert.h"
#include "engine/engine.h"
#include "json_validate.h"
#include "kit_vocab.h"
#include "sample/sample.h"

#define STORIES "forward/stories260K/stories260K.F32.gguf"

static engine_model *load_kit_model(const char *relative)
{
    char path[512], err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    engine_model *m = NULL;
    test_kit_file(path, sizeof path, relative);
    if (engine_model_load(&m, path, &lp, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "%s: %s", path, err);
        return NULL;
    }
    return m;
}

/* A tiny qwen3 with the Qwen vocabulary and chat template of the kit (kit_vocab.h), loaded. */
static engine_model *load_qwen_vocab_model(void)
{
    const char *path = kit_qwen_vocab_model();
    if (!path) return NULL;
    char err[DK_ERRLEN];
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = 1;
    engine_model *m = NULL;
    if (engine_model_load(&m, path, &lp, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "%s: %s", path, err);
        return NULL;
    }
    return m;
}

/* A session of n_ctx positions, or NULL after a failure is recorded. */
static engine_session *new_session(engine_model *m, size_t n_ctx)
{
    char err[DK_ERRLEN];
    engine_session *s = NULL;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = n_ctx;
    if (engine_session_new(&s, m, &sp, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "session: %s", err);
    return s;
}

static int append_text(void *user, const char *text, size_t n_bytes)
{
    dk_buf_append(user, text, n_bytes);
    return 0;
}

typedef struct gen_outcome {
    dk_buf text;
    enum engine_done done;
} gen_outcome;

/* Generates from prompt text under grammar with the given seed and temperature. */
static int generate(engine_model *m, const char *prompt, const sample_grammar *g, uint64_t seed, float temperature,
                    long n_predict, gen_outcome *out)
{
    char err[DK_ERRLEN];
    engine_session *s = NULL;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 512;
    memset(out, 0, sizeof(*out));
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    int rc = engine_session_new(&s, m, &sp, err);
    if (rc == DK_OK) rc = engine_tokenize(m, prompt, strlen(prompt), true, true, &tokens, &n_tokens, err);
    if (rc == DK_OK) {
        engine_generate_params gp;
        engine_generate_params_default(&gp);
        gp.sampling.temperature = temperature;
        gp.sampling.top_k = 40;
        gp.sampling.top_p = 1.0f;
        gp.sampling.seed = seed;
        gp.num_predict = n_predict;
        gp.grammar = g;
        gp.on_text = append_text;
        gp.user = &out->text;
        engine_timings t;
        rc = engine_generate(s, tokens, n_tokens, &gp, &t, err);
        out->done = t.done;
    }
    if (rc != DK_OK) test_fail_at(__FILE__, __LINE__, "generate: %s", err);
    dk_free(tokens);
    engine_session_free(s);
    return rc;
}

static sample_grammar *grammar_of(const char *gbnf)
{
    char err[DK_ERRLEN];
    sample_grammar *g = NULL;
    if (sample_grammar_parse(&g, gbnf, strlen(gbnf), "root", err) != DK_OK)
        test_fail_at(__FILE__, __LINE__, "grammar: %s", err);
    return g;
}

static sample_grammar *grammar_of_schema(const json_t *schema)
{
    dk_buf gbnf = {0};
    char err[DK_ERRLEN];
    sample_grammar *g = NULL;
    if (sample_json_schema_to_gbnf(schema, "root", &gbnf, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "schema: %s", err);
    else g = grammar_of(gbnf.data);
    dk_buf_free(&gbnf);
    return g;
}

/* Checks a finished output against a schema (NULL: any JSON object). Returns 1 if finished. */
static int check_json_output(const gen_outcome *o, const json_t *schema, const char *what, uint64_t seed)
{
    if (o->done != ENGINE_DONE_EOG) return 0;
    json_error_t je;
    json_t *v = json_loadb(o->text.data ? o->text.data : "", o->text.len, JSON_DECODE_ANY, &je);
    CHECK_MSG(v != NULL, "%s seed %llu: output does not parse (%s): %.*s", what, (unsigned long long)seed, je.text,
              (int)o->text.len, o->text.data ? o->text.data : "");
    if (v && schema) {
        char why[256];
        CHECK_MSG(json_validate(v, schema, schema, why, sizeof why), "%s seed %llu: not valid under the schema (%s): %.*s",
                  what, (unsigned long long)seed, why, (int)o->text.len, o->text.data);
    } else if (v) {
        CHECK_MSG(json_is_object(v), "%s seed %llu: JSON mode gave a non-object", what, (unsigned long long)seed);
    }
    json_decref(v);
    return 1;
}

static const char *const kit_models[] = {
    STORIES,
    "forward/llama-tiny/llama-tiny.Q8_0.gguf",
    "forward/qwen2-tiny/qwen2-tiny.Q4_K_M.gguf",
    "forward/qwen3-tiny/qwen3-tiny.F32.gguf",
    "forward/gemma2-tiny/gemma2-tiny.Q4_0.gguf",
    "forward/gemma3-tiny/gemma3-tiny.Q8_0.gguf",
    "forward/phi3-tiny/phi3-tiny.Q6_K.gguf",
};

TEST(constrained, json_mode_every_kit_model)
{
    sample_grammar *g = grammar_of(sample_gbnf_json());
    REQUIRE(g);
    int n_total = 0, n_total_runs = 0;
    for (size_t k = 0; k < sizeof kit_models / sizeof kit_models[0]; k++) {
        engine_model *m = load_kit_model(kit_models[k]);
        if (!m) continue;
        int n_finished = 0, n_runs = 0;
        for (uint64_t seed = 1; seed <= 12; seed++) {
            gen_outcome o;
            if (generate(m, "Once upon a time", g, seed, seed % 3 == 0 ? 0.0f : 1.0f, 160, &o) == DK_OK) {
                n_finished += check_json_output(&o, NULL, kit_models[k], seed);
                n_runs++;
            }
            dk_buf_free(&o.text);
        }
        /* stories260K (a real model: long strings) rarely closes its object within its 128 positions */
        test_log("%s: %d of %d JSON-mode runs finished", kit_models[k], n_finished, n_runs);
        n_total += n_finished;
        n_total_runs += n_runs;
        engine_model_free(m);
    }
    CHECK_MSG(n_total * 2 >= n_total_runs, "only %d of %d JSON-mode runs finished", n_total, n_total_runs);
    sample_grammar_free(g);
}

/* Every schema of tests/data/schemas/ through fn. */
static void for_each_schema(void (*fn)(const char *name, const json_t *schema, void *user), void *user)
{
    DIR *d = opendir("tests/data/schemas");
    REQUIRE_MSG(d, "cannot open tests/data/schemas (run from the repository root)");
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char path[512];
        snprintf(path, sizeof path, "tests/data/schemas/%s", e->d_name);
        json_error_t je;
        json_t *schema = json_load_file(path, 0, &je);
        CHECK_MSG(schema, "%s: %s", path, je.text);
        if (schema) fn(e->d_name, schema, user);
        json_decref(schema);
        n++;
    }
    closedir(d);
    CHECK_MSG(n >= 10, "only %d schemas", n);
}

typedef struct schema_run {
    engine_model *models[2];
    int n_finished, n_runs;
} schema_run;

static void run_schema(const char *name, const json_t *schema, void *user)
{
    schema_run *r = user;
    sample_grammar *g = grammar_of_schema(schema);
    if (!g) return;
    for (int k = 0; k < 2; k++) {
        if (!r->models[k]) continue;
        for (uint64_t seed = 1; seed <= 5; seed++) {
            gen_outcome o;
            if (generate(r->models[k], "Once upon a time", g, seed * 31 + (uint64_t)k, seed == 1 ? 0.0f : 1.0f, 200, &o) == DK_OK) {
                r->n_finished += check_json_output(&o, schema, name, seed);
                r->n_runs++;
            }
            dk_buf_free(&o.text);
        }
    }
    sample_grammar_free(g);
}

TEST(constrained, schemas_on_kit_models)
{
    schema_run r = {{load_kit_model(STORIES), load_kit_model("forward/qwen3-tiny/qwen3-tiny.Q8_0.gguf")}, 0, 0};
    for_each_schema(run_schema, &r);
    test_log("%d of %d schema runs finished", r.n_finished, r.n_runs);
    CHECK_MSG(r.n_finished * 2 >= r.n_runs, "only %d of %d schema runs finished", r.n_finished, r.n_runs);
    engine_model_free(r.models[0]);
    engine_model_free(r.models[1]);
}

TEST(constrained, schemas_on_the_qwen_vocabulary)
{
    schema_run r = {{load_qwen_vocab_model(), NULL}, 0, 0};
    REQUIRE(r.models[0]);
    for_each_schema(run_schema, &r);
    test_log("%d of %d schema runs finished (151936 tokens)", r.n_finished, r.n_runs);
    CHECK_MSG(r.n_finished * 2 >= r.n_runs, "only %d of %d schema runs finished", r.n_finished, r.n_runs);
    sample_grammar *g = grammar_of(sample_gbnf_json());
    int n_finished = 0;
    for (uint64_t seed = 1; seed <= 8 && g; seed++) {
        gen_outcome o;
        if (generate(r.models[0], "<|im_start|>user\nJSON please<|im_end|>\n<|im_start|>assistant\n", g, seed, 1.0f, 200, &o) == DK_OK)
            n_finished += check_json_output(&o, NULL, "qwen JSON mode", seed);
        dk_buf_free(&o.text);
    }
    CHECK(n_finished > 0);
    sample_grammar_free(g);
    engine_model_free(r.models[0]);
}

TEST(constrained, gbnf_grammars)
{
    /* what every finished output must look like is checked by hand below */
    static const char *const grammars[] = {
        "root ::= (\"yes\" | \"no\") \".\"",
        "root ::= [0-9]{1,4} (\",\" [0-9]{1,4}){0,3}",
        "root ::= \"<\" [a-z]+ \">\"",
    };
    engine_model *m = load_kit_model(STORIES);
    REQUIRE(m);
    for (size_t k = 0; k < sizeof grammars / sizeof grammars[0]; k++) {
        sample_grammar *g = grammar_of(grammars[k]);
        if (!g) continue;
        for (uint64_t seed = 1; seed <= 10; seed++) {
            gen_outcome o;
            if (generate(m, "Once upon a time", g, seed, 1.5f, 64, &o) != DK_OK) continue;
            const char *t = o.text.data ? o.text.data : "";
            if (o.done == ENGINE_DONE_EOG) {
                if (k == 0) CHECK_MSG(strcmp(t, "yes.") == 0 || strcmp(t, "no.") == 0, "yes-no gave '%s'", t);
                if (k == 1) {
                    size_t digits = strspn(t, "0123456789,");
                    CHECK_MSG(digits == strlen(t) && t[0] != ',' && !strstr(t, ",,"), "numbers gave '%s'", t);
                }
                if (k == 2) {
                    size_t n = strlen(t);
                    CHECK_MSG(n >= 3 && t[0] == '<' && t[n - 1] == '>' && strspn(t + 1, "abcdefghijklmnopqrstuvwxyz") == n - 2,
                              "tag gave '%s'", t);
                }
            }
            dk_buf_free(&o.text);
        }
        sample_grammar_free(g);
    }
    engine_model_free(m);
}

/* ---- tool_choice through engine_chat, with the real Qwen chat template ---- */

static const char *const tools_json =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather of a city\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12},"
    "\"unit\":{\"enum\":[\"celsius\",\"fahrenheit\"]}},\"required\":[\"city\"],\"additionalProperties\":false}}},"
    "{\"type\":\"function\",\"function\":{\"name\":\"add\",\"description\":\"Adds numbers\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":999},"
    "\"b\":{\"type\":\"integer\",\"minimum\":-5,\"maximum\":5}},\"required\":[\"a\",\"b\"],\"additionalProperties\":false}}}]";

typedef struct chat_case {
    enum engine_tool_choice choice;
    const char *name;
    int think;
} chat_case;

static int run_chat(engine_model *m, const json_t *tools, const chat_case *c, uint64_t seed, engine_chat_result *r)
{
    char err[DK_ERRLEN];
    engine_session *s = NULL;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = 1024;
    json_t *messages = json_loads("[{\"role\":\"system\",\"content\":\"You are helpful.\"},"
                                  "{\"role\":\"user\",\"content\":\"Weather in Paris? And 2+3?\"}]", 0, NULL);
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = messages;
    cp.tools = tools;
    cp.tool_choice = c->choice;
    cp.tool_name = c->name;
    cp.think = c->think;
    cp.gen.sampling.temperature = seed % 2 ? 1.0f : 0.0f;
    cp.gen.sampling.top_k = 40;
    cp.gen.sampling.top_p = 1.0f;
    cp.gen.sampling.seed = seed;
    cp.gen.num_predict = 200;
    cp.gen.max_reasoning_tokens = 6;
    memset(r, 0, sizeof(*r));
    int rc = engine_session_new(&s, m, &sp, err);
    if (rc == DK_OK) rc = engine_chat(s, &cp, r, err);
    if (rc != DK_OK) test_fail_at(__FILE__, __LINE__, "chat: %s", err);
    engine_session_free(s);
    json_decref(messages);
    return rc;
}

/* Every call names one of the tools (only `name` if given) with valid arguments. */
static void check_calls(const json_t *tools, const engine_chat_result *r, const char *name, uint64_t seed)
{
    size_t i;
    const json_t *call;
    json_array_foreach(r->tool_calls, i, call) {
        const json_t *fn = json_object_get(call, "function");
        const char *called = json_string_value(json_object_get(fn, "name"));
        const json_t *schema = NULL;
        size_t j;
        const json_t *tool;
        json_array_foreach(tools, j, tool) {
            const json_t *f = json_object_get(tool, "function");
            if (called && strcmp(json_string_value(json_object_get(f, "name")), called) == 0) schema = json_object_get(f, "parameters");
        }
        CHECK_MSG(schema != NULL, "seed %llu: call to unknown tool %s", (unsigned long long)seed, called ? called : "(null)");
        if (name) CHECK_MSG(called && strcmp(called, name) == 0, "seed %llu: called %s, not %s", (unsigned long long)seed, called, name);
        char why[256];
        if (schema)
            CHECK_MSG(json_validate(json_object_get(fn, "arguments"), schema, schema, why, sizeof why),
                      "seed %llu: arguments of %s not valid: %s", (unsigned long long)seed, called, why);
    }
}

TEST(constrained, tool_choice_required_named_and_none)
{
    engine_model *m = load_qwen_vocab_model();
    REQUIRE(m);
    json_t *tools = json_loads(tools_json, 0, NULL);
    REQUIRE(tools);
    static const chat_case cases[] = {
        {ENGINE_TOOL_REQUIRED, NULL, 0},
        {ENGINE_TOOL_REQUIRED, NULL, 1}, /* thinking allowed first (budget 6), then the call */
        {ENGINE_TOOL_NAMED, "add", 0},
        {ENGINE_TOOL_NONE, NULL, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int n_called = 0, n_runs = 0;
        for (uint64_t seed = 1; seed <= 6; seed++) {
            engine_chat_result r;
            if (run_chat(m, tools, &cases[k], seed, &r) == DK_OK) {
                n_runs++;
                const char *content = r.content.data ? r.content.data : "";
                if (cases[k].choice == ENGINE_TOOL_NONE) {
                    CHECK_EQ_INT(json_array_size(r.tool_calls), 0);
                    CHECK_MSG(!strstr(content, "<tool_call>"), "tool_choice none wrote a call marker");
                    CHECK_MSG(!strstr(r.prompt.data, "get_weather"), "tool_choice none still showed the tools");
                } else if (r.timings.done == ENGINE_DONE_EOG) {
                    CHECK_MSG(json_array_size(r.tool_calls) >= 1, "case %zu seed %llu: no call parsed from '%s'", k,
                              (unsigned long long)seed, content);
                    CHECK_MSG(!strstr(content, "<tool_call>"), "call text leaked into content: %s", content);
                    check_calls(tools, &r, cases[k].name, seed);
                    n_called++;
                }
            }
            engine_chat_result_free(&r);
        }
        if (cases[k].choice != ENGINE_TOOL_NONE)
            CHECK_MSG(n_called * 2 >= n_runs, "case %zu: only %d of %d runs finished a call", k, n_called, n_runs);
    }
    json_decref(tools);
    engine_model_free(m);
}

TEST(constrained, format_after_reasoning)
{
    engine_model *m = load_qwen_vocab_model();
    REQUIRE(m);
    json_t *format = json_loads("{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"integer\"}},"
                                "\"required\":[\"answer\"],\"additionalProperties\":false}", 0, NULL);
    json_t *messages = json_loads("[{\"role\":\"user\",\"content\":\"2+2?\"}]", 0, NULL);
    REQUIRE(format && messages);
    int n_finished = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        char err[DK_ERRLEN];
        engine_session *s = new_session(m, 1024);
        REQUIRE(s);
        engine_chat_params cp;
        engine_chat_params_default(&cp);
        cp.messages = messages;
        cp.format = format;
        cp.think = 1;
        cp.gen.sampling.temperature = 1.0f;
        cp.gen.sampling.seed = seed;
        cp.gen.num_predict = 120;
        cp.gen.max_reasoning_tokens = 5;
        engine_chat_result r;
        int rc = engine_chat(s, &cp, &r, err);
        CHECK_MSG(rc == DK_OK, "%s", err);
        if (rc == DK_OK && r.timings.done == ENGINE_DONE_EOG) {
            json_error_t je;
            json_t *v = json_loadb(r.content.data ? r.content.data : "", r.content.len, 0, &je);
            CHECK_MSG(v != NULL, "seed %llu: content after reasoning does not parse: '%s'", (unsigned long long)seed, r.content.data);
            char why[256];
            if (v) CHECK_MSG(json_validate(v, format, format, why, sizeof why), "seed %llu: %s", (unsigned long long)seed, why);
            json_decref(v);
            n_finished++;
        }
        engine_chat_result_free(&r);
        engine_session_free(s);
    }
    CHECK(n_finished >= 3);
    json_decref(format);
    json_decref(messages);
    engine_model_free(m);
}

/* The prompt opened <think>: free reasoning, closed by the budget, then the grammar holds. */
TEST(constrained, grammar_after_forced_reasoning)
{
    engine_model *m = load_qwen_vocab_model();
    REQUIRE(m);
    json_t *schema = json_loads("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"minimum\":0,"
                                "\"maximum\":99}},\"required\":[\"a\"],\"additionalProperties\":false}", 0, NULL);
    REQUIRE(schema);
    sample_grammar *g = grammar_of_schema(schema);
    json_decref(schema);
    REQUIRE(g);
    const char *prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n";
    int n_finished = 0;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        char err[DK_ERRLEN];
        engine_session *s = new_session(m, 512);
        REQUIRE(s);
        int32_t *tokens = NULL;
        size_t n_tokens = 0;
        REQUIRE(engine_tokenize(m, prompt, strlen(prompt), false, true, &tokens, &n_tokens, err) == DK_OK);
        dk_buf text = {0};
        engine_generate_params gp;
        engine_generate_params_default(&gp);
        gp.sampling.temperature = 1.0f;
        gp.sampling.seed = seed;
        gp.num_predict = 150;
        gp.grammar = g;
        gp.in_reasoning = true;
        gp.max_reasoning_tokens = 5;
        gp.on_text = append_text;
        gp.user = &text;
        engine_timings t;
        CHECK_MSG(engine_generate(s, tokens, n_tokens, &gp, &t, err) == DK_OK, "%s", err);
        const char *out = text.data ? text.data : "";
        const char *close = strstr(out, "</think>");
        CHECK_MSG(close != NULL, "seed %llu: the reasoning was not closed: %s", (unsigned long long)seed, out);
        if (close && t.done == ENGINE_DONE_EOG) {
            json_error_t je;
            json_t *v = json_loads(close + 8, 0, &je);
            CHECK_MSG(json_is_object(v), "seed %llu: after </think>: %s (%s)", (unsigned long long)seed, close + 8, je.text);
            json_decref(v);
            /* and the chat parser puts the two parts where they belong */
            chat_parser *p = NULL;
            chat_parse_params pp = {.format = CHAT_FORMAT_HERMES, .reasoning = true, .in_reasoning = true};
            dk_buf content = {0}, reasoning = {0};
            chat_delta d = {.content = &content, .reasoning = &reasoning};
            REQUIRE(chat_parser_new(&p, &pp, err) == DK_OK);
            CHECK(chat_parser_feed(p, out, strlen(out), &d) == DK_OK && chat_parser_finish(p, &d) == DK_OK);
            json_t *c = json_loadb(content.data ? content.data : "", content.len, 0, &je);
            CHECK_MSG(json_is_object(c), "content '%s'", content.data ? content.data : "");
            CHECK(!content.data || !strstr(content.data, "</think>"));
            json_decref(c);
            chat_parser_free(p);
            dk_buf_free(&content);
            dk_buf_free(&reasoning);
            n_finished++;
        }
        dk_buf_free(&text);
        dk_free(tokens);
        engine_session_free(s);
    }
    CHECK(n_finished >= 3);
    sample_grammar_free(g);
    engine_model_free(m);
}

TEST(constrained, chat_reuses_the_conversation_prefix)
{
    engine_model *m = load_qwen_vocab_model();
    REQUIRE(m);
    char err[DK_ERRLEN];
    engine_session *s = new_session(m, 1024);
    REQUIRE(s);
    json_t *messages = json_loads("[{\"role\":\"user\",\"content\":\"Hello there\"}]", 0, NULL);
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = messages;
    cp.think = 0;
    cp.gen.sampling.temperature = 0;
    cp.gen.num_predict = 8;
    engine_chat_result r1, r2;
    REQUIRE(engine_chat(s, &cp, &r1, err) == DK_OK);
    json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "assistant", "content", r1.content.data ? r1.content.data : ""));
    json_array_append_new(messages, json_pack("{s:s,s:s}", "role", "user", "content", "And again"));
    REQUIRE(engine_chat(s, &cp, &r2, err) == DK_OK);
    CHECK_EQ_INT(r1.n_prompt_reused, 0);
    /* the second prompt repeats the first up to its assistant header (the Qwen3 template drops
     * the empty think block of an earlier turn, so the last few tokens differ) */
    CHECK_MSG(r2.n_prompt_reused > 0 && r2.n_prompt_reused + 8 >= r1.timings.n_prompt,
              "reused %zu of the first prompt's %zu tokens", r2.n_prompt_reused, r1.timings.n_prompt);
    CHECK(r2.timings.n_prompt > 0);
    engine_chat_result_free(&r1);
    engine_chat_result_free(&r2);
    json_decref(messages);
    engine_session_free(s);
    engine_model_free(m);
}

TEST(constrained, bad_format_and_tool_choice)
{
    engine_model *m = load_qwen_vocab_model();
    REQUIRE(m);
    char err[DK_ERRLEN];
    engine_session *s = new_session(m, 256);
    REQUIRE(s);
    json_t *messages = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    json_t *tools = json_loads(tools_json, 0, NULL);
    json_t *bad_format = json_string("xml");
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = messages;
    cp.format = bad_format;
    engine_chat_result r;
    CHECK_EQ_INT(engine_chat(s, &cp, &r, err), DK_ERR_ARG);
    engine_chat_result_free(&r);
    cp.format = NULL;
    cp.tools = tools;
    cp.tool_choice = ENGINE_TOOL_NAMED;
    cp.tool_name = "no_such_tool";
    CHECK_EQ_INT(engine_chat(s, &cp, &r, err), DK_ERR_ARG);
    CHECK_MSG(strstr(err, "no_such_tool") != NULL, "%s", err);
    engine_chat_result_free(&r);
    cp.tools = NULL;
    cp.tool_choice = ENGINE_TOOL_REQUIRED;
    CHECK_EQ_INT(engine_chat(s, &cp, &r, err), DK_ERR_ARG);
    engine_chat_result_free(&r);
    json_decref(bad_format);
    json_decref(tools);
    json_decref(messages);
    engine_session_free(s);
    engine_model_free(m);
}

/* A template given with the request (a Modelfile's TEMPLATE) replaces the model's. */
TEST(constrained, chat_template_text_overrides_the_models)
{
    engine_model *m = load_kit_model(STORIES);
    REQUIRE(m);
    engine_session *s = new_session(m, 256);
    REQUIRE(s);
    char err[DK_ERRLEN];
    json_t *messages = json_loads("[{\"role\":\"user\",\"content\":\"Once\"}]", 0, NULL);
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = messages;
    cp.template_text = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %} upon";
    cp.gen.sampling.temperature = 0;
    cp.gen.num_predict = 4;
    engine_chat_result r;
    REQUIRE_MSG(engine_chat(s, &cp, &r, err) == DK_OK, "%s", err);
    CHECK_EQ_STR(r.prompt.data, "<user>Once upon");
    engine_chat_result_free(&r);
    cp.template_text = "{% for m in messages %}";
    CHECK_EQ_INT(engine_chat(s, &cp, &r, err), DK_ERR_FORMAT);
    CHECK_MSG(strstr(err, "chat template") != NULL, "%s", err);
    engine_chat_result_free(&r);
    json_decref(messages);
    engine_session_free(s);
    engine_model_free(m);
}
