/* cu_dense.cuh - the dense kernels on CUDA: embedding, norms, linear layers, activations,
 * element-wise updates, cross-entropy, gradient norm, AdamW, RoPE.
 *
 * Each function has the parameters of its CPU twin (kernels/cpu, same order) after `part`;
 * the numerics follow the CPU kernels (row statistics and column sums in double, fixed
 * reduction orders). The linear layers here are the generated variant (one output per
 * thread, a dot product in order; `moec build --gemm generated`); by default the renderer
 * calls the library GEMM instead (cuBLAS, OpenBLAS under cuda-emu), after gemm_init has
 * written the bias and the residual into the output.
 * Parts: layernorm_bwd/rmsnorm_bwd 0 = dx (a block per row), 1 = dw, db (a thread per column);
 * matmul_bwd 0 = dx, 1 = dW, 2 = db; embed_bwd and the dW parts walk tokens in order.
 */
#ifndef MOE_CU_DENSE_CUH
#define MOE_CU_DENSE_CUH
#include "cu_common.cuh"

#define CU_NORM_EPS 1e-5

/* ---- embedding ---- */
/* row s at position pos[s] (decoding: a sequence per row), or t without pos */
CU_D void cu_embed_fwd(int part, f32p x, ci32p tok, cf32p wte, cf32p wpe, ci32p pos, int B, int T, int C) {
    (void)part;
    CU_FOR(i, (long long)B * T * C) {
        long long s = i / C, c = i % C;
        float v = wte[(long long)tok[s] * C + c];
        if (wpe) v += wpe[(long long)(pos ? pos[s] : (int)(s % T)) * C + c];
        x[i] = v;
    }
}

CU_D void cu_embed_bwd(int part, f32p dwte, f32p dwpe, cf32p dx, ci32p tok, int B, int T, int C) {
    (void)part;
    long long S = (long long)B * T;
    CU_FOR(c, C) {      /* one thread per column walks the tokens in order */
        for (long long s = 0; s < S; s++) {
            float d = dx[s * C + c];
            dwte[(long long)tok[s] * C + c] += d;
            if (dwpe) dwpe[(s % T) * C + c] += d;
        }
    }
}

/* ---- LayerNorm and RMSNorm ---- */
/* y (PY) is f32, or a half model's GEMM operand (its cast fused in), as in act_fwd */
template <class PY>
CU_D void cu_layernorm_fwd(int part, PY y, f32p mean, f32p rstd, cf32p x, cf32p w, cf32p b, int S, int C) {
    (void)part;
    __shared__ double sh[CU_NT];
    CU_FOR_ROWS(s, S) {
        cf32p xr = x + s * C;
        double sum = 0.0;
        for (int c = threadIdx.x; c < C; c += CU_NT) sum += xr[c];
        float m = (float)(cu_block_sum(sum, sh) / C);
        double var = 0.0;
        for (int c = threadIdx.x; c < C; c += CU_NT) { float d = xr[c] - m; var += (double)d * d; }
        float r = (float)(1.0 / sqrt(cu_block_sum(var, sh) / C + CU_NORM_EPS));
        for (int c = threadIdx.x; c < C; c += CU_NT) cu_st(y, s * C + c, (xr[c] - m) * r * w[c] + (b ? b[c] : 0.0f));
        if (threadIdx.x == 0) {
            if (mean) mean[s] = m;
            if (rstd) rstd[s] = r;
        }
    }
}

CU_D void cu_layernorm_bwd(int part, f32p dx, f32p dw, f32p db, cf32p dy, cf32p x, cf32p w, cf32p mean,
                           cf32p rstd, int S, int C, int acc) {
    __shared__ double sh[CU_NT];
    if (part == 0) {
        if (!dx) return;
        CU_FOR_ROWS(s, S) {
            cf32p xr = x + s * C;
            cf32p d = dy + s * C;
            float m = mean[s], r = rstd[s];
            double s1 = 0.0, s2 = 0.0;
            for (int c = threadIdx.x; c < C; c += CU_NT) {
                float g = w[c] * d[c];
                s1 += g;
                s2 += g * (xr[c] - m) * r;
            }
            float a1 = (float)(cu_block_sum(s1, sh) / C), a2 = (float)(cu_block_sum(s2, sh) / C);
            for (int c = threadIdx.x; c < C; c += CU_NT) {
                float v = r * (w[c] * d[c] - a1 - (xr[c] - m) * r * a2);
                dx[s * C + c] = acc ? dx[s * C + c] + v : v;
            }
        }
    } else {
        CU_FOR(c, C) {
            double aw = 0.0, ab = 0.0;
            for (long long s = 0; s < S; s++) {
                float d = dy[s * C + c];
                aw += d * ((x[s * C + c] - mean[s]) * rstd[s]);
                ab += d;
            }
            if (dw) dw[c] += (float)aw;
            if (db) db[c] += (float)ab;
        }
    }
}

template <class PY>
CU_D void cu_rmsnorm_fwd(int part, PY y, f32p rstd, cf32p x, cf32p w, int S, int C) {
    (void)part;
    __shared__ double sh[CU_NT];
    CU_FOR_ROWS(s, S) {
        cf32p xr = x + s * C;
        double ss = 0.0;
        for (int c = threadIdx.x; c < C; c += CU_NT) ss += (double)xr[c] * xr[c];
        float r = (float)(1.0 / sqrt(cu_block_sum(ss, sh) / C + CU_NORM_EPS));
        for (int c = threadIdx.x; c < C; c += CU_NT) cu_st(y, s * C + c, xr[c] * r * w[c]);
        if (threadIdx.x == 0 && rstd) rstd[s] = r;
    }
}

CU_D void cu_rmsnorm_bwd(int part, f32p dx, f32p dw, cf32p dy, cf32p x, cf32p w, cf32p rstd, int S, int C,
                         int acc) {
    __shared__ double sh[CU_NT];
    if (part == 0) {
        if (!dx) return;
        CU_FOR_ROWS(s, S) {
            cf32p xr = x + s * C;
            cf32p d = dy + s * C;
            float r = rstd[s];
            double s2 = 0.0;
            for (int c = threadIdx.x; c < C; c += CU_NT) s2 += w[c] * d[c] * xr[c] * r;
            float a2 = (float)(cu_block_sum(s2, sh) / C);
            for (int c = threadIdx.x; c < C; c += CU_NT) {
                float v = r * (w[c] * d[c] - xr[c] * r * a2);
                dx[s * C + c] = acc ? dx[s * C + c] + v : v;
            }
        }
    } else {
        if (!dw) return;
        CU_FOR(c, C) {
            double aw = 0.0;
            for (long long s = 0; s < S; s++) aw += dy[s * C + c] * (x[s * C + c] * rstd[s]);
            dw[c] += (float)aw;
        }
    }
}

/* ---- linear layers: y[M,N] = x[M,K] W (+ b) (+ res); W [K,N], or [N,K] with trans_w.
 * x, W (PX, PW) are f32 or a half type; dyh, the GEMMs' copy of dy, too (absent: dy). ---- */
template <class PX, class PW>
CU_D float cu_dot_w(PX x, PW W, long long K, long long N, long long n, int trans_w) {
    float acc = 0.0f;
    if (trans_w) for (long long k = 0; k < K; k++) acc += cu_f(x[k]) * cu_f(W[n * K + k]);
    else for (long long k = 0; k < K; k++) acc += cu_f(x[k]) * cu_f(W[k * N + n]);
    return acc;
}

template <class PX, class PW>
CU_D void cu_matmul_fwd(int part, f32p y, PX x, PW W, cf32p b, int S, int K, int N, int trans_w) {
    (void)part;
    CU_FOR(i, (long long)S * N) {
        long long r = i / N, n = i % N;
        y[i] = (b ? b[n] : 0.0f) + cu_dot_w(x + r * K, W, K, N, n, trans_w);
    }
}

template <class PX, class PW>
CU_D void cu_matmul_res_fwd(int part, f32p y, PX x, PW W, cf32p b, cf32p res, int S, int K, int N) {
    (void)part;
    CU_FOR(i, (long long)S * N) {
        long long r = i / N, n = i % N;
        y[i] = res[i] + (b ? b[n] : 0.0f) + cu_dot_w(x + r * K, W, K, N, n, 0);
    }
}

template <class PX, class PW, class PD>
CU_D void cu_matmul_bwd(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, int S, int K, int N, int trans_w,
                        int acc, PD dyh) {
    if (part == 0) {            /* dx[S,K] = dy W^T */
        if (!dx) return;
        CU_FOR(i, (long long)S * K) {
            long long r = i / K, k = i % K;
            float v = 0.0f;
            for (long long n = 0; n < N; n++) v += cu_f(dyh[r * N + n]) * cu_f(trans_w ? W[n * K + k] : W[k * N + n]);
            dx[i] = acc ? dx[i] + v : v;
        }
    } else if (part == 1) {     /* dW += x^T dy, in W's layout */
        if (!dW) return;
        CU_FOR(i, (long long)K * N) {
            long long k = trans_w ? i % K : i / N, n = trans_w ? i / K : i % N;
            float v = 0.0f;
            for (long long r = 0; r < S; r++) v += cu_f(x[r * K + k]) * cu_f(dyh[r * N + n]);
            dW[i] += v;
        }
    } else {                    /* db += column sums of dy */
        if (!db) return;
        CU_FOR(n, N) {
            double v = 0.0;
            for (long long r = 0; r < S; r++) v += dy[r * N + n];
            db[n] += (float)v;
        }
    }
}
template <class PX, class PW>
CU_D void cu_matmul_bwd(int part, f32p dx, f32p dW, f32p db, cf32p dy, PX x, PW W, int S, int K, int N, int trans_w,
                        int acc) {
    cu_matmul_bwd(part, dx, dW, db, dy, x, W, S, K, N, trans_w, acc, dy);
}

/* y = x rounded to y's type (a half copy of a GEMM operand) over rows x width elements (rows:
 * a cu_rows, or a parameter's 1) */
template <class PY, class PX, class R>
CU_D void cu_cast(int part, PY y, PX x, R rows, long long width) {
    (void)part;
    CU_FOR(i, cu_rows_get(rows) * width) cu_st(y, i, cu_f(x[i]));
}

/* the output of a library GEMM that adds to it (beta = 1): the residual plus the bias */
CU_D void cu_gemm_init(int part, f32p y, cf32p b, cf32p res, int S, int N) {
    (void)part;
    CU_FOR(i, (long long)S * N) y[i] = (res ? res[i] : 0.0f) + (b ? b[i % N] : 0.0f);
}

/* ---- activations and element-wise ---- */
CU_D float cu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
CU_D float cu_gelu(float x) { return x * cu_sigmoid(1.5957691216057308f * (x + 0.044715f * x * x * x)); }
CU_D float cu_gelu_grad(float x) {
    float u = 1.5957691216057308f * (x + 0.044715f * x * x * x), s = cu_sigmoid(u);
    return s + x * s * (1.0f - s) * 1.5957691216057308f * (1.0f + 3.0f * 0.044715f * x * x);
}
CU_D float cu_gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
CU_D float cu_gelu_erf_grad(float x) {
    return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
}

/* y = act(x) over rows x width outputs (SwiGLU: x rows are [gate | up], 2 width wide) */
template <class PY>
CU_D void cu_act_fwd(int part, int fn, PY y, cf32p x, cu_rows rows, long long width) {
    (void)part;
    long long n = cu_rows_get(rows) * width;
    CU_FOR(i, n) {
        if (fn == MOE_ACT_SWIGLU) {
            long long r = i / width, j = i % width;
            float g = x[r * 2 * width + j], u = x[r * 2 * width + width + j];
            cu_st(y, i, g * cu_sigmoid(g) * u);
        } else {
            float v = x[i];
            cu_st(y, i, fn == MOE_ACT_GELU ? cu_gelu(v) : fn == MOE_ACT_GELU_ERF ? cu_gelu_erf(v) : (v > 0.0f ? v : 0.0f));
        }
    }
}

CU_D void cu_act_bwd(int part, int fn, f32p dx, cf32p x, cf32p dy, cu_rows rows, long long width, int acc) {
    (void)part;
    long long n = cu_rows_get(rows) * width;
    CU_FOR(i, n) {
        if (fn == MOE_ACT_SWIGLU) {
            long long r = i / width, j = i % width, gi = r * 2 * width + j, ui = gi + width;
            float g = x[gi], u = x[ui], d = dy[i], sg = cu_sigmoid(g);
            float dg = d * u * sg * (1.0f + g * (1.0f - sg)), du = d * g * sg;
            dx[gi] = acc ? dx[gi] + dg : dg;
            dx[ui] = acc ? dx[ui] + du : du;
        } else {
            float v = x[i];
            float gr = fn == MOE_ACT_GELU ? cu_gelu_grad(v) : fn == MOE_ACT_GELU_ERF ? cu_gelu_erf_grad(v)
                                                                                   : (v > 0.0f ? 1.0f : 0.0f);
            float d = dy[i] * gr;
            dx[i] = acc ? dx[i] + d : d;
        }
    }
}

CU_D void cu_add_fwd(int part, f32p y, cf32p a, cf32p b, long long n) {
    (void)part;
    CU_FOR(i, n) y[i] = a[i] + b[i];
}

CU_D void cu_accumulate(int part, f32p dst, cf32p src, long long n, int acc) {
    (void)part;
    CU_FOR(i, n) dst[i] = acc ? dst[i] + src[i] : src[i];
}

CU_D void cu_copy_rows(int part, f32p dst, cf32p src, cu_rows rows, long long width) {
    (void)part;
    CU_FOR(i, cu_rows_get(rows) * width) dst[i] = src[i];
}

/* ---- cross-entropy: a thread per token; part 1 adds the mean loss to the record in order ---- */
CU_D void cu_xent_fwd(int part, f32p probs, f32p loss, f64p lm, ci32p targets, int S, int V) {
    if (part == 1) {
        if (lm && blockIdx.x == 0 && threadIdx.x == 0) {
            double total = 0.0;
            for (int s = 0; s < S; s++) total += loss[s];
            lm[0] += total / (double)S;
        }
        return;
    }
    CU_FOR(s, S) {
        f32p z = probs + s * V;
        int t = targets[s];
        float mx = z[0];
        for (int v = 1; v < V; v++) mx = cu_maxf(mx, z[v]);
        float zt = (t >= 0 && t < V) ? z[t] : 0.0f;
        double sum = 0.0;
        for (int v = 0; v < V; v++) { float e = expf(z[v] - mx); z[v] = e; sum += e; }
        float inv = (float)(1.0 / sum);
        for (int v = 0; v < V; v++) z[v] *= inv;
        loss[s] = (t >= 0 && t < V) ? (float)(log(sum) + (double)mx - (double)zt) : 0.0f;
    }
}

/* dlogits is probs (autodiff writes the gradient in place): each element read, then written */
CU_D void cu_xent_bwd_mean(int part, f32a dlogits, cf32a probs, ci32p targets, float loss_scale, int S, int V) {
    (void)part;
    float scale = loss_scale / (float)S;
    CU_FOR(i, (long long)S * V) {
        long long s = i / V, v = i % V;
        int t = targets[s];
        dlogits[i] = (t < 0 || t >= V) ? 0.0f : probs[i] * scale - (v == t ? scale : 0.0f);
    }
}

/* ---- the KD loss (Mixture-of-Students): a thread per token, the CPU's sums (k_kd_fwd); the
 * teacher's logits pt become its probabilities in place; part 1 adds tau^2 x the mean KL ---- */
CU_D void cu_kd_loss_fwd(int part, f32p ps, f32p pt, f32p kl, f64p kd, cf32p zs, float tau, int S, int V) {
    if (part == 1) {
        if (blockIdx.x == 0 && threadIdx.x == 0) {
            double total = 0.0;
            for (int s = 0; s < S; s++) total += kl[s];
            kd[0] += (double)tau * tau * total / (double)S;
        }
        return;
    }
    float itau = 1.0f / tau;
    CU_FOR(s, S) {
        cf32p a = zs + s * V;
        f32p b = pt + s * V, q = ps + s * V;
        float ms = a[0], mt = b[0];
        for (int v = 1; v < V; v++) { ms = cu_maxf(ms, a[v]); mt = cu_maxf(mt, b[v]); }
        ms *= itau;
        mt *= itau;
        double sums = 0.0, sumt = 0.0;
        for (int v = 0; v < V; v++) {
            float e = expf(a[v] * itau - ms);
            q[v] = e;
            sums += e;
            sumt += expf(b[v] * itau - mt);
        }
        float off = (float)((double)ms + log(sums) - (double)mt - log(sumt));
        float is = (float)(1.0 / sums), it = (float)(1.0 / sumt);
        double total = 0.0;
        for (int v = 0; v < V; v++) {
            float bv = b[v], p = expf(bv * itau - mt) * it;
            q[v] *= is;
            b[v] = p;
            total += (double)p * (double)((bv - a[v]) * itau + off);
        }
        kl[s] = (float)total;
    }
}

CU_D void cu_kd_loss_bwd(int part, f32p dzs, cf32p ps, cf32p pt, float weight, float tau, float loss_scale, int S, int V,
                         int acc) {
    (void)part;
    float c = weight * tau * tau * loss_scale / (float)S / tau;
    CU_FOR(i, (long long)S * V) {
        float d = c * (ps[i] - pt[i]);
        dzs[i] = acc ? dzs[i] + d : d;
    }
}

/* ---- optimizer: the global norm in 256 fixed chunks (the CPU's order), then AdamW ---- */
#define CU_SUMSQ_CHUNKS 256
CU_D void cu_grad_norm(int part, f64p norm_clip, cf32p g, long long n, double max_norm, float grad_scale) {
    (void)part;
    __shared__ double part_sum[CU_SUMSQ_CHUNKS];
    if (blockIdx.x != 0) return;
    long long len = (n + CU_SUMSQ_CHUNKS - 1) / CU_SUMSQ_CHUNKS;
    for (int c = threadIdx.x; c < CU_SUMSQ_CHUNKS; c += CU_NT) {
        long long i0 = c * len, i1 = i0 + len < n ? i0 + len : n;
        double acc = 0.0;
        for (long long i = i0; i < i1; i++) acc += (double)g[i] * g[i];
        part_sum[c] = acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int c = 0; c < CU_SUMSQ_CHUNKS; c++) total += part_sum[c];
        double norm = sqrt(total) / grad_scale;     /* as k_grad_clip (kernels/cpu/k_optim.h) */
        norm_clip[0] = norm;
        norm_clip[1] = !isfinite(norm) ? 0.0
                     : (max_norm > 0 && norm > max_norm ? max_norm / (norm + 1e-6) : 1.0) / grad_scale;
    }
}

/* AdamW on element i with decay wd (kernels/cpu/k_optim.h's k_adamw; ib1, ib2 the bias
 * corrections, scale the clip factor) */
CU_D void cu_adamw_elem(f32p p, cf32p g, f32p m, f32p v, long long i, float lr, float beta1, float beta2, float eps,
                        float wd, float ib1, float ib2, float scale) {
    float gi = g[i] * scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi, vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * (mi * ib1 / (sqrtf(vi * ib2) + eps) + wd * p[i]);
}
CU_D float cu_adamw_bias(float beta, int t) { return (float)(1.0 / (1.0 - pow((double)beta, t))); }

CU_D void cu_adamw_step(int part, f32p p, cf32p g, f32p m, f32p v, long long n, float lr, float beta1, float beta2,
                        float eps, float wd, cf64p clip, int t) {
    (void)part;
    if (clip[0] == 0.0) return;     /* gradients that are not finite: the step is skipped */
    float ib1 = cu_adamw_bias(beta1, t), ib2 = cu_adamw_bias(beta2, t), scale = (float)clip[0];
    CU_FOR(i, n) cu_adamw_elem(p, g, m, v, i, lr, beta1, beta2, eps, wd, ib1, ib2, scale);
}

/* AdamW over the whole parameter buffer in one launch (the multi-tensor form, which the cuda
 * renderer makes of an optimizer step's adamw_step calls): runs[2r] is the first element of
 * run r, runs[2r + 1] whether it decays (wd, else 0), runs[2 nr] = n; the run of an element
 * by bisection (the threads of a warp mostly read the same entries). The padding between
 * parameters is zero in p, g, m and v, and AdamW keeps it zero. */
CU_D void cu_adamw_multi(int part, f32p p, cf32p g, f32p m, f32p v, long long n, float lr, float beta1, float beta2,
                         float eps, float wd, cf64p clip, int t, const long long *runs, int nr) {
    (void)part;
    if (clip[0] == 0.0) return;
    float ib1 = cu_adamw_bias(beta1, t), ib2 = cu_adamw_bias(beta2, t), scale = (float)clip[0];
    CU_FOR(i, n) {
        int lo = 0, hi = nr - 1;
        while (lo < hi) {
            int mid = (lo + hi + 1) / 2;
            if (runs[2 * mid] <= i) lo = mid;
            else hi = mid - 1;
        }
        cu_adamw_elem(p, g, m, v, i, lr, beta1, beta2, eps, runs[2 * lo + 1] ? wd : 0.0f, ib1, ib2, scale);
    }
}

/* ---- RoPE, rotate half: dims i and i + hd/2 of q and k rotate by pos * 10000^(-2i/hd) ---- */
CU_D void cu_rope_apply(f32p out, cf32p in, ci32p pos, int B, int T, int C, int H, int KV, int inverse, int acc) {
    int hd = C / H, half = hd / 2, W = C + 2 * KV * hd;
    /* items: (b, t, column of q|k|v), W = C + 2 KV hd columns; the first of each rotated pair
     * writes both, so out may be in */
    CU_FOR(i, (long long)B * T * W) {
        int col = (int)(i % W), p = pos ? pos[i / W] : (int)((i / W) % T);   /* the row's position */
        if (col >= C + KV * hd) {   /* v passes through */
            out[i] = acc ? out[i] + in[i] : in[i];
            continue;
        }
        int j = col % hd;           /* q and k heads both start at multiples of hd */
        if (j >= half) continue;
        double ang = (double)p * pow(10000.0, -2.0 * j / hd);
        float cs = (float)cos(ang), sn = (float)(inverse ? -sin(ang) : sin(ang));
        float x1 = in[i], x2 = in[i + half];
        float y1 = x1 * cs - x2 * sn, y2 = x2 * cs + x1 * sn;
        out[i] = acc ? out[i] + y1 : y1;
        out[i + half] = acc ? out[i + half] + y2 : y2;
    }
}

CU_D void cu_rope_fwd(int part, f32p y, cf32p qkv, ci32p pos, int B, int T, int C, int H, int KV) {
    (void)part;
    cu_rope_apply(y, qkv, pos, B, T, C, H, KV, 0, 0);
}

CU_D void cu_rope_bwd(int part, f32p dx, cf32p dy, int B, int T, int C, int H, int KV, int acc) {
    (void)part;
    cu_rope_apply(dx, dy, NULL, B, T, C, H, KV, 1, acc);
}
#endif
