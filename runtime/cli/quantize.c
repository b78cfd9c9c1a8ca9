/* quantize.c - `quantize`: a checkpoint with its expert weights as int8 for inference.
 *
 * Every expert weight [E, K, N] becomes int8 with one fp32 scale per output channel
 * (runtime/quant.h); the rest stays fp32. eval, grad, generate, export and bench load the file
 * like any checkpoint (dequantised where their kernels are fp32); the cpu target's decode
 * program reads the int8 weights as they are, a quarter of the bytes per token.
 */
#include "cli.h"
#include <stdio.h>

int cli_quantize(int argc, char **argv) {
    moe_flag f[] = {{"--checkpoint", 1, "fp32 weights (a file, or a directory: its newest checkpoint)", NULL},
                    {"--out", 1, "the int8 checkpoint to write (safetensors)", NULL},
                    {"--device", 1, "cpu|cuda|cuda-emu", NULL}};
    int nf = (int)(sizeof f / sizeof f[0]);
    int r = moe_args_parse(moe_prog_name, "quantize", argc, argv, f, nf);
    if (r) return r > 0 ? MOE_EXIT_OK : MOE_EXIT_USAGE;
    const char *out = moe_arg(f, nf, "--out");
    if (!moe_arg(f, nf, "--checkpoint")) { cli_fail("--checkpoint PATH is required"); return MOE_EXIT_USAGE; }
    if (!out) { cli_fail("--out PATH is required"); return MOE_EXIT_USAGE; }
    if (!cli_prog->n_moe) {
        cli_fail("model %s has no MoE layer: quantize turns expert weights into int8, and it has none",
                 cli_prog->model);
        return MOE_EXIT_USAGE;
    }
    moe_rt *rt = cli_rt(MOE_RT_INFER, 0, moe_arg(f, nf, "--device"));
    if (!rt) return MOE_EXIT_FAIL;
    char file[4096], err[1024];
    int64_t step, bytes[2];
    double max_err;
    r = cli_load(rt, moe_arg(f, nf, "--checkpoint"), file, sizeof file, &step);
    if (!r && rt->q8) {
        cli_fail("%s holds int8 expert weights already (quantize's output); quantize the fp32 checkpoint", file);
        r = MOE_EXIT_FAIL;
    }
    if (!r && moe_ckpt_save_q8(rt, out, step, &max_err, bytes, err, sizeof err)) {
        cli_fail("%s", err);
        r = MOE_EXIT_FAIL;
    }
    if (!r)
        fprintf(stderr, "wrote %s: the expert weights of model %s as int8 with per-channel scales, %.1f MiB instead "
                "of %.1f MiB (from %s); largest error %.3f of a channel's scale\n", out, cli_prog->model,
                bytes[1] / 1048576.0, bytes[0] / 1048576.0, file, max_err);
    moe_rt_destroy(rt);
    return r;
}
