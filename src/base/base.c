/*
 * base.c: status messages, the allocation hook, dk_buf, file helpers and the clock.
 * See base.h for the contracts; nothing here knows about models or formats.
 */
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int dk_fail(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, DK_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *dk_status_name(int code)
{
    switch (code) {
    case DK_OK: return "ok";
    case DK_ERR_IO: return "I/O error";
    case DK_ERR_NOMEM: return "out of memory";
    case DK_ERR_FORMAT: return "malformed input";
    case DK_ERR_UNSUPPORTED: return "unsupported";
    case DK_ERR_ARG: return "invalid argument";
    case DK_ERR_CANCELLED: return "cancelled";
    case DK_ERR_NOTFOUND: return "not found";
    case DK_ERR_LIMIT: return "limit reached";
    }
    return "unknown error";
}

/* ---- allocation ---- */

static _Atomic long alloc_budget = -1; /* -1: unlimited; otherwise allocations left */

void dk_alloc_fail_after(long n) { atomic_store(&alloc_budget, n); }

static int alloc_allowed(void)
{
    long b = atomic_load(&alloc_budget);
    while (b >= 0) {
        if (b == 0) return 0;
        if (atomic_compare_exchange_weak(&alloc_budget, &b, b - 1)) return 1;
    }
    return 1;
}

void *dk_malloc(size_t n_bytes)
{
    if (!alloc_allowed()) return NULL;
    return malloc(n_bytes ? n_bytes : 1);
}

void *dk_malloc_huge(size_t n_bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (n_bytes < huge) return dk_malloc(n_bytes);
    if (!alloc_allowed()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, huge, n_bytes) != 0) return NULL;
    madvise(p, n_bytes / huge * huge, MADV_HUGEPAGE);
    return p;
}

void *dk_calloc(size_t n, size_t size)
{
    size_t total;
    if (dk_mul_size(n, size, &total) || !alloc_allowed()) return NULL;
    return calloc(total ? n : 1, total ? size : 1);
}

void *dk_realloc(void *p, size_t n_bytes)
{
    if (!alloc_allowed()) return NULL;
    return realloc(p, n_bytes ? n_bytes : 1);
}

void *dk_malloc_array(size_t n, size_t size)
{
    size_t total;
    if (dk_mul_size(n, size, &total)) return NULL;
    return dk_malloc(total);
}

char *dk_strndup(const char *s, size_t n)
{
    char *d = dk_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *dk_strdup(const char *s) { return dk_strndup(s, strlen(s)); }

void dk_free(void *p) { free(p); }

/* ---- dk_buf ---- */

int dk_buf_reserve(dk_buf *b, size_t n_more)
{
    size_t need;
    if (b->failed) return -1;
    if (dk_add_size(b->len, n_more, &need) || dk_add_size(need, 1, &need)) {
        b->failed = 1;
        return -1;
    }
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (dk_mul_size(cap, 2, &cap)) { cap = need; break; }
    }
    char *p = dk_realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int dk_buf_append(dk_buf *b, const void *data, size_t n_bytes)
{
    if (dk_buf_reserve(b, n_bytes)) return -1;
    if (n_bytes) memcpy(b->data + b->len, data, n_bytes);
    b->len += n_bytes;
    b->data[b->len] = 0;
    return 0;
}

int dk_buf_puts(dk_buf *b, const char *s) { return dk_buf_append(b, s, strlen(s)); }

int dk_buf_putc(dk_buf *b, char c) { return dk_buf_append(b, &c, 1); }

int dk_buf_vprintf(dk_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || dk_buf_reserve(b, (size_t)n)) return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int dk_buf_printf(dk_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dk_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void dk_buf_clear(dk_buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

char *dk_buf_detach(dk_buf *b)
{
    if (b->failed) {
        dk_buf_free(b);
        return NULL;
    }
    if (!b->data && dk_buf_reserve(b, 0)) return NULL;
    b->data[b->len] = 0;
    char *p = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void dk_buf_free(dk_buf *b)
{
    dk_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

size_t dk_strlcpy(char *dst, const char *src, size_t dst_size)
{
    size_t n = strlen(src);
    if (dst_size) {
        size_t c = n < dst_size - 1 ? n : dst_size - 1;
        memcpy(dst, src, c);
        dst[c] = 0;
    }
    return n;
}

/* ---- files ---- */

int dk_file_read(const char *path, size_t max_bytes, char **out, size_t *out_len, char *err)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return dk_fail(err, DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    dk_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > max_bytes) {
            fclose(f);
            dk_buf_free(&b);
            return dk_fail(err, DK_ERR_LIMIT, "%s is larger than %zu bytes", path, max_bytes);
        }
        if (dk_buf_append(&b, chunk, n)) {
            fclose(f);
            dk_buf_free(&b);
            return dk_fail(err, DK_ERR_NOMEM, "out of memory reading %s", path);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        dk_buf_free(&b);
        return dk_fail(err, DK_ERR_IO, "error reading %s", path);
    }
    size_t len = b.len;
    *out = dk_buf_detach(&b);
    if (!*out) return dk_fail(err, DK_ERR_NOMEM, "out of memory reading %s", path);
    if (out_len) *out_len = len;
    return DK_OK;
}

int dk_file_write(const char *path, const void *data, size_t n_bytes, char *err)
{
    dk_buf tmp = {0};
    dk_buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
    if (tmp.failed) return dk_fail(err, DK_ERR_NOMEM, "out of memory");
    FILE *f = fopen(tmp.data, "wb");
    if (!f) {
        int rc = dk_fail(err, DK_ERR_IO, "cannot create %s: %s", tmp.data, strerror(errno));
        dk_buf_free(&tmp);
        return rc;
    }
    int ok = fwrite(data, 1, n_bytes, f) == n_bytes;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp.data, path) != 0) {
        int rc = dk_fail(err, DK_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp.data);
        dk_buf_free(&tmp);
        return rc;
    }
    dk_buf_free(&tmp);
    return DK_OK;
}

int dk_map_open(dk_map *m, const char *path, char *err)
{
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dk_fail(err, DK_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return dk_fail(err, DK_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return dk_fail(err, DK_ERR_IO, "%s is not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return dk_fail(err, DK_ERR_IO, "cannot map %s: %s", path, strerror(errno));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return DK_OK;
}

void dk_map_release(const void *p, size_t n)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || !p) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~((uintptr_t)page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

void dk_map_close(dk_map *m)
{
    if (m->data) munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

uint64_t dk_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *dk_getenv_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return (v && *v) ? v : fallback;
}
