/* commands.h - the subcommands of moec; each returns the process exit status. */
#ifndef MOE_COMMANDS_H
#define MOE_COMMANDS_H
int moec_cmd_check(int argc, char **argv);   /* cmd_front.c */
int moec_cmd_stats(int argc, char **argv);   /* cmd_front.c */
int moec_cmd_build(int argc, char **argv);   /* cmd_build.c */
int moec_cmd_tune(int argc, char **argv);    /* cmd_build.c */
#endif
