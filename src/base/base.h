/*
 * base: the few things every other layer of duckling needs, and nothing more.
 *
 * - Status codes and error messages: library functions return DK_OK (0) or a negative
 *   DK_ERR_* code and, on failure, write one line of text into a caller-provided buffer of
 *   DK_ERRLEN bytes (`char err[DK_ERRLEN]`). There is no global "last error".
 * - One allocation hook (dk_malloc and friends) so tests can make the Nth allocation fail.
 * - dk_buf: a growable, always NUL-terminated byte buffer; the project uses it instead of
 *   sprintf/strcat/strncpy.
 * - Overflow-checked size arithmetic for every size computed from untrusted input.
 * - Whole-file reading and read-only memory mapping.
 *
 * Not for: JSON (the project uses jansson directly), logging policy, anything model-specific.
 * Thread safety: everything here is thread-safe except dk_alloc_fail_after, a test hook.
 */
#ifndef DK_BASE_H
#define DK_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define DK_ERRLEN 256

enum dk_status {
    DK_OK = 0,
    DK_ERR_IO = -1,        /* a file could not be opened, read, written or mapped */
    DK_ERR_NOMEM = -2,     /* an allocation failed or a size overflowed */
    DK_ERR_FORMAT = -3,    /* input is malformed (bad magic, truncated, out of range, ...) */
    DK_ERR_UNSUPPORTED = -4, /* well-formed but not something duckling handles */
    DK_ERR_ARG = -5,       /* the caller passed an invalid argument */
    DK_ERR_NOTFOUND = -6,  /* a named thing (key, tensor, model, token) does not exist */
    DK_ERR_LIMIT = -7,     /* a configured limit was reached (context full, too long, ...) */
    DK_ERR_CANCELLED = -8, /* the caller asked to stop (a cancel flag, Ctrl-C) */
};

/* Writes a printf-style message into err (DK_ERRLEN bytes; err may be NULL) and returns
 * code, so failures read `return dk_fail(err, DK_ERR_FORMAT, "bad magic %x", m);`. */
int dk_fail(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A short English name of a status code ("I/O error", ...). Never NULL. */
const char *dk_status_name(int code);

/* ---- allocation: every allocation in duckling goes through these ---- */
void *dk_malloc(size_t n_bytes);                  /* NULL on failure or n_bytes == 0 is allowed */
void *dk_calloc(size_t n, size_t size);           /* zeroed; NULL if n*size overflows */
void *dk_realloc(void *p, size_t n_bytes);
void *dk_malloc_array(size_t n, size_t size);     /* NULL if n*size overflows */
/* n_bytes for big arrays streamed every step (repacked weights, KV caches): aligned to
 * 2 MiB and advised to use transparent huge pages, so that streaming them does not miss
 * the TLB every 4 KiB. Freed with dk_free. */
void *dk_malloc_huge(size_t n_bytes);
char *dk_strdup(const char *s);
char *dk_strndup(const char *s, size_t n);
void dk_free(void *p);
/* Test hook: after n more successful allocations, every allocation fails; -1 disables. */
void dk_alloc_fail_after(long n);

/* ---- overflow-checked arithmetic: return 0 and set *out, or -1 on overflow ---- */
static inline int dk_add_size(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out) ? -1 : 0; }
static inline int dk_mul_size(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }
static inline int dk_add_u64(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_add_overflow(a, b, out) ? -1 : 0; }
static inline int dk_mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }

/* ---- dk_buf: growable byte buffer, data is always NUL-terminated after use ----
 * Zero-initialise (`dk_buf b = {0};`), append, then either dk_buf_free() it or take
 * ownership of b.data with dk_buf_detach() (free it with dk_free). On allocation failure the
 * buffer sets its `failed` flag, ignores later appends, and the functions return -1. */
typedef struct dk_buf {
    char *data;    /* NULL until something is appended */
    size_t len;    /* bytes used, not counting the terminating NUL */
    size_t cap;    /* bytes allocated */
    int failed;    /* set once an allocation failed */
} dk_buf;

int dk_buf_append(dk_buf *b, const void *data, size_t n_bytes);
int dk_buf_puts(dk_buf *b, const char *s);
int dk_buf_putc(dk_buf *b, char c);
int dk_buf_printf(dk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dk_buf_vprintf(dk_buf *b, const char *fmt, va_list ap);
int dk_buf_reserve(dk_buf *b, size_t n_more);
void dk_buf_clear(dk_buf *b);          /* len = 0, keeps the memory */
char *dk_buf_detach(dk_buf *b);        /* caller owns the returned string (never NULL unless failed) */
void dk_buf_free(dk_buf *b);

/* Bounded string copy that always NUL-terminates (dst_size > 0); returns strlen(src). */
size_t dk_strlcpy(char *dst, const char *src, size_t dst_size);

/* ---- files ---- */
/* Reads a whole file; *out is NUL-terminated, caller frees with dk_free. max_bytes bounds it. */
int dk_file_read(const char *path, size_t max_bytes, char **out, size_t *out_len, char *err);
/* Writes a whole file atomically (temp file + rename). */
int dk_file_write(const char *path, const void *data, size_t n_bytes, char *err);

/* A read-only memory mapping of a whole file. */
typedef struct dk_map {
    const uint8_t *data;  /* NULL for an empty file */
    size_t size;
} dk_map;
int dk_map_open(dk_map *m, const char *path, char *err);
void dk_map_close(dk_map *m);          /* safe on a zeroed or already-closed map */
/* Lets the kernel drop the resident pages of the whole pages inside [p, p + n) of a mapping
 * (they are read from the file again if touched): for data copied elsewhere. */
void dk_map_release(const void *p, size_t n);

/* Monotonic clock in nanoseconds, for timings. */
uint64_t dk_now_ns(void);

/* Environment variable or a default when unset or empty. */
const char *dk_getenv_or(const char *name, const char *fallback);

#endif
