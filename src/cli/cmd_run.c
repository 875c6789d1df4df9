/*
 * cmd_run.c: `duckling run MODEL [PROMPT]`: generate a completion for one prompt, or chat
 * line by line when no prompt is given. Prompt formatting here is deliberately minimal until
 * the chat-template module exists: --raw tokenizes the prompt as it is (with BOS if the vocab
 * adds one); otherwise a ChatML-style fallback is used for models without a chat template
 * (see docs/cli.md). Not for: templates, JSON formats (--format), line editing.
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
    dk_buf prompt;          /* the positional words after MODEL, joined by spaces */
    bool have_prompt;
    bool raw, verbose, exact;
    bool seed_set;
    long n_ctx;
    long n_threads;
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

/* The text of the prompt for one user turn: raw, or wrapped ChatML-style. */
static int build_prompt(const run_opts *o, const engine_model *model, const char *user, bool first_turn, dk_buf *out)
{
    dk_buf_clear(out);
    if (o->raw) return dk_buf_puts(out, user);
    if (engine_chat_template(model) && !strstr(engine_chat_template(model), "<|im_start|>")) {
        cli_error(CMD, "this model's chat template is not supported yet; use --raw");
        return -2;
    }
    if (first_turn && o->system) dk_buf_printf(out, "<|im_start|>system\n%s<|im_end|>\n", o->system);
    dk_buf_printf(out, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user);
    return out->failed ? -1 : 0;
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

/* One turn: tokenize, generate, stream. Returns 0 or an exit status. */
static int run_turn(run_opts *o, engine_model *model, engine_session *session, const char *user, bool first_turn,
                    uint64_t t_start)
{
    char err[DK_ERRLEN];
    dk_buf text = {0};
    int rc = build_prompt(o, model, user, first_turn, &text);
    if (rc == -2) {
        dk_buf_free(&text);
        return 1;
    }
    if (rc < 0) {
        dk_buf_free(&text);
        return cli_error(CMD, "out of memory");
    }
    int32_t *tokens = NULL;
    size_t n_tokens = 0;
    /* BOS only at the start of the context, as the vocab says */
    bool add_special = engine_session_n_past(session) == 0;
    if (engine_tokenize(model, text.data ? text.data : "", text.len, add_special, !o->raw, &tokens, &n_tokens, err) != DK_OK) {
        dk_buf_free(&text);
        return cli_error(CMD, "%s", err);
    }
    dk_buf_free(&text);
    engine_timings t;
    rc = engine_generate(session, tokens, n_tokens, &o->gen, &t, err);
    dk_free(tokens);
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
    bool first = true;
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
        status = run_turn(o, model, session, line, first, dk_now_ns());
        if (status) break;
        first = false;
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
        if (OPT("--format")) {
            if (r < 0) return -1;
            cli_error(CMD, "--format is not supported yet");
            return -1;
        }
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

int cli_run(int argc, char **argv)
{
    uint64_t t_start = dk_now_ns();
    run_opts o;
    memset(&o, 0, sizeof(o));
    engine_generate_params_default(&o.gen);
    o.gen.on_text = write_text;
    int status = 1;
    engine_model *model = NULL;
    engine_session *session = NULL;
    if (parse_args(&o, argc, argv) != 0) goto done;
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
    if (o.have_prompt) status = run_turn(&o, model, session, o.prompt.data, true, t_start);
    else status = run_interactive(&o, model, session);
done:
    engine_session_free(session);
    engine_model_free(model);
    dk_buf_free(&o.prompt);
    dk_free(o.stops);
    return status;
}
