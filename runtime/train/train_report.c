/* train_report.c: what a run tells the world: progress events for the caller (the CLI prints them), each
 * adapter's metrics.jsonl (a line per step and per validation, appended as they happen and rewritten whole at
 * checkpoints, so a resumed run's file matches the history it resumed from) and its loss curve loss.svg
 * (training and validation loss against steps), rewritten at each checkpoint and at the end. */
#include "train_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

double lg_train_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t peak_rss(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (size_t)ru.ru_maxrss * 1024 : 0;
}

void lg_report(struct lg_trainer *tr, const struct lg_train_progress *p)
{
    if (p->event == LG_EV_STEP) { /* the steady rate runs from the first step to the last (lg_train_result) */
        tr->t_last = lg_train_now();
        tr->tokens_last = tr->tokens;
        if (!tr->t_first) {
            tr->t_first = tr->t_last;
            tr->tokens_first = tr->tokens;
        }
    }
    if (!tr->opts || !tr->opts->progress || tr->rank != 0) /* the ranks step alike: rank 0 speaks for all */
        return;
    struct lg_train_progress q = *p;
    q.elapsed_s = tr->elapsed_before + (lg_train_now() - tr->t0);
    q.tokens_per_s = q.elapsed_s > 0 ? (double)tr->tokens / (lg_train_now() - tr->t0 + 1e-9) : 0;
    int64_t done = 0, all = 0;
    for (int i = 0; i < tr->nad; i++) {
        done += tr->ad[i].step;
        all += tr->ad[i].steps;
    }
    q.eta_s = done > 0 && all > done ? (lg_train_now() - tr->t0) * (double)(all - done) / (double)done : 0;
    q.mem_bytes = peak_rss();
    q.epoch = tr->epoch + 1;
    q.log_every = tr->tc.log_every;
    tr->opts->progress(&q, tr->opts->user);
}

void lg_report_info(struct lg_trainer *tr, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct lg_train_progress p = {.event = LG_EV_INFO, .adapter = -1, .name = tr->tc.name, .message = msg};
    lg_report(tr, &p);
}

static int push(struct lg_point **arr, size_t *n, size_t *cap, const struct lg_point *p)
{
    if (*n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        struct lg_point *q = realloc(*arr, nc * sizeof *q);
        if (!q)
            return 0;
        *arr = q;
        *cap = nc;
    }
    (*arr)[(*n)++] = *p;
    return 1;
}

static int metrics_line(char *buf, size_t n, const struct lg_point *p, int val)
{
    if (val)
        return snprintf(buf, n, "{\"step\": %lld, \"val_loss\": %.9g, \"val_ppl\": %.9g}\n", (long long)p->step,
                        p->loss, exp(p->loss));
    return snprintf(buf, n, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g}\n",
                    (long long)p->step, p->loss, p->lr, p->grad_norm);
}

static enum lg_status append_metrics(struct lg_ad_state *a, const struct lg_point *p, int val)
{
    enum lg_status s = lg_dir_create(a->out_dir);
    if (s != LG_OK)
        return s;
    char path[1100], line[256];
    snprintf(path, sizeof path, "%s/metrics.jsonl", a->out_dir);
    FILE *f = fopen(path, "a");
    if (!f)
        return lg_fail(LG_ERR_IO, "%s: cannot append: %s", path, strerror(errno));
    int len = metrics_line(line, sizeof line, p, val);
    int bad = fwrite(line, 1, (size_t)len, f) != (size_t)len;
    bad |= fclose(f) != 0;
    return bad ? lg_fail(LG_ERR_IO, "%s: write failed", path) : LG_OK;
}

enum lg_status lg_report_point(struct lg_trainer *tr, struct lg_ad_state *a, const struct lg_point *p, int val)
{
    int ok = val ? push(&a->vhist, &a->nvhist, &a->capvhist, p) : push(&a->hist, &a->nhist, &a->caphist, p);
    if (!ok)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    enum lg_status s = tr->rank == 0 ? append_metrics(a, p, val) : LG_OK;
    if (s != LG_OK)
        return s;
    struct lg_train_progress e = {.event = val ? LG_EV_EVAL : LG_EV_STEP, .adapter = a->index, .name = a->cfg->name,
                                  .step = a->step, .steps = a->steps, .loss = val ? NAN : p->loss,
                                  .val_loss = val ? p->loss : NAN, .lr = p->lr, .grad_norm = p->grad_norm};
    lg_report(tr, &e);
    return LG_OK;
}

/* metrics.jsonl rewritten from the history, in step order (training and validation lines interleaved). */
static enum lg_status write_metrics(struct lg_ad_state *a)
{
    size_t cap = (a->nhist + a->nvhist + 1) * 128, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    size_t i = 0, j = 0;
    while (i < a->nhist || j < a->nvhist) {
        int val = j < a->nvhist && (i >= a->nhist || a->vhist[j].step <= a->hist[i].step);
        len += (size_t)metrics_line(buf + len, cap - len, val ? &a->vhist[j++] : &a->hist[i++], val);
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", a->out_dir);
    enum lg_status s = lg_file_write_atomic(path, buf, len);
    free(buf);
    return s;
}

/* Appends printf output to a growing buffer. */
struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k >= 0 && b->p && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = (b->cap + (size_t)(k > 0 ? k : 0) + 1) * 2;
        char *q = realloc(b->p, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
}

static void polyline(struct sbuf *b, const struct lg_point *pt, size_t n, double x0, double xs, double y0,
                     double ys, double lo, const char *colour)
{
    if (!n)
        return;
    sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", colour);
    for (size_t i = 0; i < n; i++)
        if (isfinite(pt[i].loss))
            sb_printf(b, "%.1f,%.1f ", x0 + xs * (double)pt[i].step, y0 - ys * (pt[i].loss - lo));
    sb_printf(b, "\"/>\n");
}

static void xml_text(struct sbuf *b, const char *s)
{
    for (; *s; s++)
        switch (*s) {
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '&': sb_printf(b, "&amp;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        default: sb_printf(b, "%c", *s);
        }
}

/* loss.svg: training loss (blue) and validation loss (orange dots and line) against steps. */
static enum lg_status write_svg(struct lg_ad_state *a)
{
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < a->nhist; i++)
        if (isfinite(a->hist[i].loss))
            lo = fmin(lo, a->hist[i].loss), hi = fmax(hi, a->hist[i].loss);
    for (size_t i = 0; i < a->nvhist; i++)
        if (isfinite(a->vhist[i].loss))
            lo = fmin(lo, a->vhist[i].loss), hi = fmax(hi, a->vhist[i].loss);
    if (!isfinite(lo))
        lo = 0, hi = 1;
    if (hi - lo < 1e-6)
        hi = lo + 1e-6;
    const double W = 640, H = 360, L = 60, R = 20, T = 30, B = 40;
    double steps = (double)(a->steps > 0 ? a->steps : 1);
    double xs = (W - L - R) / steps, ys = (H - T - B) / (hi - lo);
    struct sbuf b = {0};
    sb_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                  "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    sb_printf(&b, "<text x=\"%.0f\" y=\"18\">", L);
    xml_text(&b, a->cfg->name);
    sb_printf(&b, ": loss (training blue, validation orange)</text>\n");
    sb_printf(&b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, H - B, W - R, H - B);
    sb_printf(&b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n", L, T, L, H - B);
    for (int k = 0; k <= 4; k++) {
        double v = lo + (hi - lo) * k / 4.0, y = H - B - ys * (v - lo);
        sb_printf(&b, "<text x=\"4\" y=\"%.1f\">%.3f</text>\n", y + 4, v);
    }
    sb_printf(&b, "<text x=\"%.0f\" y=\"%.0f\">step</text><text x=\"%.0f\" y=\"%.0f\">%lld</text>\n", (W - L) / 2 + L,
              H - 8, W - R - 30, H - B + 16, (long long)a->steps);
    polyline(&b, a->hist, a->nhist, L, xs, H - B, ys, lo, "#1f77b4");
    polyline(&b, a->vhist, a->nvhist, L, xs, H - B, ys, lo, "#ff7f0e");
    for (size_t i = 0; i < a->nvhist; i++)
        if (isfinite(a->vhist[i].loss))
            sb_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#ff7f0e\"/>\n",
                      L + xs * (double)a->vhist[i].step, H - B - ys * (a->vhist[i].loss - lo));
    sb_printf(&b, "</svg>\n");
    if (b.oom) {
        free(b.p);
        return lg_fail(LG_ERR_OOM, "trainer: out of memory");
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/loss.svg", a->out_dir);
    enum lg_status s = lg_file_write_atomic(path, b.p, b.n);
    free(b.p);
    return s;
}

enum lg_status lg_report_write(struct lg_trainer *tr, struct lg_ad_state *a)
{
    enum lg_status s = lg_dir_create(a->out_dir);
    if (s == LG_OK)
        s = write_metrics(a);
    return s == LG_OK ? write_svg(a) : s;
}
