/* args.h - the executable's flag parser: `--name value` and `--flag` pairs, checked
 * against a per-command table, so every command rejects unknown flags the same way. */
#ifndef MOE_ARGS_H
#define MOE_ARGS_H

typedef struct moe_flag {
    const char *name;       /* "--steps" */
    int takes_value;
    const char *help;
    const char *value;      /* set by the parser: the value, or "1" for a present switch */
} moe_flag;

/* Exit statuses of the executable (and of moec): 0 success, 1 a failure (bad data, a
 * checkpoint that does not fit, a device error), 2 a usage error (an unknown or
 * misspelled flag, a malformed or out-of-range value, a required flag missing). */
enum { MOE_EXIT_OK = 0, MOE_EXIT_FAIL = 1, MOE_EXIT_USAGE = 2 };

/* Returns 0, 1 for -h/--help (usage printed), or -1 after printing an error (a near flag
 * named as a hint). */
int moe_args_parse(const char *prog, const char *cmd, int argc, char **argv, moe_flag *flags, int n);
const char *moe_arg(const moe_flag *flags, int n, const char *name);
/* integer flag with a default and a lower bound; -1 on a malformed value (message printed) */
int moe_arg_int(const moe_flag *flags, int n, const char *name, long long def, long long min, long long max,
                long long *out);
int moe_arg_double(const moe_flag *flags, int n, const char *name, double def, double *out);
#endif
