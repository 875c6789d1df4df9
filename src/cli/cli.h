/*
 * cli.h: the subcommands of the duckling program. Each takes the arguments after the
 * subcommand name (argv[0] is the subcommand itself), prints its results on stdout and at
 * most one line of error on stderr, and returns the process exit status (0 on success).
 * The contracts of every command are in ../shared/DESIGN.md and docs/cli.md.
 *
 * Below the commands: small helpers shared by the command files (option values, id lists,
 * the one-line error report, loading a model). They live in args.c.
 */
#ifndef DK_CLI_H
#define DK_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

int cli_run(int argc, char **argv);
int cli_logits(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_embed(int argc, char **argv);
int cli_synth(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_convert_tokenizer(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_render(int argc, char **argv);

/* ---- helpers (args.c) ---- */

/* Prints "duckling CMD: MESSAGE" as one line on stderr (newlines in the message become spaces)
 * and returns 1, the exit status of a failed command. */
int cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option parsing: if argv[*i] is `name` (then the value is argv[*i + 1]) or `name=VALUE`,
 * sets *value, advances *i past it and returns 1; returns 0 if it is another argument and -1
 * (after cli_error) when the value is missing. */
int cli_opt_value(const char *cmd, int argc, char **argv, int *i, const char *name, const char **value);

/* Strict number parsing of a whole string: 0 on success, -1 (after cli_error naming the
 * option) when it is not a number or outside [min, max]. */
int cli_parse_long(const char *cmd, const char *option, const char *s, long min, long max, long *out);
int cli_parse_float(const char *cmd, const char *option, const char *s, float min, float max, float *out);
/* "1,2,3" (spaces allowed around ids) -> *ids (caller frees with dk_free), at least one id,
 * each in [0, INT32_MAX]. 0 or -1 after cli_error. */
int cli_parse_ids(const char *cmd, const char *option, const char *s, int32_t **ids, size_t *n_ids);

/* Loads MODEL (a path to a .gguf file) or reports the error; 0 or 1. exact: the reference
 * numerics (engine_load_params.exact) instead of the fast ones. */
int cli_load_model(const char *cmd, const char *model, bool vocab_only, int n_threads, bool exact, engine_model **out);

/* Usage text of a command, or NULL for an unknown one (main.c). */
const char *cli_usage(const char *cmd);

#endif
