/*
 * cmd_render.c: `duckling render (MODEL.gguf | --template FILE.jinja | --config
 * tokenizer_config.json) MESSAGES.json [--tools TOOLS.json] [--no-generation-prompt]
 * [--var KEY=JSON ...] [--bos TEXT] [--eos TEXT]`: prints the prompt a chat template makes of a
 * conversation, exactly (no newline added), on stdout.
 *
 * MESSAGES.json is either a JSON array of messages, or an object
 *   {"messages": [...], "tools": [...], "add_generation_prompt": true, ...}
 * whose other keys become extra template variables (enable_thinking, ...). The generation
 * prompt is on unless the object or --no-generation-prompt turns it off; --tools and --var
 * override what the file says.
 * The template: a GGUF's tokenizer.chat_template (the built-in ChatML when it has none; BOS
 * and EOS texts from its vocabulary), a Jinja file, or a Hugging Face tokenizer_config.json
 * (chat_template as a string or a list of {name, template}: "tool_use" when tools are given
 * and it has one, else "default"; bos_token / eos_token as strings or {"content": ...}).
 * Not for: tokenizing or running the prompt.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "chat/chat.h"

#define CMD "render"
#define RENDER_MAX_FILE_BYTES ((size_t)256 << 20)

typedef struct render_opts {
    const char *model, *template_file, *config, *messages, *tools, *bos, *eos;
    bool no_generation_prompt;
    json_t *vars; /* --var KEY=JSON, an object */
} render_opts;

/* flags: extra jansson flags (configs hold integers such as model_max_length = 1e30 that only
 * fit a double). */
static json_t *load_json(const char *path, const char *what, size_t flags)
{
    json_error_t e;
    json_t *j = json_load_file(path, JSON_DECODE_ANY | JSON_ALLOW_NUL | flags, &e);
    if (!j) cli_error(CMD, "%s %s: line %d: %s", what, path, e.line, e.text);
    return j;
}

static int parse_var(render_opts *o, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) return cli_error(CMD, "--var wants KEY=JSON, got '%s'", kv);
    json_error_t e;
    json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, &e);
    if (!v) return cli_error(CMD, "--var %.*s: not JSON: %s", (int)(eq - kv), kv, e.text);
    char *key = dk_strndup(kv, (size_t)(eq - kv));
    int rc = key && json_object_set_new(o->vars, key, v) == 0 ? 0 : cli_error(CMD, "out of memory");
    dk_free(key);
    return rc;
}

static int parse_args(int argc, char **argv, render_opts *o)
{
    const char *positional[2] = {0};
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        if (a[0] != '-' || a[1] == 0) {
            if (n_pos == 2) return cli_error(CMD, "unexpected argument '%s'", a);
            positional[n_pos++] = a;
            continue;
        }
        if (strcmp(a, "--no-generation-prompt") == 0) { o->no_generation_prompt = true; continue; }
        const char *names[] = {"--template", "--config", "--tools", "--bos", "--eos", "--var"};
        const char **slots[] = {&o->template_file, &o->config, &o->tools, &o->bos, &o->eos, NULL};
        bool matched = false;
        for (size_t k = 0; k < 6 && !matched; k++) {
            if ((r = cli_opt_value(CMD, argc, argv, &i, names[k], &v)) == 0) continue;
            if (r < 0) return 1;
            matched = true;
            if (slots[k]) *slots[k] = v;
            else if (parse_var(o, v)) return 1;
        }
        if (!matched) return cli_error(CMD, "unknown option '%s' (see duckling help render)", a);
    }
    if (o->template_file && o->config) return cli_error(CMD, "give --template or --config, not both");
    bool from_model = !o->template_file && !o->config;
    if (n_pos != (from_model ? 2 : 1))
        return cli_error(CMD, "usage: duckling render (MODEL.gguf | --template F | --config F) MESSAGES.json");
    if (from_model) o->model = positional[0];
    o->messages = positional[from_model ? 1 : 0];
    return 0;
}

/* A special token in tokenizer_config.json: "text", {"content": "text", ...} or null. */
static const char *config_token(const json_t *cfg, const char *key)
{
    const json_t *t = json_object_get(cfg, key);
    if (json_is_object(t)) t = json_object_get(t, "content");
    return json_is_string(t) ? json_string_value(t) : NULL;
}

static int config_template(const json_t *cfg, bool have_tools, const char **out)
{
    const json_t *t = json_object_get(cfg, "chat_template");
    if (json_is_string(t)) {
        *out = json_string_value(t);
        return 0;
    }
    if (json_is_array(t)) {
        const char *def = NULL, *tool_use = NULL;
        size_t i;
        const json_t *e;
        json_array_foreach(t, i, e) {
            const char *name = json_string_value(json_object_get(e, "name"));
            const char *src = json_string_value(json_object_get(e, "template"));
            if (!name || !src) continue;
            if (strcmp(name, "default") == 0) def = src;
            if (strcmp(name, "tool_use") == 0) tool_use = src;
        }
        *out = have_tools && tool_use ? tool_use : def;
        if (*out) return 0;
        return cli_error(CMD, "chat_template has no \"default\" entry");
    }
    return cli_error(CMD, "the config has no chat_template");
}

/* What the prompt is rendered with. From a model, the template and the BOS/EOS texts are the
 * engine's own (those `run` uses), borrowed from the model; otherwise parsed here. */
typedef struct render_source {
    engine_model *model;        /* owned; set for a MODEL argument */
    chat_template *parsed;      /* owned; set for --template / --config */
    const chat_template *tmpl;  /* the one to render */
    char *bos, *eos;            /* owned (--config) */
    json_t *config;
} render_source;

static int source_from_model(const render_opts *o, render_source *src)
{
    char err[DK_ERRLEN];
    if (cli_load_model(CMD, o->model, true, 1, true, &src->model)) return 1;
    if (engine_chat_template_get(src->model, &src->tmpl, err) != DK_OK) return cli_error(CMD, "%s", err);
    return 0;
}

/* Parses a template text read from a file or a config. */
static int source_parse(render_source *src, const char *text)
{
    char err[DK_ERRLEN];
    if (chat_template_parse(&src->parsed, text, strlen(text), err) != DK_OK) return cli_error(CMD, "template: %s", err);
    src->tmpl = src->parsed;
    return 0;
}

static int load_source(const render_opts *o, bool have_tools, render_source *src)
{
    if (o->model) return source_from_model(o, src);
    if (o->template_file) {
        char err[DK_ERRLEN], *text = NULL;
        size_t n;
        if (dk_file_read(o->template_file, RENDER_MAX_FILE_BYTES, &text, &n, err) != DK_OK) return cli_error(CMD, "%s", err);
        int rc = strlen(text) != n ? cli_error(CMD, "%s: the template contains a NUL byte", o->template_file)
                                   : source_parse(src, text);
        dk_free(text);
        return rc;
    }
    if (!(src->config = load_json(o->config, "config", JSON_DECODE_INT_AS_REAL))) return 1;
    const char *t;
    if (config_template(src->config, have_tools, &t)) return 1;
    const char *bos = config_token(src->config, "bos_token"), *eos = config_token(src->config, "eos_token");
    src->bos = bos ? dk_strdup(bos) : NULL;
    src->eos = eos ? dk_strdup(eos) : NULL;
    if ((bos && !src->bos) || (eos && !src->eos)) return cli_error(CMD, "out of memory");
    return source_parse(src, t);
}

/* Splits MESSAGES.json into messages, tools, add_generation_prompt and extra variables. */
static int load_conversation(const render_opts *o, json_t **messages, json_t **tools, json_t *extra, bool *gen)
{
    json_t *doc = load_json(o->messages, "messages", 0);
    if (!doc) return 1;
    *gen = true;
    if (json_is_array(doc)) {
        *messages = doc;
    } else if (json_is_object(doc)) {
        const char *key;
        json_t *v;
        json_object_foreach(doc, key, v) {
            if (strcmp(key, "messages") == 0) *messages = json_incref(v);
            else if (strcmp(key, "tools") == 0) *tools = json_is_null(v) ? NULL : json_incref(v);
            else if (strcmp(key, "add_generation_prompt") == 0) *gen = json_is_true(v);
            else json_object_set(extra, key, v);
        }
        json_decref(doc);
        if (!json_is_array(*messages)) return cli_error(CMD, "%s: \"messages\" must be an array", o->messages);
    } else {
        json_decref(doc);
        return cli_error(CMD, "%s: expected an array of messages or an object with \"messages\"", o->messages);
    }
    if (o->tools) {
        json_decref(*tools);
        if (!(*tools = load_json(o->tools, "tools", 0))) return 1;
    }
    if (o->no_generation_prompt) *gen = false;
    return json_object_update(extra, o->vars) == 0 ? 0 : cli_error(CMD, "out of memory");
}

int cli_render(int argc, char **argv)
{
    render_opts o = {0};
    render_source src = {0};
    json_t *messages = NULL, *tools = NULL, *extra = json_object();
    dk_buf out = {0};
    int status = 1;
    bool gen;
    if (!extra || !(o.vars = json_object())) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    if (parse_args(argc, argv, &o) || load_conversation(&o, &messages, &tools, extra, &gen) ||
        load_source(&o, tools != NULL, &src))
        goto done;
    char err[DK_ERRLEN];
    chat_render_params p = {
        .messages = messages,
        .tools = tools,
        .add_generation_prompt = gen,
        .bos_token = o.bos ? o.bos : src.model ? engine_bos_text(src.model) : src.bos,
        .eos_token = o.eos ? o.eos : src.model ? engine_eos_text(src.model) : src.eos,
        .extra = extra,
    };
    if (chat_template_render(src.tmpl, &p, &out, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    if (out.len && fwrite(out.data, 1, out.len, stdout) != out.len) {
        cli_error(CMD, "cannot write the output");
        goto done;
    }
    status = fflush(stdout) == 0 ? 0 : cli_error(CMD, "cannot write the output");
done:
    dk_buf_free(&out);
    chat_template_free(src.parsed);
    engine_model_free(src.model);
    dk_free(src.bos);
    dk_free(src.eos);
    json_decref(src.config);
    json_decref(messages);
    json_decref(tools);
    json_decref(extra);
    json_decref(o.vars);
    return status;
}
