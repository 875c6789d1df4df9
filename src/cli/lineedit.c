/*
 * lineedit.c: the line reader of the interactive commands (the chat of `duckling run`, the
 * shell of `duckling sql`). At a terminal it reads with libedit (emacs keys, a prompt, history
 * loaded from and saved to a file of the command's own); from a pipe it reads plain lines with
 * getline, so scripts and tests drive the same loops. Ctrl-C at the prompt drops the line: the
 * caller's SIGINT handler notes it with cli_lines_interrupt, or a byte arrives on a descriptor
 * of the caller's. Not for: what a line means (""" blocks, slash or dot commands, statements
 * that span lines): the callers decide that.
 */
#include "cli/cli.h"

#include <errno.h>
#include <histedit.h>
#include <locale.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#define HISTORY_SIZE 1000

struct cli_lines {
    bool tty;
    EditLine *el;
    History *hist;
    char *history_path; /* owned; NULL: no history file */
    const char *prompt; /* borrowed from the cli_lines_read in progress */
    int interrupt_fd;   /* the caller's, or -1 */
    bool interrupted;   /* a byte came on interrupt_fd while reading this line */
    dk_buf edited;      /* the line libedit gave (terminal) */
    char *line;         /* getline's buffer (plain reading) */
    size_t cap;
};

/* Set by cli_lines_interrupt (a signal handler), cleared when a read starts. */
static volatile sig_atomic_t sigint_seen;

void cli_lines_interrupt(void) { sigint_seen = 1; }

static char *lines_prompt(EditLine *el)
{
    cli_lines *l = NULL;
    el_get(el, EL_CLIENTDATA, &l);
    return (char *)(l && l->prompt ? l->prompt : "");
}

/* $<env>, else ~/.duckling/<name> (the folder is made if missing), or NULL. */
static char *history_file(const char *env_name, const char *name)
{
    const char *env = env_name ? getenv(env_name) : NULL;
    if (env && *env) return dk_strdup(env);
    const char *home = getenv("HOME");
    if (!name || !home || !*home) return NULL;
    dk_buf b = {0};
    dk_buf_printf(&b, "%s/.duckling", home);
    if (b.failed) return NULL;
    mkdir(b.data, 0700); /* fails harmlessly when it exists; saving reports nothing either way */
    dk_buf_printf(&b, "/%s", name);
    return dk_buf_detach(&b);
}

/* Waits until stdin is readable (0) or Ctrl-C comes (1), whichever is first; -1 on an error.
 * SIGINT stays blocked except inside ppoll, so one that arrives just before the wait is not
 * lost (a plain read would then block with the flag already set). A signal that interrupts
 * ppoll without noting Ctrl-C (the sql shell's handler only writes to its pipe, whose byte
 * then comes on interrupt_fd) waits again. */
static int lines_wait(cli_lines *l)
{
    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &orig);
    struct pollfd pfd[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = l->interrupt_fd, .events = POLLIN}};
    int rc;
    for (;;) {
        if (sigint_seen) {
            rc = 1;
            break;
        }
        if (ppoll(pfd, 2, NULL, &orig) < 0) {
            if (errno == EINTR) continue;
            rc = -1;
            break;
        }
        if (pfd[1].revents & POLLIN) {
            char c;
            if (read(l->interrupt_fd, &c, 1) == 1) l->interrupted = true;
            rc = 1;
            break;
        }
        if (pfd[0].revents) {
            rc = 0;
            break;
        }
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &orig, NULL);
    errno = saved;
    return rc;
}

/* libedit's own reader retries a read that a signal interrupted, so Ctrl-C at the prompt would
 * do nothing; this one reports it. It decodes UTF-8, since libedit wants characters.
 * 1: a character, 0: end of input, -1: error. */
static int lines_getc(EditLine *el, wchar_t *out)
{
    cli_lines *l = NULL;
    el_get(el, EL_CLIENTDATA, &l);
    /* Ctrl-C ends this line as an end of input would (libedit retries a failed read whose
     * signal it did not catch itself, e.g. one that came before it set up its handlers);
     * cli_lines_read then sees the flag and drops the line */
    int waited = lines_wait(l);
    if (waited != 0) return waited > 0 ? 0 : -1;
    unsigned char b;
    ssize_t n = read(STDIN_FILENO, &b, 1);
    if (n <= 0) return n == 0 ? 0 : -1;
    int more = b < 0x80 ? 0 : (b & 0xE0) == 0xC0 ? 1 : (b & 0xF0) == 0xE0 ? 2 : (b & 0xF8) == 0xF0 ? 3 : -1;
    if (more < 0) {
        *out = 0xFFFD; /* a stray byte */
        return 1;
    }
    uint32_t c = more == 0 ? b : more == 1 ? (b & 0x1Fu) : more == 2 ? (b & 0x0Fu) : (b & 0x07u);
    for (int i = 0; i < more; i++) {
        unsigned char cont;
        do {
            n = read(STDIN_FILENO, &cont, 1);
        } while (n < 0 && errno == EINTR);
        if (n <= 0 || (cont & 0xC0) != 0x80) {
            *out = 0xFFFD;
            return 1;
        }
        c = (c << 6) | (cont & 0x3Fu);
    }
    *out = (wchar_t)c;
    return 1;
}

int cli_lines_open(cli_lines **out, const cli_lines_config *cfg, char *err)
{
    *out = NULL;
    cli_lines *l = dk_calloc(1, sizeof *l);
    if (!l) return dk_fail(err, DK_ERR_NOMEM, "cannot set up line editing");
    l->tty = cfg->tty;
    l->interrupt_fd = cfg->interrupt_fd;
    if (l->tty) {
        /* libedit edits characters, so it needs a UTF-8 character type; only LC_CTYPE is
         * touched (numbers keep printing with '.') */
        const char *ctype = setlocale(LC_CTYPE, "");
        if (!ctype || strcmp(ctype, "C") == 0 || strcmp(ctype, "POSIX") == 0) setlocale(LC_CTYPE, "C.UTF-8");
        l->el = el_init(cfg->app, stdin, stdout, stderr);
        l->hist = history_init();
        if (!l->el || !l->hist) {
            cli_lines_close(l);
            return dk_fail(err, DK_ERR_NOMEM, "cannot set up line editing");
        }
        HistEvent ev;
        history(l->hist, &ev, H_SETSIZE, HISTORY_SIZE);
        history(l->hist, &ev, H_SETUNIQUE, 1);
        el_set(l->el, EL_CLIENTDATA, l);
        el_set(l->el, EL_PROMPT, lines_prompt);
        el_set(l->el, EL_EDITOR, "emacs");
        el_set(l->el, EL_GETCFN, lines_getc);
        el_set(l->el, EL_HIST, history, l->hist);
        l->history_path = history_file(cfg->history_env, cfg->history_name);
        if (l->history_path) history(l->hist, &ev, H_LOAD, l->history_path);
    }
    *out = l;
    return DK_OK;
}

void cli_lines_close(cli_lines *l)
{
    if (!l) return;
    if (l->hist) history_end(l->hist);
    if (l->el) el_end(l->el);
    dk_free(l->history_path);
    dk_buf_free(&l->edited);
    free(l->line); /* allocated by getline */
    dk_free(l);
}

void cli_lines_history_add(cli_lines *l, const char *text)
{
    if (!l->hist || !*text) return;
    HistEvent ev;
    history(l->hist, &ev, H_ENTER, text);
    if (l->history_path) history(l->hist, &ev, H_SAVE, l->history_path);
}

enum cli_lines_status cli_lines_read(cli_lines *l, const char *prompt, const char **line)
{
    sigint_seen = 0;
    l->interrupted = false;
    l->prompt = prompt;
    char *text;
    if (l->tty) {
        int count = 0;
        const char *s = el_gets(l->el, &count);
        if (sigint_seen || l->interrupted) return CLI_LINES_INTERRUPT;
        if (!s) return count < 0 && errno == EINTR ? CLI_LINES_INTERRUPT : CLI_LINES_EOF;
        dk_buf_clear(&l->edited);
        if (dk_buf_puts(&l->edited, s) != 0) return CLI_LINES_EOF;
        text = l->edited.data;
    } else {
        ssize_t got = getline(&l->line, &l->cap, stdin);
        if (got < 0) {
            if (sigint_seen) { /* getline's read returned EINTR (no SA_RESTART) */
                clearerr(stdin);
                return CLI_LINES_INTERRUPT;
            }
            return CLI_LINES_EOF;
        }
        text = l->line;
    }
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r')) text[--n] = 0;
    *line = text;
    return CLI_LINES_LINE;
}
