/* main.c - the built executable's entry: dispatch, `info`, and helpers shared by commands. */
#include "cli.h"
#include "moe_start.h"
#include "moe_hash.h"
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *moe_prog_name = "moe";
const char *moe_cmd_name = "";
const moe_program *cli_prog;

static const moe_program *pick_program(int argc, char **argv) {
    const char *dev = NULL;
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--device")) dev = argv[i + 1];
    if (!moe_programs[1]) return moe_programs[0];
    const char *want = dev ? (strcmp(dev, "cpu") ? "cuda" : "cpu") : moe_device_cuda_present() ? "cuda" : "cpu";
    for (int i = 0; moe_programs[i]; i++)
        if (!strcmp(moe_programs[i]->target, want)) return moe_programs[i];
    return moe_programs[0];
}

/* every message of the executable: "PROG CMD: what is wrong" */
void cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const moe_comm *w = moe_comm_world();
    if (w->world > 1) fprintf(stderr, "%s %s (rank %d of %d): ", moe_prog_name, moe_cmd_name, w->rank, w->world);
    else fprintf(stderr, "%s %s: ", moe_prog_name, moe_cmd_name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

moe_rt *cli_rt(int need, int decode, const char *device) {
    char err[512];
    moe_rt *rt = moe_rt_create(cli_prog, device, need, decode, err, sizeof err);
    if (!rt) cli_fail("%s", err);
    return rt;
}

int cli_agree(int rc) {
    const moe_comm *w = moe_comm_world();
    if (w->world <= 1) return rc;
    double failed = rc != 0;
    w->allreduce_f64(w, &failed, 1);
    return rc ? rc : failed > 0 ? MOE_EXIT_FAIL : 0;
}

int cli_load(moe_rt *rt, const char *path, char *resolved, size_t n, int64_t *step) {
    char err[1024], file[4096];
    if (!path) { cli_fail("--checkpoint PATH is required"); return MOE_EXIT_USAGE; }
    if (moe_ckpt_resolve(path, file, sizeof file, err, sizeof err) || moe_ckpt_load(rt, file, step, err, sizeof err)) {
        cli_fail("%s", err);
        return MOE_EXIT_FAIL;
    }
    if (resolved) snprintf(resolved, n, "%s", file);
    return 0;
}

int cli_teacher(moe_rt *rt, const char *path) {
    char err[1024];
    if (!path) return 0;
    if (moe_ckpt_load_teacher(rt, path, err, sizeof err)) {
        cli_fail("--teacher: %s", err);
        return cli_prog->teacher ? MOE_EXIT_FAIL : MOE_EXIT_USAGE;
    }
    return 0;
}

cli_num cli_json_num(double v) {
    cli_num r;
    if (isfinite(v)) snprintf(r.s, sizeof r.s, "%.9g", v);
    else snprintf(r.s, sizeof r.s, "null");
    return r;
}

/* 1 when every rank passes the same h (a collective; 1 in one process). Three 21-bit parts
 * of h, summed as doubles, stay exact for any number of ranks. */
static int same_everywhere(uint64_t h) {
    const moe_comm *w = moe_comm_world();
    if (w->world <= 1) return 1;
    double part[3] = {(double)(h & 0x1fffff), (double)(h >> 21 & 0x1fffff), (double)(h >> 42 & 0x1fffff)};
    double sum[3] = {part[0], part[1], part[2]};
    w->allreduce_f64(w, sum, 3);
    return sum[0] == part[0] * w->world && sum[1] == part[1] * w->world && sum[2] == part[2] * w->world;
}

moe_data *cli_data(const char *spec) {
    char err[1024];
    moe_data *d = NULL;
    if (moe_data_open(spec, cli_prog->vocab, &d, err, sizeof err)) cli_fail("%s", err);
    /* several processes read the same data: the same name and size on every rank */
    uint64_t h = d ? util_hash_str(moe_data_name(d)) ^ (uint64_t)moe_data_tokens(d) * 0x9e3779b97f4a7c15ull : 0;
    if (!same_everywhere(h)) {
        if (d) cli_fail("the processes do not read the same data: %s holds %lld tokens here", moe_data_name(d),
                        (long long)moe_data_tokens(d));
        moe_data_close(d);
        return NULL;
    }
    return d;
}

int cli_eval_windows(moe_rt *rt, const moe_data *data, int64_t first, int64_t nb, int B, int T, moe_stats *s) {
    int mode = rt->ctx.mode;
    rt->ctx.mode = MOE_MODE_EVAL;
    moe_rt_stats_clear(rt);
    const moe_comm *w = rt->ctx.comm;   /* with R data-parallel ranks, data rank r takes batches r, r + R, ... */
    int show = nb >= 20 && isatty(2) && w->rank == 0;   /* a long evaluation shows its progress on a terminal */
    int r = moe_comm_data_rank(w), R = moe_comm_data_size(w);
    /* Under expert parallelism every forward is a collective of the expert group: a rank
     * without a batch in the last round runs one anyway (batch `first`), and its figures are
     * put back as they were before it */
    int fill = rt->prog->par_expert > 1 && R > 1;
    double *kept = fill ? malloc(sizeof(double) * (size_t)rt->prog->n_stats) : NULL;
    if (fill && !kept) { cli_fail("out of memory"); return -1; }
    for (int64_t b = first + r; b < first + nb || (fill && b - r < first + nb); b += R) {
        int real = b < first + nb;
        moe_data_window_batch(data, (real ? b : first) * B, B, T, rt->tokens, rt->targets);
        moe_rt_upload_batch(rt);
        if (!real) moe_rt_stats_copy(rt, kept, 0);
        moe_rt_run(rt, MOE_PHASE_FWD, MOE_PHASE_FWD);
        if (!real) moe_rt_stats_copy(rt, kept, 1);
        if (show && real && ((b - first) % 10 == 9 || b + 1 == first + nb))
            fprintf(stderr, "\r%s: batch %lld/%lld%s", moe_cmd_name, (long long)(b - first + 1), (long long)nb,
                    b + 1 == first + nb ? "\n" : "");
    }
    free(kept);
    moe_rt_stats_read(rt, s);
    moe_rt_stats_reduce(rt, s, 0);
    rt->ctx.mode = mode;
    if (moe_rt_error(rt)) { cli_fail("%s", moe_rt_error(rt)); return -1; }
    return 0;
}

const char *cli_sched_name(int kind) {
    return kind == MOE_SCHED_COSINE ? "cosine" : kind == MOE_SCHED_LINEAR ? "linear" : "constant";
}

void cli_json_string(const char *s) {
    json_t *v = json_string(s);     /* NULL when not UTF-8: then null */
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;
    fputs(text ? text : "null", stdout);
    free(text);
    json_decref(v);
}

int cli_info(int argc, char **argv) {
    moe_flag f[] = {{"--json", 0, "one JSON object", NULL}, {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int r = moe_args_parse(moe_prog_name, "info", argc, argv, f, 2);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const moe_program *p = cli_prog;
    const moe_teacher *tc = p->teacher;
    char stop[32] = "null";     /* distill.stop_step */
    if (tc && tc->stop_step >= 0) snprintf(stop, sizeof stop, "%lld", (long long)tc->stop_step);
    const char *by, *was, *core = moe_start_blas(&by, &was);
    char desc[sizeof ((moe_device *)0)->desc] = "";
    if (f[1].value) {           /* a device named: say whether it can run this program, and what it is */
        char err[512];
        moe_device *dev = moe_device_open(f[1].value, p->target, err, sizeof err);
        if (!dev) { cli_fail("%s", err); return 1; }
        snprintf(desc, sizeof desc, "%s", dev->desc);
        moe_device_close(dev);
    }
    int64_t n = 0, ne = 0;     /* the model's, whatever share of the experts or slice a rank holds */
    for (int i = 0; i < p->n_params; i++) {
        const moe_param_info *q = &p->params[i];
        int64_t all = q->numel * moe_param_degree(q) * q->tp;
        n += all;
        if (q->expert) ne += all;
    }
    if (f[0].value) {
        printf("{\"model\": \"%s\", \"target\": \"%s\", \"source\": ", p->model, p->target);
        cli_json_string(p->source);
        printf(", \"params\": %lld, \"expert_params\": %lld, \"param_bytes\": %lld, \"arena_bytes\": %lld, "
               "\"decode_arena_bytes\": %lld, \"decode_rows\": %lld, \"kv_slot_bytes\": %lld, \"int8_expert_bytes\": %lld, "
               "\"io_bytes\": %lld, \"align\": %lld, \"max_batch\": %lld, "
               "\"max_seq\": %lld, \"steps\": %d, \"decode_steps\": %d, \"threads\": %d, \"vocab\": %lld, "
               "\"context\": %lld, \"layers\": %lld, \"hidden\": %lld, \"heads\": %lld, \"kv_heads\": %lld, "
               "\"bias\": %s, \"ffn\": %lld, \"n_moe\": %d, \"top_k\": %d, \"expert_parallel\": %d, \"tensor_parallel\": %d, "
               "\"expert_slicing\": %d",
               (long long)n, (long long)ne, (long long)p->buf_bytes[MOE_BUF_PARAM], (long long)p->train.act_bytes,
               (long long)p->decode.act_bytes, (long long)p->decode.B_max, (long long)p->buf_bytes[MOE_BUF_KV],
               (long long)p->buf_bytes[MOE_BUF_QPARAM], (long long)p->buf_bytes[MOE_BUF_IO], (long long)p->align,
               (long long)p->train.B_max, (long long)p->train.T_max, p->train.n_steps, p->decode.n_steps,
               omp_get_max_threads(), (long long)p->vocab, (long long)p->context, (long long)p->layers,
               (long long)p->hidden, (long long)p->heads, (long long)p->kv_heads, p->bias ? "true" : "false",
               (long long)p->ffn, p->n_moe, p->top_k, p->par_expert, p->par_tensor, p->par_expert_slicing);
        printf(", \"train\": {\"batch\": %lld, \"accumulate\": %lld, \"steps\": %lld, \"seed\": %lld, \"schedule\": \"%s\", "
               "\"lr\": %.9g, \"min_lr\": %.9g, \"warmup\": %lld, \"beta1\": %.9g, \"beta2\": %.9g, \"eps\": %.9g, "
               "\"weight_decay\": %.9g, \"grad_clip\": %.9g, \"eval_every\": %lld, \"eval_batches\": %lld, "
               "\"checkpoint_every\": %lld, \"recompute\": %s}",
               (long long)p->batch, (long long)p->accumulate, (long long)p->train_steps, (long long)p->seed,
               cli_sched_name(p->schedule), p->lr, p->min_lr, (long long)p->warmup, p->beta1, p->beta2, p->eps,
               p->weight_decay, p->grad_clip, (long long)p->eval_every, (long long)p->eval_batches,
               (long long)p->checkpoint_every, p->recompute ? "true" : "false");
        if (p->n_moe)
            printf(", \"moe\": {\"capacity_factor\": %.9g, \"eval_capacity_factor\": %.9g, \"aux_loss\": %.9g, "
                   "\"z_loss\": %.9g}", p->capacity_factor, p->eval_capacity_factor, p->aux_loss, p->z_loss);
        if (tc)
            printf(", \"distill\": {\"teacher\": \"%s\", \"temperature\": %.9g, \"weight\": %.9g, \"stop_step\": %s, "
                   "\"teacher_param_bytes\": %lld}", tc->model, tc->temperature, tc->weight, stop,
                   (long long)p->buf_bytes[MOE_BUF_TPARAM]);
        printf(", \"arch\": ");
        cli_json_string(moe_build_arch);
        printf(", \"isa\": [");
        for (int i = 0; moe_build_isa[i]; i++) printf("%s\"%s\"", i ? ", " : "", moe_build_isa[i]);
        printf("], \"threads_from\": ");
        cli_json_string(cli_threads_from);
        printf(", \"omp_wait\": ");
        cli_json_string(moe_start_wait());
        printf(", \"blas\": ");
        cli_json_string(openblas_get_config());
        printf(", \"blas_core\": ");
        cli_json_string(core);
        printf(", \"blas_core_chosen_by\": \"%s\"", by);
        if (was) {
            printf(", \"blas_core_was\": ");
            cli_json_string(was);
        }
        if (desc[0]) {      /* the device named */
            printf(", \"device\": ");
            cli_json_string(f[1].value);
            printf(", \"device_desc\": ");
            cli_json_string(desc);
        }
        printf("}\n");
        return 0;
    }
    printf("model %s (from %s), target %s", p->model, p->source, p->target);
    for (int i = 0; moe_programs[1] && moe_programs[i]; i++)
        printf("%s%s", i ? ", " : " (this executable carries ", moe_programs[i]->target);
    printf("%s\n", moe_programs[1] ? ")" : "");
    printf("  vocab %lld, context %lld, %lld layers, hidden %lld, %lld heads", (long long)p->vocab,
           (long long)p->context, (long long)p->layers, (long long)p->hidden, (long long)p->heads);
    if (p->kv_heads != p->heads) printf(" (%lld key/value)", (long long)p->kv_heads);
    printf(", ffn %lld%s\n", (long long)p->ffn, p->bias ? "" : ", no biases");
    printf("  parameters %lld (%lld in experts), %d MoE layers, top-%d", (long long)n, (long long)ne, p->n_moe, p->top_k);
    if (p->par_expert > 1)
        printf("; experts spread over groups of up to %d processes (each holds its share)", p->par_expert);
    if (p->par_tensor > 1)
        printf("; attention and MLPs split over tensor groups of %d processes (each holds a slice)", p->par_tensor);
    if (p->par_expert_slicing > 1)
        printf("; each expert split over groups of %d processes (expert slicing)", p->par_expert_slicing);
    printf("\n");
    printf("  train: batch %lld x %lld tokens (accumulate %lld), %lld steps, seed %lld; AdamW lr %g, %s to %g after "
           "%lld warmup steps, betas %g/%g, eps %g, weight decay %g, clip %g; eval every %lld (%lld batches), "
           "checkpoint every %lld%s\n",
           (long long)p->batch, (long long)p->context, (long long)p->accumulate, (long long)p->train_steps,
           (long long)p->seed, p->lr, cli_sched_name(p->schedule), p->min_lr, (long long)p->warmup, p->beta1, p->beta2,
           p->eps, p->weight_decay, p->grad_clip, (long long)p->eval_every, (long long)p->eval_batches,
           (long long)p->checkpoint_every, p->recompute ? "; blocks recomputed in the backward (recompute)" : "");
    if (p->n_moe)
        printf("  moe: capacity factor %g (eval %g), aux_loss %g, z_loss %g\n", p->capacity_factor,
               p->eval_capacity_factor, p->aux_loss, p->z_loss);
    if (tc)
        printf("  distill: teacher %s (%.2f MiB of parameters, run with --teacher CHECKPOINT), temperature %g, weight %g, "
               "until step %s\n", tc->model, p->buf_bytes[MOE_BUF_TPARAM] / 1048576.0, tc->temperature, tc->weight,
               tc->stop_step >= 0 ? stop : "the end (no stop_step)");
    printf("  %s", p->summary);
    printf("  built for -march=%s:", moe_build_arch);
    for (int i = 0; moe_build_isa[i]; i++) printf(" %s", moe_build_isa[i]);
    printf("%s\n", moe_build_isa[0] ? "" : " no extensions beyond the baseline");
    printf("  threads %d (from %s), idle threads wait: %s\n", omp_get_max_threads(), cli_threads_from,
           moe_start_wait());
    printf("  %s, kernels %s chosen by %s", openblas_get_config(), core, by);
    if (was) printf(" (OpenBLAS had picked %s for this processor)", was);
    printf("\n");
    if (desc[0]) printf("  device %s: %s\n", f[1].value, desc);
    return 0;
}

static void usage(FILE *out) {
    fprintf(out,
        "usage: %s <command> [options]     (model %s, compiled by moec)\n"
        "  train     [--data FILE|synthetic] [--eval-data FILE] [--steps N] [--checkpoint DIR] [--resume|--overwrite]\n"
        "            [--log FILE.jsonl] [--seed N] [--lr X] [--min-lr X] [--warmup N] [--steps-total N]\n"
        "            [--eval-every N] [--eval-batches N] [--teacher CKPT]\n"
        "  eval      --checkpoint PATH --data FILE [--batch B] [--seq T] [--max-batches N] [--teacher CKPT]\n"
        "  grad      --checkpoint PATH --data FILE --out FILE [--batch B] [--seq T] [--teacher CKPT]\n"
        "  generate  --checkpoint PATH [--prompt TEXT|IDS] [--tokens N] [--temperature T] [--top-k K] [--top-p P]\n"
        "            [--end ID] [--seed N] [--check-cache] | [--prompts FILE.jsonl --batch B --out FILE.jsonl]\n"
        "  bench     [--train|--grad|--infer] [--batch B] [--seq T] [--steps N] [--warmup N] [--teacher CKPT|init]\n"
        "            [--json]; --decode [--batch B] [--prompt-len P] [--tokens N] [--json]\n"
        "  info      [--json]\n"
        "  verify    [--batch B] [--seq T] [--against cpu|cuda-emu]   (each op of the cuda program against the\n"
        "            cpu program's, --target all; or against itself on the emulator)\n"
        "  export    --hf DIR --checkpoint PATH   (a Hugging Face checkpoint of a GPT-2- or Mixtral-shaped model)\n"
        "  quantize  --checkpoint PATH --out PATH (int8 expert weights, one scale per output channel, for inference)\n"
        "every command takes --device cpu|cuda|cuda-emu, --threads N, --comm-timeout SECONDS (default 300) and -h;\n"
        "exit status 0 ok, 1 failure, 2 usage error;\n"
        "Ctrl-C in train saves a checkpoint after the current step (a second one stops at once)\n",
        moe_prog_name, cli_prog->model);
}

/* Flag `name N` among a command's flags, taken out of argv (every command takes it): 0 when
 * absent, 1 with *v in [lo, hi], -1 after a message. */
static int take_flag(int *argc, char **argv, const char *name, long lo, long hi, const char *what, long *v) {
    for (int a = 2; a < *argc; a++) {
        if (strcmp(argv[a], name)) continue;
        char *end = NULL;
        const char *s = a + 1 < *argc ? argv[a + 1] : NULL;
        *v = s ? strtol(s, &end, 10) : 0;
        if (!s || end == s || *end || *v < lo || *v > hi) {
            cli_fail("%s takes %s from %ld to %ld%s%s%s", name, what, lo, hi, s ? ", not '" : "", s ? s : "",
                     s ? "'" : "");
            return -1;
        }
        memmove(argv + a, argv + a + 2, sizeof(char *) * (size_t)(*argc - a - 1)); /* and the NULL */
        *argc -= 2;
        return 1;
    }
    return 0;
}

/* Threads of other programs running on this machine's processors now: the kernel's count of
 * runnable threads (/proc/stat procs_running, which counts this one), the least of 5 looks
 * 2 ms apart so that a passing process does not count. 0 when it cannot tell: no /proc, or
 * the processors this process may use are not all the machine's (a container's share of a
 * larger host, whose count covers the other processors too). */
static int busy_processors(void) {
    int least = -1, cpus = 0;
    for (int i = 0; i < 5; i++) {
        FILE *f = fopen("/proc/stat", "r");
        if (!f) return 0;
        char line[256];
        int running = -1;
        while (fgets(line, sizeof line, f)) {
            if (!i && !strncmp(line, "cpu", 3) && line[3] >= '0' && line[3] <= '9') cpus++;
            if (sscanf(line, "procs_running %d", &running) == 1) break;
        }
        fclose(f);
        if (running < 1) return 0;
        if (least < 0 || running < least) least = running;
        if (i < 4) nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
    return cpus == omp_get_num_procs() ? least - 1 : 0;
}

/* The flags every command takes. --comm-timeout S: how long a collective of several
 * processes may wait before the job ends (moe_comm_set_timeout; 0 waits forever).
 * The threads of this process, and where the count came from (info shows it): --threads N;
 * else OMP_NUM_THREADS; else, as one of several MPI processes on this host, the host's
 * processors divided between them (each taking all would oversubscribe the cores); else
 * the processors that other programs are not keeping busy (busy_processors: a thread that
 * shares a core with a busy program holds every barrier of the others up), at least one.
 * 0, or an exit status after a message. */
const char *cli_threads_from = "every processor";
static int global_flags(int *argc, char **argv) {
    long n, s;
    int t = take_flag(argc, argv, "--threads", 1, 4096, "a number of threads", &n);
    int c = t < 0 ? 0 : take_flag(argc, argv, "--comm-timeout", 0, 86400 * 7, "seconds", &s);
    if (t < 0 || c < 0) return MOE_EXIT_USAGE;
    static char who[96];
    snprintf(who, sizeof who, "%s %s", moe_prog_name, moe_cmd_name);
    moe_comm_set_timeout(c ? (double)s : 300.0, who);
    if (t) {
        omp_set_num_threads((int)n);
        cli_threads_from = "--threads";
        return 0;
    }
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");   /* Open MPI; MPICH's hydra: */
    if (!local) local = getenv("MPI_LOCALNRANKS");
    if (getenv("OMP_NUM_THREADS")) {
        cli_threads_from = "OMP_NUM_THREADS";
    } else if (local && atoi(local) > 1) {
        int share = omp_get_num_procs() / atoi(local);
        omp_set_num_threads(share > 1 ? share : 1);
        cli_threads_from = "the host's processors shared by its MPI processes";
    } else {
        int procs = omp_get_num_procs(), busy = busy_processors();
        if (busy > 0 && procs > 1) {
            static char from[96];
            omp_set_num_threads(busy < procs ? procs - busy : 1);
            snprintf(from, sizeof from, "the processors not busy at start: %d of %d busy", busy < procs ? busy : procs,
                     procs);
            cli_threads_from = from;
        }
    }
    return 0;
}

/* Started by a launcher (mpirun, srun) as one of several processes: join them, for the
 * commands that run data-parallel, with a layout that several processes can run. 0 to go on
 * (in one process, or as a rank of several), else the exit status after a message. */
static int start_world(const char *cmd, int *argc, char ***argv) {
    const char *var = NULL;
    int n = moe_comm_launched(&var);
    const moe_program *p = cli_prog;
    if (n <= 1 && p->par_expert > 1 && strcmp(cmd, "info")) {
        cli_fail("model %s is laid out for expert parallelism (parallel.expert = %d): each process holds a share of "
                 "the experts, so it runs under mpirun on a multiple of %d processes. For one process, build the "
                 "model with parallel.expert = 1: checkpoints hold every expert and load in either", p->model,
                 p->par_expert, p->par_expert);
        return MOE_EXIT_USAGE;
    }
    int T = moe_program_tensor_group(p);
    const char *key = p->par_tensor > 1 ? "tensor" : "expert_slicing";   /* what makes the tensor groups */
    if (n <= 1 && T > 1 && strcmp(cmd, "info")) {
        cli_fail("model %s is laid out for %s slicing (parallel.%s = %d): each process holds a slice of the %s, "
                 "so it runs under mpirun on a multiple of %d processes. For one process, build the model with "
                 "parallel.%s = 1: checkpoints hold whole tensors and load in either", p->model,
                 p->par_tensor > 1 ? "tensor" : "expert", key, T,
                 p->par_tensor > 1 ? "attention and MLP layers" : "experts", T, key);
        return MOE_EXIT_USAGE;
    }
    if (n <= 1) return 0;
    if (strcmp(cmd, "train") && strcmp(cmd, "eval") && strcmp(cmd, "grad")) {
        cli_fail("started as one of %d processes (%s), but %s runs in one process (train, eval and grad run on "
                 "several); start it without mpirun", n, var, cmd);
        return MOE_EXIT_USAGE;
    }
    /* the cuda target's program (on the cuda device or the emulator) makes no collective calls:
     * its gradients would not be averaged over the ranks */
    if (strcmp(p->target, "cpu")) {
        cli_fail("started as one of %d processes (%s), but several processes run the cpu target's program "
                 "(--device cpu): the cuda target's collectives need NCCL, which is not built yet", n, var);
        return MOE_EXIT_USAGE;
    }
    char err[256];
    const moe_comm *w = moe_comm_start(argc, argv, err, sizeof err);
    if (!w) {
        cli_fail("started as one of %d processes (%s), but %s", n, var, err);
        return MOE_EXIT_FAIL;
    }
    if (w->world % T) {
        if (w->rank == 0)
            cli_fail("model %s splits its layers over tensor groups of %d processes (parallel.%s), which do not "
                     "divide the %d started: start a multiple of %d", p->model, T, key, w->world, T);
        return MOE_EXIT_FAIL;
    }
    moe_comm_set_layout(T, p->par_alltoall, p->par_ranks_per_node);
    /* the same model and plan everywhere: several hosts may hold different builds */
    if (!same_everywhere(util_hash_str(moe_model_text) ^ util_hash_str(p->model) ^ util_hash_str(p->target) ^
                         (uint64_t)p->buf_bytes[MOE_BUF_PARAM] ^ (uint64_t)p->train.act_bytes << 20)) {
        cli_fail("the processes do not run the same executable: model %s (from %s) here differs from another rank's",
                 p->model, p->source);
        return MOE_EXIT_FAIL;
    }
    int R = w->world / T;       /* data-parallel ranks */
    for (int i = 0; i < p->n_params; i++) {     /* each expert group of P data ranks holds every expert once */
        const moe_param_info *q = &p->params[i];
        int P = moe_param_degree(q);
        if (R % P == 0) continue;
        if (w->rank == 0 && T > 1)
            cli_fail("model %s spreads the experts of %s over %d data-parallel ranks (parallel.expert), which do not "
                     "divide the %d of %d processes in tensor groups of %d: start a multiple of %d", p->model, q->name,
                     P, R, w->world, T, P * T);
        else if (w->rank == 0)
            cli_fail("model %s spreads the experts of %s over %d processes (parallel.expert), which do not divide "
                     "the %d started: start a multiple of %d", p->model, q->name, P, w->world, P);
        return MOE_EXIT_FAIL;
    }
    if (p->par_data > 0 && p->par_data != R) {
        if (w->rank == 0 && T > 1)
            cli_fail("model %s asks for parallel.data = %d x tensor %d = %d processes, but %d were started", p->model,
                     p->par_data, T, p->par_data * T, w->world);
        else if (w->rank == 0)
            cli_fail("model %s asks for parallel.data = %d processes, but %d were started", p->model, p->par_data,
                     w->world);
        return MOE_EXIT_FAIL;
    }
    return 0;
}

#if defined(__x86_64__) || defined(__i386__)
/* whether this processor has extension f (a name of moe_build_isa); 1 for a name this check
 * does not know (clang 14's __builtin_cpu_supports knows neither f16c nor avx512fp16) */
static int cpu_has(const char *f) {
#define HAS(name) if (!strcmp(f, name)) return __builtin_cpu_supports(name) != 0;
    HAS("sse3") HAS("ssse3") HAS("sse4.1") HAS("sse4.2") HAS("sse4a") HAS("popcnt") HAS("avx") HAS("avx2")
    HAS("fma") HAS("bmi") HAS("bmi2") HAS("avx512f") HAS("avx512cd") HAS("avx512bw") HAS("avx512dq")
    HAS("avx512vl") HAS("avx512vnni") HAS("avx512bf16")
#ifndef __clang__
    HAS("f16c") HAS("avx512fp16")
#endif
#undef HAS
    return 1;
}
#endif

/* The generated code may use every extension its -march allowed (moe_build_isa): on a processor
 * without one it would die of SIGILL mid-run, so the executable says so before anything runs.
 * This file is compiled for the baseline processor. 0, or 1 after a message. */
static int check_isa(void) {
#if defined(__x86_64__) || defined(__i386__)
    char missing[256] = "";
    size_t used = 0;
    __builtin_cpu_init();
    for (int i = 0; moe_build_isa[i]; i++)
        if (!cpu_has(moe_build_isa[i]) && used < sizeof missing) {
            int k = snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "", moe_build_isa[i]);
            used += k > 0 ? (size_t)k : 0;
        }
    if (missing[0]) {
        fprintf(stderr, "%s: this executable was built for -march=%s, and this processor lacks %s: it cannot run "
                "here. Build it on this machine (moec build's default --arch native), or for the oldest processor "
                "it must run on (moec build --arch x86-64-v3, x86-64-v2 or x86-64)\n", moe_prog_name, moe_build_arch,
                missing);
        return 1;
    }
#endif
    return 0;
}

int main(int argc, char **argv) {
    moe_prog_name = argv[0];
    if (check_isa()) return MOE_EXIT_FAIL;
    moe_start(argv);
    cli_prog = pick_program(argc, argv);
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"train", cli_train}, {"eval", cli_eval}, {"grad", cli_grad}, {"generate", cli_generate},
        {"bench", cli_bench}, {"info", cli_info}, {"verify", cli_verify}, {"export", cli_export},
        {"quantize", cli_quantize},
    };
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) { usage(stdout); return 0; }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmd, cmds[i].name)) {
            moe_cmd_name = cmds[i].name;
            if (global_flags(&argc, argv)) return MOE_EXIT_USAGE;
            for (int a = 2; a + 1 < argc; a++)      /* a device name is checked as flags are: a usage error */
                if (!strcmp(argv[a], "--device") && !moe_device_known(argv[a + 1])) {
                    cli_fail("unknown device '%s' (cpu, cuda, cuda-emu)", argv[a + 1]);
                    return MOE_EXIT_USAGE;
                }
            int rc = start_world(cmd, &argc, &argv);
            if (rc) {       /* every rank found the same: leave together */
                moe_comm_finish(0);
                return rc;
            }
            rc = cmds[i].fn(argc - 2, argv + 2);
            moe_comm_finish(rc);
            return rc;
        }
    fprintf(stderr, "%s: unknown command '%s'\n", moe_prog_name, cmd);
    usage(stderr);
    return 2;
}
