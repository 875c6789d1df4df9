/*
 * repl.c: the interactive chat of `duckling run MODEL` without a prompt. At a terminal it reads
 * with libedit through lineedit.c (line editing, a ">>> " prompt, history kept in
 * $DUCKLING_HISTORY or ~/.duckling/history); from a pipe it reads plain lines, so scripts and
 * tests drive the same loop. Both understand """ multi-line blocks and the slash commands
 * (/set, /show, /clear, /bye, /help). Ctrl-C while an answer streams cancels that answer; at
 * the prompt it drops the line; Ctrl-D (end of input) ends the chat. Also the option table
 * shared with cmd_run.c's flags. Not for: generating (the cli_chat_ops of cmd_run.c do that).
 */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CMD "run"

/* ---- options ---- */

enum option_kind { OPTION_INT, OPTION_FLOAT, OPTION_STOP };

typedef struct option_spec {
    const char *key;
    enum option_kind kind;
    double min, max;
} option_spec;

static const option_spec option_specs[] = {
    {"temperature", OPTION_FLOAT, 0, 100},
    {"top_k", OPTION_INT, 0, 1 << 30},
    {"top_p", OPTION_FLOAT, 0, 1},
    {"min_p", OPTION_FLOAT, 0, 1},
    {"repeat_penalty", OPTION_FLOAT, 0, 100},
    {"repeat_last_n", OPTION_INT, -1, 1 << 20},
    {"presence_penalty", OPTION_FLOAT, -100, 100},
    {"frequency_penalty", OPTION_FLOAT, -100, 100},
    {"seed", OPTION_INT, 0, 9007199254740992.0}, /* 2^53: exact in a JSON number anywhere */
    {"num_predict", OPTION_INT, -1, 9007199254740992.0},
    {"num_ctx", OPTION_INT, 1, 1 << 24},
    {"num_thread", OPTION_INT, 1, 1024},
    {"stop", OPTION_STOP, 0, 0},
};

int cli_option_set(json_t *options, const char *key, const char *label, const char *value, char *err)
{
    const option_spec *spec = NULL;
    for (size_t i = 0; i < sizeof option_specs / sizeof option_specs[0]; i++)
        if (strcmp(option_specs[i].key, key) == 0) spec = &option_specs[i];
    if (!spec) return dk_fail(err, DK_ERR_NOTFOUND, "unknown parameter '%s'", key);
    json_t *v = NULL;
    if (spec->kind == OPTION_STOP) {
        json_t *stops = json_object_get(options, "stop");
        json_t *s = json_string(value);
        if (!s) return dk_fail(err, DK_ERR_ARG, "%s: not valid UTF-8", label);
        if (!json_is_array(stops)) {
            stops = json_array();
            if (!stops || json_object_set_new(options, "stop", stops) != 0) {
                json_decref(s);
                return dk_fail(err, DK_ERR_NOMEM, "out of memory");
            }
        }
        return json_array_append_new(stops, s) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
    }
    char *end = NULL;
    errno = 0;
    double d = strtod(value, &end);
    if (errno || end == value || *end || !isfinite(d))
        return dk_fail(err, DK_ERR_ARG, "%s: '%s' is not a number", label, value);
    if (spec->kind == OPTION_INT) {
        long long n = strtoll(value, &end, 10);
        if (*end) return dk_fail(err, DK_ERR_ARG, "%s: '%s' is not an integer", label, value);
        if ((double)n < spec->min || (double)n > spec->max)
            return dk_fail(err, DK_ERR_ARG, "%s: %lld is out of range [%.0f, %.0f]", label, n, spec->min, spec->max);
        v = json_integer(n);
    } else {
        if (d < spec->min || d > spec->max)
            return dk_fail(err, DK_ERR_ARG, "%s: %g is out of range [%g, %g]", label, d, spec->min, spec->max);
        v = json_real(d);
    }
    return v && json_object_set_new(options, key, v) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

int cli_chat_set_system(cli_chat *chat, const char *system, char *err)
{
    json_t *first = json_array_get(chat->messages, 0);
    bool has = first && json_is_string(json_object_get(first, "role")) &&
               strcmp(json_string_value(json_object_get(first, "role")), "system") == 0;
    if (has) json_array_remove(chat->messages, 0);
    if (!system || !*system) return DK_OK;
    json_t *text = json_string(system);
    if (!text) return dk_fail(err, DK_ERR_ARG, "the system message is not valid UTF-8");
    json_t *msg = json_pack("{s:s,s:o}", "role", "system", "content", text);
    return msg && json_array_insert_new(chat->messages, 0, msg) == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

static const char *system_of(const cli_chat *chat)
{
    json_t *first = json_array_get(chat->messages, 0);
    const char *role = json_string_value(json_object_get(first, "role"));
    return role && strcmp(role, "system") == 0 ? json_string_value(json_object_get(first, "content")) : NULL;
}

void cli_print_timings(const cli_timings *t)
{
    fprintf(stderr, "total duration:       %.3fms\n", t->total_ms);
    fprintf(stderr, "load duration:        %.3fms\n", t->load_ms);
    fprintf(stderr, "prompt eval count:    %zu token(s)\n", t->n_prompt);
    fprintf(stderr, "prompt eval duration: %.3fms\n", t->prompt_ms);
    fprintf(stderr, "prompt eval rate:     %.2f tokens/s\n", t->prompt_ms > 0 ? t->n_prompt * 1000.0 / t->prompt_ms : 0.0);
    fprintf(stderr, "eval count:           %zu token(s)\n", t->n_eval);
    fprintf(stderr, "eval duration:        %.3fms\n", t->eval_ms);
    fprintf(stderr, "eval rate:            %.2f tokens/s\n", t->eval_ms > 0 ? t->n_eval * 1000.0 / t->eval_ms : 0.0);
}

/* ---- Ctrl-C ---- */

/* A signal handler can only set flags: the answer being generated sees chat->cancel, the read
 * at the prompt (which returns EINTR since the handler is installed without SA_RESTART) sees
 * cli_lines_interrupt's. */
static atomic_int *interrupt_flag;

static void on_sigint(int signo)
{
    (void)signo;
    cli_lines_interrupt();
    if (interrupt_flag) atomic_store(interrupt_flag, 1);
}

/* ---- commands ---- */

static void print_help(void)
{
    fputs("Available Commands:\n"
          "  /set            Set session variables\n"
          "  /show           Show model information\n"
          "  /clear          Clear session context\n"
          "  /bye            Exit\n"
          "  /?, /help       Help for a command\n"
          "\n"
          "Use \"\"\" to begin a multi-line message.\n",
          stdout);
}

static void print_set_help(void)
{
    fputs("Available Commands:\n"
          "  /set parameter ...     Set a parameter\n"
          "  /set system <string>   Set system message\n"
          "  /set think             Enable thinking\n"
          "  /set nothink           Disable thinking\n"
          "  /set format json       Enable JSON mode\n"
          "  /set noformat          Disable formatting\n"
          "  /set verbose           Show LLM stats\n"
          "  /set quiet             Disable LLM stats\n",
          stdout);
}

static void print_parameter_help(void)
{
    fputs("Available Parameters:\n"
          "  /set parameter seed <int>             Random number seed\n"
          "  /set parameter num_predict <int>      Max number of tokens to predict\n"
          "  /set parameter top_k <int>            Pick from top k num of tokens\n"
          "  /set parameter top_p <float>          Pick token based on sum of probabilities\n"
          "  /set parameter min_p <float>          Pick token based on top token probability * min_p\n"
          "  /set parameter num_ctx <int>          Set the context size\n"
          "  /set parameter temperature <float>    Set creativity level\n"
          "  /set parameter repeat_penalty <float> How strongly to penalize repetitions\n"
          "  /set parameter repeat_last_n <int>    Set how far back to look for repetitions\n"
          "  /set parameter num_thread <int>       Threads of the forward pass (local only)\n"
          "  /set parameter stop <string> ...      Set the stop parameters\n",
          stdout);
}

static void print_show_help(void)
{
    fputs("Available Commands:\n"
          "  /show info         Show details for this model\n"
          "  /show parameters   Show parameters for this model\n"
          "  /show system       Show system message\n"
          "  /show template     Show prompt template\n",
          stdout);
}

/* The words of a command line: pointers into a copy (whitespace-separated), at most max. */
typedef struct words {
    char *copy;
    const char *w[16];
    size_t n;
    const char *rest[16]; /* the original text from word i on (for /set system TEXT) */
} words;

static int words_split(words *ws, const char *line)
{
    memset(ws, 0, sizeof(*ws));
    ws->copy = dk_strdup(line);
    if (!ws->copy) return -1;
    char *p = ws->copy;
    while (*p && ws->n < 16) {
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) break;
        ws->rest[ws->n] = line + (p - ws->copy);
        ws->w[ws->n++] = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = 0;
    }
    return 0;
}

static void print_json_value(const json_t *v)
{
    if (json_is_integer(v)) printf("%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) printf("%g", json_real_value(v));
    else if (json_is_string(v)) fputs(json_string_value(v), stdout);
    else if (json_is_array(v)) {
        size_t i;
        const json_t *x;
        fputc('[', stdout);
        json_array_foreach(v, i, x) {
            if (i) fputc(' ', stdout);
            print_json_value(x);
        }
        fputc(']', stdout);
    } else if (json_is_true(v)) fputs("true", stdout);
    else if (json_is_false(v)) fputs("false", stdout);
}

static void show_parameters(cli_chat *chat)
{
    char err[DK_ERRLEN];
    chat->ops->show(chat, "modelparams", err); /* the model's own (a server's Modelfile), if any */
    if (json_object_size(chat->options) == 0) {
        puts("No additional parameters were specified for this session.");
        return;
    }
    puts("User defined parameters:");
    const char *key;
    const json_t *v;
    json_object_foreach(chat->options, key, v) {
        printf("%-30s ", key);
        print_json_value(v);
        fputc('\n', stdout);
    }
}

static void cmd_show(cli_chat *chat, const words *ws)
{
    char err[DK_ERRLEN];
    const char *what = ws->n > 1 ? ws->w[1] : NULL;
    if (!what) {
        print_show_help();
    } else if (strcmp(what, "parameters") == 0) {
        show_parameters(chat);
    } else if (strcmp(what, "system") == 0) {
        const char *system = system_of(chat);
        if (system) puts(system);
        else if (chat->ops->show(chat, "system", err) != DK_OK) puts("No system message was specified for this model.");
    } else if (strcmp(what, "info") == 0 || strcmp(what, "template") == 0) {
        if (chat->ops->show(chat, what, err) != DK_OK) printf("Couldn't show %s: %s\n", what, err);
    } else {
        printf("Unknown command '/show %s'. Type /? for help\n", what);
    }
}

static void cmd_set_parameter(cli_chat *chat, const words *ws)
{
    char err[DK_ERRLEN];
    if (ws->n < 4) {
        print_parameter_help();
        return;
    }
    const char *key = ws->w[2];
    json_t *saved = json_deep_copy(chat->options);
    if (!saved) {
        puts("Couldn't set parameter: out of memory");
        return;
    }
    int rc = DK_OK;
    if (strcmp(key, "stop") == 0) json_object_del(chat->options, "stop"); /* the new list replaces the old */
    for (size_t i = 3; i < ws->n && rc == DK_OK; i++) {
        rc = cli_option_set(chat->options, key, key, ws->w[i], err);
        if (strcmp(key, "stop") != 0) break;
    }
    if (rc == DK_OK && strcmp(key, "stop") != 0 && ws->n > 4) rc = dk_fail(err, DK_ERR_ARG, "%s takes one value", key);
    if (rc == DK_OK && chat->ops->options_changed) rc = chat->ops->options_changed(chat, err);
    if (rc != DK_OK) {
        json_decref(chat->options);
        chat->options = saved;
        printf("Couldn't set parameter: %s\n", err);
        return;
    }
    json_decref(saved);
    printf("Set parameter '%s' to '", key);
    for (size_t i = 3; i < ws->n; i++) printf("%s%s", i > 3 ? ", " : "", ws->w[i]);
    puts("'");
}

static void cmd_set(cli_chat *chat, const words *ws)
{
    char err[DK_ERRLEN];
    const char *what = ws->n > 1 ? ws->w[1] : NULL;
    if (!what) {
        print_set_help();
    } else if (strcmp(what, "parameter") == 0) {
        cmd_set_parameter(chat, ws);
    } else if (strcmp(what, "system") == 0) {
        const char *text = ws->n > 2 ? ws->rest[2] : "";
        if (cli_chat_set_system(chat, text, err) != DK_OK) printf("Couldn't set the system message: %s\n", err);
        else puts(*text ? "Set system message." : "Cleared system message.");
    } else if (strcmp(what, "think") == 0 || strcmp(what, "nothink") == 0) {
        chat->think = what[0] == 't';
        printf("Set '%s' mode.\n", what);
    } else if (strcmp(what, "verbose") == 0 || strcmp(what, "quiet") == 0) {
        chat->verbose = what[0] == 'v';
        printf("Set '%s' mode.\n", what);
    } else if (strcmp(what, "format") == 0 && ws->n > 2 && strcmp(ws->w[2], "json") == 0) {
        json_decref(chat->format);
        chat->format = json_string("json");
        puts("Set format to 'json' mode.");
    } else if (strcmp(what, "noformat") == 0) {
        json_decref(chat->format);
        chat->format = NULL;
        puts("Disabled format.");
    } else {
        printf("Unknown command '/set %s'. Type /? for help\n", what);
    }
}

/* Empties the conversation, keeping its system message. */
static void cmd_clear(cli_chat *chat)
{
    const char *system = system_of(chat);
    char *keep = system ? dk_strdup(system) : NULL;
    char err[DK_ERRLEN];
    json_array_clear(chat->messages);
    if (keep) cli_chat_set_system(chat, keep, err);
    dk_free(keep);
    if (chat->ops->clear) chat->ops->clear(chat);
    puts("Cleared session context");
}

enum command_result { COMMAND_GO_ON, COMMAND_BYE };

static enum command_result run_command(cli_chat *chat, const char *line)
{
    words ws;
    if (words_split(&ws, line) != 0) {
        puts("out of memory");
        return COMMAND_GO_ON;
    }
    enum command_result res = COMMAND_GO_ON;
    const char *c = ws.n ? ws.w[0] : "/";
    if (strcmp(c, "/bye") == 0 || strcmp(c, "/exit") == 0) res = COMMAND_BYE;
    else if (strcmp(c, "/clear") == 0) cmd_clear(chat);
    else if (strcmp(c, "/set") == 0) cmd_set(chat, &ws);
    else if (strcmp(c, "/show") == 0) cmd_show(chat, &ws);
    else if (strcmp(c, "/help") == 0 || strcmp(c, "/?") == 0) {
        const char *topic = ws.n > 1 ? ws.w[1] : NULL;
        if (topic && (strcmp(topic, "set") == 0 || strcmp(topic, "/set") == 0)) print_set_help();
        else if (topic && (strcmp(topic, "show") == 0 || strcmp(topic, "/show") == 0)) print_show_help();
        else print_help();
    } else printf("Unknown command '%s'. Type /? for help\n", c);
    fflush(stdout);
    dk_free(ws.copy);
    return res;
}

/* ---- the loop ---- */

/* One answer, with Ctrl-C turned into chat->cancel. Returns 0, or 1 after printing the error. */
static int answer(cli_chat *chat, const char *text, bool tty)
{
    char err[DK_ERRLEN];
    atomic_store(&chat->cancel, 0);
    chat->last.valid = false;
    int rc = chat->ops->turn(chat, text, err);
    bool cancelled = atomic_load(&chat->cancel) != 0;
    atomic_store(&chat->cancel, 0);
    fputc('\n', stdout);
    fflush(stdout);
    if (rc == DK_OK && chat->verbose && chat->last.valid) cli_print_timings(&chat->last);
    if (tty) fputc('\n', stdout);
    fflush(stdout);
    if (rc != DK_OK && !cancelled) {
        cli_error(CMD, "%s", err);
        return 1;
    }
    return 0;
}

/* A """ block: """ at the start of a line opens it, """ at the end of a line closes it; the
 * text after the opening quotes, the lines between and the text before the closing quotes,
 * joined by newlines, form one message (empty opening / closing parts add no line). */
typedef struct block {
    dk_buf text;
    bool open;
    bool has_text; /* a part has been added (the next one goes after a newline) */
} block;

static bool ends_with_quotes(const char *s, size_t n) { return n >= 3 && memcmp(s + n - 3, "\"\"\"", 3) == 0; }

static void block_add(block *b, const char *part, size_t n)
{
    if (b->has_text) dk_buf_putc(&b->text, '\n');
    dk_buf_append(&b->text, part, n);
    b->has_text = true;
}

/* Feeds one line; returns true when the line completes a message (then b->text holds it, or
 * it was a plain line and is_plain is set). */
static bool block_feed(block *b, const char *line, bool *is_plain)
{
    size_t n = strlen(line);
    *is_plain = false;
    if (b->open) {
        bool closes = ends_with_quotes(line, n);
        size_t n_part = closes ? n - 3 : n;
        if (!closes || n_part) block_add(b, line, n_part);
        if (closes) b->open = false;
        return closes;
    }
    if (n < 3 || memcmp(line, "\"\"\"", 3) != 0) {
        *is_plain = true;
        return true;
    }
    dk_buf_clear(&b->text);
    b->has_text = false;
    bool closes = n >= 6 && ends_with_quotes(line, n);
    size_t n_part = closes ? n - 6 : n - 3;
    if (n_part) block_add(b, line + 3, n_part);
    b->open = !closes;
    return closes;
}

int cli_repl(cli_chat *chat)
{
    bool tty = isatty(STDIN_FILENO);
    cli_lines *lines = NULL;
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a read at the prompt returns EINTR */
    interrupt_flag = &chat->cancel;
    sigaction(SIGINT, &sa, &old_sa);
    int status = 0;
    block b = {0};
    char err[DK_ERRLEN];
    cli_lines_config lc = {.tty = tty, .app = "duckling", .history_env = "DUCKLING_HISTORY",
                           .history_name = "history", .interrupt_fd = -1};
    if (cli_lines_open(&lines, &lc, err) != DK_OK) {
        status = cli_error(CMD, "%s", err);
        goto done;
    }
    for (;;) {
        fflush(stdout);
        const char *line = NULL;
        enum cli_lines_status rs = cli_lines_read(lines, b.open ? "... " : ">>> ", &line);
        if (rs == CLI_LINES_EOF) {
            if (tty) fputc('\n', stdout); /* Ctrl-D leaves the cursor after the prompt */
            break;
        }
        if (rs == CLI_LINES_INTERRUPT) {
            if (tty) fputs(b.open ? "\n" : "\nUse Ctrl + d or /bye to exit.\n", stdout);
            b.open = false;
            continue;
        }
        bool is_plain;
        if (!block_feed(&b, line, &is_plain)) continue;
        if (is_plain && line[0] == '/') {
            cli_lines_history_add(lines, line);
            if (run_command(chat, line) == COMMAND_BYE) break;
            continue;
        }
        if (!is_plain && b.text.failed) {
            status = cli_error(CMD, "out of memory");
            break;
        }
        const char *text = is_plain ? line : b.text.data ? b.text.data : "";
        if (!*text) continue;
        cli_lines_history_add(lines, text);
        if (answer(chat, text, tty) != 0 && !tty) {
            status = 1;
            break;
        }
    }
done:
    sigaction(SIGINT, &old_sa, NULL);
    interrupt_flag = NULL;
    cli_lines_close(lines);
    dk_buf_free(&b.text);
    return status;
}
