/*
 * kit_refs: readers for the conformance kit's reference files (kit/README.md §6), shared by
 * the model tests and the CLI tests: causal refs (prompt, greedy tokens, top-10 lists, full
 * logits files) and embedding refs (bert). Not for: comparing (the tests do that).
 */
#ifndef DK_KIT_REFS_H
#define DK_KIT_REFS_H

#include <stddef.h>
#include <stdint.h>

#define KIT_TOP 10

typedef struct kit_causal_ref {
    int64_t n_vocab;
    int64_t n_prompt;
    int32_t *prompt_tokens;      /* (n_prompt) */
    int64_t n_greedy;
    int32_t *greedy_tokens;      /* (n_greedy) */
    double *greedy_margins;      /* (n_greedy) top1 - top2 of the reference */
    double greedy_min_margin;
    int32_t *prompt_top_id;      /* (n_prompt, KIT_TOP), descending logit */
    float *prompt_top_logit;     /* (n_prompt, KIT_TOP) */
    int32_t *greedy_top_id;      /* (n_greedy, KIT_TOP) */
    float *greedy_top_logit;     /* (n_greedy, KIT_TOP) */
    float *last_logits;          /* (n_vocab) all logits of the last prompt position */
    float *prompt_logits;        /* (n_prompt, n_vocab) or NULL when the ref has no file */
    float *gen_logits;           /* (n_greedy, n_vocab) or NULL */
} kit_causal_ref;

/* Reads a causal ref JSON (and the logits files it names, from the same folder). Free with
 * kit_causal_ref_free (also after a failure). Returns 0 or -1 with err (256 bytes) filled. */
int kit_causal_ref_load(kit_causal_ref *r, const char *json_path, char *err);
void kit_causal_ref_free(kit_causal_ref *r);

typedef struct kit_embed_ref {
    int64_t n_embd;
    int64_t n_seq;
    int64_t *seq_len;            /* (n_seq) */
    int32_t *tokens;             /* the sequences concatenated: (sum seq_len) */
    float *pooled;               /* (n_seq, n_embd) raw */
    float *pooled_normalized;    /* (n_seq, n_embd) */
    float *token_embd;           /* (sum seq_len, n_embd) or NULL */
} kit_embed_ref;

int kit_embed_ref_load(kit_embed_ref *r, const char *json_path, char *err);
void kit_embed_ref_free(kit_embed_ref *r);

/* Decodes base64 (standard alphabet, '=' padding) into out (cap bytes); returns the number
 * of bytes or -1 on bad input / overflow. */
long kit_base64_decode(const char *in, unsigned char *out, size_t cap);

#endif
