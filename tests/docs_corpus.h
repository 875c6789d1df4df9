/*
 * docs_corpus.h: a small retrieval store for the tests of answers from documents (suites
 * agent_docs and cli_ask): four short files with distinct made-up facts, ingested once per
 * test run with the kit's bert-tiny (rag_ingest), whose path is recorded in the store as its
 * embedding model. Not for: testing the store itself (test_rag_store.c does).
 */
#ifndef DK_DOCS_CORPUS_H
#define DK_DOCS_CORPUS_H

#include "engine/engine.h"
#include "rag/rag.h"

/* The path of the store file, built at the first call (NULL after a failure, logged). */
const char *docs_corpus_store(void);

/* The directory holding the corpus files ("DIR/volcano.md", "DIR/tea.txt", "DIR/harbor.md",
 * "DIR/robots.md"); valid once docs_corpus_store succeeded. */
const char *docs_corpus_dir(void);

/* The kit's bert-tiny, loaded (caller frees with engine_model_free); NULL after a failure. */
engine_model *docs_corpus_embedder(void);

/* The path of the kit's bert-tiny file (static). */
const char *docs_corpus_embedder_path(void);

/* Opens the store read-only (caller closes); NULL after a failure (logged). */
rag_store *docs_corpus_open(void);

#endif
