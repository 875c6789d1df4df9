/*
 * cmd_run.c: `duckling run MODEL [PROMPT]`: answer one prompt, or chat (repl.c) when no prompt
 * is given. When a duckling (or Ollama) server answers at $DUCKLING_HOST / $OLLAMA_HOST /
 * --host, the answers come from it (POST /api/chat, or /api/generate with raw for --raw, both
 * streamed); otherwise, or with --local, the model is loaded in this process and the
 * conversation goes through engine_chat: the model's chat template (or the built-in ChatML),
 * --format and --tools/--tool-choice as grammars, --think/--no-think. Either way content
 * streams to stdout, reasoning to stderr (between "Thinking..." and "...done thinking."), and
 * each tool call the model makes is printed after the content as one line of JSON
 * {"name": ..., "arguments": {...}}. --raw skips the template and completes the text as it is
 * (--format still applies). Not for: running the tools, reading the terminal (repl.c).
 */
#include "cli/cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

#define CMD "run"
#define PING_CONNECT_MS 300
#define MAX_STOPS 16

typedef struct run_ctx {
    cli_chat chat;
    /* command line */
    const char *format_arg;  /* --format: "json", a schema file, or inline JSON */
    const char *tools_path;  /* --tools FILE.json */
    const char *system;      /* --system */
    const char *host;        /* --host, or NULL */
    const char *keep_alive;  /* --keepalive, or NULL */
    bool local, exact;
    dk_buf prompt;           /* the positional words after MODEL, joined by spaces */
    bool have_prompt;
    /* printing */
    bool in_thinking;        /* "Thinking..." printed, "...done thinking." not yet */
    uint64_t t_first;        /* one-shot: the program's start, so the total counts the load */
    /* local */
    engine_model *model;
    engine_session *session;
    size_t session_n_ctx;
    int session_threads;
    uint64_t random_seed;    /* when no seed is set */
    char *template_text;     /* the store's TEMPLATE when it is a Jinja template (owned), or NULL */
    /* server */
    dk_buf url;              /* "http://HOST:PORT" */
    char *remote_model;      /* the name sent (an absolute path for a file) */
    json_t *remote_context;  /* --raw: the token context /api/generate gave back */
    json_t *show;            /* the /api/show reply, fetched on first use */
    dk_buf answer;           /* the answer streamed so far */
    dk_buf reasoning;
    json_t *calls;           /* tool calls streamed so far */
    bool done;               /* the final object came */
} run_ctx;

/* ---- printing ---- */

static int write_text(const char *text, size_t n_bytes)
{
    if (fwrite(text, 1, n_bytes, stdout) != n_bytes) return 1;
    fflush(stdout);
    return 0;
}

static int write_reasoning(void *user, const char *text, size_t n_bytes)
{
    run_ctx *x = user;
    if (x->chat.hide_thinking) return 0;
    if (!x->in_thinking) {
        fputs("Thinking...\n", stderr);
        x->in_thinking = true;
    }
    fwrite(text, 1, n_bytes, stderr);
    return 0;
}

static void end_reasoning(run_ctx *x)
{
    if (!x->in_thinking) return;
    fputs("\n...done thinking.\n\n", stderr);
    x->in_thinking = false;
}

static int write_content(void *user, const char *text, size_t n_bytes)
{
    end_reasoning(user);
    return write_text(text, n_bytes);
}

/* Prints each call as {"name": ..., "arguments": {...}} on a line of its own, after the content. */
static void print_tool_calls(const json_t *calls, const dk_buf *content)
{
    if (!json_array_size(calls)) return;
    if (content->len && content->data[content->len - 1] != '\n') fputc('\n', stdout);
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) {
        const json_t *fn = json_object_get(call, "function");
        json_t *line = json_pack("{s:O?,s:O?}", "name", json_object_get(fn, "name"), "arguments", json_object_get(fn, "arguments"));
        char *text = line ? json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (text) printf("%s\n", text);
        free(text); /* allocated by jansson */
        json_decref(line);
    }
}

/* Appends a message {role, content} (and tool_calls) to the conversation. */
static int push_message(cli_chat *chat, const char *role, const char *content, const json_t *tool_calls, char *err)
{
    json_t *text = json_string(content); /* NULL (short of memory exhaustion) for invalid UTF-8 */
    if (!text) return dk_fail(err, DK_ERR_ARG, "the %s message is not valid UTF-8", role);
    json_t *msg = json_pack("{s:s,s:o}", "role", role, "content", text);
    /* a copy: the caller may reuse its array for the next answer */
    if (msg && tool_calls && json_array_size(tool_calls)) json_object_set_new(msg, "tool_calls", json_deep_copy(tool_calls));
    return msg && json_array_append_new(chat->messages, msg) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

static void pop_message(cli_chat *chat) { json_array_remove(chat->messages, json_array_size(chat->messages) - 1); }

static enum engine_tool_choice tool_choice_of(const char *s)
{
    if (!s || strcmp(s, "auto") == 0) return ENGINE_TOOL_AUTO;
    if (strcmp(s, "none") == 0) return ENGINE_TOOL_NONE;
    if (strcmp(s, "required") == 0) return ENGINE_TOOL_REQUIRED;
    return ENGINE_TOOL_NAMED;
}

static double ms_between(uint64_t t0, uint64_t t1) { return (double)(t1 - t0) / 1e6; }

/* ---- the model in this process ---- */

/* chat->options over the engine's defaults (and the random seed when none is set). stops
 * point into the options (valid while they are not changed). */
static void local_gen_params(run_ctx *x, engine_generate_params *gen, const char **stops)
{
    const json_t *o = x->chat.options, *v;
    engine_generate_params_default(gen);
    sample_params *sp = &gen->sampling;
    sp->seed = x->random_seed;
    if ((v = json_object_get(o, "temperature"))) sp->temperature = (float)json_number_value(v);
    if ((v = json_object_get(o, "top_k"))) sp->top_k = (int)json_integer_value(v);
    if ((v = json_object_get(o, "top_p"))) sp->top_p = (float)json_number_value(v);
    if ((v = json_object_get(o, "min_p"))) sp->min_p = (float)json_number_value(v);
    if ((v = json_object_get(o, "repeat_penalty"))) sp->repeat_penalty = (float)json_number_value(v);
    if ((v = json_object_get(o, "repeat_last_n"))) sp->repeat_last_n = (int)json_integer_value(v);
    if ((v = json_object_get(o, "presence_penalty"))) sp->presence_penalty = (float)json_number_value(v);
    if ((v = json_object_get(o, "frequency_penalty"))) sp->frequency_penalty = (float)json_number_value(v);
    if ((v = json_object_get(o, "seed"))) sp->seed = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(o, "num_predict"))) gen->num_predict = (long)json_integer_value(v);
    size_t i;
    json_array_foreach(json_object_get(o, "stop"), i, v) {
        if (gen->n_stops < MAX_STOPS) stops[gen->n_stops++] = json_string_value(v);
    }
    gen->stops = stops;
    gen->on_text = write_content;
    gen->user = x;
    gen->cancel = &x->chat.cancel;
}

static size_t option_size(const json_t *options, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(options, key));
    return v > 0 ? (size_t)v : 0;
}

/* A session for the num_ctx / num_thread of the options (the old one when they are unchanged). */
static int local_session(run_ctx *x, char *err)
{
    size_t n_ctx = option_size(x->chat.options, "num_ctx");
    int n_threads = (int)option_size(x->chat.options, "num_thread");
    if (x->session && n_ctx == x->session_n_ctx && n_threads == x->session_threads) return DK_OK;
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = n_ctx;
    sp.n_threads = n_threads;
    engine_session *s = NULL;
    int rc = engine_session_new(&s, x->model, &sp, err);
    if (rc != DK_OK) return rc;
    engine_session_free(x->session);
    x->session = s;
    x->session_n_ctx = n_ctx;
    x->session_threads = n_threads;
    return DK_OK;
}

/* --raw: the text as it is (BOS as the vocab says at the start of the context), --format as
 * a grammar over the completion; each turn continues the same context. */
static int local_raw_turn(run_ctx *x, const char *text, engine_generate_params *gen, engine_timings *t, char *err)
{
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    sample_grammar *grammar = NULL;
    int rc = engine_tokenize(x->model, text, strlen(text), engine_session_n_past(x->session) == 0, false, &tokens,
                             &n_tokens, err);
    if (rc == DK_OK && x->chat.format) {
        rc = engine_format_grammar(x->chat.format, &grammar, err);
        gen->grammar = grammar;
    }
    if (rc == DK_OK) rc = engine_generate(x->session, tokens, n_tokens, gen, t, err);
    sample_grammar_free(grammar);
    dk_free(tokens);
    return rc;
}

static int local_chat_turn(run_ctx *x, const char *text, const engine_generate_params *gen, engine_timings *t, char *err)
{
    cli_chat *chat = &x->chat;
    int rc = push_message(chat, "user", text, NULL, err);
    if (rc != DK_OK) return rc;
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = chat->messages;
    cp.tools = chat->tools;
    cp.tool_choice = tool_choice_of(chat->tool_choice);
    cp.tool_name = cp.tool_choice == ENGINE_TOOL_NAMED ? chat->tool_choice : NULL;
    cp.format = chat->format;
    cp.think = chat->think;
    cp.template_text = x->template_text;
    cp.gen = *gen;
    cp.on_reasoning = write_reasoning;
    engine_chat_result r;
    rc = engine_chat(x->session, &cp, &r, err);
    end_reasoning(x);
    bool cancelled = rc == DK_OK && r.timings.done == ENGINE_DONE_CANCEL && atomic_load(&chat->cancel);
    if (rc == DK_OK && !cancelled) {
        print_tool_calls(r.tool_calls, &r.content);
        rc = push_message(chat, "assistant", r.content.data ? r.content.data : "", r.tool_calls, err);
        *t = r.timings;
    }
    if (rc != DK_OK || cancelled) pop_message(chat); /* the question goes with its lost answer */
    engine_chat_result_free(&r);
    return rc;
}

static int local_turn(cli_chat *chat, const char *text, char *err)
{
    run_ctx *x = chat->impl;
    uint64_t t0 = x->t_first ? x->t_first : dk_now_ns();
    x->t_first = 0;
    const char *stops[MAX_STOPS];
    engine_generate_params gen;
    local_gen_params(x, &gen, stops);
    engine_timings t = {0};
    int rc = local_session(x, err);
    if (rc == DK_OK) rc = chat->raw ? local_raw_turn(x, text, &gen, &t, err) : local_chat_turn(x, text, &gen, &t, err);
    if (rc != DK_OK) return rc;
    chat->last = (cli_timings){.valid = true, .total_ms = ms_between(t0, dk_now_ns()), .load_ms = engine_load_ms(x->model),
                               .n_prompt = t.n_prompt, .prompt_ms = t.prompt_ms, .n_eval = t.n_eval, .eval_ms = t.eval_ms};
    return DK_OK;
}

static void local_clear(cli_chat *chat)
{
    run_ctx *x = chat->impl;
    if (chat->raw && x->session) engine_session_clear(x->session);
}

static void print_info_row(const char *key, const char *value) { printf("    %-20s%s\n", key, value); }

static int local_show(cli_chat *chat, const char *section, char *err)
{
    run_ctx *x = chat->impl;
    if (strcmp(section, "template") == 0) {
        const char *t = engine_chat_template(x->model);
        puts(t ? t : "(the model has no chat template: the built-in ChatML template is used)");
        return DK_OK;
    }
    if (strcmp(section, "info") != 0) return dk_fail(err, DK_ERR_NOTFOUND, "no %s", section);
    /* MODEL is a file or a name in the store (resolved as cli_load_model resolved it) */
    store *st = NULL;
    store_model *m = NULL;
    store_gguf_info info;
    int rc = store_open(&st, NULL, NULL, err);
    if (rc == DK_OK) rc = store_resolve(st, chat->model, &m, err);
    if (rc == DK_OK) rc = store_gguf_info_read(m->gguf_path, &info, err);
    store_model_free(m);
    store_free(st);
    if (rc != DK_OK) return rc;
    char buf[64];
    puts("  Model");
    print_info_row("architecture", engine_arch(x->model));
    print_info_row("parameters", info.parameter_size);
    snprintf(buf, sizeof buf, "%zu", engine_n_ctx_train(x->model));
    print_info_row("context length", buf);
    snprintf(buf, sizeof buf, "%zu", engine_n_embd(x->model));
    print_info_row("embedding length", buf);
    print_info_row("quantization", info.file_type[0] ? info.file_type : "unknown");
    store_gguf_info_free(&info);
    return DK_OK;
}

static int local_options_changed(cli_chat *chat, char *err) { return local_session(chat->impl, err); }

static const cli_chat_ops local_ops = {local_turn, local_clear, local_show, local_options_changed};

/* A model from the store brings its Modelfile's settings, as the server applies them: its
 * PARAMETERs under the options given here, its SYSTEM when there is no --system, its
 * MESSAGEs before the conversation, its TEMPLATE when it is Jinja (Ollama's Go templates are
 * not: the GGUF's own template is used then). A path has none. */
static int apply_store_record(run_ctx *x, char *err)
{
    store *st = NULL;
    store_model *m = NULL;
    int rc = store_open(&st, NULL, NULL, err);
    if (rc == DK_OK) rc = store_resolve(st, x->chat.model, &m, err);
    store_free(st);
    if (rc != DK_OK) return rc;
    const char *key;
    json_t *v;
    json_object_foreach(m->params, key, v) {
        if (!json_object_get(x->chat.options, key)) json_object_set(x->chat.options, key, v);
    }
    if (m->system && !x->system && !x->chat.raw) rc = cli_chat_set_system(&x->chat, m->system, err);
    size_t i;
    json_array_foreach(m->messages, i, v) {
        if (rc == DK_OK && json_array_append(x->chat.messages, v) != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    chat_template *t = NULL;
    char why[DK_ERRLEN];
    if (rc == DK_OK && m->template_text && chat_template_parse(&t, m->template_text, strlen(m->template_text), why) == DK_OK)
        x->template_text = dk_strdup(m->template_text);
    chat_template_free(t);
    store_model_free(m);
    return rc;
}

static int local_open(run_ctx *x)
{
    if (cli_load_model(CMD, x->chat.model, false, (int)option_size(x->chat.options, "num_thread"), x->exact, &x->model))
        return -1;
    char err0[DK_ERRLEN];
    if (apply_store_record(x, err0) != DK_OK) return cli_error(CMD, "%s", err0), -1;
    if (engine_is_embedding(x->model)) return cli_error(CMD, "%s is an embedding model; use duckling embed", x->chat.model), -1;
    char err[DK_ERRLEN];
    if (local_session(x, err) != DK_OK) return cli_error(CMD, "%s", err), -1;
    x->chat.ops = &local_ops;
    return 0;
}

/* ---- a running server ---- */

static void remote_timings(run_ctx *x, const json_t *obj)
{
#define NS_MS(key) ((double)json_integer_value(json_object_get(obj, key)) / 1e6)
    x->chat.last = (cli_timings){.valid = true, .total_ms = NS_MS("total_duration"), .load_ms = NS_MS("load_duration"),
                                 .n_prompt = (size_t)json_integer_value(json_object_get(obj, "prompt_eval_count")),
                                 .prompt_ms = NS_MS("prompt_eval_duration"),
                                 .n_eval = (size_t)json_integer_value(json_object_get(obj, "eval_count")),
                                 .eval_ms = NS_MS("eval_duration")};
#undef NS_MS
    x->done = true;
}

/* Streams the text of one chunk: thinking to stderr, content to stdout (and the answer). */
static int remote_text(run_ctx *x, const char *thinking, const char *content, char *err)
{
    if (thinking && *thinking) {
        write_reasoning(x, thinking, strlen(thinking));
        dk_buf_puts(&x->reasoning, thinking);
    }
    if (content && *content) {
        write_content(x, content, strlen(content));
        dk_buf_puts(&x->answer, content);
    }
    return x->answer.failed || x->reasoning.failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : 0;
}

static int remote_on_chat(void *user, const json_t *obj, char *err)
{
    run_ctx *x = user;
    const json_t *msg = json_object_get(obj, "message");
    int rc = remote_text(x, json_string_value(json_object_get(msg, "thinking")),
                         json_string_value(json_object_get(msg, "content")), err);
    if (rc) return rc;
    const json_t *calls = json_object_get(msg, "tool_calls");
    if (json_is_array(calls) && json_array_extend(x->calls, (json_t *)calls) != 0)
        return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    if (json_is_true(json_object_get(obj, "done"))) remote_timings(x, obj);
    return 0;
}

static int remote_on_generate(void *user, const json_t *obj, char *err)
{
    run_ctx *x = user;
    int rc = remote_text(x, json_string_value(json_object_get(obj, "thinking")),
                         json_string_value(json_object_get(obj, "response")), err);
    if (rc) return rc;
    if (json_is_true(json_object_get(obj, "done"))) {
        remote_timings(x, obj);
        json_t *ctx = json_object_get(obj, "context");
        if (json_is_array(ctx)) {
            json_decref(x->remote_context);
            x->remote_context = json_incref(ctx);
        }
    }
    return 0;
}

/* keep_alive as the API takes it: a number of seconds, or a duration string ("5m", "-1"). */
static json_t *keep_alive_value(const char *s)
{
    char *end = NULL;
    long long n = strtoll(s, &end, 10);
    return end != s && *end == 0 ? json_integer(n) : json_string(s);
}

/* The fields every request carries: model, stream, options, format, keep_alive. */
static json_t *remote_request(run_ctx *x)
{
    cli_chat *chat = &x->chat;
    json_t *body = json_pack("{s:s,s:b}", "model", x->remote_model, "stream", 1);
    if (!body) return NULL;
    bool ok = true;
    if (json_object_size(chat->options)) ok &= json_object_set(body, "options", chat->options) == 0;
    if (chat->format) ok &= json_object_set(body, "format", chat->format) == 0;
    if (x->keep_alive) ok &= json_object_set_new(body, "keep_alive", keep_alive_value(x->keep_alive)) == 0;
    if (!ok) {
        json_decref(body);
        return NULL;
    }
    return body;
}

static int remote_turn(cli_chat *chat, const char *text, char *err)
{
    run_ctx *x = chat->impl;
    dk_buf_clear(&x->answer);
    dk_buf_clear(&x->reasoning);
    json_array_clear(x->calls);
    x->done = false;
    json_t *body = remote_request(x);
    if (!body) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = DK_OK;
    bool ok = true;
    if (chat->raw) {
        json_t *prompt = json_string(text);
        if (!prompt) rc = dk_fail(err, DK_ERR_ARG, "the user message is not valid UTF-8");
        ok &= json_object_set_new(body, "prompt", prompt) == 0;
        ok &= json_object_set_new(body, "raw", json_true()) == 0;
        if (x->remote_context) ok &= json_object_set(body, "context", x->remote_context) == 0;
    } else {
        rc = push_message(chat, "user", text, NULL, err);
        ok &= json_object_set(body, "messages", chat->messages) == 0;
        if (chat->tools) ok &= json_object_set(body, "tools", chat->tools) == 0;
        if (chat->tool_choice) ok &= json_object_set_new(body, "tool_choice", json_string(chat->tool_choice)) == 0;
        if (chat->think >= 0) ok &= json_object_set_new(body, "think", json_boolean(chat->think > 0)) == 0;
    }
    if (rc == DK_OK && !ok) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    bool pushed = !chat->raw && rc == DK_OK;
    if (rc == DK_OK)
        rc = cli_client_stream(x->url.data, chat->raw ? "/api/generate" : "/api/chat", body,
                               chat->raw ? remote_on_generate : remote_on_chat, x, &chat->cancel, err);
    json_decref(body);
    end_reasoning(x);
    bool cancelled = atomic_load(&chat->cancel) != 0;
    if (rc == DK_OK && !x->done && !cancelled) rc = dk_fail(err, DK_ERR_IO, "the server ended the answer early");
    if (rc == DK_OK && !cancelled) {
        print_tool_calls(x->calls, &x->answer);
        if (pushed) rc = push_message(chat, "assistant", x->answer.data ? x->answer.data : "", x->calls, err);
        else if (chat->raw) return DK_OK;
        if (rc == DK_OK) return DK_OK;
    }
    if (pushed) pop_message(chat);
    return rc;
}

static void remote_clear(cli_chat *chat)
{
    run_ctx *x = chat->impl;
    json_decref(x->remote_context);
    x->remote_context = NULL;
}

/* A string field of /api/show's reply (fetched once), or NULL. */
static int remote_show_reply(run_ctx *x, const json_t **out, char *err)
{
    if (!x->show) {
        json_t *body = json_pack("{s:s}", "model", x->remote_model);
        if (!body) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
        int rc = cli_client_post(x->url.data, "/api/show", body, &x->show, err);
        json_decref(body);
        if (rc != DK_OK) return rc;
    }
    *out = x->show;
    return DK_OK;
}

/* model_info's "ARCH.KEY" number as text, or "unknown". */
static void arch_number(const json_t *info, const char *arch, const char *key, char *buf, size_t n)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", arch, key);
    const json_t *v = json_object_get(info, name);
    if (json_is_integer(v)) snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else snprintf(buf, n, "unknown");
}

static int remote_show(cli_chat *chat, const char *section, char *err)
{
    run_ctx *x = chat->impl;
    const json_t *show = NULL;
    int rc = remote_show_reply(x, &show, err);
    if (rc != DK_OK) return rc;
    const char *text = NULL;
    if (strcmp(section, "info") == 0) {
        const json_t *details = json_object_get(show, "details"), *info = json_object_get(show, "model_info");
        const char *arch = json_string_value(json_object_get(info, "general.architecture"));
        if (!arch) arch = json_string_value(json_object_get(details, "family"));
        char buf[64];
        puts("  Model");
        print_info_row("architecture", arch ? arch : "unknown");
        const char *params = json_string_value(json_object_get(details, "parameter_size"));
        print_info_row("parameters", params ? params : "unknown");
        arch_number(info, arch ? arch : "", "context_length", buf, sizeof buf);
        print_info_row("context length", buf);
        arch_number(info, arch ? arch : "", "embedding_length", buf, sizeof buf);
        print_info_row("embedding length", buf);
        const char *quant = json_string_value(json_object_get(details, "quantization_level"));
        print_info_row("quantization", quant ? quant : "unknown");
        return DK_OK;
    }
    if (strcmp(section, "template") == 0) text = json_string_value(json_object_get(show, "template"));
    else if (strcmp(section, "system") == 0) text = json_string_value(json_object_get(show, "system"));
    else if (strcmp(section, "modelparams") == 0) {
        text = json_string_value(json_object_get(show, "parameters"));
        if (text && *text) printf("Model defined parameters:\n%s%s", text, text[strlen(text) - 1] == '\n' ? "" : "\n");
        return text && *text ? DK_OK : dk_fail(err, DK_ERR_NOTFOUND, "no parameters");
    }
    if (!text || !*text) return dk_fail(err, DK_ERR_NOTFOUND, "the model has no %s", section);
    puts(text);
    return DK_OK;
}

static const cli_chat_ops remote_ops = {remote_turn, remote_clear, remote_show, NULL};

/* The model's name for the server: a file becomes its absolute path (the server resolves
 * paths, but from its own working directory). */
static int remote_open(run_ctx *x)
{
    struct stat st;
    char *abs = stat(x->chat.model, &st) == 0 && S_ISREG(st.st_mode) ? realpath(x->chat.model, NULL) : NULL;
    x->remote_model = dk_strdup(abs ? abs : x->chat.model);
    free(abs); /* allocated by realpath */
    x->calls = json_array();
    if (!x->remote_model || !x->calls) return cli_error(CMD, "out of memory"), -1;
    x->chat.ops = &remote_ops;
    return 0;
}

/* ---- command line ---- */

/* A sampling flag and the option key it sets. */
typedef struct flag_option {
    const char *flag;
    const char *key;
} flag_option;

static const flag_option flag_options[] = {
    {"--temperature", "temperature"},
    {"--top-k", "top_k"},
    {"--top-p", "top_p"},
    {"--min-p", "min_p"},
    {"--repeat-penalty", "repeat_penalty"},
    {"--repeat-last-n", "repeat_last_n"},
    {"--presence-penalty", "presence_penalty"},
    {"--frequency-penalty", "frequency_penalty"},
    {"--seed", "seed"},
    {"-n", "num_predict"},
    {"--num-predict", "num_predict"},
    {"--ctx", "num_ctx"},
    {"--threads", "num_thread"},
    {"--stop", "stop"},
};

static int parse_args(run_ctx *x, int argc, char **argv)
{
    cli_chat *chat = &x->chat;
    bool only_positional = false;
    char err[DK_ERRLEN];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (only_positional || a[0] != '-' || a[1] == 0) {
            if (!chat->model) {
                chat->model = a;
            } else {
                if (x->have_prompt) dk_buf_putc(&x->prompt, ' ');
                dk_buf_puts(&x->prompt, a);
                x->have_prompt = true;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) { only_positional = true; continue; }
        if (strcmp(a, "--raw") == 0) { chat->raw = true; continue; }
        if (strcmp(a, "--verbose") == 0) { chat->verbose = true; continue; }
        if (strcmp(a, "--exact") == 0) { x->exact = true; continue; }
        if (strcmp(a, "--local") == 0) { x->local = true; continue; }
        if (strcmp(a, "--think") == 0) { chat->think = 1; continue; }
        if (strcmp(a, "--no-think") == 0) { chat->think = 0; continue; }
        if (strcmp(a, "--hide-thinking") == 0) { chat->hide_thinking = true; continue; }
#define OPT(name) ((r = cli_opt_value(CMD, argc, argv, &i, name, &v)) != 0)
        bool matched = false;
        for (size_t k = 0; k < sizeof flag_options / sizeof flag_options[0] && !matched; k++) {
            if (!OPT(flag_options[k].flag)) continue;
            if (r < 0) return -1;
            if (cli_option_set(chat->options, flag_options[k].key, flag_options[k].flag, v, err) != DK_OK)
                return cli_error(CMD, "%s", err), -1;
            matched = true;
        }
        if (matched) continue;
        if (OPT("--system")) { if (r < 0) return -1; x->system = v; continue; }
        if (OPT("--format")) { if (r < 0) return -1; x->format_arg = v; continue; }
        if (OPT("--tools")) { if (r < 0) return -1; x->tools_path = v; continue; }
        if (OPT("--tool-choice")) { if (r < 0) return -1; chat->tool_choice = v; continue; }
        if (OPT("--host")) { if (r < 0) return -1; x->host = v; continue; }
        if (OPT("--keepalive")) { if (r < 0) return -1; x->keep_alive = v; continue; }
#undef OPT
        cli_error(CMD, "unknown option '%s' (see duckling help run)", a);
        return -1;
    }
    if (!chat->model) {
        cli_error(CMD, "missing MODEL (usage: duckling run MODEL [PROMPT])");
        return -1;
    }
    if (x->prompt.failed) {
        cli_error(CMD, "out of memory");
        return -1;
    }
    return 0;
}

/* Reads a JSON file (or, for --format, inline JSON) into *out; 0 or -1 after cli_error. */
static int load_json_arg(const char *option, const char *arg, bool inline_ok, json_t **out)
{
    json_error_t je;
    if (inline_ok && (arg[0] == '{' || arg[0] == '[')) *out = json_loads(arg, 0, &je);
    else *out = json_load_file(arg, 0, &je);
    if (!*out) return cli_error(CMD, "%s %s: %s (line %d, column %d)", option, arg, je.text, je.line, je.column), -1;
    return 0;
}

/* --format, --tools and the system prompt into JSON values; 0 or -1 after cli_error. */
static int load_json_options(run_ctx *x)
{
    cli_chat *chat = &x->chat;
    char err[DK_ERRLEN];
    if (x->system && !chat->raw && cli_chat_set_system(chat, x->system, err) != DK_OK) return cli_error(CMD, "%s", err), -1;
    if (x->format_arg) {
        if (strcmp(x->format_arg, "json") == 0) chat->format = json_string("json");
        else if (load_json_arg("--format", x->format_arg, true, &chat->format)) return -1;
        if (!chat->format) return cli_error(CMD, "out of memory"), -1;
        if (!json_is_object(chat->format) && !json_is_string(chat->format))
            return cli_error(CMD, "--format %s: a JSON schema must be an object", x->format_arg), -1;
    }
    if (x->tools_path) {
        if (chat->raw) return cli_error(CMD, "--tools needs the chat template; it cannot be used with --raw"), -1;
        if (load_json_arg("--tools", x->tools_path, false, &chat->tools)) return -1;
        if (json_is_object(chat->tools) && json_is_array(json_object_get(chat->tools, "tools"))) {
            json_t *arr = json_incref(json_object_get(chat->tools, "tools"));
            json_decref(chat->tools);
            chat->tools = arr;
        }
        if (!json_is_array(chat->tools)) return cli_error(CMD, "--tools %s: expected an array of tools", x->tools_path), -1;
    }
    if (chat->tool_choice && !chat->tools) return cli_error(CMD, "--tool-choice needs --tools"), -1;
    return 0;
}

/* Whether to use a server: not with --local or --exact (a server computes the fast numerics);
 * with --host the server must answer; otherwise one that answers at the default address. */
static int choose_backend(run_ctx *x, bool *use_server)
{
    *use_server = false;
    if (x->local || x->exact) return 0;
    char err[DK_ERRLEN];
    if (cli_host_url(x->host, &x->url, err) != DK_OK) return cli_error(CMD, "%s", err), -1;
    if (cli_client_ping(x->url.data, PING_CONNECT_MS)) *use_server = true;
    else if (x->host) return cli_error(CMD, "could not connect to a running duckling server at %s", cli_host_name(x->url.data)), -1;
    return 0;
}

int cli_run(int argc, char **argv)
{
    run_ctx x;
    memset(&x, 0, sizeof(x));
    x.t_first = dk_now_ns();
    x.chat.think = -1;
    x.chat.impl = &x;
    x.chat.options = json_object();
    x.chat.messages = json_array();
    x.random_seed = dk_now_ns() ^ ((uint64_t)getpid() << 32);
    int status = 1;
    bool use_server = false;
    if (!x.chat.options || !x.chat.messages) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    if (parse_args(&x, argc, argv) != 0 || load_json_options(&x) != 0) goto done;
    if (choose_backend(&x, &use_server) != 0) goto done;
    if (use_server ? remote_open(&x) != 0 : local_open(&x) != 0) goto done;
    if (x.have_prompt) {
        char err[DK_ERRLEN];
        x.chat.last.valid = false;
        if (x.chat.ops->turn(&x.chat, x.prompt.data, err) != DK_OK) {
            cli_error(CMD, "%s", err);
            goto done;
        }
        if (isatty(STDOUT_FILENO)) fputc('\n', stdout);
        fflush(stdout);
        if (x.chat.verbose && x.chat.last.valid) cli_print_timings(&x.chat.last);
        status = 0;
    } else {
        x.t_first = 0;
        status = cli_repl(&x.chat);
    }
done:
    engine_session_free(x.session);
    engine_model_free(x.model);
    dk_buf_free(&x.prompt);
    dk_buf_free(&x.url);
    dk_buf_free(&x.answer);
    dk_buf_free(&x.reasoning);
    dk_free(x.remote_model);
    dk_free(x.template_text);
    json_decref(x.remote_context);
    json_decref(x.show);
    json_decref(x.calls);
    json_decref(x.chat.format);
    json_decref(x.chat.tools);
    json_decref(x.chat.messages);
    json_decref(x.chat.options);
    return status;
}
