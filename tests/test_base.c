/*
 * test_base.c: the base layer: dk_buf growth and failure, overflow checks, the allocation
 * hook, file round trips.
 */
#include "test.h"

#include <stdlib.h>

#include "base/base.h"

TEST(base, buf_appends_and_formats)
{
    dk_buf b = {0};
    CHECK(dk_buf_puts(&b, "abc") == 0);
    CHECK(dk_buf_printf(&b, "-%d-", 42) == 0);
    for (int i = 0; i < 1000; i++) dk_buf_putc(&b, 'x');
    CHECK_EQ_INT(b.len, 3 + 4 + 1000);
    CHECK(strncmp(b.data, "abc-42-xx", 9) == 0);
    CHECK(b.data[b.len] == 0);
    char *s = dk_buf_detach(&b);
    CHECK(s && strlen(s) == 1007);
    CHECK(b.data == NULL);
    dk_free(s);
}

TEST(base, buf_records_allocation_failure)
{
    dk_buf b = {0};
    dk_alloc_fail_after(0);
    CHECK(dk_buf_puts(&b, "abc") == -1);
    dk_alloc_fail_after(-1);
    CHECK(b.failed);
    CHECK(dk_buf_puts(&b, "abc") == -1); /* stays failed */
    CHECK(dk_buf_detach(&b) == NULL);
}

TEST(base, overflow_checks)
{
    size_t out;
    CHECK(dk_mul_size(SIZE_MAX / 2, 3, &out) == -1);
    CHECK(dk_add_size(SIZE_MAX, 1, &out) == -1);
    CHECK(dk_mul_size(1000, 1000, &out) == 0 && out == 1000000);
    CHECK(dk_malloc_array(SIZE_MAX / 4, 8) == NULL);
    CHECK(dk_calloc(SIZE_MAX / 4, 8) == NULL);
}

TEST(base, file_round_trip_and_errors)
{
    char path[512], err[DK_ERRLEN];
    snprintf(path, sizeof path, "%s/f.txt", test_tmpdir());
    CHECK(dk_file_write(path, "hello", 5, err) == DK_OK);
    char *data;
    size_t n;
    REQUIRE(dk_file_read(path, 100, &data, &n, err) == DK_OK);
    CHECK(n == 5 && strcmp(data, "hello") == 0);
    dk_free(data);
    CHECK(dk_file_read(path, 3, &data, &n, err) == DK_ERR_LIMIT);
    CHECK(dk_file_read("/nonexistent/x", 3, &data, &n, err) == DK_ERR_IO);
    CHECK(strstr(err, "/nonexistent/x") != NULL);
    dk_map m;
    REQUIRE(dk_map_open(&m, path, err) == DK_OK);
    CHECK(m.size == 5 && memcmp(m.data, "hello", 5) == 0);
    dk_map_close(&m);
    CHECK(dk_map_open(&m, "/", err) == DK_ERR_IO);
}
