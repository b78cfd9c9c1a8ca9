/* log.c - the JSONL metrics log and the progress line (see log.h).
 *
 * The log is the one writer of the metrics format: one compact JSON object per step,
 * built with jansson (so strings and numbers are always valid JSON) and flushed at once,
 * so a crash loses at most the line being written and `tail -f` sees every step. A write
 * that fails (a full disk) is cut back off the file, so the log never keeps half a line;
 * a resumed run first cuts the log back to the checkpoint's step, so no step is logged twice.
 * Numbers are printed with 9 significant digits: floats (expert loads) round-trip exactly
 * and metrics need no more. NaN and infinities, which JSON lacks, become null.
 * The progress line is plain text, never parsed by us.
 */
#include "log.h"
#include "errbuf.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct moe_log {
    FILE *f;            /* NULL: no file, steps are dropped */
    int err;            /* errno of the last failed write */
    double elapsed;     /* the elapsed_s of the last step kept on resume */
};

static moe_log *log_open(const char *path, const char *mode, char *err, size_t errlen) {
    moe_log *l = calloc(1, sizeof *l);
    if (!l) {
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", path ? path : "log");
        return NULL;
    }
    if (path && !(l->f = fopen(path, mode))) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open the log: %s", path, strerror(errno));
        free(l);
        return NULL;
    }
    return l;
}

moe_log *moe_log_open(const char *path, char *err, size_t errlen) { return log_open(path, "w", err, errlen); }

/* the step of one log line, or -1 when it is not a whole step object; *elapsed: its elapsed_s */
static int64_t line_step(const char *line, double *elapsed) {
    json_t *o = json_loads(line, 0, NULL);
    json_t *s = o ? json_object_get(o, "step") : NULL, *e = o ? json_object_get(o, "elapsed_s") : NULL;
    int64_t v = json_is_integer(s) ? (int64_t)json_integer_value(s) : -1;
    *elapsed = json_is_number(e) ? json_number_value(e) : 0.0;
    json_decref(o);
    return v;
}

moe_log *moe_log_open_resume(const char *path, int64_t step, char *err, size_t errlen) {
    if (!path) return log_open(NULL, "a", err, errlen);
    double elapsed = 0.0;
    FILE *in = fopen(path, "r");
    if (in) {       /* keep the whole lines of steps up to `step`, written aside and renamed */
        moe_afile a;
        FILE *out = moe_afile_open(&a, path);
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        int ok = out != NULL;
        int64_t s;
        double e;
        while (ok && (n = getline(&line, &cap, in)) > 0)
            if (line[n - 1] == '\n' && (s = line_step(line, &e)) >= 1 && s <= step) {
                ok = fputs(line, out) >= 0;
                elapsed = e;
            }
        free(line);
        int why = errno;
        fclose(in);
        errno = why;
        if (moe_afile_close(&a, ok) != 0) {
            if (err && errlen) snprintf(err, errlen, "%s: cannot cut the log back to step %lld: %s", path,
                                        (long long)step, strerror(errno));
            return NULL;
        }
    }
    moe_log *l = log_open(path, "a", err, errlen);
    if (l) l->elapsed = elapsed;
    return l;
}

double moe_log_elapsed(const moe_log *l) { return l ? l->elapsed : 0.0; }

void moe_log_close(moe_log *l) {
    if (!l) return;
    if (l->f) fclose(l->f);
    free(l);
}

static json_t *log_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* a string, or null when absent or not UTF-8 (a path may hold any bytes) */
json_t *moe_json_str(const char *s) {
    json_t *v = s ? json_string(s) : NULL;
    return v ? v : json_null();
}

/* the run header; NULL when out of memory */
static json_t *run_object(const moe_run_info *r) {
    json_t *o = json_object();
    if (!o) return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "model", moe_json_str(r->model));
    bad |= json_object_set_new(o, "device", moe_json_str(r->device));
    bad |= json_object_set_new(o, "processes", json_integer(r->processes));
    bad |= json_object_set_new(o, "threads", json_integer(r->threads));
    bad |= json_object_set_new(o, "data", moe_json_str(r->data));
    bad |= json_object_set_new(o, "data_tokens", json_integer(r->data_tokens));
    bad |= json_object_set_new(o, "eval_data", moe_json_str(r->eval_data));
    bad |= json_object_set_new(o, "resumed_from", r->resumed_from >= 0 ? json_integer(r->resumed_from) : json_null());
    bad |= json_object_set_new(o, "steps", json_integer(r->steps));
    bad |= json_object_set_new(o, "batch", json_integer(r->batch));
    bad |= json_object_set_new(o, "context", json_integer(r->context));
    bad |= json_object_set_new(o, "accumulate", json_integer(r->accumulate));
    bad |= json_object_set_new(o, "seed", json_integer((json_int_t)r->seed));
    bad |= json_object_set_new(o, "schedule", moe_json_str(r->schedule));
    bad |= json_object_set_new(o, "lr", log_num(r->lr));
    bad |= json_object_set_new(o, "min_lr", log_num(r->min_lr));
    bad |= json_object_set_new(o, "warmup", json_integer(r->warmup));
    bad |= json_object_set_new(o, "steps_total", json_integer(r->steps_total));
    bad |= json_object_set_new(o, "eval_every", json_integer(r->eval_every));
    bad |= json_object_set_new(o, "eval_batches", json_integer(r->eval_batches));
    bad |= json_object_set_new(o, "checkpoint_every", json_integer(r->checkpoint_every));
    bad |= json_object_set_new(o, "overrides", moe_json_str(r->overrides));
    if (bad) { json_decref(o); return NULL; }
    return o;
}

/* The step's object; NULL when out of memory. */
static json_t *log_object(const moe_step_metrics *m) {
    json_t *o = json_object(), *blocks = json_array(), *loads = json_array();
    if (!o || !blocks || !loads) goto fail;
    int bad = 0;
    bad |= json_object_set_new(o, "step", json_integer(m->step));
    if (m->run) {
        json_t *r = run_object(m->run);
        if (!r) goto fail;
        bad |= json_object_set_new(o, "run", r);
    }
    bad |= json_object_set_new(o, "loss", log_num(m->loss));
    bad |= json_object_set_new(o, "lm_loss", log_num(m->lm_loss));
    bad |= json_object_set_new(o, "aux_loss", log_num(m->aux_loss));
    bad |= json_object_set_new(o, "z_loss", log_num(m->z_loss));
    bad |= json_object_set_new(o, "kd_loss", log_num(m->kd_loss));
    if (m->teacher >= 0) bad |= json_object_set_new(o, "teacher", json_boolean(m->teacher));
    bad |= json_object_set_new(o, "lr", log_num(m->lr));
    bad |= json_object_set_new(o, "grad_norm", log_num(m->grad_norm));
    bad |= json_object_set_new(o, "tokens_per_s", log_num(m->tokens_per_s));
    bad |= json_object_set_new(o, "dropped_fraction", log_num(m->dropped_fraction));
    bad |= json_object_set_new(o, "elapsed_s", log_num(m->elapsed_s));
    bad |= json_object_set_new(o, "tokens", json_integer((json_int_t)m->tokens));
    bad |= json_object_set_new(o, "step_ms", log_num(m->step_ms));
    bad |= json_object_set_new(o, "gflops", log_num(m->gflops));
    if (m->a2a_messages >= 0)
        bad |= json_object_set_new(o, "alltoall", json_pack("{s:I, s:I}", "messages", (json_int_t)m->a2a_messages,
                                                             "bytes", (json_int_t)m->a2a_bytes));
    if (m->eval_loss == m->eval_loss) bad |= json_object_set_new(o, "eval_loss", log_num(m->eval_loss));
    if (m->warning) bad |= json_object_set_new(o, "warning", json_string(m->warning));
    if (m->loss_scale > 0) {
        bad |= json_object_set_new(o, "loss_scale", log_num(m->loss_scale));
        bad |= json_object_set_new(o, "skipped", json_boolean(m->skipped));
    }
    for (int i = 0; i < m->n_moe; i++) {
        /* layers counted from 1, as the language and stats count them (tensor names: block = layer - 1) */
        bad |= json_array_append_new(blocks, json_integer((m->moe_block ? m->moe_block[i] : i) + 1));
        const float *ld = m->loads ? m->loads[i] : NULL;
        int e = m->experts ? m->experts[i] : 0;
        if (!ld || e <= 0) {
            bad |= json_array_append_new(loads, json_null());
            continue;
        }
        json_t *row = json_array();
        if (!row) goto fail;
        for (int k = 0; k < e; k++) bad |= json_array_append_new(row, log_num((double)ld[k]));
        bad |= json_array_append_new(loads, row);
    }
    bad |= json_object_set_new(o, "moe_layers", blocks);
    blocks = NULL;
    bad |= json_object_set_new(o, "expert_load", loads);
    loads = NULL;
    if (bad) goto fail;
    return o;
fail:
    json_decref(o);
    json_decref(blocks);
    json_decref(loads);
    return NULL;
}

int moe_log_step(moe_log *l, const moe_step_metrics *m) {
    if (!l || !m) return -1;
    if (!l->f) return 0;
    json_t *o = log_object(m);
    if (!o) return -1;
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!line) return -1;
    long at = ftell(l->f);
    int ok = fputs(line, l->f) >= 0 && fputc('\n', l->f) != EOF && fflush(l->f) == 0;
    free(line);
    if (ok) return 0;
    l->err = errno;
    if (at >= 0 && ftruncate(fileno(l->f), at) == 0) {     /* no half line stays behind */
        clearerr(l->f);
        fseek(l->f, at, SEEK_SET);
    }
    return -1;
}

const char *moe_log_why(const moe_log *l) { return l && l->err ? strerror(l->err) : "unknown error"; }

void moe_spike_init(moe_spike *s, int64_t vocab) {
    memset(s, 0, sizeof *s);
    s->uniform = log(vocab > 1 ? (double)vocab : 2.0);
}

static int spike_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the median of the finite values among the last k of ring r; NaN when none */
static double spike_median(const double *r, int k) {
    double v[MOE_SPIKE_WINDOW];
    int m = 0;
    for (int i = 0; i < k; i++)
        if (isfinite(r[i])) v[m++] = r[i];
    if (m == 0) return NAN;
    qsort(v, (size_t)m, sizeof *v, spike_cmp);
    return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

/* Thresholds: the loss of a model that has learnt nothing is ln(vocab), so 3x that is
 * divergence whatever the history; against the history (from 8 steps on) a loss 2x or a
 * gradient norm 10x the recent median is a spike. */
const char *moe_spike_check(moe_spike *s, double loss, double grad_norm, char *buf, size_t n) {
    int k = s->n < MOE_SPIKE_WINDOW ? s->n : MOE_SPIKE_WINDOW;
    double ml = spike_median(s->loss, k), mg = spike_median(s->gnorm, k);
    const char *found = NULL;
    if (isfinite(loss) && loss > 3.0 * s->uniform) {
        snprintf(buf, n, "loss %.4g is far above %.4g, the loss of uniform guessing (ln vocab): the run is diverging",
                 loss, s->uniform);
        found = buf;
    } else if (k >= 8 && isfinite(loss) && loss > 2.0 * ml) {
        snprintf(buf, n, "loss spike: %.4g against a median of %.4g over the last %d steps", loss, ml, k);
        found = buf;
    } else if (k >= 8 && isfinite(grad_norm) && mg > 0 && grad_norm > 10.0 * mg) {
        snprintf(buf, n, "gradient norm spike: %.4g, %.0fx the median of %.4g over the last %d steps", grad_norm,
                 grad_norm / mg, mg, k);
        found = buf;
    }
    s->loss[s->n % MOE_SPIKE_WINDOW] = loss;
    s->gnorm[s->n % MOE_SPIKE_WINDOW] = grad_norm;
    s->n++;
    return found;
}

/* "1:02", or "1:02:03" from an hour on. */
static void log_clock(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 359999999.0) { snprintf(buf, n, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void log_rate(char *buf, size_t n, double r) {
    if (!isfinite(r) || r < 0) snprintf(buf, n, "-");
    else if (r < 1e3) snprintf(buf, n, "%.0f", r);
    else if (r < 1e6) snprintf(buf, n, "%.1fk", r / 1e3);
    else snprintf(buf, n, "%.2fM", r / 1e6);
}

void moe_progress(FILE *out, const moe_step_metrics *m, int every) {
    if (!out || !m) return;
    int tty = isatty(fileno(out));
    int last = m->steps > 0 && m->step >= m->steps;
    if (!tty && !last && (every <= 0 || m->step % every != 0)) return;

    char steps[48], rate[32], clock[32], line[192];
    if (m->steps > 0) snprintf(steps, sizeof steps, "%lld/%lld", (long long)m->step, (long long)m->steps);
    else snprintf(steps, sizeof steps, "%lld", (long long)m->step);
    log_rate(rate, sizeof rate, m->tokens_per_s);
    const char *clock_label = "ETA";
    if (last) {
        clock_label = "time";
        log_clock(clock, sizeof clock, m->elapsed_s);
    } else if (m->step > m->first_step && m->steps > 0 && m->elapsed_s > m->elapsed_before) {
        log_clock(clock, sizeof clock,
                  (m->elapsed_s - m->elapsed_before) / (double)(m->step - m->first_step) * (double)(m->steps - m->step));
    } else {
        log_clock(clock, sizeof clock, -1);
    }
    snprintf(line, sizeof line, "step %s | loss %.3f | lr %.1e | %s tok/s | %s %s", steps, m->loss, m->lr,
             rate, clock_label, clock);
    if (tty) {
        /* pad so a shorter line fully covers the previous one */
        fprintf(out, "\r%-79s%s", line, last ? "\n" : "");
    } else {
        fprintf(out, "%s\n", line);
    }
    fflush(out);
}
