/* device_emu.c - cuda-emu: the cuda target's generated kernels run on the CPU.
 *
 * `moec build --target cuda` compiles the model's kernels.cu a second time as C++ with the
 * emulation prelude (kernels/cuda/cu_emu.h) and links it into the executable; `compile`
 * finds a kernel by its name (dlsym, as cuModuleGetFunction finds it in a module), and
 * `launch` runs its grid block after block.
 *
 * A block whose kernel synchronises runs its threads as fibers. A fiber that reaches
 * __syncthreads or a warp operation yields; the scheduler (run_fibers) resumes a warp when
 * all its lanes wait at a warp operation and the block when all its threads wait at the
 * barrier, so no thread passes a barrier early. The switch is six pushes and pops on x86-64
 * (ucontext's swapcontext makes a system call per switch, 20x slower here); ucontext
 * elsewhere and under the address sanitizer. Other blocks run their threads one after
 * another.
 *
 * Buffers are host memory at the CUDA allocation alignment; every buffer a kernel touches
 * is bounds-checked by the prelude, and the first fault (an access outside its tensor, a
 * deadlock, a divergent barrier) fails the launch with the kernel's name. GEMMs are
 * OpenBLAS (the cpu device's). Slow, and meant for tests and for debugging kernels.
 */
#define _GNU_SOURCE
#include "device.h"
#include "moe_abi.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#define EMU_ALIGN 256
#define EMU_STACK (64 * 1024)       /* per fiber */

#if defined(__SANITIZE_ADDRESS__)
#define EMU_UCONTEXT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_UCONTEXT 1
#endif
#endif
#if !defined(__x86_64__)
#define EMU_UCONTEXT 1
#endif

#ifndef EMU_UCONTEXT
/* moe_emu_switch(&save_sp, load_sp): saves the callee-saved registers on the current stack
 * and its stack pointer in *save_sp, then resumes the stack load_sp (System V x86-64). */
void moe_emu_switch(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".globl moe_emu_switch\n"
        ".type moe_emu_switch, @function\n"
        "moe_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size moe_emu_switch, .-moe_emu_switch\n");
#endif

/* what the prelude sees (cu_emu.h) */
typedef struct moe_emu_dim { unsigned x, y, z; } moe_emu_dim;
typedef struct moe_emu_thread { moe_emu_dim tid, bid, bdim, gdim; } moe_emu_thread;
moe_emu_thread *moe_emu_cur;

typedef void (*emu_fn)(moe_kargs, moe_offs);
enum { EMU_RUN, EMU_AT_BLOCK, EMU_AT_WARP };
#define EMU_WARP 32
struct moe_kernel { emu_fn fn; char name[96]; };

typedef struct emu {
    /* the launch running now */
    const struct moe_kernel *k;
    moe_kargs ka;
    moe_offs o;
    int fibers;                     /* the block's threads are fibers */
    int cur;                        /* running fiber */
    int nthreads;                   /* fibers allocated */
    int nthreads_run;               /* threads of the running launch's blocks */
    moe_emu_thread *th;             /* [nthreads] */
    unsigned char *stacks;          /* nthreads x EMU_STACK */
    int *done;
    int *wait;                      /* [nthreads] what a fiber waits at: EMU_RUN, EMU_AT_BLOCK, EMU_AT_WARP */
    unsigned *ops;                  /* [nthreads] warp operations done (the parity picks slot) */
    uint64_t *slot[2];              /* [nthreads] each a value a lane offers its warp */
#ifdef EMU_UCONTEXT
    ucontext_t sched, *ctx;         /* [nthreads] */
#else
    void *sched_sp, **sp;           /* [nthreads] saved stack pointers */
#endif
    /* the first out-of-bounds access of the launch */
    int oob;
    char oob_msg[200];
    _Alignas(16) unsigned char dummy[64];
} emu;

static emu *g_emu;                  /* the device whose launch is running (one at a time) */
#ifdef EMU_UCONTEXT
#define EMU_SAVES(e) ((e)->ctx)
#else
#define EMU_SAVES(e) ((e)->sp)
#endif

/* ---- fibers: start the block's threads, yield to the scheduler, resume a thread ---- */
static void fiber_main(void);
#ifdef EMU_UCONTEXT
static void fiber_start(emu *e, int t) {
    getcontext(&e->ctx[t]);
    e->ctx[t].uc_stack.ss_sp = e->stacks + (size_t)t * EMU_STACK;
    e->ctx[t].uc_stack.ss_size = EMU_STACK;
    e->ctx[t].uc_link = &e->sched;
    makecontext(&e->ctx[t], fiber_main, 0);
}
static void fiber_yield(emu *e) { swapcontext(&e->ctx[e->cur], &e->sched); }
static void fiber_resume(emu *e, int t) { swapcontext(&e->sched, &e->ctx[t]); }
static void fiber_exit(emu *e) { (void)e; }     /* returning follows uc_link */
#else
static void fiber_entry(void) {
    fiber_main();
    abort();                        /* never resumed after fiber_exit */
}
static void fiber_start(emu *e, int t) {
    /* the stack as moe_emu_switch leaves it: six saved registers, then a return address
     * (fiber_entry) at a 16-byte boundary, so that fiber_entry starts as if called */
    void **top = (void **)(e->stacks + (size_t)(t + 1) * EMU_STACK);
    top -= 2;                       /* keeps 16-byte alignment: top[0] is the return address */
    top[0] = (void *)fiber_entry;
    top -= 6;
    for (int i = 0; i < 6; i++) top[i] = NULL;
    e->sp[t] = top;
}
static void fiber_yield(emu *e) { moe_emu_switch(&e->sp[e->cur], e->sched_sp); }
static void fiber_resume(emu *e, int t) { moe_emu_switch(&e->sched_sp, e->sp[t]); }
static void fiber_exit(emu *e) { moe_emu_switch(&e->sp[e->cur], e->sched_sp); }
#endif

/* the launch fails with the first fault's message */
static void fault(emu *e, const char *fmt, const char *what) {
    if (e->oob) return;
    e->oob = 1;
    snprintf(e->oob_msg, sizeof e->oob_msg, fmt, e->k->name, what);
}

static int can_wait(emu *e, const char *what) {
    if (e->fibers) return 1;        /* a kernel that synchronises was launched without block_sync */
    fault(e, "kernel %s uses %s but was launched as a kernel whose blocks do not synchronise", what);
    return 0;
}

void moe_emu_syncthreads(void) {
    emu *e = g_emu;
    if (!can_wait(e, "__syncthreads")) return;
    e->wait[e->cur] = EMU_AT_BLOCK;
    fiber_yield(e);
}

/* Whether lane s offered a value to the running thread's n-th warp operation: it has made n
 * of them. A lane that exited before it did not; one that offered and then exited (its
 * last operation, read by a lane resumed after it) did. */
static int offered(const emu *e, int s, unsigned n) { return e->ops[s] >= n; }

/* A warp operation: the lane offers v, waits for the other lanes of its warp, and gets what
 * lane `src` of the warp offered. Slots alternate by the operation's parity: a lane cannot
 * be two operations ahead of another, since it waits for them at the next one. */
uint64_t moe_emu_warp_exchange(uint64_t v, int src) {
    emu *e = g_emu;
    if (!can_wait(e, "warp operations")) return v;
    int t = e->cur, par = (int)(e->ops[t] & 1), base = t / EMU_WARP * EMU_WARP;
    unsigned n = ++e->ops[t];
    e->slot[par][t] = v;
    e->wait[t] = EMU_AT_WARP;
    fiber_yield(e);
    int s = base + (src & (EMU_WARP - 1));
    return s < e->nthreads_run && offered(e, s, n) ? e->slot[par][s] : v;
}

/* the lanes of the running thread's warp whose offer (the last exchange) was nonzero */
unsigned moe_emu_warp_ballot(int pred) {
    emu *e = g_emu;
    int t = e->cur, base = t / EMU_WARP * EMU_WARP;
    int par = (int)(e->ops[t] & 1);
    moe_emu_warp_exchange(pred != 0, 0);
    unsigned mask = 0;
    for (int l = 0; l < EMU_WARP && base + l < e->nthreads_run; l++)
        if (offered(e, base + l, e->ops[t]) && e->slot[par][base + l]) mask |= 1u << l;
    return mask;
}

void *moe_emu_oob(long long index, long long count, size_t elem) {
    emu *e = g_emu;
    if (!e->oob) {
        e->oob = 1;
        snprintf(e->oob_msg, sizeof e->oob_msg, "kernel %s: out-of-bounds access to element %lld of a tensor of %lld "
                 "(%zu-byte elements), thread %u of block %u", e->k->name, index, count, elem, moe_emu_cur->tid.x,
                 moe_emu_cur->bid.x);
    }
    memset(e->dummy, 0, sizeof e->dummy);
    return e->dummy;
}

static void fiber_main(void) {
    emu *e = g_emu;
    e->k->fn(e->ka, e->o);
    e->done[e->cur] = 1;
    fiber_exit(e);
}

static void emu_free(emu *e) {
    free(e->th); free(EMU_SAVES(e)); free(e->done); free(e->wait); free(e->ops); free(e->slot[0]); free(e->slot[1]);
    free(e);
}

static int emu_open(moe_device *d) {
    emu *e = calloc(1, sizeof *e);
    if (!e) { snprintf(d->err, sizeof d->err, "out of memory"); return -1; }
    e->nthreads = MOE_BLOCK_THREADS;
    e->th = calloc((size_t)e->nthreads, sizeof *e->th);
#ifdef EMU_UCONTEXT
    e->ctx = calloc((size_t)e->nthreads, sizeof *e->ctx);
#else
    e->sp = calloc((size_t)e->nthreads, sizeof *e->sp);
#endif
    e->done = calloc((size_t)e->nthreads, sizeof *e->done);
    e->wait = calloc((size_t)e->nthreads, sizeof *e->wait);
    e->ops = calloc((size_t)e->nthreads, sizeof *e->ops);
    e->slot[0] = calloc((size_t)e->nthreads, sizeof *e->slot[0]);
    e->slot[1] = calloc((size_t)e->nthreads, sizeof *e->slot[1]);
    e->stacks = mmap(NULL, (size_t)e->nthreads * EMU_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!e->th || !EMU_SAVES(e) || !e->done || !e->wait || !e->ops || !e->slot[0] || !e->slot[1] ||
        e->stacks == MAP_FAILED) {
        if (e->stacks != MAP_FAILED && e->stacks) munmap(e->stacks, (size_t)e->nthreads * EMU_STACK);
        emu_free(e);
        snprintf(d->err, sizeof d->err, "out of memory for the emulator's threads");
        return -1;
    }
    d->impl = e;
    snprintf(d->desc, sizeof d->desc, "the CUDA emulator (the cuda target's kernels on the CPU, %d threads a block)",
             e->nthreads);
    return 0;
}

static void emu_close(moe_device *d) {
    emu *e = d->impl;
    if (!e) return;
    munmap(e->stacks, (size_t)e->nthreads * EMU_STACK);
    emu_free(e);
    d->impl = NULL;
}

static int emu_compile(moe_device *d, const char *name, const char *source, moe_kernel **out) {
    (void)source;       /* compiled when the executable was built */
    *out = NULL;
    emu_fn fn;
    *(void **)&fn = dlsym(RTLD_DEFAULT, name);
    if (!fn) {
        snprintf(d->err, sizeof d->err, "kernel '%s' is not in this executable (built without the emulated "
                 "kernels of the cuda target?)", name);
        return -1;
    }
    moe_kernel *k = calloc(1, sizeof *k);
    if (!k) { snprintf(d->err, sizeof d->err, "out of memory"); return -1; }
    k->fn = fn;
    snprintf(k->name, sizeof k->name, "%s", name);
    *out = k;
    return 0;
}

static void emu_release(moe_device *d, moe_kernel *k) { (void)d; free(k); }

/* One block's fibers: each runs to its next wait or its end; then a warp whose live lanes
 * all wait at a warp operation goes on, and the block goes on when all its threads wait at
 * __syncthreads. Threads that wait at different barriers, or a __syncthreads that some
 * threads exit without reaching, would hang a GPU or be undefined: here the launch fails.
 * 0, or -1 on such a fault. */
static int run_fibers(emu *e, unsigned nt) {
    for (unsigned alive = nt; alive > 0;) {
        for (unsigned t = 0; t < nt; t++) {
            if (e->done[t] || e->wait[t] != EMU_RUN) continue;
            e->cur = (int)t;
            moe_emu_cur = &e->th[t];
            fiber_resume(e, (int)t);
            if (e->done[t]) alive--;
        }
        if (!alive) break;
        int block = 1, released = 0, exited = 0;
        for (unsigned t = 0; t < nt; t++) {
            block &= e->done[t] || e->wait[t] == EMU_AT_BLOCK;
            exited |= e->done[t];
        }
        if (block && exited) {      /* undefined on a GPU, where it may hang */
            fault(e, "kernel %s: %s is not reached by every thread of the block (a divergent barrier)",
                  "__syncthreads");
            return -1;
        }
        for (unsigned w = 0; w < nt; w += EMU_WARP) {
            int all = 1, any = 0;
            for (unsigned t = w; t < w + EMU_WARP && t < nt; t++) {
                if (e->done[t]) continue;
                any = 1;
                all &= block || e->wait[t] == EMU_AT_WARP;
            }
            if (!any || !all) continue;
            for (unsigned t = w; t < w + EMU_WARP && t < nt; t++) e->wait[t] = EMU_RUN;
            released = 1;
        }
        if (!released) {
            fault(e, "kernel %s: %s (threads of a block wait at different barriers)", "deadlock");
            return -1;
        }
    }
    return 0;
}

static int emu_launch(moe_device *d, const moe_kernel *k, const moe_launch *cfg, void **args) {
    emu *e = d->impl;
    unsigned nt = cfg->block[0] * cfg->block[1] * cfg->block[2];
    if (cfg->block[1] != 1 || cfg->block[2] != 1 || cfg->grid[1] != 1 || cfg->grid[2] != 1 || nt == 0 ||
        nt > (unsigned)e->nthreads || cfg->grid[0] == 0 || cfg->grid[0] > 2147483647u) {
        snprintf(d->err, sizeof d->err, "kernel %s: launch of %u x %u x %u blocks of %u x %u x %u threads is outside "
                 "the emulator's limits (1-D, at most %d threads a block)", k->name, cfg->grid[0], cfg->grid[1],
                 cfg->grid[2], cfg->block[0], cfg->block[1], cfg->block[2], e->nthreads);
        return -1;
    }
    e->k = k;
    e->ka = *(const moe_kargs *)args[0];
    e->o = *(const moe_offs *)args[1];
    e->fibers = cfg->block_sync;
    e->nthreads_run = (int)nt;
    e->oob = 0;
    g_emu = e;
    moe_emu_dim gdim = {cfg->grid[0], 1, 1}, bdim = {nt, 1, 1};
    for (unsigned b = 0; b < cfg->grid[0]; b++) {
        for (unsigned t = 0; t < nt; t++)
            e->th[t] = (moe_emu_thread){{t, 0, 0}, {b, 0, 0}, bdim, gdim};
        if (!e->fibers) {
            for (unsigned t = 0; t < nt; t++) {
                e->cur = (int)t;
                moe_emu_cur = &e->th[t];
                k->fn(e->ka, e->o);
            }
            continue;
        }
        for (unsigned t = 0; t < nt; t++) {
            fiber_start(e, (int)t);
            e->done[t] = 0;
            e->wait[t] = EMU_RUN;
            e->ops[t] = 0;
        }
        if (run_fibers(e, nt)) break;
    }
    g_emu = NULL;
    if (e->oob) {
        snprintf(d->err, sizeof d->err, "%s", e->oob_msg);
        return -1;
    }
    return 0;
}

const moe_device_ops *moe_device_emu_ops(void) {
    static moe_device_ops ops;
    if (!ops.name) {
        ops = *moe_device_cpu_ops();    /* host memory (at EMU_ALIGN), copies and OpenBLAS GEMMs */
        ops.name = "cuda-emu";
        ops.alignment = EMU_ALIGN;
        ops.open = emu_open;
        ops.close = emu_close;
        ops.compile = emu_compile;
        ops.release = emu_release;
        ops.launch = emu_launch;
    }
    return &ops;
}
