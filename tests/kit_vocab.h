/*
 * kit_vocab.h: a conformance-kit vocabulary prepared for grammar matching the way generation
 * prepares it (engine_sample_vocab of the GGUF loaded vocab-only), for the grammar and
 * JSON-schema suites; and the qwen-vocab-tiny synth model that the chat and server suites share.
 * Not for: building vocabularies by hand (tests with a synthetic one do
 * that themselves).
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

#endif
