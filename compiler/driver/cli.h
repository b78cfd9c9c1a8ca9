/* cli.h - what moec's commands share: their option parser and how they read the model.
 *
 * Exit status of every command (docs/language.md section 3): 0 success, 1 a failure (the
 * model has errors, the build or a write failed), 2 a bad command line (an unknown option,
 * a missing or bad value, no file or two).
 */
#ifndef MOE_CLI_H
#define MOE_CLI_H
#include <stdio.h>
#include "front.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* OpenBLAS as CMake found it (the executables and the tuning harness link it) */
#ifndef MOE_BLAS_INCLUDE
#define MOE_BLAS_INCLUDE "/usr/include"
#endif
#ifndef MOE_BLAS_LIBDIR
#define MOE_BLAS_LIBDIR "/usr/lib"
#endif

/* One option of a command. A value option is written `NAME VALUE` or `NAME=VALUE` (a long
 * name) and stores VALUE; a flag sets *flag = 1; a prefix option ("-O") takes the rest of
 * its argument as the value ("-O3" -> "3"). */
typedef struct cli_opt {
    const char *name, *alias;       /* "--model", "-m" (alias NULL: none) */
    const char **value;             /* value options: where the value goes */
    int *flag;                      /* flags */
    int prefix;
} cli_opt;

/* Parses argv[1..argc) of `moec CMD`: the options in opts[0..n), -h/--help (sets *help and
 * stops), and one FILE ("-" is standard input; after "--" every argument is a file).
 * Returns CLI_OK, or CLI_USAGE after saying what is wrong on stderr: "did you mean" for a
 * misspelt option, usage(stderr) after an unknown one or when there is no file. */
int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, int n, const char **file,
              int *help, void (*usage)(FILE *));

/* front_load, or front_load_stdin when file is "-". */
const md_model *cli_load(front *f, const char *file, const char *model);
/* The name diagnostics and generated code give the file: "<stdin>" for "-". */
const char *cli_file_name(const char *file);

/* Output that replaces `path` only when whole: a temporary file beside it (PATH.tmp.XXXXXX)
 * that cli_out_close renames over it, or removes when ok is 0 or a write failed. */
typedef struct cli_out { FILE *f; char tmp[4096]; const char *path; } cli_out;
/* CLI_OK, or CLI_FAILED after saying why. */
int cli_out_open(cli_out *o, const char *cmd, const char *path);
/* CLI_OK when ok and every write succeeded and the file is in place; else CLI_FAILED,
 * after saying why when a write failed. */
int cli_out_close(cli_out *o, const char *cmd, int ok);
/* Runs argv[0..n) (NULL-terminated, no shell; NULL entries mean out of memory), its standard
 * output into the file `out` (NULL: ours). 0 when it exits with status 0; else -1 after
 * printing the command line as "moec: the WHAT failed: ...", or CLI_USAGE when it cannot
 * be started. */
int cli_run(const char **argv, int n, const char *what, const char *out);
/* Writes text as the file path (replacing it). 0, or -1 with errno. */
int cli_write_file(const char *path, const char *text);
/* The C compiler executables are built with: MOEC_CC, else the one moec was built with. */
const char *cli_cc(void);
/* The -march executables are built for unless --arch says: MOEC_MARCH, else native. */
const char *cli_march(void);
/* The C compiler as the tuning database keys it: its name and moec's own compiler version. */
const char *cli_compiler_id(void);
#endif
