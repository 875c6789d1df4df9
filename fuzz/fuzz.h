/*
 * fuzz.h: the fuzz targets' entry points, one per parser of untrusted input.
 *
 * Each fuzz_<name>_one runs one input through its parser and the parser's public getters and
 * returns 0; it must never crash, leak or read out of bounds whatever the bytes are. The
 * libFuzzer builds (`make fuzz`) wrap each in LLVMFuzzerTestOneInput; tests/test_fuzz.c
 * replays the corpus in fuzz/corpus/<name>/ through the same functions.
 */
#ifndef DK_FUZZ_H
#define DK_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int fuzz_gguf_one(const uint8_t *data, size_t size);
int fuzz_grammar_one(const uint8_t *data, size_t size);
int fuzz_json_schema_one(const uint8_t *data, size_t size);
int fuzz_modelfile_one(const uint8_t *data, size_t size);
int fuzz_openai_reply_one(const uint8_t *data, size_t size);
int fuzz_rag_read_one(const uint8_t *data, size_t size);
int fuzz_request_one(const uint8_t *data, size_t size);
int fuzz_sql_guard_one(const uint8_t *data, size_t size);
int fuzz_sql_text_one(const uint8_t *data, size_t size);
int fuzz_template_one(const uint8_t *data, size_t size);
int fuzz_toolcall_one(const uint8_t *data, size_t size);

#endif
