/*
 * cmd_run.c: `duckling run MODEL [PROMPT]`: answer one prompt, or chat line by line when no
 * prompt is given. The conversation goes through engine_chat: the model's chat template (or
 * the built-in ChatML), --format and --tools/--tool-choice as grammars, --think/--no-think.
 * Content streams to stdout, reasoning to stderr (between "Thinking..." and "...done
 * thinking."), and each tool call the model makes is printed after the content as one line
 * of JSON {"name": ..., "arguments": {...}}. --raw skips the template and completes the text
 * as it is (--format still applies). Not for: running the tools, line editing.
 */
#include "cli/cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "run"

typedef struct run_opts {
    const char *model;
    const char *system;
    const char *format_arg;  /* --format: "json", a schema file, or inline JSON */
    const char *tools_path;  /* --tools FILE.json */
    const char *tool_choice; /* --tool-choice auto|none|required|NAME */
    int think;               /* -1 default, 0 --no-think, 1 --think */
    bool hide_thinking;
    json_t *format;          /* parsed --format (owned) */
    json_t *tools;           /* parsed --tools (owned) */
    json_t *messages;        /* the conversation so far (owned) */
    dk_buf prompt;          /* the positional words after MODEL, joined by spaces */
    bool have_prompt;
    bool raw, verbose, exact;
    bool seed_set;
    long n_ctx;
    long n_threads;
    bool in_thinking;        /* "Thinking..." printed, "...done thinking." not yet */
    engine_generate_params gen;
    const char **stops;     /* (n_stops) pointers into argv */
    size_t n_stops;
} run_opts;

static int write_text(void *user, const char *text, size_t n_bytes)
{
    (void)user;
    if (fwrite(text, 1, n_bytes, stdout) != n_bytes) return 1;
    fflush(stdout);
    return 0;
}

static void print_verbose(const engine_model *model, const engine_timings *t, double total_ms)
{
    fprintf(stderr, "total duration:       %.3fms\n", total_ms);
    fprintf(stderr, "load duration:        %.3fms\n", engine_load_ms(model));
    fprintf(stderr, "prompt eval count:    %zu token(s)\n", t->n_prompt);
    fprintf(stderr, "prompt eval duration: %.3fms\n", t->prompt_ms);
    fprintf(stderr, "prompt eval rate:     %.2f tokens/s\n", t->prompt_ms > 0 ? t->n_prompt * 1000.0 / t->prompt_ms : 0.0);
    fprintf(stderr, "eval count:           %zu token(s)\n", t->n_eval);
    fprintf(stderr, "eval duration:        %.3fms\n", t->eval_ms);
    fprintf(stderr, "eval rate:            %.2f tokens/s\n", t->eval_ms > 0 ? t->n_eval * 1000.0 / t->eval_ms : 0.0);
}

static int write_reasoning(void *user, const char *text, size_t n_bytes)
{
    run_opts *o = user;
    if (o->hide_thinking) return 0;
    if (!o->in_thinking) {
        fputs("Thinking...\n", stderr);
        o->in_thinking = true;
    }
    fwrite(text, 1, n_bytes, stderr);
    return 0;
}

static void end_reasoning(run_opts *o)
{
    if (!o->in_thinking) return;
    fputs("\n...done thinking.\n\n", stderr);
    o->in_thinking = false;
}

static int write_content(void *user, const char *text, size_t n_bytes)
{
    end_reasoning(user);
    return write_text(NULL, text, n_bytes);
}

/* --raw: the text as it is (BOS as the vocab says at the start of the context), --format as
 * a grammar over the completion. */
static int run_raw_turn(run_opts *o, engine_model *model, engine_session *session, const char *user, engine_timings *t,
                        char *err)
{
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    sample_grammar *grammar = NULL;
    engine_generate_params gen = o->gen;
    int rc = engine_tokenize(model, user, strlen(user), engine_session_n_past(session) == 0, false, &tokens, &n_tokens, err);
    if (rc == DK_OK && o->format) {
        rc = engine_format_grammar(o->format, &grammar, err);
        gen.grammar = grammar;
    }
    if (rc == DK_OK) rc = engine_generate(session, tokens, n_tokens, &gen, t, err);
    sample_grammar_free(grammar);
    dk_free(tokens);
    return rc;
}

static enum engine_tool_choice tool_choice_of(const char *s)
{
    if (!s || strcmp(s, "auto") == 0) return ENGINE_TOOL_AUTO;
    if (strcmp(s, "none") == 0) return ENGINE_TOOL_NONE;
    if (strcmp(s, "required") == 0) return ENGINE_TOOL_REQUIRED;
    return ENGINE_TOOL_NAMED;
}

/* Prints each call as {"name": ..., "arguments": {...}} on a line of its own. */
static void print_tool_calls(const json_t *calls)
{
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) {
        const json_t *fn = json_object_get(call, "function");
        json_t *line = json_pack("{s:O,s:O}", "name", json_object_get(fn, "name"), "arguments", json_object_get(fn, "arguments"));
        char *text = line ? json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (text) printf("%s\n", text);
        free(text); /* allocated by jansson */
        json_decref(line);
    }
}

/* Appends a message {role, content} (and tool_calls) to the conversation. */
static int push_message(run_opts *o, const char *role, const char *content, const json_t *tool_calls, char *err)
{
    json_t *text = json_string(content); /* NULL (short of memory exhaustion) for invalid UTF-8 */
    if (!text) return dk_fail(err, DK_ERR_ARG, "the %s message is not valid UTF-8", role);
    json_t *msg = json_pack("{s:s,s:o}", "role", role, "content", text);
    if (msg && tool_calls && json_array_size(tool_calls)) json_object_set(msg, "tool_calls", (json_t *)tool_calls);
    return msg && json_array_append_new(o->messages, msg) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

static int run_chat_turn(run_opts *o, engine_session *session, const char *user, engine_timings *t, char *err)
{
    int rc = push_message(o, "user", user, NULL, err);
    if (rc != DK_OK) return rc;
    engine_chat_params cp;
    engine_chat_params_default(&cp);
    cp.messages = o->messages;
    cp.tools = o->tools;
    cp.tool_choice = tool_choice_of(o->tool_choice);
    cp.tool_name = cp.tool_choice == ENGINE_TOOL_NAMED ? o->tool_choice : NULL;
    cp.format = o->format;
    cp.think = o->think;
    cp.gen = o->gen;
    cp.gen.on_text = write_content;
    cp.gen.user = o;
    cp.on_reasoning = write_reasoning;
    engine_chat_result r;
    rc = engine_chat(session, &cp, &r, err);
    end_reasoning(o);
    if (rc == DK_OK) {
        if (json_array_size(r.tool_calls)) {
            if (r.content.len && r.content.data[r.content.len - 1] != '\n') fputc('\n', stdout);
            print_tool_calls(r.tool_calls);
        }
        rc = push_message(o, "assistant", r.content.data ? r.content.data : "", r.tool_calls, err);
        *t = r.timings;
    }
    engine_chat_result_free(&r);
    return rc;
}

/* One turn: generate and stream. Returns 0 or an exit status. */
static int run_turn(run_opts *o, engine_model *model, engine_session *session, const char *user, uint64_t t_start)
{
    char err[DK_ERRLEN];
    engine_timings t = {0};
    int rc = o->raw ? run_raw_turn(o, model, session, user, &t, err) : run_chat_turn(o, session, user, &t, err);
    if (rc != DK_OK) return cli_error(CMD, "%s", err);
    if (isatty(STDOUT_FILENO)) fputc('\n', stdout);
    fflush(stdout);
    if (o->verbose) print_verbose(model, &t, (double)(dk_now_ns() - t_start) / 1e6);
    return 0;
}

/* Interactive loop: one line of stdin per user turn; "/bye" or end of input ends it. */
static int run_interactive(run_opts *o, engine_model *model, engine_session *session)
{
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int status = 0;
    for (;;) {
        if (tty) {
            fputs(">>> ", stdout);
            fflush(stdout);
        }
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) continue;
        if (strcmp(line, "/bye") == 0) break;
        status = run_turn(o, model, session, line, dk_now_ns());
        if (status) break;
        if (!isatty(STDOUT_FILENO)) fputc('\n', stdout);
        if (tty) fputc('\n', stdout);
    }
    free(line); /* allocated by getline */
    return status;
}

static int parse_args(run_opts *o, int argc, char **argv)
{
    sample_params *sp = &o->gen.sampling;
    bool only_positional = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int r;
        long lv;
        if (only_positional || a[0] != '-' || a[1] == 0) {
            if (!o->model) {
                o->model = a;
            } else {
                if (o->have_prompt) dk_buf_putc(&o->prompt, ' ');
                dk_buf_puts(&o->prompt, a);
                o->have_prompt = true;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) { only_positional = true; continue; }
        if (strcmp(a, "--raw") == 0) { o->raw = true; continue; }
        if (strcmp(a, "--verbose") == 0) { o->verbose = true; continue; }
        if (strcmp(a, "--exact") == 0) { o->exact = true; continue; }
        if (strcmp(a, "--think") == 0) { o->think = 1; continue; }
        if (strcmp(a, "--no-think") == 0) { o->think = 0; continue; }
        if (strcmp(a, "--hide-thinking") == 0) { o->hide_thinking = true; continue; }
#define OPT(name) ((r = cli_opt_value(CMD, argc, argv, &i, name, &v)) != 0)
        if (OPT("--system")) { if (r < 0) return -1; o->system = v; continue; }
        if (OPT("--temperature")) { if (r < 0 || cli_parse_float(CMD, "--temperature", v, 0, 100, &sp->temperature)) return -1; continue; }
        if (OPT("--top-k")) { if (r < 0 || cli_parse_long(CMD, "--top-k", v, 0, 1L << 30, &lv)) return -1; sp->top_k = (int)lv; continue; }
        if (OPT("--top-p")) { if (r < 0 || cli_parse_float(CMD, "--top-p", v, 0, 1, &sp->top_p)) return -1; continue; }
        if (OPT("--min-p")) { if (r < 0 || cli_parse_float(CMD, "--min-p", v, 0, 1, &sp->min_p)) return -1; continue; }
        if (OPT("--repeat-penalty")) { if (r < 0 || cli_parse_float(CMD, "--repeat-penalty", v, 0, 100, &sp->repeat_penalty)) return -1; continue; }
        if (OPT("--repeat-last-n")) { if (r < 0 || cli_parse_long(CMD, "--repeat-last-n", v, -1, 1L << 20, &lv)) return -1; sp->repeat_last_n = (int)lv; continue; }
        if (OPT("--presence-penalty")) { if (r < 0 || cli_parse_float(CMD, "--presence-penalty", v, -100, 100, &sp->presence_penalty)) return -1; continue; }
        if (OPT("--frequency-penalty")) { if (r < 0 || cli_parse_float(CMD, "--frequency-penalty", v, -100, 100, &sp->frequency_penalty)) return -1; continue; }
        if (OPT("--seed")) {
            if (r < 0 || cli_parse_long(CMD, "--seed", v, 0, LONG_MAX, &lv)) return -1;
            sp->seed = (uint64_t)lv;
            o->seed_set = true;
            continue;
        }
        if (OPT("-n") || OPT("--num-predict")) { if (r < 0 || cli_parse_long(CMD, "--num-predict", v, -1, LONG_MAX, &o->gen.num_predict)) return -1; continue; }
        if (OPT("--ctx")) { if (r < 0 || cli_parse_long(CMD, "--ctx", v, 1, 1L << 24, &o->n_ctx)) return -1; continue; }
        if (OPT("--threads")) { if (r < 0 || cli_parse_long(CMD, "--threads", v, 1, 1024, &o->n_threads)) return -1; continue; }
        if (OPT("--stop")) {
            if (r < 0) return -1;
            const char **s = dk_realloc(o->stops, (o->n_stops + 1) * sizeof(char *));
            if (!s) {
                cli_error(CMD, "out of memory");
                return -1;
            }
            o->stops = s;
            o->stops[o->n_stops++] = v;
            continue;
        }
        if (OPT("--format")) { if (r < 0) return -1; o->format_arg = v; continue; }
        if (OPT("--tools")) { if (r < 0) return -1; o->tools_path = v; continue; }
        if (OPT("--tool-choice")) { if (r < 0) return -1; o->tool_choice = v; continue; }
#undef OPT
        cli_error(CMD, "unknown option '%s' (see duckling help run)", a);
        return -1;
    }
    if (!o->model) {
        cli_error(CMD, "missing MODEL (usage: duckling run MODEL [PROMPT])");
        return -1;
    }
    if (o->prompt.failed) {
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
static int load_json_options(run_opts *o)
{
    o->messages = json_array();
    if (!o->messages) return cli_error(CMD, "out of memory"), -1;
    char err[DK_ERRLEN];
    if (o->system && !o->raw && push_message(o, "system", o->system, NULL, err) != DK_OK) return cli_error(CMD, "%s", err), -1;
    if (o->format_arg) {
        if (strcmp(o->format_arg, "json") == 0) o->format = json_string("json");
        else if (load_json_arg("--format", o->format_arg, true, &o->format)) return -1;
        if (!o->format) return cli_error(CMD, "out of memory"), -1;
        if (!json_is_object(o->format) && !json_is_string(o->format))
            return cli_error(CMD, "--format %s: a JSON schema must be an object", o->format_arg), -1;
    }
    if (o->tools_path) {
        if (o->raw) return cli_error(CMD, "--tools needs the chat template; it cannot be used with --raw"), -1;
        if (load_json_arg("--tools", o->tools_path, false, &o->tools)) return -1;
        if (json_is_object(o->tools) && json_is_array(json_object_get(o->tools, "tools"))) {
            json_t *arr = json_incref(json_object_get(o->tools, "tools"));
            json_decref(o->tools);
            o->tools = arr;
        }
        if (!json_is_array(o->tools)) return cli_error(CMD, "--tools %s: expected an array of tools", o->tools_path), -1;
    }
    if (o->tool_choice && !o->tools) return cli_error(CMD, "--tool-choice needs --tools"), -1;
    return 0;
}

int cli_run(int argc, char **argv)
{
    uint64_t t_start = dk_now_ns();
    run_opts o;
    memset(&o, 0, sizeof(o));
    engine_generate_params_default(&o.gen);
    o.gen.on_text = write_text;
    o.think = -1;
    int status = 1;
    engine_model *model = NULL;
    engine_session *session = NULL;
    if (parse_args(&o, argc, argv) != 0 || load_json_options(&o) != 0) goto done;
    if (!o.seed_set) o.gen.sampling.seed = dk_now_ns() ^ ((uint64_t)getpid() << 32);
    o.gen.stops = o.stops;
    o.gen.n_stops = o.n_stops;
    if (cli_load_model(CMD, o.model, false, (int)o.n_threads, o.exact, &model)) goto done;
    if (engine_is_embedding(model)) {
        cli_error(CMD, "%s is an embedding model; use duckling embed", o.model);
        goto done;
    }
    char err[DK_ERRLEN];
    engine_session_params sp;
    engine_session_params_default(&sp);
    sp.n_ctx = (size_t)o.n_ctx;
    sp.n_threads = (int)o.n_threads;
    if (engine_session_new(&session, model, &sp, err) != DK_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    if (o.have_prompt) status = run_turn(&o, model, session, o.prompt.data, t_start);
    else status = run_interactive(&o, model, session);
done:
    engine_session_free(session);
    engine_model_free(model);
    dk_buf_free(&o.prompt);
    dk_free(o.stops);
    json_decref(o.format);
    json_decref(o.tools);
    json_decref(o.messages);
    return status;
}
