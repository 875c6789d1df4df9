/*
 * cmd_serve.c: `duckling serve`: the Ollama and OpenAI HTTP APIs (server/) on HOST:PORT until
 * SIGINT or SIGTERM. The environment configures it first (srv_config_default: DUCKLING_HOST,
 * OLLAMA_HOST, *_NUM_PARALLEL, ...); the options here override it.
 */
#include "cli/cli.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "server/server.h"

static int serve_options(int argc, char **argv, srv_config *c)
{
    for (int i = 1; i < argc; i++) {
        const char *v;
        long n;
        int r;
        if ((r = cli_opt_value("serve", argc, argv, &i, "--host", &v)) != 0) {
            if (r < 0) return -1;
            dk_strlcpy(c->host, v, sizeof c->host);
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--port", &v)) != 0) {
            if (r < 0 || cli_parse_long("serve", "--port", v, 0, 65535, &n) != 0) return -1;
            c->port = (int)n;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--parallel", &v)) != 0) {
            if (r < 0 || cli_parse_long("serve", "--parallel", v, 1, 256, &n) != 0) return -1;
            c->num_parallel = (int)n;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--ctx", &v)) != 0) {
            if (r < 0 || cli_parse_long("serve", "--ctx", v, 16, 1 << 24, &n) != 0) return -1;
            c->num_ctx = (size_t)n;
        } else if ((r = cli_opt_value("serve", argc, argv, &i, "--threads", &v)) != 0) {
            if (r < 0 || cli_parse_long("serve", "--threads", v, 0, 1024, &n) != 0) return -1;
            c->n_threads = (int)n;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            c->quiet = true;
        } else {
            cli_error("serve", "unknown argument '%s' (see duckling help serve)", argv[i]);
            return -1;
        }
    }
    return 0;
}

int cli_serve(int argc, char **argv)
{
    srv_config config;
    char err[DK_ERRLEN];
    if (srv_config_default(&config, err) != DK_OK) return cli_error("serve", "%s", err);
    if (serve_options(argc, argv, &config) != 0) return 1;

    /* Block the signals before any thread starts, so that every thread inherits the mask and
     * this one alone receives them in sigwait. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that goes away is a failed write, not the end */

    srv *server;
    if (srv_start(&server, &config, err) != DK_OK) return cli_error("serve", "%s", err);
    const char *host = config.host;
    bool v6 = strchr(host, ':') != NULL;
    fprintf(stderr, "duckling: listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", srv_port(server));
    fflush(stderr);
    int sig = 0;
    sigwait(&stop, &sig);
    if (!config.quiet) fprintf(stderr, "duckling: %s, shutting down\n", sig == SIGINT ? "interrupted" : "terminated");
    srv_free(server);
    return 0;
}
