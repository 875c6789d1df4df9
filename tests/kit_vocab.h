/*
 * kit_vocab.h: a conformance-kit vocabulary prepared for grammar matching the way generation
 * prepares it (engine_sample_vocab of the GGUF loaded vocab-only), for the grammar and
 * JSON-schema suites; the qwen-vocab-tiny synth model that the chat and server suites share;
 * and the synthetic byte vocabulary the grammar suites follow grammars with, character by
 * character.
 */
#ifndef DK_TEST_KIT_VOCAB_H
#define DK_TEST_KIT_VOCAB_H

#include "engine/engine.h"

/* The vocabulary of the kit file at `relative`; *model owns it (free both with
 * engine_model_free(*model)). NULL, after recording a test failure, when it cannot be loaded. */
const sample_vocab *kit_sample_vocab(const char *relative, engine_model **model);

/* A tiny qwen3 random-weight model with the kit's real Qwen vocabulary and chat template
 * (Hermes-style tools, <think>), written into the test temp dir once per run: its path, or
 * NULL after recording a test failure. */
const char *kit_qwen_vocab_model(void);

/* The 256 single bytes (ids 0..255) plus an end-of-generation token (id 256). The caller
 * frees it with sample_vocab_free; NULL after recording a failure. */
sample_vocab *test_byte_vocab(void);

/* True when the grammar matches the whole of text (followed byte by byte over v). */
bool test_grammar_accepts(const sample_grammar *g, const sample_vocab *v, const char *text);

#endif
