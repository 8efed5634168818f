/* plan_svg.c: draws a simulated timeline as SVG. One row per (rank, stage); each forward and backward is a
 * box coloured by adapter (forwards light, backwards dark), a microbatch that mixes adapters is split into
 * horizontal stripes in proportion to each adapter's tokens, and idle time shows as the row's red-tinted
 * background, so bubbles are visible at a glance. Held forwards (optimizer-step waits) get a black outline.
 * Names come from job files, so they are written as XML text (escaped, and only valid UTF-8): markup in a
 * job or adapter name shows as its characters and never becomes part of the drawing. */
#include "lg_io.h"
#include "lg_base.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROW_H 22
#define LEFT 110
#define TOP 46

/* The length of the UTF-8 sequence at s (1-4), or 0 when it is not one (overlong forms, surrogates and code
 * points past U+10FFFF included). */
static int utf8_len(const unsigned char *s)
{
    int n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0)
        return 0;
    unsigned cp = n == 1 ? s[0] : s[0] & (0x7f >> n);
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    static const unsigned least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Writes s as XML character data: & < > " ' as entities, control characters and bytes that are not UTF-8
 * as U+FFFD. */
static void put_text(FILE *f, const char *str)
{
    for (const unsigned char *s = (const unsigned char *)str; *s;) {
        int n = utf8_len(s);
        if (n == 0 || (n == 1 && *s < 0x20)) {
            fputs("&#xfffd;", f);
            s++;
            continue;
        }
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fwrite(s, 1, (size_t)n, f);
        }
        s += n;
    }
}

/* A distinct hue per adapter (golden-angle steps), lightness by op kind. */
static void colour(int adapter, char kind, char *out, size_t n)
{
    double hue = fmod(adapter * 137.508 + 210.0, 360.0);
    snprintf(out, n, "hsl(%.0f,%d%%,%d%%)", hue, 65, kind == 'F' ? 68 : 40);
}

static void legend(FILE *f, const lg_job_t *job, double width)
{
    double x = LEFT;
    for (int a = 0; a < lg_job_adapter_count(job) && x < width - 100; a++) {
        struct lg_adapter_info in;
        lg_job_adapter(job, a, &in);
        char c[48];
        colour(a, 'F', c, sizeof c);
        fprintf(f, "<rect x='%.0f' y='24' width='12' height='12' fill='%s'/>", x, c);
        colour(a, 'B', c, sizeof c);
        fprintf(f, "<rect x='%.0f' y='24' width='12' height='12' fill='%s'/>", x + 13, c);
        fprintf(f, "<text x='%.0f' y='34'>", x + 30);
        put_text(f, in.name);
        fprintf(f, "</text>\n");
        x += 40 + 8.0 * (double)strlen(in.name);
    }
}

static void box(FILE *f, const lg_job_t *job, const lg_plan_t *plan, const struct lg_sim_event *e, double x, double w,
                double y, int tips)
{
    struct lg_mb_view m;
    lg_plan_mb(plan, e->mb, &m);
    double h = ROW_H - 4, off = 0;
    int held = 0;
    for (size_t j = 0; j < m.nseg; j++) {
        struct lg_seg_view s;
        lg_plan_seg(plan, e->mb, j, &s);
        double tok = 0;
        for (size_t k = 0; k < s.nsamples; k++)
            tok += lg_job_sample_length(job, s.adapter, s.samples[k]);
        double sh = m.tokens ? h * tok / m.tokens : h / m.nseg;
        char c[48];
        colour(s.adapter, e->kind, c, sizeof c);
        fprintf(f, "<rect x='%.2f' y='%.2f' width='%.2f' height='%.2f' fill='%s'/>", x, y + off, w, sh, c);
        off += sh;
        held |= s.wait;
    }
    fprintf(f, "<rect x='%.2f' y='%.2f' width='%.2f' height='%.2f' fill='none' stroke='%s' stroke-width='%s'>", x, y, w,
            h, held && e->kind == 'F' ? "#000" : "#fff", held && e->kind == 'F' ? "1.2" : "0.3");
    if (tips)
        fprintf(f, "<title>%c mb %u (rank %d pos %zu): %u tokens, %.0f-%.0f us</title>", e->kind, e->mb, m.rank,
                m.pos, m.tokens, e->start_us, e->end_us);
    fprintf(f, "</rect>\n");
}

enum lg_status lg_sim_write_svg(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim, const char *path)
{
    if (!job || !plan || !sim || !path)
        return lg_fail(LG_ERR_INVALID, "lg_sim_write_svg: null argument");
    const struct lg_sim_event *ev;
    size_t nev = lg_sim_events(sim, &ev);
    size_t nmb = lg_plan_mb_count(plan);
    if (!ev && nmb)
        return lg_fail(LG_ERR_INVALID, "svg: the simulation did not record its ops (set record_events)");
    struct lg_sim_stats st;
    lg_sim_get_stats(sim, &st);
    struct lg_plan_summary sm;
    lg_plan_get_summary(plan, &sm);
    size_t per_rank = sm.slots ? sm.slots : 1;
    double width = LEFT + fmin(24000.0, fmax(1000.0, 8.0 * (double)per_rank)) + 20;
    double span = st.makespan_us > 0 ? st.makespan_us : 1, scale = (width - LEFT - 20) / span;
    int rows = st.ranks * st.stages;
    double height = TOP + rows * ROW_H + 40;
    FILE *f = fopen(path, "w");
    if (!f)
        return lg_fail(LG_ERR_IO, "%s: cannot open for writing", path);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' font-family='sans-serif' "
               "font-size='11'>\n<rect width='100%%' height='100%%' fill='#fff'/>\n",
            width, height);
    fprintf(f, "<text x='8' y='16' font-size='13'>");
    put_text(f, lg_job_name(job));
    fprintf(f, ": %s plan, %zu microbatches, S=%d, DP=%d: makespan %.1f ms, bubble %.2f%%, DP imbalance %.2f%%</text>\n",
            lg_plan_algo_name(lg_plan_get_algo(plan)), nmb, st.stages, st.ranks, st.makespan_us / 1e3,
            100 * st.bubble, 100 * st.dp_imbalance);
    legend(f, job, width);
    for (int r = 0; r < st.ranks; r++)
        for (int s = 0; s < st.stages; s++) {
            double y = TOP + (r * st.stages + s) * ROW_H;
            fprintf(f, "<text x='8' y='%.0f'>rank %d stage %d</text>", y + 15, r, s);
            fprintf(f, "<rect x='%d' y='%.0f' width='%.2f' height='%d' fill='#f6d5d5'/>\n", LEFT, y + 1, span * scale,
                    ROW_H - 2);
        }
    int tips = nev <= 20000;
    for (size_t i = 0; i < nev; i++) {
        const struct lg_sim_event *e = &ev[i];
        double y = TOP + (e->rank * st.stages + e->stage) * ROW_H + 2;
        box(f, job, plan, e, LEFT + e->start_us * scale, fmax(0.3, (e->end_us - e->start_us) * scale), y, tips);
    }
    double axis = TOP + rows * ROW_H + 14;
    double step = pow(10, floor(log10(span / 1e3 / 5 > 0 ? span / 1e3 / 5 : 1)));
    for (double t = 0; t <= span / 1e3 + 1e-9; t += step)
        fprintf(f, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#888'/><text x='%.1f' y='%.0f'>%g ms</text>\n",
                LEFT + t * 1e3 * scale, axis - 6, LEFT + t * 1e3 * scale, axis - 2, LEFT + t * 1e3 * scale + 2, axis + 10,
                t);
    fprintf(f, "</svg>\n");
    int err = ferror(f);
    if (fclose(f) != 0 || err)
        return lg_fail(LG_ERR_IO, "%s: write error", path);
    return LG_OK;
}
