/* commands.h - the subcommands of moec; each returns the process exit status. */
#ifndef MOE_COMMANDS_H
#define MOE_COMMANDS_H
#include <stdio.h>
int moec_cmd_check(int argc, char **argv);   /* cmd_front.c */
int moec_cmd_stats(int argc, char **argv);   /* cmd_front.c */
int moec_cmd_build(int argc, char **argv);   /* cmd_build.c */
int moec_cmd_tune(int argc, char **argv);    /* cmd_tune.c */
/* moec check FILE [--model NAME], with the syntax trees on out when it is not NULL: for
 * `check --dump-ast` and `build --emit ast` (cmd_front.c) */
int moec_dump_ast(const char *file, const char *model, FILE *out);
#endif
