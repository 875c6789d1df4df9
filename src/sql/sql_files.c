/*
 * sql_files.c: the user's data as one sealed read-only database, whatever form it comes in:
 * a .duckdb file, or data files (CSV, Parquet, JSON) as views of an in-memory database, each
 * named after its file (the stem, lowercased, other characters as '_'). What `duckling ask`
 * and POST /api/ask open.
 */
#include "sql/sql.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static int sql_has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static int sql_is_database_file(const char *path)
{
    return sql_has_suffix(path, ".duckdb") || sql_has_suffix(path, ".db");
}

void sql_view_name_of(const char *path, char *out, size_t size)
{
    if (size < 2) {
        if (size) out[0] = 0;
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = 0;
    if (!isalpha((unsigned char)base[0]) && base[0] != '_') out[n++] = 't';
    for (const char *p = base; *p && *p != '.' && n + 1 < size; p++)
        out[n++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    out[n] = 0;
}

int sql_db_open_data(sql_db **out, const char *const *paths, size_t n_paths, char *err)
{
    *out = NULL;
    if (n_paths == 0) return dk_fail(err, DK_ERR_ARG, "no data: a .duckdb file or data files are needed");
    if (n_paths == 1 && sql_is_database_file(paths[0])) return sql_db_open(out, paths[0], err);
    for (size_t i = 0; i < n_paths; i++)
        if (sql_is_database_file(paths[i]))
            return dk_fail(err, DK_ERR_ARG, "a database file (%s) cannot be combined with other data files", paths[i]);
    sql_db *db = NULL;
    int rc = sql_db_open(&db, NULL, err);
    for (size_t i = 0; rc == DK_OK && i < n_paths; i++) {
        char name[64];
        sql_view_name_of(paths[i], name, sizeof name);
        rc = sql_db_add_file_view(db, paths[i], name, err);
    }
    if (rc != DK_OK) {
        sql_db_free(db);
        return rc;
    }
    *out = db;
    return DK_OK;
}
