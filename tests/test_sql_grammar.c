/*
 * test_sql_grammar.c: the SQL grammar of sql_grammar (suite `sql_grammar`) over a real DuckDB
 * file built here with the DuckDB C API: it parses as GBNF in both modes and under another
 * root name (every rule named ROOT-...), it has no recursion and a bounded longest sentence;
 * random walks through it (a small vocabulary of bytes and SQL words, and random logits with
 * the real Qwen2 vocabulary) give SQL that DuckDB always parses and mostly binds and runs;
 * awkward names come out quoted and work, the question picks the tables, an empty database
 * still has a grammar, a wide schema stays within the matcher's limits, queries a model would
 * write are accepted and other statements are not, and failed allocations are errors.
 */
#include <math.h>
#include <stdlib.h>

#include "base/base.h"
#include "kit_vocab.h"
#include "sample/grammar_internal.h"
#include "sample/sample.h"
#include "sql/sql.h"
#include "test.h"
#include "test_duckdb.h"

static const char test_sqlg_schema[] =
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR, city VARCHAR, signup DATE);"
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),"
    "  amount DECIMAL(10,2), status VARCHAR, ordered_at TIMESTAMP, paid BOOLEAN);"
    "CREATE TABLE \"Line Items\" (\"order\" INTEGER REFERENCES orders(id), \"Unit Price\" DOUBLE, \"select\" INTEGER,"
    "  qty INTEGER, tags VARCHAR[], \"Prénom\" VARCHAR, \"bad\"\"quote\" INTEGER);"
    "CREATE SCHEMA archive;"
    "CREATE TABLE archive.old_orders (id INTEGER, amount DOUBLE, note VARCHAR);"
    "CREATE VIEW paid_orders AS SELECT id, amount, ordered_at FROM orders WHERE status = 'paid';"
    "INSERT INTO customers VALUES (1, 'Ada', 'Paris', '2023-05-01'), (2, 'Bob', 'Lyon', '2024-02-11'),"
    "  (3, 'Chloé', 'Paris', NULL);"
    "INSERT INTO orders VALUES (10, 1, 12.50, 'paid', '2024-01-03 10:00:00', true),"
    "  (11, 1, 3.00, 'open', '2024-02-04 11:30:00', false), (12, 2, 99.99, 'paid', '2024-03-05 09:15:00', true),"
    "  (13, 3, 7.25, 'refunded', NULL, false);"
    "INSERT INTO \"Line Items\" VALUES (10, 2.5, 1, 5, ['a'], 'x', 0), (12, 10.0, 2, 1, [], NULL, 1);"
    "INSERT INTO archive.old_orders VALUES (1, 5.5, 'old');"
    "CHECKPOINT;";

static sql_db *test_sqlg_open(void) { return test_duckdb_open("grammar_shop", test_sqlg_schema); }

/* Appends the grammar of db to out; 0 after recording a failure. */
static int test_sqlg_text(sql_db *db, const char *question, const sql_grammar_opts *opts, dk_buf *out)
{
    char err[DK_ERRLEN];
    int rc = sql_grammar(db, question, opts, out, err);
    if (rc != DK_OK) test_fail_at(__FILE__, __LINE__, "sql_grammar: %s", err);
    return rc == DK_OK;
}

static sample_grammar *test_sqlg_parse(const dk_buf *text, const char *root)
{
    sample_grammar *g = NULL;
    char err[DK_ERRLEN];
    if (sample_grammar_parse(&g, text->data, text->len, root, err) != DK_OK) test_fail_at(__FILE__, __LINE__, "parse: %s", err);
    return g;
}

/* ---- vocabularies ---- */

/* Words of a model's vocabulary for the walks: SQL words, the schema's names, punctuation. */
static const char *const test_sqlg_words[] = {
    "SELECT", "select", "DISTINCT", "FROM", "from", "WHERE", "where", "GROUP", "BY", "HAVING", "ORDER",
    "order", "LIMIT", "limit", "AS", "as", "AND", "and", "OR", "NOT", "IS", "NULL", "LIKE", "ILIKE", "IN",
    "BETWEEN", "ASC", "DESC", "desc", "CASE", "WHEN", "THEN", "ELSE", "END", "JOIN", "LEFT", "ON", "ALL",
    "DATE", "count", "COUNT", "sum", "SUM", "avg", "AVG", "min", "max", "round", "coalesce", "lower",
    "length", "year", "month", "date_trunc", "strftime", "string_agg", "customers", "orders", "id", "name",
    "city", "signup", "customer_id", "amount", "status", "ordered_at", "paid", "qty", "note", "archive",
    "old_orders", "paid_orders", "\"Line Items\"", "\\\"Line Items\\\"", "\"Unit Price\"", "\"select\"",
    "\"order\"", "total", "n", "cnt", "'paid'", "'Paris'", "'2024-01-01'", "(*)", ", ", " = ", " > ",
    "'", "''", "é", "€", "%Y-%m", "'month'", "10", "100", "2024", "0.5",
};

typedef struct test_walk_vocab {
    sample_vocab *v;
    size_t n;          /* tokens, the last one end-of-generation */
    float *weight;     /* (n) how likely a token is picked when allowed */
} test_walk_vocab;

/* Single printable bytes, the words above with and without a leading space, and EOG. */
static int test_walk_vocab_new(test_walk_vocab *wv)
{
    enum { N_BYTES = 95, N_WORDS = sizeof test_sqlg_words / sizeof *test_sqlg_words };
    static char bytes[N_BYTES];
    static char spaced[N_WORDS][40];
    const char *pieces[N_BYTES + 2 * N_WORDS + 1];
    size_t lens[N_BYTES + 2 * N_WORDS + 1];
    bool eog[N_BYTES + 2 * N_WORDS + 1];
    size_t n = 0;
    for (int i = 0; i < N_BYTES; i++) {
        bytes[i] = (char)(' ' + i);
        pieces[n] = &bytes[i], lens[n] = 1, eog[n] = false, n++;
    }
    for (int i = 0; i < N_WORDS; i++) {
        pieces[n] = test_sqlg_words[i], lens[n] = strlen(test_sqlg_words[i]), eog[n] = false, n++;
        snprintf(spaced[i], sizeof spaced[i], " %s", test_sqlg_words[i]);
        pieces[n] = spaced[i], lens[n] = strlen(spaced[i]), eog[n] = false, n++;
    }
    pieces[n] = "", lens[n] = 0, eog[n] = true, n++;
    char err[DK_ERRLEN];
    wv->n = n;
    wv->weight = dk_malloc_array(n, sizeof *wv->weight);
    if (!wv->weight || sample_vocab_new(&wv->v, n, pieces, lens, eog, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "walk vocabulary");
        return 0;
    }
    /* whole words are likelier than letters, as with a real tokenizer */
    for (size_t i = 0; i < n; i++) wv->weight[i] = lens[i] <= 1 ? 1.0f : 6.0f;
    return 1;
}

static void test_walk_vocab_free(test_walk_vocab *wv)
{
    sample_vocab_free(wv->v);
    dk_free(wv->weight);
}

/* ---- matching ---- */

/* text as the content of a JSON string (only '"' and '\' need escaping in these tests). */
static void test_sqlg_json_escape(const char *text, dk_buf *out)
{
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\') dk_buf_putc(out, '\\');
        dk_buf_putc(out, *p);
    }
}

/* ---- the longest sentence ---- */

/* Longest sentence (in code points) of rule r, by memoised depth-first search; -1 when the
 * rule can reach itself (a cycle: unbounded sentences). state: 0 new, 1 on the path, 2 done. */
static long test_sqlg_longest(const sample_grammar *g, uint32_t r, long *memo, uint8_t *state)
{
    if (state[r] == 2) return memo[r];
    if (state[r] == 1) return -1;
    state[r] = 1;
    long best = 0;
    for (uint32_t a = g->rule_alts[r]; a < g->rule_alts[r + 1]; a++) {
        long len = 0;
        for (const grammar_elem *e = &g->elems[g->alt_first[a]]; !grammar_elem_is_end(e); e++) {
            if (e->type == GRAMMAR_REF) {
                long sub = test_sqlg_longest(g, e->lo, memo, state);
                if (sub < 0) return -1;
                len += sub;
            } else if (grammar_elem_is_char(e)) {
                len++;
            }
        }
        if (len > best) best = len;
    }
    state[r] = 2;
    memo[r] = best;
    return best;
}

static long test_sqlg_max_length(const sample_grammar *g)
{
    long *memo = dk_calloc(g->n_rules, sizeof *memo);
    uint8_t *state = dk_calloc(g->n_rules, 1);
    long n = memo && state ? test_sqlg_longest(g, g->root, memo, state) : -2;
    dk_free(memo);
    dk_free(state);
    return n;
}

/* ---- random walks ---- */

typedef struct test_walk_stats {
    int n_walks, n_bound, n_binder, n_other, n_ran, n_ran_ok;
    size_t max_bytes, total_bytes;
} test_walk_stats;

/* One walk: picks allowed tokens by weight, stopping with probability 1/2 whenever a whole
 * sentence has been written. The SQL goes to sql (JSON-decoded in JSON mode). */
static int test_walk_one(sample_matcher *m, const test_walk_vocab *wv, float *logits, sample_rng *rng, int json,
                         dk_buf *sql)
{
    char err[DK_ERRLEN];
    dk_buf text = {0};
    sample_matcher_reset(m);
    int ok = 0;
    for (int step = 0; step < 4000; step++) {
        for (size_t i = 0; i < wv->n; i++) logits[i] = 0.0f;
        if (sample_matcher_apply(m, logits, err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "no token allowed after: %s (%s)", text.data ? text.data : "", err);
            break;
        }
        int32_t eog = (int32_t)wv->n - 1, tok = -1;
        if (isfinite(logits[eog]) && (sample_rng_uniform(rng) < 0.5 || sample_matcher_finished(m))) {
            tok = eog;
        } else {
            double total = 0;
            for (size_t i = 0; i + 1 < wv->n; i++)
                if (isfinite(logits[i])) total += wv->weight[i];
            double x = sample_rng_uniform(rng) * total;
            for (size_t i = 0; i + 1 < wv->n && tok < 0; i++) {
                if (!isfinite(logits[i])) continue;
                x -= wv->weight[i];
                if (x < 0) tok = (int32_t)i;
            }
            if (tok < 0) tok = eog; /* rounding: only EOG left */
        }
        if (sample_matcher_accept(m, tok, err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "accept: %s", err);
            break;
        }
        if (tok == eog) {
            ok = 1;
            break;
        }
        size_t n;
        const char *piece = sample_vocab_piece(wv->v, tok, &n);
        dk_buf_append(&text, piece, n);
    }
    if (!ok) {
        test_fail_at(__FILE__, __LINE__, "walk did not finish: %s", text.data ? text.data : "");
    } else if (json) {
        dk_buf quoted = {0};
        dk_buf_putc(&quoted, '"');
        dk_buf_append(&quoted, text.data ? text.data : "", text.len);
        dk_buf_putc(&quoted, '"');
        json_error_t jerr;
        json_t *s = json_loadb(quoted.data, quoted.len, JSON_DECODE_ANY, &jerr);
        if (!json_is_string(s)) {
            test_fail_at(__FILE__, __LINE__, "not a JSON string's content (%s): %s", jerr.text, text.data);
            ok = 0;
        } else {
            dk_buf_puts(sql, json_string_value(s));
        }
        json_decref(s);
        dk_buf_free(&quoted);
    } else {
        dk_buf_append(sql, text.data ? text.data : "", text.len);
    }
    dk_buf_free(&text);
    return ok;
}

/* Checks one walked query with DuckDB: it must parse; binding may fail. */
static void test_walk_check(sql_db *db, const char *sql, int run, test_walk_stats *st)
{
    char err[DK_ERRLEN];
    st->n_walks++;
    st->total_bytes += strlen(sql);
    if (strlen(sql) > st->max_bytes) st->max_bytes = strlen(sql);
    int rc = sql_check_query(db, sql, err);
    if (rc == DK_OK) {
        st->n_bound++;
        if (!run) return;
        sql_result *res = NULL;
        st->n_ran++;
        rc = sql_query(db, sql, &(sql_limits){.max_rows = 20, .timeout_ms = 5000}, &res, err);
        if (rc == DK_OK) st->n_ran_ok++;
        else test_log("runtime error: %s -- %s", sql, err);
        sql_result_free(res);
        return;
    }
    CHECK_MSG(rc == DK_ERR_FORMAT, "refused (%d): %s -- %s", rc, sql, err);
    CHECK_MSG(strstr(err, "Parser Error") == NULL, "does not parse: %s -- %s", sql, err);
    CHECK_MSG(strstr(err, "Catalog Error") == NULL, "unknown name: %s -- %s", sql, err);
    if (strstr(err, "Binder Error")) st->n_binder++;
    else st->n_other++;
    if (getenv("DUCKLING_SQLG_VERBOSE")) test_log("unbound: %s -- %s", sql, err);
}

static void test_walks(sql_db *db, int json, int n_walks, uint64_t seed, test_walk_stats *st)
{
    dk_buf text = {0};
    sql_grammar_opts opts = {.json_string = json};
    if (!test_sqlg_text(db, NULL, &opts, &text)) return;
    sample_grammar *g = test_sqlg_parse(&text, "sql");
    test_walk_vocab wv = {0};
    float *logits = NULL;
    sample_matcher *m = NULL;
    char err[DK_ERRLEN];
    if (!g || !test_walk_vocab_new(&wv)) goto done;
    logits = dk_malloc_array(wv.n, sizeof *logits);
    if (!logits || sample_matcher_new(&m, g, wv.v, err) != DK_OK) {
        test_fail_at(__FILE__, __LINE__, "matcher: %s", err);
        goto done;
    }
    sample_rng rng;
    sample_rng_seed(&rng, seed);
    for (int i = 0; i < n_walks && test_failures() < 5; i++) {
        dk_buf sql = {0};
        if (test_walk_one(m, &wv, logits, &rng, json, &sql)) test_walk_check(db, sql.data ? sql.data : "", i % 8 == 0, st);
        dk_buf_free(&sql);
    }
done:
    sample_matcher_free(m);
    dk_free(logits);
    test_walk_vocab_free(&wv);
    sample_grammar_free(g);
    dk_buf_free(&text);
}

static void test_walks_report(const char *mode, const test_walk_stats *st)
{
    test_log("%s: %d walks, %d bind (%.1f%%), %d binder errors, %d other errors; ran %d, %d ok; "
             "mean %zu bytes, longest %zu",
             mode, st->n_walks, st->n_bound, st->n_walks ? 100.0 * st->n_bound / st->n_walks : 0.0, st->n_binder,
             st->n_other, st->n_ran, st->n_ran_ok, st->n_walks ? st->total_bytes / (size_t)st->n_walks : 0,
             st->max_bytes);
}

/* ---- tests ---- */

TEST(sql_grammar, parses_in_both_modes_and_under_any_root)
{
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    for (int json = 0; json < 2; json++) {
        dk_buf text = {0};
        sql_grammar_opts opts = {.json_string = json};
        REQUIRE(test_sqlg_text(db, NULL, &opts, &text));
        test_log("%s mode: %zu bytes of grammar", json ? "json" : "plain", text.len);
        sample_grammar *g = test_sqlg_parse(&text, "sql");
        CHECK(g != NULL);
        if (g) {
            long longest = test_sqlg_max_length(g);
            test_log("%s mode: %zu rules, longest sentence %ld characters", json ? "json" : "plain", g->n_rules, longest);
            CHECK_MSG(longest > 0, "the grammar has a cycle (unbounded sentences)");
            CHECK_MSG(longest <= 1200, "longest sentence %ld characters", longest);
        }
        sample_grammar_free(g);
        dk_buf_free(&text);
    }
    /* another root: every rule is named ROOT or ROOT-..., so it joins another grammar */
    dk_buf text = {0};
    sql_grammar_opts opts = {.root = "run-sql-q", .json_string = 1};
    REQUIRE(test_sqlg_text(db, NULL, &opts, &text));
    for (const char *line = text.data; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t n = eol ? (size_t)(eol - line) : strlen(line);
        if (n > 0 && line[0] != ' ') {
            int named = strncmp(line, "run-sql-q ::= ", 14) == 0 || strncmp(line, "run-sql-q-", 10) == 0;
            CHECK_MSG(named, "rule outside the root's names: %.60s", line);
        }
        line = eol ? eol + 1 : NULL;
    }
    dk_buf joined = {0};
    dk_buf_puts(&joined, "root ::= \"{\\\"sql\\\": \\\"\" run-sql-q \"\\\"}\"\n");
    dk_buf_append(&joined, text.data, text.len);
    sample_grammar *g = test_sqlg_parse(&joined, NULL);
    sample_vocab *v = test_byte_vocab();
    CHECK(g && v && test_grammar_accepts(g, v, "{\"sql\": \"SELECT \\\"Unit Price\\\" FROM \\\"Line Items\\\"\"}"));
    CHECK(g && v && !test_grammar_accepts(g, v, "{\"sql\": \"SELECT \"Unit Price\" FROM \"Line Items\"\"}"));
    sample_grammar_free(g);
    sample_vocab_free(v);
    dk_buf_free(&joined);
    dk_buf_free(&text);
    char err[DK_ERRLEN];
    CHECK_EQ_INT(sql_grammar(db, NULL, &(sql_grammar_opts){.root = "Bad_Root"}, &text, err), DK_ERR_ARG);
    dk_buf_free(&text);
    sql_db_free(db);
}

TEST(sql_grammar, random_walks_parse_and_mostly_bind)
{
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    const char *env = getenv("DUCKLING_SQLG_WALKS"), *seed = getenv("DUCKLING_SQLG_SEED");
    int n = env ? atoi(env) : 500;
    for (int json = 0; json < 2; json++) {
        test_walk_stats st = {0};
        test_walks(db, json, n, (seed ? strtoull(seed, NULL, 10) : 0x5eed) + (uint64_t)json, &st);
        test_walks_report(json ? "json" : "plain", &st);
        CHECK_EQ_INT(st.n_walks, n);
        CHECK_MSG(st.n_bound * 100 >= st.n_walks * 80, "only %d of %d bind", st.n_bound, st.n_walks);
        CHECK_MSG(st.n_ran_ok * 10 >= st.n_ran * 9, "only %d of %d ran", st.n_ran_ok, st.n_ran);
    }
    sql_db_free(db);
}

/* Queries as a model would write them: accepted in both modes, and DuckDB runs them. */
static const char *const test_sqlg_good[] = {
    "SELECT city, count(*) AS n FROM customers GROUP BY city ORDER BY n DESC LIMIT 5",
    "SELECT sum(amount) FROM orders WHERE status = 'paid'",
    ("SELECT customers.name, sum(orders.amount) AS total FROM orders JOIN customers ON orders.customer_id = customers.id "
     "GROUP BY customers.name ORDER BY total DESC"),
    "SELECT name, amount FROM customers JOIN orders ON customers.id = orders.customer_id WHERE amount > 10",
    "SELECT * FROM customers WHERE city = 'Paris' AND signup >= DATE '2023-01-01'",
    "select count(*) from orders where status in ('paid', 'open');",
    "SELECT status, round(avg(amount), 2) AS avg_amount FROM orders GROUP BY status HAVING count(*) > 1",
    "SELECT date_trunc('month', ordered_at) AS month, sum(amount) FROM orders GROUP BY 1 ORDER BY 1",
    "SELECT DISTINCT city FROM customers ORDER BY city",
    "SELECT name FROM customers WHERE lower(name) LIKE '%a%' OR city IS NULL",
    "SELECT \"Unit Price\" * qty AS cost, \"select\" FROM \"Line Items\" WHERE \"order\" = 10",
    "SELECT id, amount FROM archive.old_orders WHERE note <> 'x' ORDER BY amount DESC LIMIT 10",
    "SELECT sum(CASE WHEN paid THEN amount ELSE 0 END) AS paid_total FROM orders",
    "SELECT year(ordered_at) AS y, count(DISTINCT customer_id) FROM orders GROUP BY ALL",
    "SELECT COUNT(*) FROM paid_orders WHERE amount BETWEEN 5 AND 100",
    "SELECT coalesce(city, 'unknown') AS town FROM customers",
    "SELECT max(signup), min(name) FROM customers",
};

/* Not SELECT queries, or not over this schema. */
static const char *const test_sqlg_bad[] = {
    "DROP TABLE x",
    "SELECT 1; DELETE FROM orders",
    "DELETE FROM orders",
    "SELECT * FROM nosuchtable",
    "SELECT amount FROM customers",
    "SELECT Unit Price FROM \"Line Items\"",
    "SELECT select FROM \"Line Items\"",
    "SELECT \"bad\"\"quote\" FROM \"Line Items\"",
    "SELECT sum(count(*)) FROM orders",
    "SELECT sum(name) FROM customers",
    "SELECT * FROM customers\nWHERE id = 1",
    "SELECT * FROM customers  WHERE id = 1",
    "SELECT * FROM customers WHERE name = 'a'b'",
    "SELECT * FROM customers ORDER BY select",
    "SELECT 1 AS from FROM customers",
    "",
};

TEST(sql_grammar, model_queries_accepted_other_statements_refused)
{
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    sample_vocab *v = test_byte_vocab();
    REQUIRE(v);
    char err[DK_ERRLEN];
    for (int json = 0; json < 2; json++) {
        dk_buf text = {0};
        sql_grammar_opts opts = {.json_string = json};
        REQUIRE(test_sqlg_text(db, NULL, &opts, &text));
        sample_grammar *g = test_sqlg_parse(&text, "sql");
        for (size_t i = 0; g && i < sizeof test_sqlg_good / sizeof *test_sqlg_good; i++) {
            const char *q = test_sqlg_good[i];
            dk_buf e = {0};
            if (json) test_sqlg_json_escape(q, &e);
            CHECK_MSG(test_grammar_accepts(g, v, json ? e.data : q), "%s mode refuses: %s", json ? "json" : "plain", q);
            dk_buf_free(&e);
            if (json) continue;
            sql_result *res = NULL;
            CHECK_MSG(sql_query(db, q, NULL, &res, err) == DK_OK, "%s -- %s", q, err);
            sql_result_free(res);
        }
        for (size_t i = 0; g && i < sizeof test_sqlg_bad / sizeof *test_sqlg_bad; i++) {
            dk_buf e = {0};
            if (json) test_sqlg_json_escape(test_sqlg_bad[i], &e);
            CHECK_MSG(!test_grammar_accepts(g, v, json ? (e.data ? e.data : "") : test_sqlg_bad[i]), "%s mode accepts: %s",
                      json ? "json" : "plain", test_sqlg_bad[i]);
            dk_buf_free(&e);
        }
        /* a raw quote cannot be in JSON mode; an escaped one can */
        CHECK(g && !test_grammar_accepts(g, v, json ? "SELECT \"select\" FROM \"Line Items\"" : "SELECT \\\"select\\\" FROM \\\"Line Items\\\""));
        /* in a string literal, \" in both modes (JSON: an escaped quote; SQL: a backslash and a
         * quote), a raw '"' in plain SQL only */
        CHECK(g && test_grammar_accepts(g, v, "SELECT name FROM customers WHERE name = 'say \\\"hi\\\"'"));
        CHECK(g && !json == test_grammar_accepts(g, v, "SELECT name FROM customers WHERE name = 'say \"hi\"'"));
        sample_grammar_free(g);
        dk_buf_free(&text);
    }
    sample_vocab_free(v);
    sql_db_free(db);
}

/* A random-weight model with a real vocabulary: random logits through the default sampler
 * under the grammar (the Qwen2 vocabulary, 151k tokens). Every walk must finish within 400
 * tokens and give SQL that parses. */
TEST(sql_grammar, random_logits_with_qwen_vocab_finish_and_parse)
{
    engine_model *model = NULL;
    const sample_vocab *v = kit_sample_vocab("tokenizer/ggml-vocab-qwen2.gguf", &model);
    REQUIRE(v);
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    size_t n_vocab = sample_vocab_n(v);
    float *logits = dk_malloc_array(n_vocab, sizeof *logits);
    REQUIRE(logits);
    const char *env = getenv("DUCKLING_SQLG_WALKS");
    int n_walks = env ? atoi(env) / 25 + 1 : 6;
    char err[DK_ERRLEN];
    for (int json = 0; json < 2; json++) {
        dk_buf text = {0};
        sql_grammar_opts opts = {.json_string = json};
        if (!test_sqlg_text(db, NULL, &opts, &text)) break;
        sample_grammar *g = test_sqlg_parse(&text, "sql");
        sample_matcher *m = NULL;
        if (!g || sample_matcher_new(&m, g, v, err) != DK_OK) {
            test_fail_at(__FILE__, __LINE__, "matcher: %s", err);
            sample_grammar_free(g);
            dk_buf_free(&text);
            break;
        }
        sample_rng rng;
        sample_rng_seed(&rng, 99 + (uint64_t)json);
        int n_finished = 0, n_bound = 0, max_tokens = 0;
        for (int w = 0; w < n_walks && !test_failures(); w++) {
            sample_params sp;
            sample_params_default(&sp);
            sp.seed = (uint64_t)w;
            sample_chain *chain = NULL;
            REQUIRE(sample_chain_new(&chain, &sp, n_vocab, err) == DK_OK);
            sample_matcher_reset(m);
            dk_buf out = {0};
            int step = 0, finished = 0;
            for (; step < 400 && !finished; step++) {
                for (size_t i = 0; i < n_vocab; i++) logits[i] = (float)(sample_rng_uniform(&rng) * 8.0);
                int32_t tok;
                if (sample_chain_sample_grammar(chain, logits, m, NULL, 0, &tok, err) != DK_OK ||
                    sample_matcher_accept(m, tok, err) != DK_OK) {
                    test_fail_at(__FILE__, __LINE__, "step %d: %s (so far: %s)", step, err, out.data ? out.data : "");
                    break;
                }
                sample_chain_accept(chain, tok);
                size_t n;
                const char *piece = sample_vocab_piece(v, tok, &n);
                if (sample_vocab_is_eog(v, tok)) finished = 1;
                else dk_buf_append(&out, piece, n);
            }
            sample_chain_free(chain);
            if (step > max_tokens) max_tokens = step;
            CHECK_MSG(finished, "not finished in 400 tokens: %s", out.data ? out.data : "");
            if (finished) {
                n_finished++;
                dk_buf sql = {0};
                if (json) {
                    dk_buf quoted = {0};
                    dk_buf_printf(&quoted, "\"%s\"", out.data ? out.data : "");
                    json_t *js = json_loadb(quoted.data, quoted.len, JSON_DECODE_ANY, NULL);
                    CHECK_MSG(json_is_string(js), "not a JSON string's content: %s", out.data);
                    if (json_is_string(js)) dk_buf_puts(&sql, json_string_value(js));
                    json_decref(js);
                    dk_buf_free(&quoted);
                } else {
                    dk_buf_puts(&sql, out.data ? out.data : "");
                }
                int rc = sql_check_query(db, sql.data ? sql.data : "", err);
                n_bound += rc == DK_OK;
                CHECK_MSG(rc == DK_OK || (rc == DK_ERR_FORMAT && !strstr(err, "Parser Error")), "%s -- %s", sql.data, err);
                if (getenv("DUCKLING_SQLG_VERBOSE")) test_log("%s -- %s", sql.data, rc == DK_OK ? "ok" : err);
                dk_buf_free(&sql);
            }
            dk_buf_free(&out);
        }
        test_log("%s mode, qwen vocabulary: %d walks, %d finished (longest %d tokens), %d bind", json ? "json" : "plain",
                 n_walks, n_finished, max_tokens, n_bound);
        sample_matcher_free(m);
        sample_grammar_free(g);
        dk_buf_free(&text);
    }
    dk_free(logits);
    sql_db_free(db);
    engine_model_free(model);
}

/* Whether the grammar of db (plain mode, opts as given) accepts text. */
static bool test_sqlg_db_accepts(sql_db *db, const char *question, int max_tables, const char *text)
{
    dk_buf g_text = {0};
    sql_grammar_opts opts = {.max_tables = max_tables};
    if (!test_sqlg_text(db, question, &opts, &g_text)) return false;
    sample_grammar *g = test_sqlg_parse(&g_text, "sql");
    sample_vocab *v = test_byte_vocab();
    bool ok = g && v && test_grammar_accepts(g, v, text);
    sample_vocab_free(v);
    sample_grammar_free(g);
    dk_buf_free(&g_text);
    return ok;
}

TEST(sql_grammar, awkward_names_quoted_and_working)
{
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    for (int json = 0; json < 2; json++) {
        dk_buf text = {0};
        REQUIRE(test_sqlg_text(db, NULL, &(sql_grammar_opts){.json_string = json}, &text));
        /* the GBNF literals of "Unit Price" (JSON mode: \"Unit Price\") */
        CHECK(strstr(text.data, json ? "\"\\\\\\\"Unit Price\\\\\\\"\"" : "\"\\\"Unit Price\\\"\""));
        CHECK(strstr(text.data, json ? "\"\\\\\\\"select\\\\\\\"\"" : "\"\\\"select\\\"\""));
        CHECK(strstr(text.data, "Prénom"));
        CHECK(strstr(text.data, "bad") == NULL); /* a name with a quote is left out */
        CHECK(strstr(text.data, "\"archive\" \".\" \"old_orders\""));
        dk_buf_free(&text);
    }
    static const char *const queries[] = {
        "SELECT \"Unit Price\", \"select\", \"order\" FROM \"Line Items\" WHERE \"select\" > 1",
        "SELECT sum(qty) AS n FROM \"Line Items\" JOIN orders ON \"Line Items\".\"order\" = orders.id WHERE orders.status = 'paid'",
        "SELECT \"Line Items\".* FROM \"Line Items\" ORDER BY \"Unit Price\" DESC",
        "SELECT \"Prénom\" FROM \"Line Items\" WHERE \"Prénom\" IS NOT NULL",
        "SELECT count(*) FROM archive.old_orders",
    };
    char err[DK_ERRLEN];
    for (size_t i = 0; i < sizeof queries / sizeof *queries; i++) {
        CHECK_MSG(test_sqlg_db_accepts(db, NULL, 0, queries[i]), "refused: %s", queries[i]);
        sql_result *res = NULL;
        CHECK_MSG(sql_query(db, queries[i], NULL, &res, err) == DK_OK, "%s -- %s", queries[i], err);
        sql_result_free(res);
    }
    CHECK(!test_sqlg_db_accepts(db, NULL, 0, "SELECT count(*) FROM old_orders")); /* not in main */
    CHECK(!test_sqlg_db_accepts(db, NULL, 0, "SELECT \"Unit Price\" FROM orders"));
    CHECK(!test_sqlg_db_accepts(db, NULL, 0, "SELECT order FROM \"Line Items\""));
    sql_db_free(db);
}

TEST(sql_grammar, question_picks_the_tables)
{
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    dk_buf text = {0};
    REQUIRE(test_sqlg_text(db, "Which city has the most customers?", &(sql_grammar_opts){.max_tables = 1}, &text));
    CHECK(strstr(text.data, "\"city\"") && strstr(text.data, "\"signup\""));
    CHECK(strstr(text.data, "amount") == NULL && strstr(text.data, "Unit Price") == NULL);
    dk_buf_free(&text);
    CHECK(test_sqlg_db_accepts(db, "Which city has the most customers?", 1, "SELECT city, count(*) AS n FROM customers GROUP BY city ORDER BY n DESC"));
    CHECK(!test_sqlg_db_accepts(db, "Which city has the most customers?", 1, "SELECT amount FROM orders"));
    CHECK(test_sqlg_db_accepts(db, "total amount by status", 1, "SELECT status, sum(amount) FROM orders GROUP BY status"));
    CHECK(!test_sqlg_db_accepts(db, "total amount by status", 1, "SELECT city FROM customers"));
    /* two tables: their join comes too */
    CHECK(test_sqlg_db_accepts(db, "amount per customer city", 2,
                               "SELECT city, sum(amount) FROM orders JOIN customers ON orders.customer_id = customers.id GROUP BY city"));
    sql_db_free(db);
}

TEST(sql_grammar, empty_database_selects_literals)
{
    sql_db *db = NULL;
    char err[DK_ERRLEN];
    REQUIRE(sql_db_open(&db, NULL, err) == DK_OK);
    dk_buf text = {0};
    REQUIRE(test_sqlg_text(db, "anything", NULL, &text));
    sample_grammar *g = test_sqlg_parse(&text, "sql");
    sample_vocab *v = test_byte_vocab();
    CHECK(g && v && test_grammar_accepts(g, v, "SELECT 1 + 2 AS x, 'a', DATE '2024-02-28';"));
    CHECK(g && v && !test_grammar_accepts(g, v, "SELECT * FROM t"));
    sample_vocab_free(v);
    sample_grammar_free(g);
    dk_buf_free(&text);
    test_walk_stats st = {0};
    test_walks(db, 0, 50, 7, &st);
    CHECK_EQ_INT(st.n_walks, 50);
    CHECK_EQ_INT(st.n_bound, 50);
    sql_db_free(db);
}

/* Every allocation that fails on the way gives an error, not a crash or a leak. */
TEST(sql_grammar, allocation_failures)
{
    sql_db *db = test_sqlg_open();
    REQUIRE(db);
    char err[DK_ERRLEN];
    int rc = DK_ERR_NOMEM;
    long n = 0, n_tried = 0;
    for (; rc != DK_OK && n < 1000000; n = n < 16 ? n + 1 : n * 3 / 2) {
        dk_buf out = {0};
        n_tried = n;
        dk_alloc_fail_after(n);
        rc = sql_grammar(db, "city", &(sql_grammar_opts){.json_string = 1, .max_tables = 2}, &out, err);
        dk_alloc_fail_after(-1);
        CHECK_MSG(rc == DK_OK || rc == DK_ERR_NOMEM, "after %ld allocations: %d %s", n, rc, err);
        dk_buf_free(&out);
    }
    CHECK_EQ_INT(rc, DK_OK);
    test_log("succeeded with %ld allocations allowed", n_tried);
    sql_db_free(db);
}

/* Many wide tables: the grammar keeps fewer of them, so that the matcher (which follows every
 * table's parse while the select list is written) stays within its limits. */
TEST(sql_grammar, wide_schema_stays_within_matcher_limits)
{
    dk_buf ddl = {0};
    static const char *const types[] = {"INTEGER", "VARCHAR", "DOUBLE", "DATE", "BOOLEAN", "DECIMAL(12,2)", "VARCHAR"};
    for (int t = 0; t < 12; t++) {
        dk_buf_printf(&ddl, "CREATE TABLE t%02d (id INTEGER PRIMARY KEY", t);
        if (t) dk_buf_printf(&ddl, ", parent INTEGER REFERENCES t%02d(id)", t - 1);
        for (int c = 0; c < 60; c++) dk_buf_printf(&ddl, ", c%d_%d %s", t, c, types[(t + c) % 7]);
        dk_buf_puts(&ddl, ");");
    }
    sql_db *db = test_duckdb_open("grammar_wide", ddl.data);
    dk_buf_free(&ddl);
    REQUIRE(db);
    char err[DK_ERRLEN];
    dk_buf text = {0};
    REQUIRE(test_sqlg_text(db, NULL, NULL, &text));
    test_log("wide schema: %zu bytes of grammar", text.len);
    sample_grammar *g = test_sqlg_parse(&text, "sql");
    sample_vocab *v = test_byte_vocab();
    sample_matcher *m = NULL;
    REQUIRE(g && v && sample_matcher_new(&m, g, v, err) == DK_OK);
    CHECK_MSG(sample_matcher_accept_bytes(m, "SELECT ", 7, err) == DK_OK, "%s", err);
    sample_matcher_free(m);
    CHECK(test_grammar_accepts(g, v, "SELECT c0_1, count(*) FROM t00 GROUP BY ALL"));
    CHECK(!test_grammar_accepts(g, v, "SELECT c11_1 FROM t11")); /* one of the tables left out */
    sample_vocab_free(v);
    sample_grammar_free(g);
    dk_buf_free(&text);
    test_walk_stats st = {0};
    test_walks(db, 1, 40, 11, &st);
    CHECK_EQ_INT(st.n_walks, 40);
    sql_db_free(db);
}
