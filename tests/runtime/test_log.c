/* test_log.c - the JSONL log parses back with jansson and holds the given values; the
 * progress line has the documented form on a pipe/file and on a terminal; fp16's loss scale:
 * the scaler's rule (rt.h) and the log's loss_scale and skipped fields. */
#define _XOPEN_SOURCE 700   /* posix_openpt and friends, before any system header */
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "log.h"
#include "rt.h"
#include "t_common.h"

static int near(json_t *v, double want) {
    if (!json_is_number(v)) return 0;
    double got = json_number_value(v);
    return fabs(got - want) <= 1e-8 * fabs(want) + 1e-300;
}

static moe_step_metrics metrics(int64_t step, const float *const *loads) {
    static const int experts[2] = {4, 8}, blocks[2] = {1, 3};
    moe_step_metrics m = {
        .step = step, .steps = 12, .loss = 3.2141592653 + step, .lm_loss = 3.1, .aux_loss = 1.0625,
        .z_loss = 0.0123456789, .kd_loss = 0.0, .lr = 1e-3 * step, .grad_norm = 0.75,
        .tokens_per_s = 12345.678, .dropped_fraction = 0.015625, .elapsed_s = 1.0 * step,
        .n_moe = 2, .experts = experts, .moe_block = blocks, .loads = loads,
    };
    return m;
}

static void test_jsonl(void) {
    float l0[4] = {0.25f, 0.5f, 0.125f, 0.125f}, l1[8];
    for (int k = 0; k < 8; k++) l1[k] = 1.0f / 3.0f + (float)k * 1e-3f;
    const float *const loads[2] = {l0, l1};
    const char *p = t_path("log.jsonl");
    char err[512] = "";
    moe_log *l = moe_log_open(p, err, sizeof err);
    CHECK(l != NULL);
    if (!l) return;
    for (int s = 1; s <= 3; s++) {
        moe_step_metrics m = metrics(s, loads);
        if (s == 3) m.loss = NAN, m.grad_norm = INFINITY;   /* a diverged step: null, still valid JSON */
        CHECK(moe_log_step(l, &m) == 0);
        size_t n = 0;
        char *txt = t_read_file(p, &n);        /* flushed at once: visible before close */
        int lines = 0;
        for (size_t i = 0; i < n; i++) lines += txt[i] == '\n';
        CHECK(lines == s && n > 0 && txt[n - 1] == '\n');
        free(txt);
    }
    moe_log_close(l);

    /* a run killed after step 5 was logged (and in the middle of step 6's line), resumed from
     * the checkpoint of step 3: the log is cut back to step 3, then step 4 follows */
    FILE *g = fopen(p, "a");
    CHECK(g && fputs("{\"step\": 4, \"loss\": 1}\n{\"step\": 5, \"loss\": 1}\n{\"step\": 6, \"lo", g) >= 0);
    if (g) fclose(g);
    l = moe_log_open_resume(p, 3, err, sizeof err);
    moe_step_metrics m4 = metrics(4, loads);
    m4.n_moe = 0;                              /* a dense model: empty lists */
    CHECK(l && moe_log_step(l, &m4) == 0);
    moe_log_close(l);

    FILE *f = fopen(p, "r");
    char line[4096];
    int k = 0;
    /* four whole lines, steps 1 to 4 */
    while (f && fgets(line, sizeof line, f)) {
        k++;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        CHECK(o != NULL && json_is_object(o));
        if (!o) { fprintf(stderr, "line %d: %s\n", k, je.text); continue; }
        CHECK(json_integer_value(json_object_get(o, "step")) == k);
        if (k < 3) {
            CHECK(near(json_object_get(o, "loss"), 3.2141592653 + k));
            CHECK(near(json_object_get(o, "grad_norm"), 0.75));
        } else if (k == 3) {
            CHECK(json_is_null(json_object_get(o, "loss")));
            CHECK(json_is_null(json_object_get(o, "grad_norm")));
        }
        CHECK(near(json_object_get(o, "lm_loss"), 3.1));
        CHECK(near(json_object_get(o, "aux_loss"), 1.0625));
        CHECK(near(json_object_get(o, "z_loss"), 0.0123456789));
        CHECK(json_is_number(json_object_get(o, "kd_loss")) && json_number_value(json_object_get(o, "kd_loss")) == 0);
        CHECK(near(json_object_get(o, "lr"), 1e-3 * k));
        CHECK(near(json_object_get(o, "tokens_per_s"), 12345.678));
        CHECK(near(json_object_get(o, "dropped_fraction"), 0.015625));
        CHECK(near(json_object_get(o, "elapsed_s"), k));
        json_t *blocks = json_object_get(o, "moe_layers"), *el = json_object_get(o, "expert_load");
        if (k == 4) {
            CHECK(json_is_array(blocks) && json_array_size(blocks) == 0);
            CHECK(json_is_array(el) && json_array_size(el) == 0);
        } else {
            CHECK(json_array_size(blocks) == 2);
            CHECK(json_integer_value(json_array_get(blocks, 0)) == 2);     /* blocks 1 and 3: layers 2 and 4 */
            CHECK(json_integer_value(json_array_get(blocks, 1)) == 4);
            CHECK(json_array_size(el) == 2);
            CHECK(json_array_size(json_array_get(el, 0)) == 4 && json_array_size(json_array_get(el, 1)) == 8);
            for (int e = 0; e < 4; e++)   /* floats round-trip exactly */
                CHECK((float)json_number_value(json_array_get(json_array_get(el, 0), e)) == l0[e]);
            for (int e = 0; e < 8; e++)
                CHECK((float)json_number_value(json_array_get(json_array_get(el, 1), e)) == l1[e]);
        }
        json_decref(o);
    }
    if (f) fclose(f);
    CHECK(k == 4);

    /* no file: steps are accepted and dropped */
    l = moe_log_open(NULL, err, sizeof err);
    moe_step_metrics m = metrics(1, loads);
    CHECK(l && moe_log_step(l, &m) == 0);
    moe_log_close(l);

    const char *bad = t_path("no/such/dir/log.jsonl");
    char want[600];
    CHECK(moe_log_open(bad, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s: cannot open the log: No such file or directory", bad);
    CHECK_STR(err, want);
}

static void test_progress_plain(void) {
    const char *p = t_path("progress.txt");
    FILE *f = fopen(p, "w");
    const float *const loads[2] = {NULL, NULL};
    for (int s = 1; s <= 12; s++) {
        moe_step_metrics m = metrics(s, loads);
        m.loss = 3.214;
        m.lr = 1e-3;
        moe_progress(f, &m, 5);
    }
    moe_step_metrics big = metrics(3, loads);
    big.steps = 10000, big.loss = 2.0, big.lr = 3e-4, big.tokens_per_s = 2.5e6, big.elapsed_s = 3.0;
    moe_progress(f, &big, 0);                   /* every <= 0: only the last step prints */
    big.step = 10000, big.elapsed_s = 3725;
    moe_progress(f, &big, 0);
    fclose(f);
    char *txt = t_read_file(p, NULL);
    CHECK_STR(txt, "step 5/12 | loss 3.214 | lr 1.0e-03 | 12.3k tok/s | ETA 0:07\n"
                   "step 10/12 | loss 3.214 | lr 1.0e-03 | 12.3k tok/s | ETA 0:02\n"
                   "step 12/12 | loss 3.214 | lr 1.0e-03 | 12.3k tok/s | time 0:12\n"
                   "step 10000/10000 | loss 2.000 | lr 3.0e-04 | 2.50M tok/s | time 1:02:05\n");
    free(txt);
}

/* On a terminal: one line refreshed with '\r', a newline only after the last step. */
static void test_progress_tty(void) {
    int mfd = posix_openpt(O_RDWR | O_NOCTTY);
    if (mfd < 0 || grantpt(mfd) != 0 || unlockpt(mfd) != 0) {
        printf("test_log: no pseudo-terminal here, skipping the terminal case\n");
        if (mfd >= 0) close(mfd);
        return;
    }
    int sfd = open(ptsname(mfd), O_RDWR | O_NOCTTY);
    FILE *tty = sfd >= 0 ? fdopen(sfd, "w") : NULL;
    CHECK(tty != NULL);
    if (!tty) { close(mfd); return; }
    const float *const loads[2] = {NULL, NULL};
    for (int s = 1; s <= 12; s++) {
        moe_step_metrics m = metrics(s, loads);
        moe_progress(tty, &m, 5);
    }
    fclose(tty);
    char buf[8192];
    size_t n = 0;
    fcntl(mfd, F_SETFL, O_NONBLOCK);
    for (ssize_t r; n < sizeof buf - 1 && (r = read(mfd, buf + n, sizeof buf - 1 - n)) > 0;) n += (size_t)r;
    buf[n] = 0;
    close(mfd);
    int cr = 0, nl = 0;
    for (size_t i = 0; i < n; i++) {
        cr += buf[i] == '\r';
        nl += buf[i] == '\n';
    }
    CHECK(nl == 1 && n > 0 && buf[n - 1] == '\n');   /* the pty turns "\n" into "\r\n" */
    CHECK(cr == 12 + 1);                             /* every step refreshes the line */
    CHECK(strstr(buf, "\rstep 7/12 | loss 10.214 | lr 7.0e-03 | 12.3k tok/s | ETA 0:05") != NULL);
    CHECK(strstr(buf, "time 0:12") != NULL);
}

/* The spike detector: quiet on a falling loss with noisy norms; warns on divergence at
 * once, on relative spikes only with 8 steps of history; the spike enters the history. */
static void test_spike(void) {
    moe_spike s;
    char buf[256];
    moe_spike_init(&s, 256);    /* ln 256 = 5.545 */
    CHECK_STR(moe_spike_check(&s, 3.5e7, 1e10, buf, sizeof buf),
              "loss 3.5e+07 is far above 5.545, the loss of uniform guessing (ln vocab): the run is diverging");
    moe_spike_init(&s, 256);
    CHECK(moe_spike_check(&s, 5.5, 50.0, buf, sizeof buf) == NULL);    /* no history: no relative spike */
    moe_spike_init(&s, 256);
    for (int i = 0; i < 40; i++)
        CHECK(moe_spike_check(&s, 5.5 - 0.05 * i, i % 2 ? 0.5 : 2.0, buf, sizeof buf) == NULL);
    /* the last 32 norms alternate 0.5 and 2.0: median 1.25 */
    CHECK_STR(moe_spike_check(&s, 3.5, 40.0, buf, sizeof buf),
              "gradient norm spike: 40, 32x the median of 1.25 over the last 32 steps");
    CHECK(moe_spike_check(&s, 3.5, 10.0, buf, sizeof buf) == NULL);    /* 8x: within bounds */
    CHECK(moe_spike_check(&s, NAN, NAN, buf, sizeof buf) == NULL);     /* NaN: the loop's own stop */
    CHECK(moe_spike_check(&s, 9.0, 1.0, buf, sizeof buf) != NULL && strncmp(buf, "loss spike: 9 against", 21) == 0);
}

/* halves on overflow (not below 1), doubles after MOE_SCALE_WINDOW good steps in a row, counts
 * the skipped steps; the log has loss_scale and skipped when loss_scale is set, else neither */
static void test_loss_scale(void) {
    moe_scaler s = {MOE_SCALE_INIT, 0, 0};
    CHECK(moe_scaler_update(&s, 1.5) == 0 && s.scale == MOE_SCALE_INIT && s.good == 1);
    CHECK(moe_scaler_update(&s, INFINITY) == 1 && s.scale == MOE_SCALE_INIT / 2 && s.good == 0 && s.skipped == 1);
    CHECK(moe_scaler_update(&s, NAN) == 1 && s.scale == MOE_SCALE_INIT / 4 && s.skipped == 2);
    for (int i = 0; i < MOE_SCALE_WINDOW - 1; i++) moe_scaler_update(&s, 0.5);
    CHECK(s.scale == MOE_SCALE_INIT / 4 && s.good == MOE_SCALE_WINDOW - 1);
    CHECK(moe_scaler_update(&s, 0.5) == 0 && s.scale == MOE_SCALE_INIT / 2 && s.good == 0);
    moe_scaler one = {1.5, 0, 0};
    CHECK(moe_scaler_update(&one, INFINITY) == 1 && one.scale == 1.0);
    CHECK(moe_scaler_update(&one, INFINITY) == 1 && one.scale == 1.0 && one.skipped == 2);

    const char *p = t_path("scale.jsonl");
    char err[512] = "";
    moe_log *l = moe_log_open(p, err, sizeof err);
    CHECK(l != NULL);
    if (!l) return;
    moe_step_metrics m = metrics(1, NULL);
    m.n_moe = 0;
    CHECK(moe_log_step(l, &m) == 0);            /* not fp16: no fields */
    m.step = 2, m.loss_scale = 32768, m.skipped = 1;
    CHECK(moe_log_step(l, &m) == 0);
    moe_log_close(l);
    FILE *f = fopen(p, "r");
    char line[4096];
    for (int k = 1; f && fgets(line, sizeof line, f); k++) {
        json_t *o = json_loads(line, 0, NULL);
        CHECK(o != NULL);
        if (!o) continue;
        if (k == 1) CHECK(!json_object_get(o, "loss_scale") && !json_object_get(o, "skipped"));
        else CHECK(near(json_object_get(o, "loss_scale"), 32768) && json_is_true(json_object_get(o, "skipped")));
        json_decref(o);
    }
    if (f) fclose(f);
}

int main(void) {
    t_mkdir();
    test_loss_scale();
    test_spike();
    test_jsonl();
    test_progress_plain();
    test_progress_tty();
    return t_done("test_log");
}
