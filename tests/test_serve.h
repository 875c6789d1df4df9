/*
 * test_serve.h: an in-process duckling server for the suites that test HTTP endpoints
 * (test_serve.c): listening on 127.0.0.1 at a free port, quiet, one thread per model and two
 * parallel slots, with its own model store under the test run's temporary directory.
 */
#ifndef DK_TEST_SERVE_H
#define DK_TEST_SERVE_H

#include "server/server.h"

/* A started server whose model store is test_tmpdir()/models_dir; NULL after a recorded
 * failure. The caller stops it with srv_free. */
srv *test_server_up(const char *models_dir);

#endif
