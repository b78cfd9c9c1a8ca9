"""blas_env.py - pins OpenBLAS's kernel choice so that the goldens regenerate byte-identically.

Import it before torch. Debian's python3-torch does its float64 matmuls in the system BLAS
(OpenBLAS, built for every x86 core type and choosing a kernel at load time). Different
kernels sum in different orders, so the last bits of the float64 results, and through the
rounding to fp32 some bits of the committed goldens, depend on which kernel OpenBLAS picks.
On a CPU that OpenBLAS 0.3.21 does not recognise (a newer Xeon, some virtual machines) it
falls back to the Prescott (SSE3) kernel, and the goldens come out a few ulps apart from the
committed ones. Haswell, SkylakeX, Cooperlake and Zen all give the committed bytes; we ask
for Haswell (AVX2 + FMA) whenever the CPU has those, unless OPENBLAS_CORETYPE is set already.
Only regeneration and the self-check care: the ctests compare with a tolerance.
"""
import os


def _has_avx2_fma():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx2" in flags and "fma" in flags
    except OSError:
        pass
    return False


if "OPENBLAS_CORETYPE" not in os.environ and _has_avx2_fma():
    os.environ["OPENBLAS_CORETYPE"] = "Haswell"
