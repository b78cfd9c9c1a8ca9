/* cli.h - the executable's subcommands (moe-language.md section 6). */
#ifndef MOE_CLI_H
#define MOE_CLI_H
#include "args.h"
#include "rt.h"
#include "data.h"

extern const char *moe_prog_name;   /* argv[0] */
extern const char *cli_threads_from; /* where the thread count came from (main.c) */
/* the program this run uses: of the executable's programs (one per target it was built
 * for), the one for the device named by --device; without one, the cuda program where
 * there is a GPU, else the cpu program */
extern const moe_program *cli_prog;

int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_grad(int argc, char **argv);
int cli_generate(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_verify(int argc, char **argv);
int cli_export(int argc, char **argv);
int cli_quantize(int argc, char **argv);

/* every rank takes part in writing a checkpoint: each sends its share of the experts
 * (parallel.expert) or its slices (parallel.tensor, expert_slicing), and rank 0 writes */
static inline int cli_save_together(const moe_program *p) { return p->par_expert > 1 || moe_program_tensor_group(p) > 1; }

/* shared helpers (main.c) */
/* the runtime on --device (NULL: the default); MOE_RT_*; message printed on failure */
moe_rt *cli_rt(int need, int decode, const char *device);
/* weights only, from a file or a directory's newest checkpoint; the file read goes to
 * `resolved` and its step to *step (both may be NULL). 0, or the exit status after a
 * message (no --checkpoint: a usage error). */
int cli_load(moe_rt *rt, const char *path, char *resolved, size_t n, int64_t *step);
/* --teacher PATH of a student (NULL: nothing to do): its teacher's weights, and rt->kd set.
 * 0, or the exit status after a message. */
int cli_teacher(moe_rt *rt, const char *path);
/* export.c: DIR/config.json, the model as Hugging Face-style fields (GPT-2's keys, our own
 * under "moec"), written atomically; 0 or -1 with err filled */
int cli_write_config(const char *dir, char *err, size_t errlen);
/* a number for JSON: %.9g, or null when it is not finite (JSON has no nan) */
typedef struct { char s[32]; } cli_num;
cli_num cli_json_num(double v);
/* "cosine", "linear" or "constant" (MOE_SCHED_*) */
const char *cli_sched_name(int kind);
/* prints s as a JSON string on stdout (a path may hold anything) */
void cli_json_string(const char *s);
moe_data *cli_data(const char *spec);
extern const char *moe_cmd_name;    /* the running subcommand */
void cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* With several processes, every rank's rc decides together (a collective): a rank's own
 * failure is its rc, a failure elsewhere makes it MOE_EXIT_FAIL. rc itself in one process. */
int cli_agree(int rc);
/* Evaluation-mode forwards over nb batches of B consecutive windows of T tokens, from batch
 * `first` on; s gets the statistics summed over them (s->lm: the sum of the batches' mean
 * LM losses). With R ranks, rank r runs batches first + r, first + r + R, ... and s sums over
 * all ranks (a collective). 0, or -1 after a message (a device failure). */
int cli_eval_windows(moe_rt *rt, const moe_data *data, int64_t first, int64_t nb, int B, int T, moe_stats *s);
#endif
