/*
 * fuzz_toolcall.c: fuzz target for the tool-call and reasoning parser (chat_parser).
 *
 * The first byte picks the format (low 3 bits, modulo the number of formats) and the flags
 * (bit 3 reasoning, bit 4 in_reasoning, bit 5 parse_tools off); the second seeds the chunk
 * sizes; the rest is the model's output, fed in chunks of 1..32 bytes (sometimes all the rest).
 * The same text is then fed whole, and both runs must agree: content, reasoning and calls do
 * not depend on the chunking. Every call must have the documented shape. A disagreement is a
 * bug and aborts, so libFuzzer reports it.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"

typedef struct fuzz_run {
    dk_buf content, reasoning;
    json_t *calls;
    int rc;
} fuzz_run;

static void fuzz_feed(const chat_parse_params *params, const uint8_t *text, size_t n, uint8_t seed, bool whole,
                      fuzz_run *r)
{
    memset(r, 0, sizeof *r);
    chat_parser *p;
    char err[DK_ERRLEN];
    r->rc = chat_parser_new(&p, params, err);
    if (r->rc) return;
    uint32_t state = seed * 2654435761u + 0x9e3779b9u;
    size_t at = 0;
    while (at < n && r->rc == DK_OK) {
        size_t k = n - at;
        if (!whole) {
            state = state * 1103515245u + 12345u;
            size_t want = (state >> 16) % 17 == 0 ? k : (state >> 16) % 32 + 1;
            if (want < k) k = want;
        }
        chat_delta d = {&r->content, &r->reasoning, 0};
        r->rc = chat_parser_feed(p, (const char *)text + at, k, &d);
        at += k;
    }
    chat_delta d = {&r->content, &r->reasoning, 0};
    if (r->rc == DK_OK) r->rc = chat_parser_finish(p, &d);
    r->calls = json_deep_copy(chat_parser_tool_calls(p));
    chat_parser_free(p);
}

static void fuzz_check_calls(const json_t *calls)
{
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) {
        const json_t *fn = json_object_get(call, "function");
        if (!json_is_string(json_object_get(call, "id")) || !json_is_string(json_object_get(fn, "name")) ||
            !json_is_object(json_object_get(fn, "arguments")))
            abort();
    }
}

static bool buf_equal(const dk_buf *a, const dk_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

int fuzz_toolcall_one(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    chat_parse_params params = {
        .format = (enum chat_format)((data[0] & 7) % (CHAT_FORMAT_GEMMA + 1)),
        .parse_tools = !(data[0] & 0x20),
        .reasoning = (data[0] & 0x08) != 0,
        .in_reasoning = (data[0] & 0x10) != 0,
    };
    fuzz_run chunked, whole;
    fuzz_feed(&params, data + 2, size - 2, data[1], false, &chunked);
    fuzz_feed(&params, data + 2, size - 2, 0, true, &whole);
    if (chunked.rc == DK_OK && whole.rc == DK_OK) {
        if (!buf_equal(&chunked.content, &whole.content) || !buf_equal(&chunked.reasoning, &whole.reasoning) ||
            !json_equal(chunked.calls, whole.calls))
            abort();
        fuzz_check_calls(whole.calls);
    }
    dk_buf_free(&chunked.content);
    dk_buf_free(&chunked.reasoning);
    dk_buf_free(&whole.content);
    dk_buf_free(&whole.reasoning);
    json_decref(chunked.calls);
    json_decref(whole.calls);
    return 0;
}

#ifdef DK_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fuzz_toolcall_one(data, size); }
#endif
