/*
 * cli.h: the subcommands of the duckling program. Each takes the arguments after the
 * subcommand name (argv[0] is the subcommand itself), prints its results on stdout and at
 * most one line of error on stderr, and returns the process exit status (0 on success).
 * The contracts of every command are in ../shared/DESIGN.md and docs/cli.md.
 */
#ifndef DK_CLI_H
#define DK_CLI_H

int cli_run(int argc, char **argv);
int cli_logits(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_embed(int argc, char **argv);
int cli_synth(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_convert_tokenizer(int argc, char **argv);

#endif
