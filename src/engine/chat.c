/*
 * chat.c: engine_chat, one assistant turn of a conversation, the way `duckling run` and the
 * server hold chats. It renders the conversation with the model's chat template (chat/), keeps
 * the part of the KV cache the new prompt shares with what the session already evaluated,
 * turns `format` and `tool_choice` into a grammar (sample/) that generation must follow, and
 * splits the streamed output into content, reasoning and tool calls with the parser of the
 * model's tool-call format. Not for: the forward pass or sampling themselves (engine.c),
 * HTTP field names (server/).
 */
#include "engine/engine_internal.h"

#include <string.h>

void engine_chat_params_default(engine_chat_params *params)
{
    memset(params, 0, sizeof(*params));
    engine_generate_params_default(&params->gen);
    params->parallel_tool_calls = true;
    params->think = -1;
}

void engine_chat_result_free(engine_chat_result *result)
{
    dk_buf_free(&result->content);
    dk_buf_free(&result->reasoning);
    dk_buf_free(&result->prompt);
    json_decref(result->tool_calls);
    result->tool_calls = NULL;
}

static char *token_text_dup(const tok_vocab *vocab, int32_t id)
{
    if (id < 0) return dk_strdup("");
    gguf_str s = tok_token_text(vocab, id);
    return dk_strndup(s.ptr, s.len);
}

/* Fills the lazily built chat fields of a model; called with chat_lock held. */
static int chat_parts_build(engine_model *m, char *err)
{
    const char *source = m->chat_template ? m->chat_template : chat_template_chatml();
    char why[DK_ERRLEN];
    int rc = chat_template_parse(&m->chat_tmpl, source, strlen(source), why);
    if (rc != DK_OK) return dk_fail(err, rc, "chat template: %s", why);
    m->bos_text = token_text_dup(m->vocab, tok_bos(m->vocab));
    m->eos_text = token_text_dup(m->vocab, tok_eos(m->vocab));
    if (!m->bos_text || !m->eos_text) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    m->chat_format = chat_format_detect(source, m->arch);
    return DK_OK;
}

int engine_chat_template_get(engine_model *model, const chat_template **tmpl, char *err)
{
    pthread_mutex_lock(&model->chat_lock);
    int rc = model->chat_tmpl ? DK_OK : chat_parts_build(model, err);
    if (rc != DK_OK) { /* leave nothing half-built behind: the next call tries again */
        chat_template_free(model->chat_tmpl);
        dk_free(model->bos_text);
        dk_free(model->eos_text);
        model->chat_tmpl = NULL;
        model->bos_text = model->eos_text = NULL;
    }
    *tmpl = model->chat_tmpl;
    pthread_mutex_unlock(&model->chat_lock);
    return rc;
}

const char *engine_bos_text(const engine_model *model) { return model->bos_text ? model->bos_text : ""; }
const char *engine_eos_text(const engine_model *model) { return model->eos_text ? model->eos_text : ""; }
enum chat_format engine_chat_format(const engine_model *model) { return model->chat_format; }

/* ---- one turn ---- */

typedef struct chat_turn {
    const engine_chat_params *params;
    engine_chat_result *result;
    chat_parser *parser;
    dk_buf content, reasoning; /* this feed's deltas */
    bool cancelled;
    bool failed;
} chat_turn;

/* Hands the deltas of one feed to the caller's callbacks and the result. */
static int turn_forward(chat_turn *t)
{
    const engine_chat_params *p = t->params;
    if (t->reasoning.len) {
        dk_buf_append(&t->result->reasoning, t->reasoning.data, t->reasoning.len);
        if (p->on_reasoning && p->on_reasoning(p->gen.user, t->reasoning.data, t->reasoning.len)) t->cancelled = true;
    }
    if (t->content.len) {
        dk_buf_append(&t->result->content, t->content.data, t->content.len);
        if (p->gen.on_text && p->gen.on_text(p->gen.user, t->content.data, t->content.len)) t->cancelled = true;
    }
    dk_buf_clear(&t->content);
    dk_buf_clear(&t->reasoning);
    if (t->result->content.failed || t->result->reasoning.failed) t->failed = true;
    return t->cancelled || t->failed;
}

static int turn_on_text(void *user, const char *text, size_t n_bytes)
{
    chat_turn *t = user;
    chat_delta d = {.content = &t->content, .reasoning = &t->reasoning};
    if (chat_parser_feed(t->parser, text, n_bytes, &d) != DK_OK) {
        t->failed = true;
        return 1;
    }
    return turn_forward(t);
}

/* The variables the template sees besides messages and tools. Caller decrefs. */
static json_t *template_extra(const engine_chat_params *p)
{
    json_t *extra = p->template_vars && json_is_object(p->template_vars) ? json_deep_copy(p->template_vars) : json_object();
    if (extra && p->think >= 0) json_object_set_new(extra, "enable_thinking", json_boolean(p->think > 0));
    return extra;
}

static bool ends_with_think_open(const dk_buf *prompt)
{
    size_t n = prompt->len;
    while (n && (prompt->data[n - 1] == '\n' || prompt->data[n - 1] == ' ')) n--;
    return n >= 7 && memcmp(prompt->data + n - 7, "<think>", 7) == 0;
}

/* Appends the GBNF of a format ("json" or a JSON schema object) with start rule `name`. */
static int format_gbnf(const json_t *format, const char *name, dk_buf *out, char *err)
{
    if (json_is_string(format) && strcmp(json_string_value(format), "json") != 0)
        return dk_fail(err, DK_ERR_ARG, "format must be \"json\" or a JSON schema, not \"%s\"", json_string_value(format));
    if (!json_is_string(format) && !json_is_object(format))
        return dk_fail(err, DK_ERR_ARG, "format must be \"json\" or a JSON schema object");
    bool json_mode = json_is_string(format);
    if (json_mode && strcmp(name, "root") == 0)
        return dk_buf_puts(out, sample_gbnf_json()) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    /* JSON mode under another rule name: the schema of any object (sample_gbnf_json's rule
     * names are fixed) */
    json_t *any = json_mode ? json_pack("{s:s}", "type", "object") : NULL;
    if (json_mode && !any) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    char why[DK_ERRLEN];
    int rc = sample_json_schema_to_gbnf(json_mode ? any : format, name, out, why);
    json_decref(any);
    return rc == DK_OK ? DK_OK : dk_fail(err, rc, "format: %s", why);
}

int engine_format_grammar(const json_t *format, sample_grammar **out, char *err)
{
    *out = NULL;
    dk_buf gbnf = {0};
    char why[DK_ERRLEN];
    int rc = format_gbnf(format, "root", &gbnf, err);
    if (rc == DK_OK && (rc = sample_grammar_parse(out, gbnf.data, gbnf.len, "root", why)) != DK_OK)
        rc = dk_fail(err, rc, "grammar: %s", why);
    dk_buf_free(&gbnf);
    return rc;
}

/* The grammar of format and tool_choice, as GBNF text in out (empty: none), and how it
 * applies (lazy on the call marker for tool_choice auto). */
static int turn_grammar_text(engine_model *m, enum chat_format fmt, const engine_chat_params *p, dk_buf *out,
                             bool *lazy, int32_t *trigger, char *err)
{
    *lazy = false;
    *trigger = -1;
    bool tools = p->tools && json_is_array(p->tools) && json_array_size(p->tools) > 0;
    const char *name = p->tool_choice == ENGINE_TOOL_NAMED ? p->tool_name : NULL;
    if (p->tool_choice == ENGINE_TOOL_NAMED && !name) return dk_fail(err, DK_ERR_ARG, "tool_choice: no function name");
    if (tools && (p->tool_choice == ENGINE_TOOL_REQUIRED || p->tool_choice == ENGINE_TOOL_NAMED))
        return chat_tool_grammar(fmt, p->tools, name, p->parallel_tool_calls && !name, "root", out, err);
    if (!tools && (p->tool_choice == ENGINE_TOOL_REQUIRED || p->tool_choice == ENGINE_TOOL_NAMED))
        return dk_fail(err, DK_ERR_ARG, "tool_choice requires a call but no tools were given");
    bool with_format = p->format && !json_is_null(p->format);
    bool auto_tools = tools && p->tool_choice == ENGINE_TOOL_AUTO;
    if (!with_format) {
        const char *marker = chat_format_call_marker(fmt);
        int32_t id = auto_tools && marker ? engine_token_find(m, marker) : -1;
        if (id < 0) return DK_OK; /* free text; calls are parsed, not constrained */
        *lazy = true;
        *trigger = id;
        return chat_tool_grammar(fmt, p->tools, NULL, p->parallel_tool_calls, "root", out, err);
    }
    if (!auto_tools) return format_gbnf(p->format, "root", out, err);
    /* the model either calls a tool or answers in the format */
    int rc = format_gbnf(p->format, "fmt-root", out, err);
    if (rc == DK_OK) rc = chat_tool_grammar(fmt, p->tools, NULL, p->parallel_tool_calls, "tc-root", out, err);
    if (rc == DK_OK && dk_buf_puts(out, "root ::= tc-root | fmt-root\n") != 0) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
    return rc;
}

/* Tokenizes the prompt and drops from the session what it does not share with it. */
static int turn_tokens(engine_session *s, const dk_buf *prompt, int32_t **tokens, size_t *n_tokens, size_t *n_reused,
                       char *err)
{
    const char *bos = engine_bos_text(s->model);
    bool add_special = !(bos[0] && prompt->len >= strlen(bos) && memcmp(prompt->data, bos, strlen(bos)) == 0);
    int rc = engine_tokenize(s->model, prompt->data ? prompt->data : "", prompt->len, add_special, true, tokens, n_tokens, err);
    if (rc != DK_OK) return rc;
    if (*n_tokens == 0) return dk_fail(err, DK_ERR_ARG, "chat: the prompt gives no tokens");
    size_t common = 0;
    while (common < s->n_past && common < *n_tokens && s->history[common] == (*tokens)[common]) common++;
    if (common == *n_tokens) common--; /* evaluate at least one token, for fresh logits */
    if (common < s->n_past && (rc = engine_session_truncate(s, common, err)) != DK_OK) return rc;
    *n_reused = common;
    return DK_OK;
}

/* engine_generate hands its callbacks the turn as user; the caller's token callback wants its own. */
static int turn_on_token(void *user, int32_t token, float logprob, const engine_logprob *top, size_t n_top)
{
    const chat_turn *t = user;
    return t->params->gen.on_token(t->params->gen.user, token, logprob, top, n_top);
}

int engine_chat(engine_session *session, const engine_chat_params *params, engine_chat_result *result, char *err)
{
    memset(result, 0, sizeof(*result));
    engine_model *m = session->model;
    const chat_template *tmpl;
    json_t *extra = NULL;
    sample_grammar *grammar = NULL;
    chat_turn turn = {.params = params, .result = result};
    dk_buf gbnf = {0};
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    chat_template *own_tmpl = NULL;
    char why[DK_ERRLEN];
    int rc = engine_chat_template_get(m, &tmpl, err);
    if (rc != DK_OK) return rc;
    if (!json_is_array(params->messages)) return dk_fail(err, DK_ERR_ARG, "chat: messages must be an array");
    const char *source = m->chat_template ? m->chat_template : chat_template_chatml();
    enum chat_format fmt = m->chat_format;
    if (params->template_text) {
        rc = chat_template_parse(&own_tmpl, params->template_text, strlen(params->template_text), why);
        if (rc != DK_OK) return dk_fail(err, rc, "chat template: %s", why);
        tmpl = own_tmpl;
        source = params->template_text;
        fmt = chat_format_detect(source, m->arch);
    }
    bool tools_on = params->tools && params->tool_choice != ENGINE_TOOL_NONE;

    extra = template_extra(params);
    if (!extra) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    chat_render_params rp = {
        .messages = params->messages,
        .tools = tools_on ? params->tools : NULL,
        .add_generation_prompt = true,
        .bos_token = engine_bos_text(m),
        .eos_token = engine_eos_text(m),
        .extra = extra,
    };
    rc = chat_template_render(tmpl, &rp, &result->prompt, why);
    if (rc != DK_OK) {
        rc = dk_fail(err, rc, "chat template: %s", why);
        goto done;
    }

    bool reasoning = strstr(source, "<think>") && params->think != 0;
    bool in_reasoning = reasoning && ends_with_think_open(&result->prompt);

    engine_generate_params gen = params->gen;
    bool lazy;
    int32_t trigger;
    rc = turn_grammar_text(m, fmt, params, &gbnf, &lazy, &trigger, err);
    if (rc != DK_OK) goto done;
    if (gbnf.len && params->grammar_extra && (dk_buf_putc(&gbnf, '\n') != 0 || dk_buf_puts(&gbnf, params->grammar_extra) != 0)) {
        rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (gbnf.len) {
        rc = sample_grammar_parse(&grammar, gbnf.data, gbnf.len, "root", why);
        if (rc != DK_OK) {
            rc = dk_fail(err, rc, "grammar: %s", why);
            goto done;
        }
        gen.grammar = grammar;
        gen.grammar_lazy = lazy;
        gen.grammar_trigger = trigger;
        gen.grammar_after_reasoning = reasoning && !in_reasoning;
        gen.in_reasoning = in_reasoning;
    }
    int32_t barred = -1;
    if (params->tools && params->tool_choice == ENGINE_TOOL_NONE && chat_format_call_marker(fmt)) {
        barred = engine_token_find(m, chat_format_call_marker(fmt));
        if (barred >= 0) {
            gen.banned = &barred;
            gen.n_banned = 1;
        }
    }

    chat_parse_params pp = {.format = fmt, .parse_tools = tools_on, .reasoning = reasoning, .in_reasoning = in_reasoning};
    rc = chat_parser_new(&turn.parser, &pp, err);
    if (rc != DK_OK) goto done;
    gen.on_text = turn_on_text;
    if (gen.on_token) gen.on_token = turn_on_token;
    gen.user = &turn;

    rc = turn_tokens(session, &result->prompt, &tokens, &n_tokens, &result->n_prompt_reused, err);
    if (rc != DK_OK) goto done;
    rc = engine_generate(session, tokens + result->n_prompt_reused, n_tokens - result->n_prompt_reused, &gen,
                         &result->timings, err);
    if (rc != DK_OK) goto done;
    if (turn.failed) {
        rc = dk_fail(err, DK_ERR_NOMEM, "chat: out of memory");
        goto done;
    }
    if (!turn.cancelled) {
        chat_delta d = {.content = &turn.content, .reasoning = &turn.reasoning};
        if (chat_parser_finish(turn.parser, &d) != DK_OK || (turn_forward(&turn) && turn.failed)) {
            rc = dk_fail(err, DK_ERR_NOMEM, "chat: out of memory");
            goto done;
        }
    }
    result->tool_calls = json_deep_copy(chat_parser_tool_calls(turn.parser));
    if (!result->tool_calls) result->tool_calls = json_array();
    if (!result->tool_calls) rc = dk_fail(err, DK_ERR_NOMEM, "out of memory");
done:
    chat_template_free(own_tmpl);
    json_decref(extra);
    sample_grammar_free(grammar);
    chat_parser_free(turn.parser);
    dk_buf_free(&turn.content);
    dk_buf_free(&turn.reasoning);
    dk_buf_free(&gbnf);
    dk_free(tokens);
    return rc;
}
