/*
 * test_serve.c: the in-process server of test_serve.h, shared by the HTTP suites.
 */
#include "test_serve.h"

#include <stdio.h>

#include "base/base.h"
#include "test.h"

srv *test_server_up(const char *models_dir)
{
    char err[DK_ERRLEN], dir[512];
    srv_config c;
    if (srv_config_default(&c, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "config: %s", err);
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), models_dir);
    dk_strlcpy(c.host, "127.0.0.1", sizeof c.host);
    c.port = 0;
    c.models_dir = dir;
    c.ollama_dir = "";
    c.n_threads = 1;
    c.num_parallel = 2;
    c.quiet = true;
    srv *s = NULL;
    if (srv_start(&s, &c, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "srv_start: %s", err);
        return NULL;
    }
    return s;
}
