/*
 * cmd_sql.c: `duckling sql [FILE.duckdb] [QUERY]`, the user's own DuckDB shell with prompt(),
 * embed() and prompt_sql() as SQL functions (sql.h). The database is opened read-write
 * (created when missing) unless --read-only, in memory without FILE, with DuckDB's external
 * access on. With QUERY: run its statements, print every result, exit 0, or 1 with DuckDB's
 * error on one line. Without: an interactive shell (lineedit.c: libedit line editing and
 * history in $DUCKLING_SQL_HISTORY or ~/.duckling/sql_history at a terminal; statements end
 * with ';', .help lists the dot commands); from a pipe it reads the statements of stdin. Models load on first use, so the shell starts at once.
 * Not for: running or rendering statements (sql/ does both).
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sql/sql.h"
#include "store/store.h"

#define CMD "sql"

typedef struct sql_shell {
    sql_db *db;
    bool json;            /* results as JSON rows instead of boxes */
    bool tty;             /* stdin is a terminal: the interactive shell */
    int n_threads;
    atomic_int executing; /* a statement runs: Ctrl-C interrupts it */
} sql_shell;

/* ---- models, loaded on first use ---- */

/* A .gguf path, or a name in the model store (as cli_load_model, but the message goes to err:
 * it becomes the SQL error of the call that named the model). */
static int shell_load_model(void *user, const char *name, engine_model **out, char *err)
{
    sql_shell *sh = user;
    engine_load_params lp;
    engine_load_params_default(&lp);
    lp.n_threads = sh->n_threads;
    size_t n = strlen(name);
    bool is_path = name[0] == '/' || strncmp(name, "./", 2) == 0 || strncmp(name, "../", 3) == 0 ||
                   (n > 5 && strcasecmp(name + n - 5, ".gguf") == 0);
    if (is_path) return engine_model_load(out, name, &lp, err);
    store *st = NULL;
    store_model *m = NULL;
    int rc = store_open(&st, NULL, NULL, err);
    if (rc == DK_OK) rc = store_resolve(st, name, &m, err);
    if (rc == DK_OK) rc = engine_model_load(out, m->gguf_path, &lp, err);
    store_model_free(m);
    store_free(st);
    return rc;
}

/* ---- results ---- */

static int shell_print_result(void *user, size_t i_statement, const sql_result *res, char *err)
{
    sql_shell *sh = user;
    (void)i_statement;
    dk_buf out = {0};
    int rc = sh->json ? sql_result_json_rows(res, &out) : sql_result_box(res, &out, 0);
    if (rc == 0 && out.len) fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    dk_buf_free(&out);
    return rc == 0 ? DK_OK : dk_fail(err, DK_ERR_NOMEM, "out of memory");
}

/* Prints a failure on one line of stderr: "Error: ..." at the terminal, as DuckDB's shell
 * does, else the command's usual "duckling sql: ...". Returns 1. */
static int shell_error(const sql_shell *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int shell_error(const sql_shell *sh, const char *fmt, ...)
{
    char msg[DK_ERRLEN * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!sh->tty) return cli_error(CMD, "%s", msg);
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    fprintf(stderr, "Error: %s\n", msg);
    return 1;
}

/* Runs text and prints its results; a failure is printed on one line of stderr. 0 or 1. */
static int shell_run(sql_shell *sh, const char *text)
{
    char err[DK_ERRLEN];
    atomic_store(&sh->executing, 1);
    int rc = sql_exec(sh->db, text, 0, shell_print_result, sh, err);
    atomic_store(&sh->executing, 0);
    return rc == DK_OK ? 0 : shell_error(sh, "%s", err);
}

/* ---- Ctrl-C ----
 * The handler only writes a byte to a pipe (any thread may receive the signal: DuckDB and the
 * model workers have threads of their own). A watcher thread reads it: while a statement runs
 * it interrupts it (sql_db_interrupt), at the prompt it passes it on through prompt_pipe to
 * the line reader (its interrupt_fd), which polls for it beside stdin and drops the line. */
static int signal_pipe[2] = {-1, -1};
static int prompt_pipe[2] = {-1, -1};

static void on_sigint(int signo)
{
    (void)signo;
    int saved = errno;
    ssize_t n = write(signal_pipe[1], "i", 1);
    (void)n;
    errno = saved;
}

static void *watch_interrupts(void *arg)
{
    sql_shell *sh = arg;
    char c;
    for (;;) {
        ssize_t n = read(signal_pipe[0], &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || c == 'q') break;
        if (atomic_load(&sh->executing)) {
            sql_db_interrupt(sh->db);
        } else {
            ssize_t w = write(prompt_pipe[1], "i", 1);
            (void)w;
        }
    }
    return NULL;
}

/* ---- dot commands ---- */

static void print_help(void)
{
    fputs("Statements end with ';' and may span lines. prompt(text [, model := M] [, format := F]),\n"
          "embed(text [, model := M]) and prompt_sql(question) call models.\n"
          ".tables         list the tables\n"
          ".schema         describe the tables (as prompt_sql sees them)\n"
          ".mode box|json  how results are printed\n"
          ".help           this text\n"
          ".quit, .exit    leave (also Ctrl-D)\n",
          stdout);
}

enum dot_result { DOT_OK, DOT_FAILED, DOT_QUIT };

static enum dot_result run_dot(sql_shell *sh, const char *line)
{
    char word[32] = "", arg[32] = "";
    if (sscanf(line, " %31s %31s", word, arg) < 1) return DOT_OK;
    if (strcmp(word, ".quit") == 0 || strcmp(word, ".exit") == 0) return DOT_QUIT;
    if (strcmp(word, ".help") == 0) {
        print_help();
        return DOT_OK;
    }
    if (strcmp(word, ".tables") == 0) return shell_run(sh, "SHOW TABLES") == 0 ? DOT_OK : DOT_FAILED;
    if (strcmp(word, ".schema") == 0) {
        dk_buf out = {0};
        char err[DK_ERRLEN];
        int rc = sql_describe(sh->db, NULL, NULL, &out, err);
        if (rc == DK_OK) fputs(out.data ? out.data : "", stdout);
        dk_buf_free(&out);
        if (rc == DK_OK) return DOT_OK;
        shell_error(sh, "%s", err);
        return DOT_FAILED;
    }
    if (strcmp(word, ".mode") == 0) {
        if (strcmp(arg, "box") == 0 || strcmp(arg, "json") == 0) {
            sh->json = strcmp(arg, "json") == 0;
            return DOT_OK;
        }
        shell_error(sh, ".mode box or .mode json");
        return DOT_FAILED;
    }
    shell_error(sh, "unknown command %s (.help lists them)", word);
    return DOT_FAILED;
}

/* ---- the loop ---- */

static bool is_blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t') return false;
    return true;
}

/* Reads statements until .quit or the end of input. Returns the exit status: at a terminal 0;
 * from a pipe 1 when a statement failed (the others still run, as a script would). */
static int shell_loop(sql_shell *sh)
{
    cli_lines *lines = NULL;
    dk_buf pending = {0};
    int status = 0;
    char err[DK_ERRLEN];
    cli_lines_config lc = {.tty = sh->tty, .app = "duckling-sql", .history_env = "DUCKLING_SQL_HISTORY",
                           .history_name = "sql_history", .interrupt_fd = prompt_pipe[0]};
    if (cli_lines_open(&lines, &lc, err) != DK_OK) return cli_error(CMD, "%s", err);
    if (sh->tty) printf("duckling sql: DuckDB with prompt(), embed() and prompt_sql(). .help for help.\n");
    for (;;) {
        fflush(stdout);
        const char *line = NULL;
        enum cli_lines_status rs = cli_lines_read(lines, pending.len ? "...> " : "sql> ", &line);
        if (rs == CLI_LINES_INTERRUPT) {
            fputc('\n', stdout);
            dk_buf_clear(&pending);
            continue;
        }
        if (rs == CLI_LINES_EOF) {
            if (sh->tty) fputc('\n', stdout);
            /* a last statement without ';' still runs */
            if (pending.len && !is_blank(pending.data) && shell_run(sh, pending.data) != 0) status = 1;
            break;
        }
        if (!pending.len && line[strspn(line, " \t")] == '.') {
            cli_lines_history_add(lines, line);
            enum dot_result d = run_dot(sh, line);
            if (d == DOT_QUIT) break;
            if (d == DOT_FAILED) status = 1;
            continue;
        }
        if (!pending.len && is_blank(line)) continue;
        dk_buf_puts(&pending, line);
        dk_buf_putc(&pending, '\n');
        if (pending.failed) {
            status = cli_error(CMD, "out of memory");
            break;
        }
        if (!sql_text_complete(pending.data)) continue;
        /* the statement as one history entry, without its last newline */
        pending.data[pending.len - 1] = '\0';
        cli_lines_history_add(lines, pending.data);
        if (shell_run(sh, pending.data) != 0) status = 1;
        dk_buf_clear(&pending);
    }
    dk_buf_free(&pending);
    cli_lines_close(lines);
    return sh->tty ? 0 : status;
}

/* ---- the command ---- */

typedef struct sql_args {
    const char *file, *query, *model, *embed_model;
    bool read_only, json;
    long n_threads, n_ctx, parallel, num_predict, seed;
    float temperature;
} sql_args;

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* A lone positional argument is the FILE when it names a database: *.duckdb, *.db, :memory:,
 * or an existing file; anything else is a QUERY on an in-memory database. */
static bool looks_like_database(const char *s)
{
    struct stat st;
    if (ends_with(s, ".duckdb") || ends_with(s, ".db") || strcmp(s, ":memory:") == 0) return true;
    return strpbrk(s, " \t\n;") == NULL && stat(s, &st) == 0 && S_ISREG(st.st_mode);
}

static int parse_args(int argc, char **argv, sql_args *a)
{
    memset(a, 0, sizeof *a);
    a->num_predict = 0;
    const char *positional[2];
    int n_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int got;
        if (strcmp(argv[i], "--read-only") == 0) {
            a->read_only = true;
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            a->json = true;
            continue;
        }
        if ((got = cli_opt_value(CMD, argc, argv, &i, "--model", &a->model)) != 0) {
            if (got < 0) return -1;
            continue;
        }
        if ((got = cli_opt_value(CMD, argc, argv, &i, "--embed-model", &a->embed_model)) != 0) {
            if (got < 0) return -1;
            continue;
        }
        struct { const char *name; long *out; long min, max; } longs[] = {
            {"--threads", &a->n_threads, 1, 1024}, {"--ctx", &a->n_ctx, 16, 1 << 20},
            {"--parallel", &a->parallel, 1, 256},   {"-n", &a->num_predict, -1, 1 << 20},
            {"--num-predict", &a->num_predict, -1, 1 << 20}, {"--seed", &a->seed, 0, 0x7fffffffL},
        };
        bool matched = false;
        for (size_t k = 0; k < sizeof longs / sizeof longs[0] && !matched; k++) {
            if ((got = cli_opt_value(CMD, argc, argv, &i, longs[k].name, &v)) == 0) continue;
            if (got < 0 || cli_parse_long(CMD, longs[k].name, v, longs[k].min, longs[k].max, longs[k].out) != 0) return -1;
            matched = true;
        }
        if (matched) continue;
        if ((got = cli_opt_value(CMD, argc, argv, &i, "--temperature", &v)) != 0) {
            if (got < 0 || cli_parse_float(CMD, "--temperature", v, 0, 100, &a->temperature) != 0) return -1;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            cli_error(CMD, "unknown option %s (see duckling help sql)", argv[i]);
            return -1;
        }
        if (n_positional == 2) {
            cli_error(CMD, "too many arguments: '%s' (quote the query as one argument)", argv[i]);
            return -1;
        }
        positional[n_positional++] = argv[i];
    }
    if (n_positional == 2) {
        a->file = positional[0];
        a->query = positional[1];
    } else if (n_positional == 1) {
        if (looks_like_database(positional[0])) a->file = positional[0];
        else a->query = positional[0];
    }
    if (a->file && strcmp(a->file, ":memory:") == 0) a->file = NULL;
    if (!a->model) a->model = getenv("DUCKLING_SQL_MODEL");
    if (a->model && !*a->model) a->model = NULL;
    return 0;
}

/* Sets up the Ctrl-C machinery of the interactive shell; 0 or -1. */
static int interrupts_start(sql_shell *sh, pthread_t *watcher, struct sigaction *old)
{
    if (pipe(signal_pipe) != 0) return -1;
    if (pipe(prompt_pipe) != 0) return -1;
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    fcntl(prompt_pipe[1], F_SETFL, O_NONBLOCK);
    if (pthread_create(watcher, NULL, watch_interrupts, sh) != 0) return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, old);
    return 0;
}

static void interrupts_stop(pthread_t watcher, const struct sigaction *old)
{
    sigaction(SIGINT, old, NULL);
    ssize_t n = write(signal_pipe[1], "q", 1);
    (void)n;
    pthread_join(watcher, NULL);
    for (int i = 0; i < 2; i++) {
        close(signal_pipe[i]);
        close(prompt_pipe[i]);
        signal_pipe[i] = prompt_pipe[i] = -1;
    }
}

int cli_sql(int argc, char **argv)
{
    sql_args a;
    if (parse_args(argc, argv, &a) != 0) return 1;
    sql_shell sh = {.json = a.json, .n_threads = (int)a.n_threads};
    atomic_init(&sh.executing, 0);
    char err[DK_ERRLEN];
    if (sql_db_open_shell(&sh.db, a.file, a.read_only, err) != DK_OK) return cli_error(CMD, "%s", err);
    sql_functions_config cfg;
    sql_functions_config_default(&cfg);
    cfg.model_name = a.model;
    cfg.embed_model_name = a.embed_model;
    cfg.load = shell_load_model;
    cfg.load_user = &sh;
    cfg.n_threads = (int)a.n_threads;
    cfg.n_ctx = (size_t)a.n_ctx;
    if (a.parallel) cfg.parallel = (int)a.parallel;
    if (a.num_predict) cfg.num_predict = a.num_predict;
    cfg.temperature = a.temperature;
    cfg.seed = (uint64_t)a.seed;
    if (sql_functions_register(sh.db, &cfg, NULL, err) != DK_OK) {
        sql_db_free(sh.db);
        return cli_error(CMD, "%s", err);
    }
    int status;
    if (a.query) {
        status = shell_run(&sh, a.query);
    } else {
        sh.tty = isatty(STDIN_FILENO);
        pthread_t watcher;
        struct sigaction old;
        bool watching = sh.tty && interrupts_start(&sh, &watcher, &old) == 0;
        if (sh.tty && !watching) {
            sql_db_free(sh.db);
            return cli_error(CMD, "cannot set up Ctrl-C handling");
        }
        status = shell_loop(&sh);
        if (watching) interrupts_stop(watcher, &old);
    }
    sql_db_free(sh.db);
    return status;
}
