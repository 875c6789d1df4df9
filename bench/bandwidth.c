/*
 * bench/bandwidth.c: this machine's memory read bandwidth, the roofline of decode (every
 * generated token reads all the weights once). Reads a buffer much larger than the caches
 * with T threads, each streaming its own slice with 256-bit loads and software prefetch
 * 2 KiB ahead (as the decode kernels do: on the 2-core VMs this project runs on, the
 * hardware prefetchers alone leave part of the bandwidth unused), and prints the best of R
 * passes in GB/s (10^9 bytes per second). Models smaller than the last-level cache can
 * decode faster than this roofline.
 *
 *   build/bandwidth [-t THREADS] [-m MIB] [-r PASSES] [--json]
 *
 * Roofline of a model: weight bytes read per token / bandwidth = seconds per token.
 * A benchmark, not a test.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct slice {
    const uint8_t *p;
    size_t n;
    uint64_t sink;
    pthread_barrier_t *start;
} slice;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        size_t ahead = i + 2048 + 128 <= n ? i + 2048 : i;
        _mm_prefetch((const char *)(p + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(p + ahead + 64), _MM_HINT_T0);
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    __m256i a = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, a);
    return out[0] ^ out[1] ^ out[2] ^ out[3];
}
#endif

static uint64_t read_scalar(const uint8_t *p, size_t n)
{
    uint64_t a[8] = {0};
    for (size_t i = 0; i + 64 <= n; i += 64)
        for (int k = 0; k < 8; k++) {
            uint64_t v;
            memcpy(&v, p + i + 8 * (size_t)k, 8);
            a[k] ^= v;
        }
    return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

static void *reader(void *arg)
{
    slice *s = arg;
    pthread_barrier_wait(s->start);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        s->sink = read_avx2(s->p, s->n);
        return NULL;
    }
#endif
    s->sink = read_scalar(s->p, s->n);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = 2, mib = 1024, passes = 5;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atol(argv[++i]);
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) passes = atol(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: %s [-t THREADS] [-m MIB] [-r PASSES] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || mib < 16 || passes < 1) {
        fprintf(stderr, "bandwidth: bad arguments\n");
        return 2;
    }
    size_t n = (size_t)mib << 20;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, n) != 0) {
        fprintf(stderr, "bandwidth: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i * 2654435761u >> 24);
    double best = 0;
    uint64_t sink = 0;
    for (long r = 0; r < passes; r++) {
        pthread_t th[256];
        slice sl[256];
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
        size_t per = n / (size_t)threads / 128 * 128;
        for (long t = 0; t < threads; t++) {
            sl[t] = (slice){buf + (size_t)t * per, per, 0, &start};
            pthread_create(&th[t], NULL, reader, &sl[t]);
        }
        pthread_barrier_wait(&start);
        double t0 = now_s();
        for (long t = 0; t < threads; t++) pthread_join(th[t], NULL);
        double dt = now_s() - t0;
        pthread_barrier_destroy(&start);
        for (long t = 0; t < threads; t++) sink ^= sl[t].sink;
        double gbs = (double)(per * (size_t)threads) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    if (json) printf("{\"threads\": %ld, \"mib\": %ld, \"read_gbps\": %.2f, \"sink\": %llu}\n", threads, mib, best,
                     (unsigned long long)(sink & 1));
    else printf("memory read bandwidth: %.2f GB/s (%ld threads, %ld MiB buffer, best of %ld)\n", best, threads, mib, passes);
    free(buf);
    return 0;
}
