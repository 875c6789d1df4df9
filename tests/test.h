/*
 * test.h: duckling's small unit-test harness.
 *
 * A test is `TEST(suite, name) { ... }` in any test file under tests/; the Makefile collects every
 * TEST line into build/.../test_registry.inc, so adding a test needs no list editing.
 * `build/duckling-tests [SUITE|SUITE.NAME ...]` runs all tests or the named ones and ends
 * with the line "N passed, N failed". CHECK* record a failure and go on; REQUIRE* also
 * return from the test. Tests find the conformance kit through test_kit_path() (the
 * DUCKLING_KIT variable, default ../shared/kit) and the built CLI through test_cli_path().
 */
#ifndef DK_TEST_H
#define DK_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#define TEST(suite, name) \
    void test_##suite##__##name(void); \
    void test_##suite##__##name(void)

void test_fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void test_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond) \
    do { if (!(cond)) test_fail_at(__FILE__, __LINE__, "CHECK(%s)", #cond); } while (0)
#define REQUIRE(cond) \
    do { if (!(cond)) { test_fail_at(__FILE__, __LINE__, "REQUIRE(%s)", #cond); return; } } while (0)
#define CHECK_MSG(cond, ...) \
    do { if (!(cond)) test_fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define REQUIRE_MSG(cond, ...) \
    do { if (!(cond)) { test_fail_at(__FILE__, __LINE__, __VA_ARGS__); return; } } while (0)
#define CHECK_EQ_INT(a, b) \
    do { long long a_ = (long long)(a), b_ = (long long)(b); \
         if (a_ != b_) test_fail_at(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)
#define CHECK_EQ_STR(a, b) \
    do { const char *a_ = (a), *b_ = (b); \
         if (!a_ || !b_ || strcmp(a_, b_) != 0) \
             test_fail_at(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } while (0)
#define CHECK_NEAR(a, b, tol) \
    do { double a_ = (a), b_ = (b); \
         if (!(fabs(a_ - b_) <= (tol))) test_fail_at(__FILE__, __LINE__, "%s ~ %s: %g vs %g (tol %g)", #a, #b, a_, b_, (double)(tol)); } while (0)

/* Number of failures recorded so far in the running test (lets a test stop early). */
int test_failures(void);

/* Path of the conformance kit (no trailing slash), and a path under it written to buf. */
const char *test_kit_path(void);
const char *test_kit_file(char *buf, size_t buf_size, const char *relative);
/* Path of the built duckling binary (DUCKLING_BIN, default build/duckling). */
const char *test_cli_path(void);
/* A fresh temporary directory for this test run (created once, removed at exit). */
const char *test_tmpdir(void);

#endif
