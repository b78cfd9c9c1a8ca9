/* cuda.c - the CUDA renderer: the lowered kernel lists as one self-contained CUDA source.
 *
 * The source is the kernel templates of kernels/cuda (and the shared headers of
 * kernels/common), inlined in order, then one `extern "C" __global__` function per call and
 * part with distinct sizes: `k<n>_<kernel>_p<part>(const moe_kargs ka, const moe_offs o)`,
 * which calls the template with every size a literal, each buffer at the byte offset the
 * launch passes in o, and the run-time scalars (B, T, pos, mode, rng, loss scale, lr, AdamW
 * step) from ka. The 24 identical layers of a model are thus one set of kernels. A kernel
 * whose work needs a grid-wide barrier has several parts, each a launch (the table below);
 * every template loops grid-stride, so the grid is sized here from the compiled maxima and
 * stays correct for smaller batches. What NVRTC and `nvcc -cubin` compile is exactly this
 * text (`moec build --target cuda --emit cuda`).
 *
 * The plan (cg_cuda_plan_make) lists the distinct kernels, whether their blocks
 * synchronise, and every launch of each program's steps with its grid and offsets.
 * Communication calls are not kernels: in one process the all-reduce is the identity.
 */
#include "target.h"
#include "cg.h"
#include "../util/arena.h"
#include <stdlib.h>
#include <string.h>

/* written beside the host source: the ABI headers, and the emulation prelude with which
 * the host C++ compiler builds the cuda-emu form of kernels.cu */
const char *const cg_cuda_files[] = {"moe_abi.h", "moe_half.h", "moe_rng.h", "moe_gate.h", "moe_program.h",
                                     "cu_emu.h", "cu_common.cuh", "cu_dense.cuh", "cu_attn.cuh", "cu_moe.cuh", NULL};

/* the files inlined into the source, in order */
static const char *const cuda_files[] = {"moe_abi.h", "moe_half.h", "moe_rng.h", "moe_gate.h", "cu_common.cuh",
                                         "cu_dense.cuh", "cu_attn.cuh", "cu_moe.cuh", NULL};

/* grid kinds: a thread per item, a block per row, one thread, one block, a block per 4096
 * outputs (cu_grouped_mm's 64 x 64 tiles; twice the work for its 32 x 64 ones), a block per
 * 64 query rows (tiled attention), none (host) */
enum { G_ITEMS, G_ROWS, G_ONE, G_BLOCK, G_TILES, G_QTILES, G_HOST };
#define CU_NT MOE_BLOCK_THREADS
#define CU_GRID_MAX 65535

/* a kernel's parts: grid kind and the work that sizes it, "a*b*c" over the call's argument
 * names (a buffer counts its elements at the compiled maximum, a run-time scalar its maximum) */
typedef struct { int kind; const char *work; } cu_part;
typedef struct { const char *kernel; int nparts; cu_part part[4]; } cu_kernel;

static const cu_kernel kernels[] = {
    {"embed_fwd", 1, {{G_ITEMS, "B*T*C"}}},
    {"embed_bwd", 1, {{G_ITEMS, "C"}}},
    {"layernorm_fwd", 1, {{G_ROWS, "S"}}},
    {"layernorm_bwd", 2, {{G_ROWS, "S"}, {G_ITEMS, "C"}}},
    {"rmsnorm_fwd", 1, {{G_ROWS, "S"}}},
    {"rmsnorm_bwd", 2, {{G_ROWS, "S"}, {G_ITEMS, "C"}}},
    {"matmul_fwd", 1, {{G_ITEMS, "S*N"}}},
    {"matmul_res_fwd", 1, {{G_ITEMS, "S*N"}}},
    {"matmul_bwd", 3, {{G_ITEMS, "S*K"}, {G_ITEMS, "K*N"}, {G_ITEMS, "N"}}},
    {"gemm_init", 1, {{G_ITEMS, "S*N"}}},
    {"accumulate", 1, {{G_ITEMS, "n"}}},
    {"add_fwd", 1, {{G_ITEMS, "n"}}},
    {"copy_rows", 1, {{G_ITEMS, "dst"}}},
    {"rope_fwd", 1, {{G_ITEMS, "y"}}},
    {"rope_bwd", 1, {{G_ITEMS, "dx"}}},
    {"attention_fwd", 1, {{G_ITEMS, "B*T*H"}}},
    {"attention_fwd_tiled", 1, {{G_QTILES, "B*T*H"}}},     /* (blocks walk the B H ceil(T/64) tiles) */
    {"attention_bwd", 2, {{G_ITEMS, "B*T*H"}, {G_ITEMS, "B*T*KV"}}},
    {"attention_bwd_tiled", 2, {{G_QTILES, "B*T*H"}, {G_QTILES, "B*T*KV"}}},
    {"attention_decode", 2, {{G_ITEMS, "S*C"}, {G_ROWS, "S*H"}}},
    {"act_fwd", 1, {{G_ITEMS, "y"}}},
    {"cast", 1, {{G_ITEMS, "y"}}},
    {"act_bwd", 1, {{G_ITEMS, "dy"}}},
    {"moe_gate_fwd", 4, {{G_ITEMS, "S"}, {G_ROWS, "E"}, {G_BLOCK, ""}, {G_ITEMS, "S"}}},
    {"moe_gate_bwd", 3, {{G_ITEMS, "S"}, {G_ITEMS, "S*d"}, {G_ITEMS, "d*E"}}},
    {"moe_dispatch_fwd", 1, {{G_ITEMS, "S*k*d"}}},
    {"moe_dispatch_bwd", 1, {{G_ITEMS, "S*d"}}},
    {"moe_expert_fwd", 1, {{G_ITEMS, "y"}}},
    {"moe_expert_bwd", 3, {{G_ITEMS, "x"}, {G_ITEMS, "E*K*N"}, {G_ITEMS, "E*N"}}},
    {"moe_expert_fwd_tiled", 1, {{G_TILES, "y"}}},
    {"moe_expert_bwd_tiled", 3, {{G_TILES, "x"}, {G_TILES, "E*K*N"}, {G_ITEMS, "E*N"}}},
    {"moe_expert_fwd_tiled32", 1, {{G_TILES, "2*y"}}},     /* tiles of 32 rows: twice as many */
    {"moe_expert_bwd_tiled32", 3, {{G_TILES, "2*x"}, {G_TILES, "E*K*N"}, {G_ITEMS, "E*N"}}},
    {"moe_expert_bias", 1, {{G_ITEMS, "y"}}},
    {"moe_combine_fwd", 1, {{G_ITEMS, "S*d"}}},
    {"moe_combine_bwd", 1, {{G_ITEMS, "S"}}},
    {"xent_fwd", 2, {{G_ITEMS, "S"}, {G_ONE, ""}}},
    {"xent_bwd_mean", 1, {{G_ITEMS, "S*V"}}},
    {"kd_loss_fwd", 2, {{G_ITEMS, "S"}, {G_ONE, ""}}},
    {"kd_loss_bwd", 1, {{G_ITEMS, "S*V"}}},
    {"grad_norm", 1, {{G_BLOCK, ""}}},
    {"adamw_step", 1, {{G_ITEMS, "n"}}},
    {"adamw_multi", 1, {{G_ITEMS, "n"}}},
    {"allreduce_start", 1, {{G_HOST, ""}}},
    {"allreduce_finish", 1, {{G_HOST, ""}}},
};

static const cu_kernel *find_kernel(const char *name) {
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++)
        if (!strcmp(kernels[i].kernel, name)) return &kernels[i];
    return NULL;
}

/* the product named by a work string; -1 when it names no argument (a table error) */
static int64_t work_of(const ir_graph *g, const lw_call *k, const char *work) {
    if (!*work) return 1;
    int64_t w = 1;
    for (const char *p = work; *p;) {
        const char *e = strchr(p, '*');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int64_t v = (*p >= '0' && *p <= '9') ? atoll(p) : lw_arg_max(g, k, p, len);
        if (v < 0) return -1;
        w *= v;
        p += len + (e != NULL);
    }
    return w;
}

static unsigned grid_of(int kind, int64_t work) {
    int64_t n = kind == G_ITEMS ? (work + CU_NT - 1) / CU_NT : kind == G_ROWS ? work
              : kind == G_TILES ? (work + 4095) / 4096 : kind == G_QTILES ? (work + 63) / 64 : 1;
    return (unsigned)(n < 1 ? 1 : n > CU_GRID_MAX ? CU_GRID_MAX : n);
}

/* ---- arguments, as in the CPU renderer but reading the launch's scalars from ka and each
 * buffer's byte offset from the launch's offset list o (so that kernels differing only in
 * where their tensors live are one kernel) ---- */
static const char *ref_expr(arena *a, const lw_ref *r, int slot) {
    if (r->null) return "nullptr";
    return arena_printf(a, "%s(%s, o.off[%d], %lld)", cg_dtype_macro[r->dtype], cg_buf_macro[r->buf], slot,
                        (long long)r->bytes);
}

/* the argument list of a call; buffer j takes offset slot j in order */
static const char *args_expr(arena *a, const lw_call *k) {
    char *line = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&line, &len);
    if (!m) return NULL;
    int slot = 0;
    for (int j = 0; j < k->nargs; j++) {
        const lw_arg *x = &k->args[j];
        fputs(", ", m);
        switch (x->kind) {
        case LW_BUF: fputs(ref_expr(a, &x->ref, x->ref.null ? -1 : slot), m); slot += !x->ref.null; break;
        case LW_INT: fprintf(m, "%lld", (long long)x->i); break;
        case LW_REAL: fprintf(m, "%.17g", x->f); break;
        case LW_RT: fprintf(m, "%s", cg_rt_expr(a, x->rt, x->i, "ka.")); break;
        case LW_ROWS:
            if (x->device) { fprintf(m, "K_ROWS_DEV(%s)", ref_expr(a, &x->ref, slot)); slot++; }
            else fprintf(m, "K_ROWS(%s)", cg_rt_expr(a, x->rt, x->i, "ka."));
            break;
        }
    }
    fclose(m);
    const char *res = arena_printf(a, "%s", line);
    free(line);
    return res;
}

/* the byte offsets of a call's buffers, in slot order */
static int offsets_of(const lw_call *k, int64_t *off) {
    int n = 0;
    for (int j = 0; j < k->nargs; j++) {
        const lw_arg *x = &k->args[j];
        if ((x->kind == LW_BUF && !x->ref.null) || (x->kind == LW_ROWS && x->device)) {
            if (n < MOE_MAX_OFFS) off[n] = x->ref.offset;
            n++;
        }
    }
    return n;
}

/* ---- the plan: distinct kernels, and every launch of both programs ---- */
static int find_or_add(cg_cuda_plan *pl, arena *a, const lw_call *k, const cu_kernel *ki, int part,
                       const char *body) {
    for (int i = 0; i < pl->n_kernels; i++)
        if (!strcmp(pl->kernels[i].body, body)) return i;
    if (pl->n_kernels == pl->cap_kernels) {
        int cap = pl->cap_kernels ? 2 * pl->cap_kernels : 64;
        cg_cuda_kernel *nk = ARENA_ARRAY(a, cg_cuda_kernel, cap);
        if (!nk) return -1;
        if (pl->n_kernels) memcpy(nk, pl->kernels, sizeof *nk * (size_t)pl->n_kernels);
        pl->kernels = nk;
        pl->cap_kernels = cap;
    }
    cg_cuda_kernel *e = &pl->kernels[pl->n_kernels];
    int kind = ki->part[part].kind;
    e->name = arena_printf(a, "k%d_%s%s%s_p%d", pl->n_kernels, k->kernel, k->variant ? "_v" : "",
                           k->variant ? arena_printf(a, "%d", k->variant) : "", part);
    e->body = body;
    e->prelude = NULL;
    e->sync = kind == G_ROWS || kind == G_BLOCK || kind == G_TILES || kind == G_QTILES;
    e->serial = kind == G_ONE;
    return e->name ? pl->n_kernels++ : -1;
}

/* the launch of part `part` of call k, with `extra` (", ..." or "") after its arguments; the
 * kernel's index in *id */
static int launch_of(cg_cuda_plan *pl, arena *a, const lw_program *p, const lw_call *k, int part, const char *extra,
                     cg_cuda_launches *out, int *id) {
    const cu_kernel *ki = find_kernel(k->kernel);
    if (!ki) return -2;
    for (int j = 0; j < k->nargs; j++)      /* a buffer for one rank of a tensor group: no CUDA form */
        if (k->args[j].kind == LW_BUF && k->args[j].ref.group_first) return -2;
    const char *args = args_expr(a, k);
    int64_t w = work_of(p->g, k, ki->part[part].work);
    if (!args) return -1;
    if (w < 0) return -2;
    const char *body = arena_printf(a, "cu_%s(%d%s%s);", k->kernel, part, args, extra);
    *id = body ? find_or_add(pl, a, k, ki, part, body) : -1;
    if (*id < 0) return -1;
    cg_cuda_launch *l = &out->launch[out->n++];
    memset(l, 0, sizeof *l);
    l->kernel = *id;
    l->grid = grid_of(ki->part[part].kind, w);
    l->n_offs = offsets_of(k, l->offs);
    return l->n_offs > MOE_MAX_OFFS ? -2 : 0;
}

static int add_launch(cg_cuda_plan *pl, arena *a, const lw_program *p, const lw_call *k, int part,
                      cg_cuda_launches *out) {
    int id;
    return launch_of(pl, a, p, k, part, "", out, &id);
}

static const lw_ref *ref_named(const lw_call *k, const char *name) {
    const lw_arg *x = lw_arg_named(k, name);
    return x && x->kind == LW_BUF && !x->ref.null ? &x->ref : NULL;
}
static int64_t int_named(const lw_call *k, const char *name) {
    const lw_arg *x = lw_arg_named(k, name);
    return x && x->kind == LW_INT ? x->i : 0;
}
/* the dy a backward call's GEMMs read: its half copy in a half model (db reads dy itself) */
static const lw_ref *gemm_dy(const lw_call *k) { return ref_named(k, "dyh") ? ref_named(k, "dyh") : ref_named(k, "dy"); }

/* a library GEMM C = op(A) op(B) + beta C over the refs a, b, c (rows: which of m and k is
 * the step's tokens); A and B of one type (f32, or a half model's bf16 or f16), C f32 */
static int add_gemm(cg_cuda_launches *out, int ta, int tb, int rows, int64_t m, int64_t n, int64_t k, float beta,
                    const lw_ref *ra, int64_t lda, const lw_ref *rb, int64_t ldb, const lw_ref *rc, int64_t ldc) {
    if (ra->dtype != rb->dtype || rc->dtype != MOE_F32) return -2;
    cg_cuda_launch *l = &out->launch[out->n++];
    memset(l, 0, sizeof *l);
    l->kernel = -1;
    l->gemm = (moe_gemm_def){ta, tb, rows, m, n, k, 1.0f, beta, {ra->buf, rb->buf, rc->buf},
                             {ra->offset, rb->offset, rc->offset}, {lda, ldb, ldc}, (int)ra->dtype};
    return 0;
}

/* A linear layer as library GEMMs: forward y = x op(W) (after gemm_init has written the
 * residual and bias into y, when there are any); backward dx = dy op(W)^T and dW += x^T dy in
 * W's layout, and db by the generated kernel (part 2). 1 when k is not a linear layer. */
static int add_linear(cg_cuda_plan *pl, arena *a, const lw_program *p, const lw_call *k, cg_cuda_launches *out) {
    int fwd = !strcmp(k->kernel, "matmul_fwd") || !strcmp(k->kernel, "matmul_res_fwd");
    if (!fwd && strcmp(k->kernel, "matmul_bwd")) return 1;
    const lw_arg *S = lw_arg_named(k, "S");
    if (!S || S->kind != LW_RT || S->rt != LW_RT_S) return -2;
    int64_t K = int_named(k, "K"), N = int_named(k, "N"), tw = int_named(k, "trans_w");
    const lw_ref *W = ref_named(k, "W");
    if (fwd) {
        const lw_ref *y = ref_named(k, "y"), *x = ref_named(k, "x");
        int init = ref_named(k, "b") || ref_named(k, "res");
        if (init) {
            const lw_arg none = {.name = "res", .kind = LW_BUF, .ref = {.null = 1}};
            const lw_arg *res = lw_arg_named(k, "res");
            lw_arg args[5] = {*lw_arg_named(k, "y"), *lw_arg_named(k, "b"), res ? *res : none, *S, *lw_arg_named(k, "N")};
            lw_call c = {"gemm_init", 0, 0, 5, args};
            int rc = add_launch(pl, a, p, &c, 0, out);
            if (rc) return rc;
        }
        return add_gemm(out, 0, (int)tw, MOE_GEMM_ROWS_M, S->i, N, K, init ? 1.0f : 0.0f, x, K, W, tw ? K : N, y, N);
    }
    const lw_ref *dx = ref_named(k, "dx"), *dW = ref_named(k, "dW"), *x = ref_named(k, "x"), *dy = gemm_dy(k);
    int rc = 0;
    if (dx)
        rc = add_gemm(out, 0, !tw, MOE_GEMM_ROWS_M, S->i, K, N, int_named(k, "acc") ? 1.0f : 0.0f, dy, N, W,
                      tw ? K : N, dx, K);
    if (!rc && dW && !tw) rc = add_gemm(out, 1, 0, MOE_GEMM_ROWS_K, K, N, S->i, 1.0f, x, K, dy, N, dW, N);
    if (!rc && dW && tw) rc = add_gemm(out, 1, 0, MOE_GEMM_ROWS_K, N, K, S->i, 1.0f, dy, N, x, K, dW, K);
    return rc ? rc : ref_named(k, "db") ? add_launch(pl, a, p, k, 2, out) : 0;
}

/* a library GEMM per expert of call c (kind -2: moe_grouped_def), operand j starting row[j]
 * elements further per routed row and expert[j] further per expert */
static int add_grouped(cg_cuda_launches *out, int ta, int tb, int rows, int64_t m, int64_t n, int64_t k, float beta,
                       const lw_call *c, const lw_ref *ra, int64_t lda, const lw_ref *rb, int64_t ldb,
                       const lw_ref *rc, int64_t ldc, const int64_t row[3], const int64_t expert[3]) {
    const lw_ref *counts = ref_named(c, "counts");
    int rv = counts ? add_gemm(out, ta, tb, rows, m, n, k, beta, ra, lda, rb, ldb, rc, ldc) : -2;
    if (rv) return rv;
    cg_cuda_launch *l = &out->launch[out->n - 1];
    l->kernel = -2;
    l->grouped = (moe_grouped_def){(int)int_named(c, "E"), counts->buf, counts->offset,
                                   {row[0], row[1], row[2]}, {expert[0], expert[1], expert[2]}};
    return 0;
}
/* The expert GEMMs as library GEMMs, one per expert over its routed rows (variant 4; the
 * runtime reads the offsets): forward y = x W[e] after moe_expert_bias has written the biases
 * into y; backward dx = dy W[e]^T and dW[e] += x^T dy, db by the simple form's part 2. */
static int add_expert_library(cg_cuda_plan *pl, arena *a, const lw_program *p, const lw_call *k, cg_cuda_launches *out) {
    int64_t K = int_named(k, "K"), N = int_named(k, "N");
    const lw_ref *W = ref_named(k, "W"), *x = ref_named(k, "x");
    if (!strcmp(k->kernel, "moe_expert_fwd")) {
        const lw_ref *y = ref_named(k, "y");
        if (ref_named(k, "b")) {
            lw_arg args[5] = {*lw_arg_named(k, "y"), *lw_arg_named(k, "b"), *lw_arg_named(k, "counts"),
                              *lw_arg_named(k, "E"), *lw_arg_named(k, "N")};
            lw_call c = {"moe_expert_bias", 0, 0, 5, args};
            int rc = add_launch(pl, a, p, &c, 0, out);
            if (rc) return rc;
        }
        return add_grouped(out, 0, 0, MOE_GEMM_ROWS_M, 1, N, K, ref_named(k, "b") ? 1.0f : 0.0f, k, x, K, W, N, y, N,
                           (int64_t[3]){K, 0, N}, (int64_t[3]){0, K * N, 0});
    }
    const lw_ref *dx = ref_named(k, "dx"), *dW = ref_named(k, "dW"), *dy = gemm_dy(k);
    int rc = 0;
    if (dx)
        rc = add_grouped(out, 0, 1, MOE_GEMM_ROWS_M, 1, K, N, int_named(k, "acc") ? 1.0f : 0.0f, k, dy, N, W, N, dx, K,
                         (int64_t[3]){N, 0, K}, (int64_t[3]){0, K * N, 0});
    if (!rc && dW)
        rc = add_grouped(out, 1, 0, MOE_GEMM_ROWS_K, K, N, 1, 1.0f, k, x, K, dy, N, dW, N, (int64_t[3]){K, N, 0},
                         (int64_t[3]){0, 0, K * N});
    if (rc || !ref_named(k, "db")) return rc;
    lw_call simple = *k;     /* db: the simple form's part 2 */
    simple.kernel = "moe_expert_bwd";
    return add_launch(pl, a, p, &simple, 2, out);
}

/* AdamW's calls of an optimizer step (one adamw_step per parameter) as one launch of
 * cu_adamw_multi over the whole parameter buffer: the runs of decaying and non-decaying
 * parameters (in offset order) go into a __constant__ table written before the kernel. Each
 * parameter's gradient and moments sit at its offset in their buffers (v after the params'
 * bytes), as the lowering lays them out. 1 when the step is not that, and keeps its calls. */
typedef struct adamw_param { int64_t start; int decay; } adamw_param;
static int by_start(const void *a, const void *b) {
    int64_t x = ((const adamw_param *)a)->start, y = ((const adamw_param *)b)->start;
    return (x > y) - (x < y);
}
static int add_adamw_multi(cg_cuda_plan *pl, arena *a, const lw_program *p, const lw_step *s, cg_cuda_launches *out) {
    int n = s->ncalls, nr = 0;
    int64_t total = p->g->params.bytes / 4;
    int64_t *runs = ARENA_ARRAY(a, int64_t, 2 * n + 2);
    adamw_param *par = ARENA_ARRAY(a, adamw_param, n);
    if (!runs || !par || !n) return !n ? 1 : -1;
    double wd = 0;
    for (int c = 0; c < n; c++) {
        const lw_call *k = &s->calls[c];
        const lw_ref *pr = ref_named(k, "p"), *g = ref_named(k, "g");
        const lw_arg *w = lw_arg_named(k, "wd");
        if (strcmp(k->kernel, "adamw_step") || !pr || !g || !w || pr->buf != MOE_BUF_PARAM || g->offset != pr->offset ||
            (w->f != 0 && wd != 0 && w->f != wd))
            return 1;
        if (w->f != 0) wd = w->f;
        par[c] = (adamw_param){pr->offset / 4, w->f != 0};
    }
    qsort(par, (size_t)n, sizeof *par, by_start);
    for (int c = 0; c < n; c++) {       /* a run per change of decay; the first from element 0 */
        if (nr && runs[2 * nr - 1] == par[c].decay) continue;
        runs[2 * nr] = nr ? par[c].start : 0;
        runs[2 * nr + 1] = par[c].decay;
        nr++;
    }
    runs[2 * nr] = total;
    const lw_call *k0 = &s->calls[0];
    lw_arg args[13];
    const char *names[13] = {"p", "g", "m", "v", "n", "lr", "beta1", "beta2", "eps", "wd", "clip", "t"};
    for (int j = 0; j < 12; j++) args[j] = *lw_arg_named(k0, names[j]);
    const int64_t off[4] = {0, 0, 0, p->g->params.bytes};      /* p, g, m, v: the whole buffers */
    for (int j = 0; j < 4; j++) args[j].ref.tensor = -1, args[j].ref.offset = off[j], args[j].ref.bytes = total * 4;
    args[4].i = total;
    args[9].f = wd;
    lw_call call = {"adamw_multi", 0, 0, 12, args};
    const char *table = arena_printf(a, "adamw_runs%d", pl->n_kernels), *extra = arena_printf(a, ", %s, %d", table, nr);
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m || !table || !extra) { if (m) fclose(m); free(text); return -1; }
    fprintf(m, "__constant__ long long %s[%d] = {", table, 2 * nr + 1);
    for (int r = 0; r <= 2 * nr; r++) fprintf(m, "%s%lld", r ? ", " : "", (long long)runs[r]);
    fputs("};", m);
    fclose(m);
    int id, rc = launch_of(pl, a, p, &call, 0, extra, out, &id);
    if (!rc && !pl->kernels[id].prelude) pl->kernels[id].prelude = arena_printf(a, "%s", text);
    free(text);
    return rc;
}

static int plan_program(cg_cuda_plan *pl, const cg_unit *u, const lw_program *p, cg_cuda_launches *out) {
    arena *a = u->arena;
    int n = 0;
    for (int i = 0; i < p->nsteps; i++)
        for (int c = 0; c < p->steps[i].ncalls; c++) n += 3;
    out->launch = ARENA_ARRAY(a, cg_cuda_launch, n + 1);
    out->first = ARENA_ARRAY(a, int, p->nsteps + 1);
    if (!out->launch || !out->first) return -1;
    out->n = 0;
    for (int i = 0; i < p->nsteps; i++) {
        const lw_step *s = &p->steps[i];
        out->first[i] = out->n;
        int multi = s->op == IR_ADAMW ? add_adamw_multi(pl, a, p, s, out) : 1;    /* AdamW in one launch */
        if (multi <= 0) {
            if (multi) return multi;
            continue;
        }
        for (int c = 0; c < s->ncalls; c++) {
            lw_call form;
            const lw_call *k = &s->calls[c];
            int expert = !strcmp(k->kernel, "moe_expert_fwd") || !strcmp(k->kernel, "moe_expert_bwd");
            if (expert && k->variant == 4 && !u->gemm_generated) {     /* v4: a library GEMM per expert */
                int rc = add_expert_library(pl, a, p, k, out);
                if (rc) return rc;
                continue;
            }
            if (expert) {
                /* the expert GEMMs' variants (codegen/tune.c): v1 tiles of 64 rows, v2 of 32,
                 * v3 the simple form, which --gemm generated keeps everywhere */
                static const char *const suffix[] = {"_tiled", "_tiled", "_tiled32", ""};
                int v = u->gemm_generated ? 3 : k->variant;
                form = *k;
                form.kernel = arena_printf(a, "%s%s", k->kernel, suffix[v >= 1 && v <= 3 ? v : 1]);
                form.variant = 0;   /* the name says it */
                k = &form;
            } else if (!strncmp(k->kernel, "attention_", 10) && k->variant == 2) {
                form = *k;      /* attention's variants: v1 a thread per query (key) row, v2 tiled */
                form.kernel = arena_printf(a, "%s_tiled", k->kernel);
                form.variant = 0;
                k = &form;
            }
            const cu_kernel *ki = find_kernel(k->kernel);
            if (!ki) return -2;
            int rc = u->gemm_generated ? 1 : add_linear(pl, a, p, k, out);
            if (rc == 1) {      /* the call's kernels, part after part */
                rc = 0;
                for (int part = 0; !rc && part < ki->nparts; part++)
                    if (ki->part[part].kind != G_HOST) rc = add_launch(pl, a, p, k, part, out);
            }
            if (rc) return rc;
        }
    }
    out->first[p->nsteps] = out->n;
    return 0;
}

int cg_cuda_plan_make(const cg_unit *u, cg_cuda_plan *pl) {
    memset(pl, 0, sizeof *pl);
    int rc = plan_program(pl, u, u->train, &pl->train);
    return rc ? rc : plan_program(pl, u, u->decode, &pl->decode);
}

/* one embedded file, without the #include lines of our own headers (all inlined in order) */
static void inline_file(cg *b, const char *name) {
    const char *text = cg_embedded(name);
    if (!text) { cg_line(b, "#error \"%s is not embedded in moec\"", name); return; }
    cg_line(b, "/* ---- %s ---- */", name);
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p + 1) : strlen(p);
        if (strncmp(p, "#include \"", 10)) {
            char *l = strndup(p, len);
            if (l) cg_raw(b, l);
            free(l);
        }
        p += len;
    }
}

static char *source_text(const cg_unit *u, const cg_cuda_plan *pl, int rc) {
    cg *b = cg_create();
    if (!b) return NULL;
    cg_line(b, "/* generated by moec for the cuda target (model %s), do not edit: the model's %d distinct",
            u->train->g->name, pl->n_kernels);
    cg_line(b, " * kernels, self-contained (NVRTC, or nvcc -cubin as one translation unit) */");
    for (int i = 0; cuda_files[i]; i++) inline_file(b, cuda_files[i]);
    cg_line(b, "/* ---- the model's kernels ---- */");
    if (rc) cg_line(b, "#error \"a lowered kernel has no CUDA template\"");
    for (int i = 0; i < pl->n_kernels; i++) {
        if (pl->kernels[i].prelude) cg_line(b, "%s", pl->kernels[i].prelude);
        /* a serial part (one thread) asks for no occupancy: ptxas would cut it to 32
         * registers and spill */
        cg_open(b, "extern \"C\" __global__ void __launch_bounds__(CU_NT%s) %s(const moe_kargs ka, const moe_offs o)",
                pl->kernels[i].serial ? ", 1" : "", pl->kernels[i].name);
        cg_line(b, "const int B = ka.B, T = ka.T, S = B * T;");
        cg_line(b, "(void)B; (void)T; (void)S; (void)o;");
        cg_line(b, "%s", pl->kernels[i].body);
        cg_close(b, "");
    }
    const char *text = cg_finish(b);
    char *res = text ? strdup(text) : NULL;
    cg_destroy(b);
    return res;
}

char *cg_cuda_source(const cg_unit *u) {
    cg_cuda_plan pl;
    int rc = cg_cuda_plan_make(u, &pl);
    return rc == -1 ? NULL : source_text(u, &pl, rc);
}

/* ---- the host side: launch tables and step functions ---- */
static void emit_launches(cg *b, arena *a, const lw_program *p, const cg_cuda_launches *L, const char *pre) {
    const char *table = arena_printf(a, "%s_launches", pre);
    cg_open(b, "static const moe_launch_def %s[] =", table);
    for (int i = 0; i < L->n; i++) {
        const cg_cuda_launch *l = &L->launch[i];
        char *line = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&line, &len);
        if (!m) { cg_line(b, "#error \"out of memory\""); continue; }
        if (l->kernel >= 0) {
            fprintf(m, "{%d, %uu, %d, {", l->kernel, l->grid, l->n_offs);
            for (int j = 0; j < l->n_offs; j++) fprintf(m, "%s%lld", j ? ", " : "", (long long)l->offs[j]);
            fputs("}},", m);
        } else {
            static const char *const rows[] = {"MOE_GEMM_ROWS_NONE", "MOE_GEMM_ROWS_M", "MOE_GEMM_ROWS_K"};
            const moe_gemm_def *g = &l->gemm;
            fprintf(m, "{%d, 0u, 0, {0}, {%d, %d, %s, %lld, %lld, %lld, %.9g, %.9g, ", l->kernel, g->trans_a,
                    g->trans_b, rows[g->rows], (long long)g->m, (long long)g->n, (long long)g->k, g->alpha, g->beta);
            fprintf(m, "{MOE_BUF_%s, MOE_BUF_%s, MOE_BUF_%s}, {%lld, %lld, %lld}, {%lld, %lld, %lld}, MOE_%s}",
                    cg_buf_macro[g->buf[0]], cg_buf_macro[g->buf[1]], cg_buf_macro[g->buf[2]], (long long)g->off[0],
                    (long long)g->off[1], (long long)g->off[2], (long long)g->ld[0], (long long)g->ld[1],
                    (long long)g->ld[2], cg_dtype_macro[g->dtype]);
            const moe_grouped_def *d = &l->grouped;
            if (l->kernel == -2)
                fprintf(m, ", {%d, MOE_BUF_%s, %lld, {%lld, %lld, %lld}, {%lld, %lld, %lld}}", d->E,
                        cg_buf_macro[d->counts_buf], (long long)d->counts_off, (long long)d->row[0],
                        (long long)d->row[1], (long long)d->row[2], (long long)d->expert[0], (long long)d->expert[1],
                        (long long)d->expert[2]);
            fputs("},", m);
        }
        fclose(m);
        cg_line(b, "%s", line);
        free(line);
    }
    if (!L->n) cg_line(b, "{0, 0, 0, {0}},");
    cg_close(b, ";");
    for (int i = 0; i < p->nsteps; i++) {
        const lw_step *s = &p->steps[i];
        cg_line(b, "/* %s %s */", ir_op_name(s->op), s->name);
        cg_open(b, "static void %c%d(moe_ctx *c)", pre[0], s->node);
        if (s->note) cg_line(b, "/* %s */", s->note);
        cg_line(b, "for (int i = %d; i < %d; i++) c->launch(c, &%s[i]);", L->first[i], L->first[i + 1], table);
        cg_close(b, "");
    }
}

char *cg_cuda_render(const cg_unit *u) {
    cg_cuda_plan pl;
    int rc = cg_cuda_plan_make(u, &pl);
    if (rc == -1) return NULL;
    char *src = source_text(u, &pl, rc);
    cg *b = cg_create();
    if (!src || !b) { free(src); cg_destroy(b); return NULL; }
    arena *a = u->arena;
    cg_line(b, "/* generated by moec for the cuda target (model %s), do not edit: the host side */",
            u->train->g->name);
    cg_line(b, "#include \"moe_program.h\"");
    cg_line(b, "#include <math.h>");
    cg_line(b, "#include <stddef.h>");
    cg_line(b, "static const char kernel_source[] = %s;", cg_cstr(a, src));
    free(src);
    cg_open(b, "static const moe_kernel_def kernels[] =");
    for (int i = 0; i < pl.n_kernels; i++) cg_line(b, "{\"%s\", %d},", pl.kernels[i].name, pl.kernels[i].sync);
    if (!pl.n_kernels) cg_line(b, "{NULL, 0},");
    cg_close(b, ";");
    emit_launches(b, a, u->train, &pl.train, "s");
    cg_emit_step_table(b, a, u->train, "s", "train_steps");
    emit_launches(b, a, u->decode, &pl.decode, "d");
    cg_emit_step_table(b, a, u->decode, "d", "decode_steps");
    cg_emit_program(b, u, "cuda", arena_printf(a, ".kernel_source = kernel_source, .n_kernels = %d, .kernels = kernels,",
                                              pl.n_kernels));
    const char *text = cg_finish(b);
    char *res = text ? strdup(text) : NULL;
    cg_destroy(b);
    return res;
}
