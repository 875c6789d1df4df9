/*
 * cli.h: the subcommands of the duckling program. Each takes the arguments after the
 * subcommand name (argv[0] is the subcommand itself), prints its results on stdout and at
 * most one line of error on stderr, and returns the process exit status (0 on success).
 * The contracts of every command are in ../shared/DESIGN.md and docs/cli.md.
 *
 * Below the commands: small helpers shared by the command files (option values, id lists,
 * the one-line error report, loading a model). They live in args.c.
 */
#ifndef DK_CLI_H
#define DK_CLI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "base/base.h"
#include "engine/engine.h"

int cli_run(int argc, char **argv);
int cli_logits(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_embed(int argc, char **argv);
int cli_synth(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_convert_tokenizer(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_render(int argc, char **argv);
int cli_serve(int argc, char **argv);   /* cmd_serve.c */
int cli_pull(int argc, char **argv);    /* cmd_store.c: the model store commands */
int cli_list(int argc, char **argv);
int cli_show(int argc, char **argv);
int cli_rm(int argc, char **argv);
int cli_cp(int argc, char **argv);
int cli_create(int argc, char **argv);
int cli_ps(int argc, char **argv);      /* cmd_ps.c: asks the running server */
int cli_ask(int argc, char **argv);     /* cmd_ask.c: the SQL agent */
int cli_sql(int argc, char **argv);     /* cmd_sql.c: DuckDB shell with model functions */
int cli_ingest(int argc, char **argv);  /* cmd_ingest.c: fill a retrieval store */

/* ---- helpers (args.c) ---- */

/* Prints "duckling CMD: MESSAGE" as one line on stderr (newlines in the message become spaces)
 * and returns 1, the exit status of a failed command. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option parsing: if argv[*i] is `name` (then the value is argv[*i + 1]) or `name=VALUE`,
 * sets *value, advances *i past it and returns 1; returns 0 if it is another argument and -1
 * (after cli_error) when the value is missing. */
int cli_opt_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);

/* Strict number parsing of a whole string: 0 on success, -1 (after cli_error naming the
 * option) when it is not a number or outside [min, max]. */
int cli_parse_long(const char *cmd, const char *option, const char *s, long min, long max, long *out);
int cli_parse_float(const char *cmd, const char *option, const char *s, float min, float max, float *out);
/* "1,2,3" (spaces allowed around ids) -> *ids (caller frees with dk_free), at least one id,
 * each in [0, INT32_MAX]. 0 or -1 after cli_error. */
int cli_parse_ids(const char *cmd, const char *option, const char *s, int32_t **ids, size_t *n_ids);

/* Loads MODEL (a path to a .gguf file, or a name in the model store, through store_resolve)
 * or reports the error; 0 or 1. exact: the reference
 * numerics (engine_load_params.exact) instead of the fast ones. */
int cli_load_model(const char *cmd, const char *model, bool vocab_only, int n_threads, bool exact, engine_model **out);

/* Usage text of a command, or NULL for an unknown one (main.c). */
const char *cli_usage(const char *cmd);

/* ---- the HTTP client of a running server (client.c) ----
 * Requests to a duckling (or Ollama) server's /api/ endpoints over libcurl, one at a time,
 * never through a proxy. Errors: DK_ERR_IO "could not connect to a running duckling server at
 * HOST:PORT" (or the network's reason), the server's own {"error": ...} message (DK_ERR_NOTFOUND
 * for a 404, else DK_ERR_ARG), DK_ERR_FORMAT for a reply that is not JSON. */

/* The server's base URL, "http://HOST:PORT" (no trailing slash), into url (cleared first).
 * host: a --host value, or NULL for $DUCKLING_HOST, else $OLLAMA_HOST, else 127.0.0.1:11434;
 * HOST, HOST:PORT, http://HOST[:PORT][/...] or https://...; the port defaults to 11434. */
int cli_host_url(const char *host, dk_buf *url, char *err);
/* "HOST:PORT" of such a URL (a pointer into it). */
const char *cli_host_name(const char *url);
/* True when GET / answers 200 (connect within connect_ms, the answer soon after). */
bool cli_client_ping(const char *url, long connect_ms);
/* GET url+path (e.g. "/api/ps") or POST body to it; *out (caller decrefs) is the reply. */
int cli_client_get(const char *url, const char *path, json_t **out, char *err);
int cli_client_post(const char *url, const char *path, const json_t *body, json_t **out, char *err);
/* Receives each object of an NDJSON stream (borrowed for the call). Returns 0 to go on, > 0 to
 * end the transfer quietly, or a negative DK_ERR code (message in err) to fail it. */
typedef int (*cli_json_fn)(void *user, const json_t *obj, char *err);
/* POSTs body to url+path and hands every line of the streamed reply to on_object. cancel (may
 * be NULL) set non-zero ends the transfer (closing the connection, which cancels the server's
 * work) and the call returns DK_OK. An {"error"} object ends it with that error. */
int cli_client_stream(const char *url, const char *path, const json_t *body, cli_json_fn on_object, void *user,
                      const atomic_int *cancel, char *err);

/* ---- a conversation with a model, local or through a server (cmd_run.c, repl.c) ---- */
typedef struct cli_chat cli_chat;

/* What differs between the engine in this process and a server (cmd_run.c fills it in). */
typedef struct cli_chat_ops {
    /* Answers the user's text: appends it and the answer to chat->messages, streaming the
     * answer to stdout (reasoning to stderr). An answer cancelled by chat->cancel is DK_OK and
     * leaves messages as they were. Errors go to err. */
    int (*turn)(cli_chat *chat, const char *text, char *err);
    /* After /clear has emptied chat->messages: forget what the backend keeps besides them. */
    void (*clear)(cli_chat *chat);
    /* /show info|template|modelparams: prints that section on stdout; DK_ERR_NOTFOUND for a
     * section the backend does not know. */
    int (*show)(cli_chat *chat, const char *section, char *err);
    /* After /set parameter changed chat->options (e.g. num_ctx: a new KV cache). */
    int (*options_changed)(cli_chat *chat, char *err);
} cli_chat_ops;

/* What --verbose prints about one answer. */
typedef struct cli_timings {
    bool valid;              /* set by a turn that finished */
    double total_ms, load_ms, prompt_ms, eval_ms;
    size_t n_prompt, n_eval;
} cli_timings;

struct cli_chat {
    const char *model;       /* MODEL as given on the command line (borrowed) */
    json_t *options;         /* Ollama "options": what flags and /set parameter set (owned) */
    json_t *messages;        /* the conversation: [system], user, assistant, ... (owned) */
    json_t *format;          /* NULL, "json" or a JSON schema (owned) */
    json_t *tools;           /* NULL or an array of tools (owned) */
    const char *tool_choice; /* NULL (auto), "none", "required" or a tool name (borrowed) */
    int think;               /* -1 the template's default, 0 off, 1 on */
    bool raw, verbose, hide_thinking;
    atomic_int cancel;       /* set by Ctrl-C while an answer is generated */
    cli_timings last;        /* of the last answer (turn sets it) */
    const cli_chat_ops *ops;
    void *impl;              /* the backend's state (borrowed) */
};

/* Sets option key of an Ollama "options" object from the text value, checked by the key's type
 * and range (temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
 * frequency_penalty, seed, num_predict, num_ctx, num_thread; "stop" appends value to its
 * array). label names the value in errors ("--top-k", or the key). DK_ERR_NOTFOUND for an
 * unknown key, DK_ERR_ARG for a bad value. */
int cli_option_set(json_t *options, const char *key, const char *label, const char *value, char *err);
/* Replaces the conversation's leading system message (NULL or "" removes it). */
int cli_chat_set_system(cli_chat *chat, const char *system, char *err);
/* The interactive loop (repl.c): reads user input from stdin (with libedit, history in
 * $DUCKLING_HISTORY or ~/.duckling/history, when it is a terminal; line by line otherwise),
 * """ multi-line blocks, and the slash commands (/set, /show, /clear, /bye, /help); answers
 * through chat->ops. Returns the exit status: 0 at /bye or the end of input, 1 when an answer
 * failed and stdin is not a terminal (at a terminal the error is printed and the chat goes on). */
int cli_repl(cli_chat *chat);
/* Prints Ollama-style --verbose statistics on stderr. */
void cli_print_timings(const cli_timings *t);

/* ---- line editing (lineedit.c) ----
 * The line reader of the interactive commands (repl.c, cmd_sql.c): libedit at a terminal
 * (emacs keys, the prompt, history kept in a file of the command's own), getline from a pipe.
 * One reader at a time in a process (the terminal, the locale and SIGINT are the process's),
 * used from one thread. */
typedef struct cli_lines cli_lines;

typedef struct cli_lines_config {
    bool tty;                 /* stdin is a terminal: libedit; else plain lines, no prompt */
    const char *app;          /* libedit's program name (its editrc section), e.g. "duckling" */
    const char *history_env;  /* the variable naming the history file, e.g. "DUCKLING_HISTORY" */
    const char *history_name; /* without it: ~/.duckling/<history_name> (the folder made if missing) */
    int interrupt_fd;         /* -1, or a descriptor on which each byte (one is read) is a
                                 Ctrl-C at the prompt, for handlers that cannot count on
                                 running in the reading thread */
} cli_lines_config;

enum cli_lines_status { CLI_LINES_LINE, CLI_LINES_EOF, CLI_LINES_INTERRUPT };

/* Opens the reader of stdin; at a terminal it sets LC_CTYPE to UTF-8 when it was C or POSIX,
 * and loads the history file. DK_OK and *out (the caller closes it with cli_lines_close), or
 * DK_ERR_NOMEM "cannot set up line editing". */
int cli_lines_open(cli_lines **out, const cli_lines_config *cfg, char *err);
/* Safe on NULL. Leaves the history file as the last cli_lines_history_add saved it. */
void cli_lines_close(cli_lines *l);
/* Reads the next line (prompt, borrowed for the call, is shown at a terminal only): in *line
 * without its line ending, owned by l and valid until the next read. CLI_LINES_EOF at the end
 * of input (Ctrl-D); CLI_LINES_INTERRUPT when Ctrl-C dropped the line. */
enum cli_lines_status cli_lines_read(cli_lines *l, const char *prompt, const char **line);
/* Adds text (a whole multi-line input as one entry) to the history and saves the history file;
 * nothing from a pipe or for "". */
void cli_lines_history_add(cli_lines *l, const char *text);
/* Async-signal-safe, for a SIGINT handler installed without SA_RESTART: a Ctrl-C at the
 * prompt. It ends the read in progress (or the wait for input of one about to start) with
 * CLI_LINES_INTERRUPT; a Ctrl-C before a read starts is forgotten. */
void cli_lines_interrupt(void);

#endif
