/*
 * sql_grammar.c: a GBNF grammar (sample.h) of the SELECT queries a model may write over one
 * database, so that constrained decoding always gives SQL that DuckDB parses and that
 * usually binds, even from a small or random-weight model.
 *
 * How it is built. The schema is read as sql_describe reads it (sql_internal.h), with the
 * same relevance choice, plus the foreign keys of duckdb_constraints() and the keywords of
 * duckdb_keywords(). Each "variant" is one FROM clause: a single table, or two tables joined
 * on a foreign key (either table first, either side of '=' first). A variant has its own copy
 * of the expression rules, written from the template sql_gram_variant with its column rules
 * in place, so a query only names columns its FROM clause has (table.col, or bare where the
 * name is unique in the variant), and operators and functions only get columns of a kind
 * they accept (numbers, text, dates and timestamps, booleans, other).
 *
 * Why it is bounded, and why it stays unambiguous enough. Expressions have a fixed depth
 * (level 0 columns and literals, level 1 functions of them, then arithmetic / CASE / ||;
 * aggregates take scalars only, so they never nest), and every list is a chain of rules by
 * remaining "weight" (about 25 characters each, sql_gram_lists), so no rule can reach itself
 * and the longest sentence is about a thousand characters. The matcher follows every parse at
 * once (sample.h), so the grammar avoids ambiguity that multiplies: the classes of a weighted
 * list never share a sentence, " AS alias" is decided after the item, and the select list
 * carries in its rule names whether it has aggregates, bare scalars or both (and whether an
 * alias was defined) instead of guessing a query shape up front. That state picks the tail:
 * with both, GROUP BY is required; with aggregates only, it may come; with scalars only,
 * there is none and ORDER BY cannot name aggregates; ORDER BY may name an alias once one was
 * defined. What can still fail to bind (GROUP BY keys that miss a bare column of the select
 * list, an alias that was not defined, an out-of-range position) never fails to parse.
 *
 * Names: an identifier ([A-Za-z_][A-Za-z0-9_]*) whose lowercase is not a reserved or
 * type/function keyword (DuckDB cannot take those as a column) may be written bare, every
 * name quoted. Names with '"', '\' or control characters, or longer than
 * SQL_GRAMMAR_MAX_NAME_BYTES, are left out. Aliases are lowercase identifiers that are not
 * such keywords (their trie in GBNF), so ORDER BY alias always parses.
 * In JSON-string mode every '"' of the SQL text is written \" and string literals cannot hold
 * a raw '"' or '\' (they may hold \" and \\), so a sentence is the content of a JSON string.
 * Not for: checking or running SQL (sql.c), tool-call grammars (engine/, chat/).
 */
#include "sql/sql_internal.h"

#include <stdlib.h>
#include <string.h>

#include "sample/sample.h"

#define SQL_GRAMMAR_MAX_NAME_BYTES 64
#define SQL_GRAMMAR_ALIAS_TAIL 12    /* alias characters after the keyword trie is left */
/* What one grammar holds at most: the matcher follows every variant at once while the select
 * list is written, so these bound its parse stacks (sample.h allows 2048). */
#define SQL_GRAMMAR_MAX_TABLES 8
#define SQL_GRAMMAR_MAX_JOIN_VARIANTS 4
#define SQL_GRAMMAR_MAX_COLUMNS 64   /* of one table */
#define SQL_GRAMMAR_MAX_KEYS 256     /* foreign keys read */
#define SQL_GRAMMAR_STACK_BUDGET 1400 /* sql_gram_stack_estimate summed over the variants */
/* Total weights of the lists (a weight is about 25 characters, see sql_gram_variant). */
#define SQL_GRAMMAR_SELECT_BUDGET 8
#define SQL_GRAMMAR_WHERE_BUDGET 7
#define SQL_GRAMMAR_GROUP_BUDGET 3
#define SQL_GRAMMAR_ORDER_BUDGET 3

enum sql_gram_kind { SQL_GRAM_NUM, SQL_GRAM_TEXT, SQL_GRAM_DATE, SQL_GRAM_BOOL, SQL_GRAM_OTHER, SQL_GRAM_N_KINDS };

/* The flags a template line may require: "{ntdbo}". */
static const char sql_gram_kind_flag[SQL_GRAM_N_KINDS] = {'n', 't', 'd', 'b', 'o'};

/* The SQL words of the grammar; each becomes ROOT-k-WORD ('_' -> '-'), in upper or lower case. */
static const char *const sql_gram_words[] = {
    "select", "distinct", "from", "where", "group", "by", "having", "order", "limit", "as", "and", "or",
    "not", "is", "null", "like", "ilike", "in", "between", "asc", "desc", "case", "when", "then", "else",
    "end", "join", "inner", "left", "on", "all", "true", "false", "date", "current_date", "count", "sum",
    "avg", "min", "max", "round", "abs", "ceil", "floor", "coalesce", "length", "lower", "upper", "trim",
    "substr", "strftime", "date_trunc", "string_agg", "year", "month", "day", "quarter", "dayofweek",
    "week", "hour",
};

/* Rules shared by all variants; '$' stands for "ROOT-". The string-character rule $sc, the
 * keywords $k-... and the alias rules are written by code. */
static const char *const sql_gram_shared[] = {
    "$num ::= \"-\"? $int (\".\" [0-9]{1,6})?",
    "$int ::= \"0\" | [1-9] [0-9]{0,11}",
    "$lim ::= \"0\" | [1-9] [0-9]{0,5}",
    "$str ::= \"'\" $sc{0,64} \"'\"",
    "$sstr ::= \"'\" $sc{0,20} \"'\"",
    "$lstr ::= \"'\" $sc{21,64} \"'\"",
    "$dlit ::= $k-date \" '\" $ymd \"'\" | $k-current-date",
    "$date ::= $dlit | \"'\" $ymd \"'\"",
    "$ymd ::= [12] [0-9] [0-9] [0-9] \"-\" $md",
    "$md ::= (\"0\" [13578] | \"1\" [02]) \"-\" (\"0\" [1-9] | [12] [0-9] | \"3\" [01])",
    "  | (\"0\" [469] | \"11\") \"-\" (\"0\" [1-9] | [12] [0-9] | \"30\")",
    "  | \"02-\" (\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8])",
    "$cmp ::= \"=\" | \"<>\" | \"!=\" | \"<\" | \"<=\" | \">\" | \">=\"",
    "$aop ::= \"+\" | \"-\" | \"*\" | \"/\"",
    "$like ::= $k-like | $k-ilike",
    "$andor ::= $k-and | $k-or",
    "$dir ::= $k-asc | $k-desc",
    "$bool ::= $k-true | $k-false",
    "$dpart ::= $k-year | $k-month | $k-day | $k-quarter | $k-dayofweek | $k-week | $k-hour",
    "$unit ::= \"'\" (\"year\" | \"quarter\" | \"month\" | \"week\" | \"day\" | \"hour\") \"'\"",
    "$fmt ::= \"'\" (\"%\" [YmdHMSjyBbAa] | [-/: ]){1,10} \"'\"",
    "$join ::= ($k-inner \" \" | $k-left \" \")? $k-join",
    "$limit ::= \" \" $k-limit \" \" $lim",
    "$pos ::= [1-4]",
    "$as ::= \" \" $k-as \" \" $alias",
    /* no tables: SELECT of literals */
    "$const ::= $k-select \" \" $ci (\", \" $ci){0,3}",
    "$ci ::= ($num (\" \" $aop \" \" $num)? | $str | $date) $as?",
};

/* One variant's rules; '@' stands for "ROOT-vN-", '$' for "ROOT-". A line "{f...}" is kept
 * only when the variant has columns of every kind named (n t d b o, sql_gram_kind_flag);
 * the first line of a rule never needs one, so no rule is ever empty. The variant supplies
 * @c (any column), @cn @ct @cd @cb (by kind), @star and @from; the weighted lists @sl-...,
 * @wl, @gb, @po, @go are written by sql_gram_lists. Comments give the longest text with
 * 25-character names, from which the weights in sql_gram_lists come. */
static const char *const sql_gram_variant[] = {
    /* scalars: level 0 (25), functions of it (55) */
    "@n0 ::= $num",
    "{n}  | @cn",
    "@t0 ::= $sstr",
    "{t}  | @ct",
    "@d0 ::= $date",
    "{d}  | @cd",
    "@nf ::= $k-round \"(\" @n0 (\", \" [0-9])? \")\"",
    "  | ($k-abs | $k-ceil | $k-floor) \"(\" @n0 \")\"",
    "{n}  | $k-coalesce \"(\" @cn \", \" $num \")\"",
    "{t}  | $k-length \"(\" @ct \")\"",
    "{d}  | $dpart \"(\" @cd \")\"",
    "@n1 ::= @n0 | @nf",
    "@tf ::= ($k-lower | $k-upper | $k-trim) \"(\" @t0 \")\"",
    "{t}  | $k-coalesce \"(\" @ct \", \" $sstr \")\"",
    "{t}  | $k-substr \"(\" @ct \", \" [1-9] \", \" [1-9] \")\"",
    "{d}  | $k-strftime \"(\" @cd \", \" $fmt \")\"",
    "@t1 ::= @t0 | @tf",
    "@dk ::= $dlit",
    "{d}  | @cd",
    "@df ::= $k-date-trunc \"(\" $unit \", \" @dk \")\"",
    "@d1 ::= @d0 | @df",
    "@s3 ::= @nf | @tf | @df",
    /* keys of GROUP BY (60) */
    "@kf ::= @df",
    "{d}  | $dpart \"(\" @cd \")\" | $k-strftime \"(\" @cd \", \" $fmt \")\"",
    "{t}  | ($k-lower | $k-upper) \"(\" @ct \")\"",
    /* the conditions of CASE (55) */
    "@p0 ::= @c \" \" $k-is \" \" ($k-not \" \")? $k-null",
    "{n}  | @cn \" \" $cmp \" \" $num",
    "{t}  | @ct \" \" $cmp \" \" $sstr",
    "{t}  | @ct \" \" $like \" \" $sstr",
    "{d}  | @cd \" \" $cmp \" \" $date",
    "{b}  | @cb",
    /* long scalars (135) */
    "@ar ::= @n1 \" \" $aop \" \" @n1",
    "@ncase ::= $k-case \" \" $k-when \" \" @p0 \" \" $k-then \" \" @n0 \" \" $k-else \" \" @n0 \" \" $k-end",
    "@sx ::= @ar | @ncase",
    "  | $k-case \" \" $k-when \" \" @p0 \" \" $k-then \" \" $sstr \" \" $k-else \" \" $sstr \" \" $k-end",
    "  | @t1 \" || \" @t1",
    /* aggregates over scalars only (so they never nest): simple (40), with a function (65),
     * long (140); @an and @afn are numeric */
    "@an ::= $k-count \"(*)\"",
    "  | $k-count \"(\" ($k-distinct \" \")? @c \")\"",
    "{n}  | ($k-sum | $k-avg) \"(\" @cn \")\"",
    "@a1 ::= @an | ($k-min | $k-max) \"(\" @c \")\"",
    "@afn ::= $k-round \"(\" @an (\", \" [0-9])? \")\"",
    "  | ($k-sum | $k-avg | $k-min | $k-max) \"(\" @nf \")\"",
    "@af ::= @afn | ($k-min | $k-max) \"(\" @tf \")\"",
    "{t}  | $k-string-agg \"(\" @ct \", \" $sstr \")\"",
    "@ax ::= ($k-sum | $k-avg) \"(\" (@ar | @ncase) \")\"",
    "  | (@an | @afn) \" \" $aop \" \" (@an | $num)",
    /* WHERE predicates by weight, no sentence in two classes: 1 (40), 2 (55), 3 (95),
     * 4 (115), 6 (145) */
    "@w1 ::= @c \" \" $k-is \" \" ($k-not \" \")? $k-null",
    "{b}  | ($k-not \" \")? @cb",
    "@w2 ::= @n0 \" \" $cmp \" \" @n0",
    "  | @d0 \" \" $cmp \" \" @d0",
    "{t}  | @ct \" \" $cmp \" \" @t0",
    "{b}  | @cb \" = \" $bool",
    "@w3 ::= @nf \" \" $cmp \" \" @n0",
    "  | @n0 \" \" ($k-not \" \")? $k-between \" \" @n0 \" \" $k-and \" \" @n0",
    "  | @df \" \" $cmp \" \" @d0",
    "  | @dk \" \" ($k-not \" \")? $k-between \" \" @d0 \" \" $k-and \" \" @d0",
    "{t}  | @ct \" \" ($k-not \" \")? $like \" \" $sstr",
    "@w4 ::= \"(\" @w2 \" \" $k-or \" \" @w2 \")\"",
    "  | @tf \" \" $cmp \" \" $sstr",
    "{t}  | @ct \" \" $cmp \" \" $lstr",
    "{t}  | @ct \" \" ($k-not \" \")? $like \" \" $lstr",
    "@w6 ::= @ar \" \" $cmp \" \" @n0",
    "  | @tf \" \" ($k-not \" \")? $like \" \" $str",
    "{n}  | @cn \" \" ($k-not \" \")? $k-in \" (\" $num (\", \" $num){0,3} \")\"",
    "{t}  | @ct \" \" ($k-not \" \")? $k-in \" (\" $sstr (\", \" $sstr){0,3} \")\"",
    /* GROUP BY, HAVING, ORDER BY items */
    "@o1 ::= (@c | $pos) (\" \" $dir)?",
    "@o1a ::= (@c | $pos | $alias) (\" \" $dir)?",
    "@o2 ::= (@a1 | @af | @kf) (\" \" $dir)?",
    "@where ::= \" \" $k-where \" \" @wl",
    "@group ::= \" \" $k-group \" \" $k-by \" \" ($k-all | @gb)",
    "@having ::= \" \" $k-having \" \" (@an | @afn) \" \" $cmp \" \" (@an | $num)",
    "@porder0 ::= \" \" $k-order \" \" $k-by \" \" @po",
    "@porder1 ::= \" \" $k-order \" \" $k-by \" \" @poa",
    "@gorder0 ::= \" \" $k-order \" \" $k-by \" \" @go",
    "@gorder1 ::= \" \" $k-order \" \" $k-by \" \" @goa",
    /* what follows the select list: scalars only (s), aggregates only (a) or both (m); with
     * an alias defined (1) or not (0), which ORDER BY may name. (GROUP BY names none: a
     * random name there rarely binds, and the expression or its position does the same.) */
    "@end-s0 ::= \" \" $k-from \" \" @from @where? @porder0? $limit?",
    "@end-s1 ::= \" \" $k-from \" \" @from @where? @porder1? $limit?",
    "@end-a0 ::= \" \" $k-from \" \" @from @where? (@group @having? @gorder0?)? $limit?",
    "@end-a1 ::= \" \" $k-from \" \" @from @where? (@group @having? @gorder1?)? $limit?",
    "@end-m0 ::= \" \" $k-from \" \" @from @where? @group @having? @gorder0? $limit?",
    "@end-m1 ::= \" \" $k-from \" \" @from @where? @group @having? @gorder1? $limit?",
    "@q ::= $k-select \" \" ($k-distinct \" \")? @sl",
};

/* One class of list items: a rule ("@x" of the variant or "$x" shared), its weight, whether
 * it may take " AS alias" (one more weight), and whether it is an aggregate. */
typedef struct sql_gram_item {
    const char *rule;
    int weight;
    int aliasable;
    int aggregate;
} sql_gram_item;

/* The select list: its rules carry the state "scalars only" (s), "aggregates only" (a) or
 * "both" (m), and the list ends in @end-s / @end-a / @end-m. */
static const sql_gram_item sql_gram_select_items[] = {
    {"@star", 1, 0, 0}, {"@c", 1, 1, 0}, {"@s3", 3, 1, 0}, {"@sx", 5, 1, 0},
    {"@a1", 2, 1, 1},   {"@af", 3, 1, 1}, {"@ax", 5, 1, 1},
};

typedef struct sql_gram_list_def {
    const char *name;       /* @name, chained through @name-B .. @name-1 */
    const char *separator;  /* GBNF text between items */
    int budget;             /* total weight */
    const sql_gram_item *items;
    size_t n_items;
} sql_gram_list_def;

static const sql_gram_item sql_gram_where_items[] = {
    {"@w1", 1, 0, 0}, {"@w2", 2, 0, 0}, {"@w3", 3, 0, 0}, {"@w4", 4, 0, 0}, {"@w6", 6, 0, 0},
};
static const sql_gram_item sql_gram_group_items[] = {{"@c", 1, 0, 0}, {"$pos", 1, 0, 0}, {"@kf", 2, 0, 0}};
static const sql_gram_item sql_gram_porder_items[] = {{"@o1", 1, 0, 0}};
static const sql_gram_item sql_gram_pordera_items[] = {{"@o1a", 1, 0, 0}};
static const sql_gram_item sql_gram_gorder_items[] = {{"@o1", 1, 0, 0}, {"@o2", 2, 0, 0}};
static const sql_gram_item sql_gram_gordera_items[] = {{"@o1a", 1, 0, 0}, {"@o2", 2, 0, 0}};

#define SQL_GRAM_LIST(name, sep, budget, items) {name, sep, budget, items, sizeof items / sizeof *items}
static const sql_gram_list_def sql_gram_lists_def[] = {
    SQL_GRAM_LIST("wl", "\" \" $andor \" \"", SQL_GRAMMAR_WHERE_BUDGET, sql_gram_where_items),
    SQL_GRAM_LIST("gb", "\", \"", SQL_GRAMMAR_GROUP_BUDGET, sql_gram_group_items),
    SQL_GRAM_LIST("po", "\", \"", SQL_GRAMMAR_ORDER_BUDGET, sql_gram_porder_items),
    SQL_GRAM_LIST("poa", "\", \"", SQL_GRAMMAR_ORDER_BUDGET, sql_gram_pordera_items),
    SQL_GRAM_LIST("go", "\", \"", SQL_GRAMMAR_ORDER_BUDGET, sql_gram_gorder_items),
    SQL_GRAM_LIST("goa", "\", \"", SQL_GRAMMAR_ORDER_BUDGET, sql_gram_gordera_items),
};

typedef struct sql_gram_col {
    const char *table;  /* the table's name, for table.col */
    const char *name;
    int kind;           /* enum sql_gram_kind */
} sql_gram_col;

/* One FROM clause: table a alone (b < 0) or a joined with b. */
typedef struct sql_gram_variant_plan {
    size_t a;
    long b;
} sql_gram_variant_plan;

/* A foreign key: columns of `from` referencing columns of `to`. */
typedef struct sql_gram_fk {
    size_t i_from, i_to;         /* indices into the table array */
    char **from_cols, **to_cols; /* (n_cols) */
    size_t n_cols;
} sql_gram_fk;

typedef struct sql_gram {
    dk_buf *out;
    const char *root;
    int json;
    char **forbidden;      /* (n_forbidden) sorted lowercase keywords no bare name may be */
    size_t n_forbidden;
    char **trie_bodies;    /* (n_trie) alias trie rule bodies written so far, by number */
    size_t n_trie, cap_trie;
    char *err;
} sql_gram;

/* ---- names ---- */

static int sql_gram_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int sql_gram_is_forbidden(const sql_gram *g, const char *lower)
{
    return bsearch(&lower, g->forbidden, g->n_forbidden, sizeof *g->forbidden, sql_gram_cmp_str) != NULL;
}

/* Whether s is valid UTF-8 with no control characters, '"' or '\' (so it can be a quoted
 * name inside a JSON string unescaped but for its quotes), of 1..max bytes. */
static int sql_gram_name_usable(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SQL_GRAMMAR_MAX_NAME_BYTES) return 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned char c = *p;
        size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || (len == 2 && c < 0xC2) || (len == 4 && c > 0xF4)) return 0;
        if (len == 1 && (c < 0x20 || c == 0x7f || c == '"' || c == '\\')) return 0;
        for (size_t i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80) return 0;
        p += len;
    }
    return 1;
}

/* Whether name may be written bare: an identifier whose lowercase is no forbidden keyword. */
static int sql_gram_name_plain(const sql_gram *g, const char *name)
{
    char lower[SQL_GRAMMAR_MAX_NAME_BYTES + 1];
    size_t n = strlen(name);
    if (n == 0 || n > SQL_GRAMMAR_MAX_NAME_BYTES) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
        lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    lower[n] = '\0';
    return !sql_gram_is_forbidden(g, lower);
}

/* Appends the GBNF literal of SQL text, its '"' escaped in JSON mode. */
static void sql_gram_put_sql(const sql_gram *g, dk_buf *b, const char *sql)
{
    if (!g->json) {
        sample_gbnf_literal(b, sql, strlen(sql));
        return;
    }
    dk_buf e = {0};
    for (const char *p = sql; *p; p++) {
        if (*p == '"' || *p == '\\') dk_buf_putc(&e, '\\');
        dk_buf_putc(&e, *p);
    }
    if (e.failed) b->failed = 1;
    else sample_gbnf_literal(b, e.data ? e.data : "", e.len);
    dk_buf_free(&e);
}

/* Appends the way to write a name: bare when it can be, else quoted. (Not both: every
 * alternative is one more parse stack wherever a column may come.) */
static void sql_gram_put_name(const sql_gram *g, dk_buf *b, const char *name)
{
    if (sql_gram_name_plain(g, name)) {
        sql_gram_put_sql(g, b, name);
        return;
    }
    dk_buf q = {0};
    sql_put_ident(&q, name);
    if (q.failed) b->failed = 1;
    else sql_gram_put_sql(g, b, q.data);
    dk_buf_free(&q);
}

/* ---- templates ---- */

/* Appends one template line: '$' -> "ROOT-", '@' -> vprefix. */
static void sql_gram_expand(const sql_gram *g, const char *line, const char *vprefix)
{
    for (const char *p = line; *p; p++) {
        if (*p == '$') dk_buf_printf(g->out, "%s-", g->root);
        else if (*p == '@') dk_buf_puts(g->out, vprefix);
        else dk_buf_putc(g->out, *p);
    }
    dk_buf_putc(g->out, '\n');
}

/* Appends template lines, keeping a "{flags}" line only when every flag's kind is present. */
static void sql_gram_template(const sql_gram *g, const char *const *lines, size_t n, const char *vprefix,
                              const int has_kind[SQL_GRAM_N_KINDS])
{
    for (size_t i = 0; i < n; i++) {
        const char *line = lines[i];
        if (line[0] == '{') {
            int keep = 1;
            for (line++; *line && *line != '}'; line++)
                for (int k = 0; k < SQL_GRAM_N_KINDS; k++)
                    if (*line == sql_gram_kind_flag[k] && !has_kind[k]) keep = 0;
            if (*line == '}') line++;
            if (!keep) continue;
        }
        sql_gram_expand(g, line, vprefix);
    }
}

/* ---- weighted lists ---- */

/* The state of the select list after adding an item to state `from` ('0': empty). */
static char sql_gram_select_state(char from, int aggregate)
{
    if (from == '0') return aggregate ? 'a' : 's';
    if (from == 'm' || (from == 'a') != (aggregate != 0)) return 'm';
    return from;
}

/* The select list. @sl-<state><f>-<weight left> ::= item @st-..| item @sn-.. | ..., where
 * the state is s (scalars only), a (aggregates only) or m (both) and f is 1 once an alias
 * was defined; @st-<state><f>-<left> ::= $as @sn-<state>1-<left - 1> | @sn-<state><f>-<left>
 * decides the alias after the item, and @sn-<state><f>-<left> ::= ", " @sl-.. | @end-<state><f>
 * goes on or ends. Written once per state and weight left, these tails keep the list rules
 * short and each item's text in one parse stack whatever its weight. */
static void sql_gram_select_list(const sql_gram *g, const char *vprefix, dk_buf *line)
{
    static const char states[] = "0sam";
    for (const char *st = states + 1; *st; st++) {
        for (int f = 0; f < 2; f++) {
            for (int r = 0; r < SQL_GRAMMAR_SELECT_BUDGET; r++) {
                dk_buf_clear(line);
                if (r == 0) dk_buf_printf(line, "@sn-%c%d-0 ::= @end-%c%d", *st, f, *st, f);
                else dk_buf_printf(line, "@sn-%c%d-%d ::= \", \" @sl-%c%d-%d | @end-%c%d", *st, f, r, *st, f, r, *st, f);
                sql_gram_expand(g, line->data, vprefix);
                if (r == 0) continue;
                dk_buf_clear(line);
                dk_buf_printf(line, "@st-%c%d-%d ::= $as @sn-%c1-%d | @sn-%c%d-%d", *st, f, r, *st, r - 1, *st, f, r);
                sql_gram_expand(g, line->data, vprefix);
            }
        }
    }
    for (const char *st = states; *st; st++) {
        for (int f = 0; f < 2 - (*st == '0'); f++) {
            for (int b = (*st == '0' ? SQL_GRAMMAR_SELECT_BUDGET : 1); b < SQL_GRAMMAR_SELECT_BUDGET + (*st == '0'); b++) {
                dk_buf_clear(line);
                dk_buf_printf(line, "@sl-%c%d-%d ::= ", *st, f, b);
                const char *alt = "";
                for (size_t i = 0; i < sizeof sql_gram_select_items / sizeof *sql_gram_select_items; i++) {
                    const sql_gram_item *it = &sql_gram_select_items[i];
                    if (it->weight > b) continue;
                    char next = sql_gram_select_state(*st, it->aggregate);
                    int left = b - it->weight;
                    int tail = it->aliasable && left >= 1; /* room for the alias */
                    dk_buf_printf(line, "%s%s @s%c-%c%d-%d", alt, it->rule, tail ? 't' : 'n', next, f, left);
                    alt = " | ";
                }
                sql_gram_expand(g, line->data, vprefix);
            }
        }
    }
    dk_buf_clear(line);
    dk_buf_printf(line, "@sl ::= @sl-00-%d", SQL_GRAMMAR_SELECT_BUDGET);
    sql_gram_expand(g, line->data, vprefix);
}

/* A list of sql_gram_lists_def: @NAME-<b> ::= item (SEP @NAME-<b - weight>)? | ... */
static void sql_gram_simple_list(const sql_gram *g, const char *vprefix, const sql_gram_list_def *l, dk_buf *line)
{
    int min_weight = l->items[0].weight;
    for (size_t i = 1; i < l->n_items; i++)
        if (l->items[i].weight < min_weight) min_weight = l->items[i].weight;
    for (int b = min_weight; b <= l->budget; b++) {
        dk_buf_clear(line);
        dk_buf_printf(line, "@%s-%d ::= ", l->name, b);
        const char *alt = "";
        for (size_t i = 0; i < l->n_items; i++) {
            const sql_gram_item *it = &l->items[i];
            if (it->weight > b) continue;
            dk_buf_printf(line, "%s%s", alt, it->rule);
            if (b - it->weight >= min_weight) dk_buf_printf(line, " (%s @%s-%d)?", l->separator, l->name, b - it->weight);
            alt = " | ";
        }
        sql_gram_expand(g, line->data, vprefix);
    }
    dk_buf_clear(line);
    dk_buf_printf(line, "@%s ::= @%s-%d", l->name, l->name, l->budget);
    sql_gram_expand(g, line->data, vprefix);
}

static void sql_gram_lists(const sql_gram *g, const char *vprefix)
{
    dk_buf line = {0};
    sql_gram_select_list(g, vprefix, &line);
    for (size_t k = 0; k < sizeof sql_gram_lists_def / sizeof *sql_gram_lists_def; k++)
        sql_gram_simple_list(g, vprefix, &sql_gram_lists_def[k], &line);
    if (line.failed) g->out->failed = 1;
    dk_buf_free(&line);
}

/* ---- keywords and literals ---- */

/* ROOT-k-select ::= [Ss] ("ELECT" | "elect"): upper or lower case, and one parse stack until
 * the second letter (not two from the first). */
static void sql_gram_words_rules(const sql_gram *g)
{
    for (size_t i = 0; i < sizeof sql_gram_words / sizeof *sql_gram_words; i++) {
        const char *w = sql_gram_words[i];
        dk_buf_printf(g->out, "%s-k-", g->root);
        for (const char *p = w; *p; p++) dk_buf_putc(g->out, *p == '_' ? '-' : *p);
        dk_buf_printf(g->out, " ::= [%c%c]", w[0] - 'a' + 'A', w[0]);
        if (w[1]) {
            dk_buf_puts(g->out, " (\"");
            for (const char *p = w + 1; *p; p++) dk_buf_putc(g->out, (*p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p);
            dk_buf_printf(g->out, "\" | \"%s\")", w + 1);
        }
        dk_buf_putc(g->out, '\n');
    }
}

/* The characters of a string literal's content. */
static void sql_gram_string_char_rule(const sql_gram *g)
{
    if (g->json)
        dk_buf_printf(g->out, "%s-sc ::= [^'\"\\\\\\x00-\\x1F] | \"''\" | \"\\\\\\\"\" | \"\\\\\\\\\"\n", g->root);
    else
        dk_buf_printf(g->out, "%s-sc ::= [^'\\x00-\\x1F] | \"''\"\n", g->root);
}

/* ---- aliases: lowercase identifiers that are not forbidden keywords ---- */

/* Appends a character class of the identifier characters (first: no digits) not in taken;
 * 0 when it would be empty. */
static int sql_gram_put_class(dk_buf *b, int first, const int taken[128])
{
    int any = 0;
    dk_buf_putc(b, '[');
    for (int c = 0; c < 128; c++) {
        int ok = (c >= 'a' && c <= 'z') || c == '_' || (!first && c >= '0' && c <= '9');
        if (!ok || taken[c]) continue;
        int end = c;
        while (end + 1 < 128 && !taken[end + 1] && ((end + 1 >= 'a' && end + 1 <= 'z') || (!first && end + 1 >= '0' && end + 1 <= '9')))
            end++;
        if (end - c >= 2) dk_buf_printf(b, "%c-%c", c, end);
        else for (int k = c; k <= end; k++) dk_buf_putc(b, (char)k);
        any = 1;
        c = end;
    }
    dk_buf_putc(b, ']');
    return any;
}

/* The number of the trie rule with this body: an earlier one with the same body, or a new one
 * (written out here). -1 when out of memory. Sharing bodies merges equal subtrees. */
static long sql_gram_trie_rule(sql_gram *g, const char *body)
{
    for (size_t i = 0; i < g->n_trie; i++)
        if (strcmp(g->trie_bodies[i], body) == 0) return (long)i;
    if (g->n_trie == g->cap_trie) {
        size_t cap = g->cap_trie ? 2 * g->cap_trie : 256;
        char **b = dk_realloc(g->trie_bodies, cap * sizeof *b);
        if (!b) return -1;
        g->trie_bodies = b;
        g->cap_trie = cap;
    }
    char *copy = dk_strdup(body);
    if (!copy) return -1;
    g->trie_bodies[g->n_trie] = copy;
    dk_buf_printf(g->out, "%s-i%zu ::= %s\n", g->root, g->n_trie, body);
    return (long)g->n_trie++;
}

/* The trie rule for the forbidden words [lo, hi), which share their first `depth`
 * characters: each next character either follows a keyword further or leaves the trie for
 * any identifier tail; the word may end here unless it is a keyword. -1: out of memory. */
static long sql_gram_trie(sql_gram *g, size_t lo, size_t hi, size_t depth)
{
    int taken[128] = {0};
    long child_ids[128] = {0};
    int is_word = 0;
    for (size_t i = lo; i < hi;) {
        const char *w = g->forbidden[i];
        if (strlen(w) == depth) {
            is_word = 1;
            i++;
            continue;
        }
        unsigned char c = (unsigned char)w[depth];
        size_t j = i;
        while (j < hi && strlen(g->forbidden[j]) > depth && (unsigned char)g->forbidden[j][depth] == c) j++;
        long id = sql_gram_trie(g, i, j, depth + 1);
        if (id < 0) return -1;
        taken[c] = 1;
        child_ids[c] = id;
        i = j;
    }
    dk_buf body = {0};
    const char *sep = "";
    for (int c = 0; c < 128; c++) {
        if (!taken[c]) continue;
        dk_buf_printf(&body, "%s\"%c\" %s-i%ld", sep, c, g->root, child_ids[c]);
        sep = " | ";
    }
    dk_buf cls = {0};
    if (sql_gram_put_class(&cls, depth == 0, taken)) dk_buf_printf(&body, "%s%s %s-at", sep, cls.data, g->root), sep = " | ";
    if (depth > 0 && !is_word) dk_buf_printf(&body, "%s\"\"", sep);
    long id = body.failed || cls.failed ? -1 : sql_gram_trie_rule(g, body.data);
    dk_buf_free(&cls);
    dk_buf_free(&body);
    return id;
}

static int sql_gram_alias_rules(sql_gram *g)
{
    dk_buf_printf(g->out, "%s-at ::= [a-z0-9_]{0,%d}\n", g->root, SQL_GRAMMAR_ALIAS_TAIL);
    long root_id = sql_gram_trie(g, 0, g->n_forbidden, 0);
    if (root_id < 0) return dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    dk_buf_printf(g->out, "%s-alias ::= %s-i%ld\n", g->root, g->root, root_id);
    return DK_OK;
}

/* ---- the catalog ---- */

static int sql_gram_kind_of(const char *type)
{
    static const char *const numeric[] = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                                          "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE"};
    static const char *const dates[] = {"DATE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS",
                                        "TIMESTAMP WITH TIME ZONE"};
    for (size_t i = 0; i < sizeof numeric / sizeof *numeric; i++)
        if (strcmp(type, numeric[i]) == 0) return SQL_GRAM_NUM;
    if (strncmp(type, "DECIMAL(", 8) == 0) return SQL_GRAM_NUM;
    for (size_t i = 0; i < sizeof dates / sizeof *dates; i++)
        if (strcmp(type, dates[i]) == 0) return SQL_GRAM_DATE;
    if (strcmp(type, "VARCHAR") == 0 || strncmp(type, "ENUM(", 5) == 0) return SQL_GRAM_TEXT;
    if (strcmp(type, "BOOLEAN") == 0) return SQL_GRAM_BOOL;
    return SQL_GRAM_OTHER;
}

static void sql_gram_free_words(char **words, size_t n)
{
    for (size_t i = 0; words && i < n; i++) dk_free(words[i]);
    dk_free(words);
}

/* The keywords no bare identifier may be (reserved and type/function ones), sorted. */
static int sql_gram_load_forbidden(sql_gram *g, sql_db *db)
{
    dk_buf b = {0};
    dk_buf_puts(&b, "SELECT lower(keyword_name) FROM duckdb_keywords() WHERE keyword_category IN ('reserved', 'type_function')");
    sql_result *res = NULL;
    int rc = sql_run_built(db, &b, 100000, &res, g->err);
    if (rc != DK_OK) return rc;
    size_t n = sql_result_n_rows(res);
    g->forbidden = dk_calloc(n ? n : 1, sizeof *g->forbidden);
    if (!g->forbidden) rc = dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == DK_OK && i < n; i++) {
        const char *w = sql_result_value(res, i, 0);
        int ok = 1;
        for (const char *p = w; *p; p++) ok &= (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
        if (!ok || !*w) continue; /* only identifier-like words can clash with an alias */
        g->forbidden[g->n_forbidden] = dk_strdup(w);
        if (!g->forbidden[g->n_forbidden++]) rc = dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    }
    sql_result_free(res);
    if (rc == DK_OK) qsort(g->forbidden, g->n_forbidden, sizeof *g->forbidden, sql_gram_cmp_str);
    return rc;
}

static void sql_gram_fks_free(sql_gram_fk *fks, size_t n)
{
    for (size_t i = 0; fks && i < n; i++) {
        sql_gram_free_words(fks[i].from_cols, fks[i].n_cols);
        sql_gram_free_words(fks[i].to_cols, fks[i].n_cols);
    }
    dk_free(fks);
}

static long sql_gram_find_table(const sql_table_info *tables, size_t n, const char *schema, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tables[i].schema, schema) == 0 && strcmp(tables[i].name, name) == 0) return (long)i;
    return -1;
}

/* Appends the column pair (from, to) to a key; -1 when out of memory. */
static int sql_gram_fk_add_pair(sql_gram_fk *fk, const char *from, const char *to)
{
    char **f = dk_realloc(fk->from_cols, (fk->n_cols + 1) * sizeof *f);
    if (!f) return -1;
    fk->from_cols = f;
    char **t = dk_realloc(fk->to_cols, (fk->n_cols + 1) * sizeof *t);
    if (!t) return -1;
    fk->to_cols = t;
    f[fk->n_cols] = dk_strdup(from);
    t[fk->n_cols] = dk_strdup(to);
    fk->n_cols++;
    return f[fk->n_cols - 1] && t[fk->n_cols - 1] ? 0 : -1;
}

/* The foreign keys between two tables (not from a table to itself) whose columns the grammar
 * can name, at most SQL_GRAMMAR_MAX_KEYS. */
static int sql_gram_load_fks(sql_gram *g, sql_db *db, const sql_table_info *tables, size_t n_tables,
                             sql_gram_fk **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    dk_buf b = {0};
    dk_buf_puts(&b, "SELECT * FROM (SELECT schema_name, table_name, constraint_index, referenced_table, "
                    "unnest(constraint_column_names) AS from_col, unnest(referenced_column_names) AS to_col, "
                    "unnest(range(len(constraint_column_names))) AS i_col "
                    "FROM duckdb_constraints() WHERE constraint_type = 'FOREIGN KEY') ORDER BY 1, 2, 3, i_col");
    sql_result *res = NULL;
    int rc = sql_run_built(db, &b, 100000, &res, g->err);
    if (rc != DK_OK) return rc;
    size_t n_rows = sql_result_n_rows(res), n = 0;
    sql_gram_fk *fks = dk_calloc(n_rows ? n_rows : 1, sizeof *fks);
    if (!fks) {
        sql_result_free(res);
        return dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    }
    for (size_t r = 0; r < n_rows && n < SQL_GRAMMAR_MAX_KEYS;) {
        size_t end = r + 1; /* the rows of one constraint */
        while (end < n_rows && strcmp(sql_result_value(res, end, 0), sql_result_value(res, r, 0)) == 0 &&
               strcmp(sql_result_value(res, end, 1), sql_result_value(res, r, 1)) == 0 &&
               strcmp(sql_result_value(res, end, 2), sql_result_value(res, r, 2)) == 0)
            end++;
        const char *schema = sql_result_value(res, r, 0);
        long from = sql_gram_find_table(tables, n_tables, schema, sql_result_value(res, r, 1));
        long to = sql_gram_find_table(tables, n_tables, schema, sql_result_value(res, r, 3));
        int usable = from >= 0 && to >= 0 && from != to;
        for (size_t k = r; usable && k < end; k++)
            usable = sql_gram_name_usable(sql_result_value(res, k, 4)) && sql_gram_name_usable(sql_result_value(res, k, 5));
        if (usable) {
            sql_gram_fk *fk = &fks[n++];
            fk->i_from = (size_t)from;
            fk->i_to = (size_t)to;
            for (size_t k = r; k < end && rc == DK_OK; k++)
                if (sql_gram_fk_add_pair(fk, sql_result_value(res, k, 4), sql_result_value(res, k, 5)))
                    rc = dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
        }
        r = end;
    }
    sql_result_free(res);
    if (rc != DK_OK) {
        sql_gram_fks_free(fks, n);
        return rc;
    }
    *out = fks;
    *n_out = n;
    return DK_OK;
}

/* ---- one variant ---- */

/* The usable columns of a table, appended to cols (capacity checked by the caller). */
static size_t sql_gram_table_cols(const sql_table_info *t, sql_gram_col *cols)
{
    size_t n = 0;
    for (size_t c = 0; c < sql_result_n_rows(t->columns) && n < SQL_GRAMMAR_MAX_COLUMNS; c++) {
        const char *name = sql_result_value(t->columns, c, 0);
        if (!sql_gram_name_usable(name)) continue;
        cols[n++] = (sql_gram_col){.table = t->name, .name = name, .kind = sql_gram_kind_of(sql_result_value(t->columns, c, 1))};
    }
    return n;
}

/* A table as FROM names it: ("schema" ".")? name. */
static void sql_gram_put_table(const sql_gram *g, dk_buf *b, const sql_table_info *t)
{
    if (strcmp(t->schema, "main") != 0) {
        sql_gram_put_name(g, b, t->schema);
        dk_buf_puts(b, " \".\" ");
    }
    sql_gram_put_name(g, b, t->name);
}

/* A column as table.col. */
static void sql_gram_put_qualified(const sql_gram *g, dk_buf *b, const char *table, const char *col)
{
    sql_gram_put_name(g, b, table);
    dk_buf_puts(b, " \".\" ");
    sql_gram_put_name(g, b, col);
}

/* Writes one column rule: the columns of a kind (kind < 0: all), each bare when no other
 * column of the variant has its name, and as table.col with the table written once for all
 * of its columns (one parse stack per table until the '.', not one per column). */
static void sql_gram_column_rule(const sql_gram *g, const char *vprefix, const char *rule, int kind,
                                 const sql_gram_col *cols, size_t n, const char *const *tables, size_t n_tables)
{
    dk_buf *o = g->out;
    dk_buf_printf(o, "%s%s ::= ", vprefix, rule);
    const char *sep = "";
    for (size_t i = 0; i < n; i++) {
        if (kind >= 0 && cols[i].kind != kind) continue;
        int unique = 1;
        for (size_t j = 0; j < n && unique; j++) unique = j == i || strcmp(cols[j].name, cols[i].name) != 0;
        if (!unique) continue;
        dk_buf_puts(o, sep);
        sql_gram_put_name(g, o, cols[i].name);
        sep = " | ";
    }
    for (size_t t = 0; t < n_tables; t++) {
        dk_buf_puts(o, sep);
        sql_gram_put_name(g, o, tables[t]);
        dk_buf_puts(o, " \".\" (");
        const char *csep = "";
        for (size_t i = 0; i < n; i++) {
            if ((kind >= 0 && cols[i].kind != kind) || strcmp(cols[i].table, tables[t]) != 0) continue;
            dk_buf_puts(o, csep);
            sql_gram_put_name(g, o, cols[i].name);
            csep = " | ";
        }
        dk_buf_puts(o, ")");
        sep = " | ";
    }
    dk_buf_putc(o, '\n');
}

/* Writes @c, @cn @ct @cd @cb (the kinds present, has_kind) and @star for the variant's columns. */
static void sql_gram_column_rules(const sql_gram *g, const char *vprefix, const sql_gram_col *cols, size_t n,
                                  const char *const *tables, size_t n_tables, int has_kind[SQL_GRAM_N_KINDS])
{
    static const char *const kind_rule[SQL_GRAM_N_KINDS] = {"cn", "ct", "cd", "cb", NULL};
    for (int k = 0; k < SQL_GRAM_N_KINDS; k++) has_kind[k] = 0;
    for (size_t i = 0; i < n; i++) has_kind[cols[i].kind] = 1;
    for (int k = 0; k < SQL_GRAM_N_KINDS; k++) {
        /* a table's columns of the kind, for table.col: only tables that have one */
        const char *with_kind[2];
        size_t n_with = 0;
        for (size_t t = 0; t < n_tables; t++)
            for (size_t i = 0; i < n; i++)
                if (cols[i].kind == k && strcmp(cols[i].table, tables[t]) == 0) {
                    with_kind[n_with++] = tables[t];
                    break;
                }
        if (has_kind[k] && kind_rule[k]) sql_gram_column_rule(g, vprefix, kind_rule[k], k, cols, n, with_kind, n_with);
    }
    sql_gram_column_rule(g, vprefix, "c", -1, cols, n, tables, n_tables);
    dk_buf_printf(g->out, "%sstar ::= \"*\"", vprefix);
    for (size_t t = 0; t < n_tables; t++) {
        dk_buf_puts(g->out, " | ");
        sql_gram_put_name(g, g->out, tables[t]);
        dk_buf_puts(g->out, " \".*\"");
    }
    dk_buf_putc(g->out, '\n');
}

/* ON a.x = b.y [AND ...] for one key, either side of each '=' first. */
static void sql_gram_put_on(const sql_gram *g, const sql_table_info *tables, const sql_gram_fk *fk)
{
    dk_buf *o = g->out;
    for (size_t i = 0; i < fk->n_cols; i++) {
        if (i) dk_buf_printf(o, " \" \" %s-k-and \" \" ", g->root);
        dk_buf_puts(o, "(");
        sql_gram_put_qualified(g, o, tables[fk->i_from].name, fk->from_cols[i]);
        dk_buf_puts(o, " \" = \" ");
        sql_gram_put_qualified(g, o, tables[fk->i_to].name, fk->to_cols[i]);
        dk_buf_puts(o, " | ");
        sql_gram_put_qualified(g, o, tables[fk->i_to].name, fk->to_cols[i]);
        dk_buf_puts(o, " \" = \" ");
        sql_gram_put_qualified(g, o, tables[fk->i_from].name, fk->from_cols[i]);
        dk_buf_puts(o, ")");
    }
}

/* Writes one variant: the tables a and b (b: -1 for a single table), joined on the keys
 * fks[0..n_fks) that link them. */
static void sql_gram_variant_rules(const sql_gram *g, size_t i_variant, const sql_table_info *tables, size_t a, long b,
                                   const sql_gram_fk *const *fks, size_t n_fks, sql_gram_col *cols)
{
    char vprefix[128];
    snprintf(vprefix, sizeof vprefix, "%s-v%zu-", g->root, i_variant);
    size_t n = sql_gram_table_cols(&tables[a], cols);
    if (b >= 0) n += sql_gram_table_cols(&tables[b], cols + n);
    const char *names[2] = {tables[a].name, b >= 0 ? tables[b].name : NULL};
    int has_kind[SQL_GRAM_N_KINDS];
    sql_gram_column_rules(g, vprefix, cols, n, names, b >= 0 ? 2 : 1, has_kind);
    dk_buf *o = g->out;
    dk_buf_printf(o, "%sfrom ::= ", vprefix);
    if (b < 0) {
        sql_gram_put_table(g, o, &tables[a]);
    } else {
        dk_buf_printf(o, "(");
        sql_gram_put_table(g, o, &tables[a]);
        dk_buf_printf(o, " \" \" %s-join \" \" ", g->root);
        sql_gram_put_table(g, o, &tables[b]);
        dk_buf_printf(o, " | ");
        sql_gram_put_table(g, o, &tables[b]);
        dk_buf_printf(o, " \" \" %s-join \" \" ", g->root);
        sql_gram_put_table(g, o, &tables[a]);
        dk_buf_printf(o, ") \" \" %s-k-on \" \" (", g->root);
        for (size_t k = 0; k < n_fks; k++) {
            if (k) dk_buf_puts(o, " | ");
            sql_gram_put_on(g, tables, fks[k]);
        }
        dk_buf_puts(o, ")");
    }
    dk_buf_putc(o, '\n');
    sql_gram_template(g, sql_gram_variant, sizeof sql_gram_variant / sizeof *sql_gram_variant, vprefix, has_kind);
    sql_gram_lists(g, vprefix);
}

/* ---- the whole grammar ---- */

static int sql_gram_root_ok(const char *root)
{
    if (!root[0]) return 0;
    for (const char *p = root; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) return 0;
    return strlen(root) < 64;
}

/* Whether a table has at least one column the grammar can name. */
static int sql_gram_table_usable(const sql_table_info *t)
{
    if (!t->keep || !sql_gram_name_usable(t->name) || !sql_gram_name_usable(t->schema)) return 0;
    for (size_t c = 0; c < sql_result_n_rows(t->columns); c++)
        if (sql_gram_name_usable(sql_result_value(t->columns, c, 0))) return 1;
    return 0;
}

/* The columns of a table the grammar names. */
static size_t sql_gram_n_cols(const sql_table_info *t)
{
    size_t n = 0;
    for (size_t c = 0; c < sql_result_n_rows(t->columns) && n < SQL_GRAMMAR_MAX_COLUMNS; c++)
        n += sql_gram_name_usable(sql_result_value(t->columns, c, 0));
    return n;
}

/* About how many parse stacks a variant of n_cols columns adds where the select list begins
 * (measured: its item classes start with some 70 function names and literals, and each
 * column starts an item twice, bare and inside arithmetic or ||). */
static size_t sql_gram_stack_estimate(size_t n_cols) { return 70 + 2 * n_cols; }

/* The variants to write for the kept tables: each table, then joins while the stack estimate
 * stays within SQL_GRAMMAR_STACK_BUDGET. -1 when the tables alone exceed it. */
static int sql_gram_plan(const sql_table_info *tables, size_t n_tables, const sql_gram_fk *fks, size_t n_fks,
                         sql_gram_variant_plan *plan, size_t *n_plan)
{
    size_t n = 0, estimate = 0, n_joins = 0;
    for (size_t i = 0; i < n_tables; i++) {
        if (!tables[i].keep) continue;
        plan[n++] = (sql_gram_variant_plan){.a = i, .b = -1};
        estimate += sql_gram_stack_estimate(sql_gram_n_cols(&tables[i]));
    }
    if (estimate > SQL_GRAMMAR_STACK_BUDGET && n > 1) return -1;
    for (size_t k = 0; k < n_fks && n_joins < SQL_GRAMMAR_MAX_JOIN_VARIANTS; k++) {
        size_t a = fks[k].i_from, b = fks[k].i_to;
        if (!tables[a].keep || !tables[b].keep) continue;
        int seen = 0;
        for (size_t v = 0; v < n && !seen; v++)
            seen = plan[v].b >= 0 && ((plan[v].a == a && (size_t)plan[v].b == b) || (plan[v].a == b && (size_t)plan[v].b == a));
        size_t more = sql_gram_stack_estimate(sql_gram_n_cols(&tables[a]) + sql_gram_n_cols(&tables[b]));
        if (seen || estimate + more > SQL_GRAMMAR_STACK_BUDGET) continue;
        plan[n++] = (sql_gram_variant_plan){.a = a, .b = (long)b};
        estimate += more;
        n_joins++;
    }
    *n_plan = n;
    return 0;
}

static int sql_gram_write(sql_gram *g, const sql_table_info *tables, const sql_gram_fk *fks, size_t n_fks,
                          const sql_gram_variant_plan *plan, size_t n_plan)
{
    sql_gram_col *cols = dk_malloc_array(2 * SQL_GRAMMAR_MAX_COLUMNS, sizeof *cols);
    const sql_gram_fk **pair = dk_malloc_array(n_fks ? n_fks : 1, sizeof *pair);
    if (!cols || !pair) {
        dk_free(cols);
        dk_free(pair);
        return dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    }
    dk_buf_printf(g->out, "%s ::= (", g->root);
    for (size_t v = 0; v < n_plan; v++) dk_buf_printf(g->out, "%s%s-v%zu-q", v ? " | " : "", g->root, v);
    if (n_plan == 0) dk_buf_printf(g->out, "%s-const", g->root);
    dk_buf_puts(g->out, ") \";\"?\n");
    for (size_t v = 0; v < n_plan; v++) {
        size_t a = plan[v].a, n_pair = 0;
        for (size_t k = 0; plan[v].b >= 0 && k < n_fks; k++) {
            size_t b = (size_t)plan[v].b;
            if ((fks[k].i_from == a && fks[k].i_to == b) || (fks[k].i_from == b && fks[k].i_to == a)) pair[n_pair++] = &fks[k];
        }
        sql_gram_variant_rules(g, v, tables, a, plan[v].b, pair, n_pair, cols);
    }
    int no_kinds[SQL_GRAM_N_KINDS] = {0};
    sql_gram_template(g, sql_gram_shared, sizeof sql_gram_shared / sizeof *sql_gram_shared, "", no_kinds);
    sql_gram_string_char_rule(g);
    sql_gram_words_rules(g);
    int rc = sql_gram_alias_rules(g);
    if (rc == DK_OK && g->out->failed) rc = dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    dk_free(pair);
    dk_free(cols);
    return rc;
}

/* Chooses the tables (relevance to question, at most max_tables, fewer when their variants
 * would make the grammar too ambiguous) and writes the grammar. */
static int sql_gram_build(sql_gram *g, sql_db *db, const char *question, int max_tables, sql_table_info *tables,
                          size_t n_tables)
{
    sql_gram_fk *fks = NULL;
    size_t n_fks = 0, n_plan = 0;
    int rc = sql_gram_load_fks(g, db, tables, n_tables, &fks, &n_fks);
    if (rc != DK_OK) return rc;
    sql_gram_variant_plan *plan = dk_malloc_array(n_tables + SQL_GRAMMAR_MAX_JOIN_VARIANTS + 1, sizeof *plan);
    if (!plan) rc = dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
    for (int k = max_tables; rc == DK_OK && k >= 1; k--) {
        if (sql_tables_choose(tables, n_tables, question, k)) {
            rc = dk_fail(g->err, DK_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t i = 0; i < n_tables; i++) tables[i].keep = tables[i].keep && sql_gram_table_usable(&tables[i]);
        if (sql_gram_plan(tables, n_tables, fks, n_fks, plan, &n_plan) == 0) break;
    }
    if (rc == DK_OK) rc = sql_gram_write(g, tables, fks, n_fks, plan, n_plan);
    dk_free(plan);
    sql_gram_fks_free(fks, n_fks);
    return rc;
}

int sql_grammar(sql_db *db, const char *question, const sql_grammar_opts *opts, dk_buf *out, char *err)
{
    if (!db || !out) return dk_fail(err, DK_ERR_ARG, "missing database or output");
    sql_grammar_opts o = opts ? *opts : (sql_grammar_opts){0};
    sql_gram g = {.out = out, .root = o.root ? o.root : "sql", .json = o.json_string != 0, .err = err};
    if (!sql_gram_root_ok(g.root))
        return dk_fail(err, DK_ERR_ARG, "grammar root '%s': lowercase letters, digits and '-' only", g.root);
    sql_table_info *tables = NULL;
    size_t n_tables = 0;
    int rc = sql_gram_load_forbidden(&g, db);
    if (rc == DK_OK) rc = sql_tables_load(db, &tables, &n_tables, err);
    int max_tables = o.max_tables > 0 && o.max_tables < SQL_GRAMMAR_MAX_TABLES ? o.max_tables : SQL_GRAMMAR_MAX_TABLES;
    if (rc == DK_OK) rc = sql_gram_build(&g, db, question, max_tables, tables, n_tables);
    sql_tables_free(tables, n_tables);
    sql_gram_free_words(g.forbidden, g.n_forbidden);
    sql_gram_free_words(g.trie_bodies, g.n_trie);
    return rc;
}
