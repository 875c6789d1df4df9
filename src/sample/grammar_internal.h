/*
 * grammar_internal.h: the compiled form of a GBNF grammar, shared by grammar_parse.c (which
 * builds it), grammar_match.c (which runs it) and sample.c (which asks the matcher for its
 * token mask). Not a public contract: sample.h is.
 *
 * A grammar is one flat array of elements. Rule r occupies elems[rule_first[r] ..], its
 * alternatives separated by GRAMMAR_ALT and the last one closed by GRAMMAR_END. An
 * alternative is a sequence of symbols: GRAMMAR_REF (lo = rule id) or a character class, which
 * is one GRAMMAR_CHAR / GRAMMAR_CHAR_NOT element (its first range [lo, hi]) followed by
 * GRAMMAR_CHAR_MORE elements (more ranges). A class with lo > hi in its only range matches
 * nothing (or, negated, everything). Repetitions and groups were expanded into helper rules
 * by the parser, so the matcher sees only sequences, alternatives and references.
 */
#ifndef DK_SAMPLE_GRAMMAR_INTERNAL_H
#define DK_SAMPLE_GRAMMAR_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "sample/sample.h"

enum grammar_elem_type {
    GRAMMAR_END = 0,      /* end of the rule's last alternative */
    GRAMMAR_ALT = 1,      /* end of an alternative; another one follows */
    GRAMMAR_REF = 2,      /* lo = rule id */
    GRAMMAR_CHAR = 3,     /* character class: first range [lo, hi] */
    GRAMMAR_CHAR_NOT = 4, /* negated character class: first range [lo, hi] */
    GRAMMAR_CHAR_MORE = 5 /* another range of the class just before */
};

typedef struct grammar_elem {
    uint32_t type; /* enum grammar_elem_type */
    uint32_t lo, hi;
} grammar_elem;

struct sample_grammar {
    grammar_elem *elems;   /* (n_elems) all rules, one after another */
    size_t n_elems;
    uint32_t *rule_first;  /* (n_rules) index of each rule's first element */
    uint32_t *alt_first;   /* (n_alts) first element of every alternative, grouped by rule */
    uint32_t *rule_alts;   /* (n_rules + 1) rule r's alternatives: alt_first[rule_alts[r] ..
                              rule_alts[r + 1]) */
    size_t n_rules, n_alts;
    uint32_t root;         /* rule id of the start rule */
};

/* Limits that keep hostile grammars bounded (DK_ERR_LIMIT past them). */
#define GRAMMAR_MAX_RULES (1u << 18)
#define GRAMMAR_MAX_ELEMS (1u << 21)
#define GRAMMAR_MAX_REPEAT 100000u
#define GRAMMAR_MAX_NESTING 256
#define GRAMMAR_MAX_CODEPOINT 0x10FFFFu

static inline bool grammar_elem_is_end(const grammar_elem *e)
{
    return e->type == GRAMMAR_END || e->type == GRAMMAR_ALT;
}

static inline bool grammar_elem_is_char(const grammar_elem *e)
{
    return e->type == GRAMMAR_CHAR || e->type == GRAMMAR_CHAR_NOT;
}

/* The matcher's token mask for its current state: bit i of (*bits)[i / 64] set when token i
 * may come next (EOG tokens included when accepting). *bits stays valid until the matcher
 * next changes state or computes another mask. *n_allowed: how many bits are set. */
int grammar_matcher_mask(sample_matcher *matcher, const uint64_t **bits, size_t *n_allowed, char *err);
/* The size of the matcher's vocabulary. */
size_t grammar_matcher_n_vocab(const sample_matcher *matcher);

#endif
