/* cli.h - the executable's subcommands (moe-language.md section 6). */
#ifndef MOE_CLI_H
#define MOE_CLI_H
#include "args.h"
#include "rt.h"
#include "data.h"

extern const char *moe_prog_name;   /* argv[0] */

int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_grad(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_info(int argc, char **argv);

/* shared helpers (main.c) */
int cli_check_device(const char *dev);               /* 0 for cpu (or unset) */
moe_rt *cli_rt(int need, int decode);                /* MOE_RT_*; message printed on failure */
int cli_load(moe_rt *rt, const char *path);          /* weights only; message printed */
moe_data *cli_data(const char *spec);
extern const char *moe_cmd_name;    /* the running subcommand */
void cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* sum over MoE layers of ctx stats (aux, z, dropped, choices) */
void cli_moe_sums(const moe_rt *rt, double out[4]);
#endif
