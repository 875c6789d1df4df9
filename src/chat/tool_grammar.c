/*
 * tool_grammar.c: tool_choice enforced by a grammar. Builds, for a model family's tool-call
 * format, the GBNF of "one (or several) calls to these functions with arguments valid under
 * their schemas": each function's parameters schema becomes rules through the sample module's
 * JSON-schema converter, each call an object with a fixed "name" and those arguments, and the
 * family's markers wrap them. Not for: parsing calls out of the output (toolcall.c).
 */
#include "chat/chat.h"

#include <string.h>

#include "sample/sample.h"

const char *chat_format_call_marker(enum chat_format format)
{
    switch (format) {
    case CHAT_FORMAT_HERMES: return "<tool_call>";
    case CHAT_FORMAT_LLAMA3: return "<|python_tag|>";
    case CHAT_FORMAT_MISTRAL: return "[TOOL_CALLS]";
    case CHAT_FORMAT_PHI4: return "<|tool_call|>";
    case CHAT_FORMAT_GEMMA:
    case CHAT_FORMAT_GENERIC: break;
    }
    return NULL;
}

/* The key each format puts the arguments under. */
static const char *arguments_key(enum chat_format format)
{
    return format == CHAT_FORMAT_LLAMA3 || format == CHAT_FORMAT_GEMMA ? "parameters" : "arguments";
}

static const json_t *tool_function(const json_t *tool)
{
    const json_t *fn = json_object_get(tool, "function");
    return json_is_object(fn) ? fn : tool; /* {"name", "parameters"} without the wrapper too */
}

/* Rules tool<i>-args (the schema) and tool<i> (the whole call object) for one function. */
static int append_tool_rules(enum chat_format format, const json_t *fn, size_t i, dk_buf *out, char *err)
{
    const char *name = json_string_value(json_object_get(fn, "name"));
    if (!name || !*name) return dk_fail(err, DK_ERR_ARG, "tools[%zu]: no function name", i);
    const json_t *params = json_object_get(fn, "parameters");
    json_t *any_object = NULL;
    if (!params || json_is_null(params)) params = any_object = json_pack("{s:s}", "type", "object");
    if (!params) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    char rule[48];
    snprintf(rule, sizeof rule, "tool%zu-args", i);
    char why[DK_ERRLEN];
    int rc = sample_json_schema_to_gbnf(params, rule, out, why);
    json_decref(any_object);
    if (rc != DK_OK) return dk_fail(err, rc, "tool %s: parameters: %s", name, why);
    char *quoted = json_dumps(json_object_get(fn, "name"), JSON_ENCODE_ANY);
    if (!quoted) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    dk_buf_printf(out, "tool%zu ::= \"{\" tc-sp \"\\\"name\\\"\" tc-sp \":\" tc-sp ", i);
    sample_gbnf_literal(out, quoted, strlen(quoted));
    dk_buf_printf(out, " tc-sp \",\" tc-sp \"\\\"%s\\\"\" tc-sp \":\" tc-sp tool%zu-args tc-sp \"}\"\n",
                  arguments_key(format), i);
    free(quoted);
    return out->failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : DK_OK;
}

/* The root rule: calls wrapped in the family's markers; `sep` repeats the call when parallel. */
static void append_root(enum chat_format format, bool parallel, const char *root, dk_buf *out)
{
    const char *open = "", *close = "", *first = "tc-call", *repeat = "";
    switch (format) {
    case CHAT_FORMAT_HERMES:
        dk_buf_puts(out, "tc-one ::= \"<tool_call>\\n\" tc-call \"\\n</tool_call>\"\n");
        first = "tc-one";
        repeat = " (\"\\n\" tc-one)*";
        break;
    case CHAT_FORMAT_LLAMA3:
        repeat = " (\";\" \" \"? tc-call)*";
        break;
    case CHAT_FORMAT_MISTRAL:
        open = "\"[TOOL_CALLS]\" \"[\" ";
        close = " \"]\"";
        repeat = " (\",\" \" \"? tc-call)*";
        break;
    case CHAT_FORMAT_PHI4:
        open = "\"<|tool_call|>\" \"[\" ";
        close = " \"]\" \"<|/tool_call|>\"";
        repeat = " (\",\" \" \"? tc-call)*";
        break;
    case CHAT_FORMAT_GEMMA:
    case CHAT_FORMAT_GENERIC:
        if (parallel) {
            dk_buf_printf(out, "%s ::= tc-call | \"[\" tc-call (\",\" \" \"? tc-call)* \"]\"\n", root);
            return;
        }
        break;
    }
    dk_buf_printf(out, "%s ::= %s%s%s%s\n", root, open, first, parallel ? repeat : "", close);
}

int chat_tool_grammar(enum chat_format format, const json_t *tools, const char *only_name, bool parallel,
                      const char *root, dk_buf *out, char *err)
{
    if (!json_is_array(tools) || json_array_size(tools) == 0)
        return dk_fail(err, DK_ERR_ARG, "tool_choice needs at least one tool");
    size_t n_alts = 0;
    dk_buf call = {0};
    dk_buf_puts(&call, "tc-call ::=");
    for (size_t i = 0; i < json_array_size(tools); i++) {
        const json_t *fn = tool_function(json_array_get(tools, i));
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (only_name && (!name || strcmp(name, only_name) != 0)) continue;
        int rc = append_tool_rules(format, fn, i, out, err);
        if (rc != DK_OK) {
            dk_buf_free(&call);
            return rc;
        }
        dk_buf_printf(&call, "%s tool%zu", n_alts++ ? " |" : "", i);
    }
    if (n_alts == 0) {
        dk_buf_free(&call);
        return dk_fail(err, DK_ERR_ARG, "tool_choice names %s, which is not among the tools", only_name);
    }
    dk_buf_putc(&call, '\n');
    bool failed = call.failed;
    dk_buf_append(out, call.data, call.len);
    dk_buf_free(&call);
    dk_buf_puts(out, "tc-sp ::= \" \"?\n");
    append_root(format, parallel, root ? root : "root", out);
    return out->failed || failed ? dk_fail(err, DK_ERR_NOMEM, "out of memory") : DK_OK;
}
