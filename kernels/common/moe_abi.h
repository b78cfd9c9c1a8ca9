/* moe_abi.h - the constants shared by the compiler, the kernels of every target, the code
 * moec generates and the runtime: buffer classes, element types, modes, the MoE layer's
 * records, the statistics record, the arguments of a kernel launch. Definitions only, no
 * code; host and device code include it alike.
 *
 * Nothing here may change without the compiler, the kernels and the runtime changing with
 * it: it is the one description of memory that all three read.
 */
#ifndef MOE_ABI_H
#define MOE_ABI_H
#if defined(__CUDACC_RTC__)     /* NVRTC has no <stdint.h> */
typedef int int32_t;
typedef long long int64_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
#else
#include <stdint.h>
#endif

/* ---- buffer classes: one allocation each, offsets planned by the compiler (bytes) ---- */
typedef enum moe_buf {
    MOE_BUF_ACT,        /* a program's activations and kernel scratch: the planned arena */
    MOE_BUF_PARAM,      /* parameters, laid out by the parameter table */
    MOE_BUF_GRAD,       /* their gradients, in the same layout */
    MOE_BUF_OPT,        /* optimizer state: AdamW m, then v, each in the parameter layout */
    MOE_BUF_IO,         /* device values the host writes or reads: tokens, targets, statistics */
    MOE_BUF_STAGING,    /* host (pinned) memory: the host side of IO transfers, same layout as IO */
    MOE_BUF_COMM,       /* communication buffers (empty in one process) */
    MOE_BUF_TPARAM,     /* the distillation teacher's parameters, laid out by its own table */
    MOE_BUF_QPARAM,     /* int8 expert weights and their scales for the decode program (`quantize`),
                         * at the parameter table's qoffset; allocated only when such a file is loaded */
    MOE_BUF_KV,         /* the decode program's KV caches: one slot per sequence decoding at a time,
                         * slot s at s x buf_bytes[MOE_BUF_KV] (one slot's size); allocated per run */
    MOE_BUF_COUNT
} moe_buf;

/* ---- groups of ranks a collective runs over (moe_program.h says which ranks each holds) ---- */
enum { MOE_GROUP_WORLD, MOE_GROUP_EXPERT, MOE_GROUP_EXPERT_DATA, MOE_GROUP_DATA, MOE_GROUP_TENSOR };
#define MOE_MAX_BUCKETS 256     /* gradient buckets a program's backward reduces as they complete */
#define MOE_HEAD_TILE (1 << 24) /* logits the fused LM head and loss (HEAD_XENT) hold at once: whole rows,
                                 * at least MOE_HEAD_ROWS of them (64 MiB of f32 at most for V <= 128k) */
#define MOE_HEAD_ROWS 128

/* ---- element types of tensors ---- */
typedef enum moe_dtype { MOE_F32, MOE_BF16, MOE_F16, MOE_I32, MOE_F64, MOE_I8, MOE_DTYPE_COUNT } moe_dtype;

/* ---- run-time modes, and the model's enumerations as kernels see them ---- */
enum { MOE_MODE_TRAIN, MOE_MODE_EVAL, MOE_MODE_GRAD, MOE_MODE_INFER };
enum { MOE_NOISE_NONE, MOE_NOISE_JITTER, MOE_NOISE_RSAMPLE };
enum { MOE_ACT_GELU, MOE_ACT_GELU_ERF, MOE_ACT_RELU, MOE_ACT_SWIGLU };

/* ---- kernel launches (the cuda target): every generated kernel takes the run-time scalars
 * (moe_kargs) and the byte offsets of its buffers in argument order (moe_offs), so a kernel
 * is compiled once for all calls with the same sizes, wherever their tensors live ---- */
#define MOE_MAX_OFFS 16
#define MOE_BLOCK_THREADS 256   /* threads of every block */
typedef struct moe_kargs {
    unsigned char *buf[MOE_BUF_COUNT];  /* device base of each buffer class */
    int64_t size[MOE_BUF_COUNT];        /* their sizes in bytes (the emulator checks against them) */
    int B, T, mode, pad0;
    uint64_t rng;
    float loss_scale, lr;
    int opt_step;
    float grad_scale;
} moe_kargs;
typedef struct moe_offs { int64_t off[MOE_MAX_OFFS]; } moe_offs;

/* ---- step kinds (flags of a schedule step) ---- */
enum { MOE_STEP_COMPUTE = 1, MOE_STEP_COMM = 2, MOE_STEP_LOSS = 4,
       MOE_STEP_KD = 8 /* the teacher's forward and the KD loss: run only while distilling */ };

/* ---- MoE layer records (E experts, k choices per token, S tokens) ----
 * route [S, 2k] i32: per token, the expert of choice j at [j] (choice rank order) and its
 *   row in the routed buffers at [k + j], -1 when the choice was dropped.
 * weights [S, k] f32: the output weight of choice j (0 when dropped).
 * gate state [S, MOE_GSTATE_W(E, dj)] f32: probs [E], logits [E], then the jitter
 *   multipliers [dj] (dj = hidden with noisy_gate = jitter, else 0).
 * counts [MOE_COUNTS_LEN(E)] i32, written by the gate: */
#define MOE_CNT(E)          0                   /* [E] kept token-choices per expert */
#define MOE_OFF(E)          (E)                 /* [E + 1] first routed row of each expert */
#define MOE_ROWS(E)         (2 * (E))           /* = off[E]: R, the routed rows in use */
#define MOE_LOAD(E)         (2 * (E) + 1)       /* [E] token-choices per expert before dropping */
#define MOE_FIRST(E)        (3 * (E) + 1)       /* [E] first choices per expert before dropping */
#define MOE_CAP(E)          (4 * (E) + 1)       /* the capacity C */
#define MOE_DROPPED(E)      (4 * (E) + 2)       /* dropped token-choices */
#define MOE_COUNTS_LEN(E)   (4 * (E) + 3)
/* Expert parallelism (P ranks in the layer's group, L = E/P local experts each): after the
 * exchange of counts, each rank holds the received layout [MOE_XCOUNTS_LEN(L, P)] i32, a counts
 * record of its L experts (count, offsets, rows; the rest 0) whose rows are ordered expert by
 * expert and, within an expert, by source rank; then the rows each source sent to each local
 * expert, [P, L] at MOE_XSRC(L). */
#define MOE_XSRC(L)         MOE_COUNTS_LEN(L)
#define MOE_XCOUNTS_LEN(L, P) (MOE_COUNTS_LEN(L) + (P) * (L))
#define MOE_GS_PROBS(E)     0
#define MOE_GS_LOGITS(E)    (E)
#define MOE_GS_JITTER(E)    (2 * (E))
#define MOE_GSTATE_W(E, dj) (2 * (E) + (dj))
/* f64 scratch of the gate: probability sums [E], first-choice counts [E], and per token
 * a random-selection key {double, int} and a keep flag (3 doubles) */
#define MOE_GATE_SCRATCH(S, E) (2 * (E) + 3 * (S))

/* ---- the statistics record: f64 in the IO buffer ----
 * Kernels add to it; the host clears it (device memset) and reads it back (download) at the
 * points it needs the numbers: the end of a training step, of an evaluation, of a run. */
#define MOE_STAT_LM         0   /* sum over forward passes of the mean per-token LM loss */
#define MOE_STAT_GNORM      1   /* global gradient norm of the last optimizer step */
#define MOE_STAT_CLIP       2   /* the factor that step scaled the gradients by */
#define MOE_STAT_KD         3   /* sum over forward passes of tau^2 x the mean KL(teacher || student) */
#define MOE_STAT_HEAD       4
/* MoE layer i (0-based): four sums over forward passes */
#define MOE_STAT_LAYER(i)   (MOE_STAT_HEAD + 4 * (i))
#define MOE_STAT_AUX        0   /* l_aux */
#define MOE_STAT_Z          1   /* z */
#define MOE_STAT_DROPPED    2   /* dropped token-choices */
#define MOE_STAT_CHOICES    3   /* all token-choices */
/* then per-expert loads (token-choices before dropping), layer after layer; layer i starts
 * at MOE_STAT_LOADS(n_moe) + (experts of the layers before it), a table the program carries */
#define MOE_STAT_LOADS(n_moe) (MOE_STAT_HEAD + 4 * (n_moe))
#define MOE_STATS_LEN(n_moe, n_experts) (MOE_STAT_LOADS(n_moe) + (n_experts))
/* A model with a distillation teacher appends the teacher's MoE layers after that: four sums
 * per layer, then its loads, laid out the same way from MOE_STATS_LEN of the student. Nothing
 * reads them; they keep the teacher's gates from adding to the student's numbers. */
#endif
