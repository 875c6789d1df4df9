/*
 * template.c: the "templates" half of chat.h: chat_template_parse / render / free on top of
 * the Jinja interpreter (jinja_*.c), and the built-in ChatML template for models that ship
 * none. Rendering converts the caller's jansson values into interpreter values (borrowing
 * their strings), sets the variables apply_chat_template sets (messages, tools,
 * add_generation_prompt, bos_token, eos_token, then the extra keys, which may override them)
 * and runs the program. Not for: the interpreter itself, tool-call parsing (toolcall.c).
 */
#include "chat/chat.h"

#include <string.h>

#include "chat/jinja_internal.h"

struct chat_template {
    jinja_program *program;
};

int chat_template_parse(chat_template **out, const char *source, size_t n_bytes, char *err)
{
    *out = NULL;
    if (!source && n_bytes) return dk_fail(err, DK_ERR_ARG, "chat_template_parse: NULL source");
    chat_template *t = dk_calloc(1, sizeof *t);
    if (!t) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    int rc = jinja_program_parse(&t->program, source, n_bytes, err);
    if (rc) {
        chat_template_free(t);
        return rc;
    }
    *out = t;
    return DK_OK;
}

void chat_template_free(chat_template *tmpl)
{
    if (!tmpl) return;
    jinja_program_free(tmpl->program);
    dk_free(tmpl);
}

static int set_json(jinja_ctx *ctx, jinja_dict *vars, const char *key, const json_t *json)
{
    jinja_value v;
    int rc = jinja_from_json(&ctx->arena, json, &v);
    if (rc == DK_ERR_LIMIT) return dk_fail(ctx->err, DK_ERR_LIMIT, "the variable '%s' is nested too deeply", key);
    if (rc) return jinja_nomem(ctx, 0);
    return jinja_dict_set(&ctx->arena, vars, key, strlen(key), v) ? jinja_nomem(ctx, 0) : DK_OK;
}

static int set_text(jinja_ctx *ctx, jinja_dict *vars, const char *key, const char *text)
{
    jinja_value v = jinja_str(text ? text : "", text ? strlen(text) : 0);
    return jinja_dict_set(&ctx->arena, vars, key, strlen(key), v) ? jinja_nomem(ctx, 0) : DK_OK;
}

static int make_vars(jinja_ctx *ctx, const chat_render_params *params, jinja_dict **out)
{
    jinja_dict *vars = jinja_dict_new(&ctx->arena, 8);
    if (!vars) return jinja_nomem(ctx, 0);
    int rc;
    json_t *empty = NULL;
    const json_t *messages = params->messages;
    if (!messages) {
        if (!(empty = json_array())) return dk_fail(ctx->err, DK_ERR_NOMEM, "out of memory");
        messages = empty;
    }
    rc = set_json(ctx, vars, "messages", messages);
    json_decref(empty);
    if (rc) return rc;
    if (params->tools) {
        if ((rc = set_json(ctx, vars, "tools", params->tools))) return rc;
    } else if (jinja_dict_set(&ctx->arena, vars, "tools", 5, jinja_none())) {
        return jinja_nomem(ctx, 0);
    }
    if (jinja_dict_set(&ctx->arena, vars, "add_generation_prompt", 21, jinja_bool(params->add_generation_prompt)))
        return jinja_nomem(ctx, 0);
    if ((rc = set_text(ctx, vars, "bos_token", params->bos_token)) || (rc = set_text(ctx, vars, "eos_token", params->eos_token)))
        return rc;
    if (params->extra && json_is_object(params->extra)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)params->extra, key, v) {
            if ((rc = set_json(ctx, vars, key, v))) return rc;
        }
    }
    *out = vars;
    return DK_OK;
}

int chat_template_render(const chat_template *tmpl, const chat_render_params *params, dk_buf *out, char *err)
{
    if (!tmpl || !params || !out) return dk_fail(err, DK_ERR_ARG, "chat_template_render: NULL argument");
    if (params->messages && !json_is_array(params->messages)) return dk_fail(err, DK_ERR_ARG, "messages must be a JSON array");
    jinja_ctx ctx;
    int rc = jinja_ctx_init(&ctx, tmpl->program, out, err);
    jinja_dict *vars = NULL;
    if (rc == DK_OK) rc = make_vars(&ctx, params, &vars);
    if (rc == DK_OK) rc = jinja_render(tmpl->program, vars, &ctx);
    jinja_ctx_free(&ctx);
    return rc;
}

/* ChatML as Qwen 2.5 writes it, without Qwen's default system prompt: tools are listed in
 * the system turn, assistant tool calls are <tool_call> JSON lines, tool results are
 * <tool_response> blocks inside a user turn (consecutive results share one). Content may be
 * a string, null, or a list of parts (their "text" is joined). */
static const char chatml_source[] =
    "{%- macro text(content) -%}\n"
    "    {%- if content is string -%}\n"
    "        {{- content -}}\n"
    "    {%- elif content is iterable -%}\n"
    "        {%- for part in content -%}\n"
    "            {%- if part is mapping and part.text is string -%}{{- part.text -}}{%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- endif -%}\n"
    "{%- endmacro -%}\n"
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0] is defined and messages[0].role == 'system' %}\n"
    "        {{- text(messages[0].content) + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- '\\n' }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}\n"
    "{%- elif messages[0] is defined and messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + text(messages[0].content) + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'system' and loop.first %}\n"
    "    {%- elif message.role == 'assistant' and message.tool_calls %}\n"
    "        {{- '<|im_start|>assistant' }}\n"
    "        {%- set content = text(message.content) %}\n"
    "        {%- if content %}\n"
    "            {{- '\\n' + content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}\n"
    "            {%- if tool_call.arguments is string %}\n"
    "                {{- tool_call.arguments }}\n"
    "            {%- else %}\n"
    "                {{- tool_call.arguments | tojson }}\n"
    "            {%- endif %}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'tool' %}\n"
    "        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' + text(message.content) + '\\n</tool_response>' }}\n"
    "        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + text(message.content) + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n";

const char *chat_template_chatml(void)
{
    return chatml_source;
}
