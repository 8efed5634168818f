/* xent.c: the LM head with cross-entropy of the CPU reference (lg_ref_ops.h), forward and backward in one pass.
 *
 * The vocabulary can be 152k, so logits never exist for all tokens at once: counted rows are taken BLOCK at a
 * time (copied together, so the linear layer's 4x4 dot kernel serves them), their logits computed in double
 * and turned into exp(z - max) in place, which gives the log-sum-exp and then, for the backward, the softmax
 * that is folded straight into dx. Each row of W is read once per block and used for every row in it, which
 * keeps W (V × H, larger than the caches) from being streamed once per token. Ignored rows (-100) cost nothing. */
#include "lg_ref_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 4 /* rows per block: lg_ref_dot4x4's height */
#define IGNORE (-100)

struct block {
    int64_t rows[BLOCK];
    int nb;
    float *x;   /* [BLOCK, H]: the rows' x, zero-padded */
    double *z;  /* [BLOCK, V]: logits, then exp(z - max) */
    double *dx; /* [BLOCK, H] */
    double lse[BLOCK], sum[BLOCK], zlab[BLOCK];
};

static void block_logits(const struct lg_ref_lm_head *p, struct block *k)
{
    const int64_t H = p->H, V = p->V;
    double acc[4][4];
    int64_t v = 0;
    for (; v + 4 <= V; v += 4) {
        lg_ref_dot4x4(k->x, p->w + v * H, H, acc);
        for (int b = 0; b < BLOCK; b++)
            for (int j = 0; j < 4; j++)
                k->z[b * V + v + j] = acc[b][j];
    }
    for (; v < V; v++)
        for (int b = 0; b < BLOCK; b++) {
            double a = 0;
            for (int64_t c = 0; c < H; c++)
                a += (double)k->x[b * H + c] * p->w[v * H + c];
            k->z[b * V + v] = a;
        }
}

/* lse, the label's logit, and z ← exp(z - max) with its sum, per row */
static void block_softmax(const struct lg_ref_lm_head *p, struct block *k)
{
    const int64_t V = p->V;
    for (int b = 0; b < k->nb; b++) {
        double *z = k->z + b * V, mx = -INFINITY, sum = 0;
        k->zlab[b] = z[p->labels[k->rows[b]]];
        for (int64_t v = 0; v < V; v++)
            mx = z[v] > mx ? z[v] : mx; /* not fmax: a NaN logit must reach the loss */
        for (int64_t v = 0; v < V; v++)
            sum += (z[v] = exp(z[v] - mx));
        k->sum[b] = sum;
        k->lse[b] = mx + log(sum);
    }
}

/* dx_b = scale · Σ_v (softmax_v - [v = label_b]) W_v */
static void block_dx(const struct lg_ref_lm_head *p, struct block *k, float *dx)
{
    const int64_t H = p->H, V = p->V;
    memset(k->dx, 0, sizeof *k->dx * (size_t)(BLOCK * H));
    for (int64_t v = 0; v < V; v++) {
        const float *w = p->w + v * H;
        for (int b = 0; b < k->nb; b++) {
            const double coef = k->z[b * V + v] / k->sum[b] - (p->labels[k->rows[b]] == v ? 1.0 : 0.0);
            double *a = k->dx + b * H;
            for (int64_t c = 0; c < H; c++)
                a[c] += coef * w[c];
        }
    }
    for (int b = 0; b < k->nb; b++)
        for (int64_t c = 0; c < H; c++)
            dx[k->rows[b] * H + c] = (float)(p->scale * k->dx[b * H + c]);
}

static enum lg_status check(const struct lg_ref_lm_head *p)
{
    if (p->n < 0 || p->H < 1 || p->V < 1 || !p->w || !p->labels || (p->n > 0 && !p->x))
        return lg_fail(LG_ERR_INVALID, "lg_ref_lm_head_loss: bad shape (n %lld, H %lld, V %lld) or NULL array",
                       (long long)p->n, (long long)p->H, (long long)p->V);
    for (int64_t t = 0; t < p->n; t++)
        if (p->labels[t] != IGNORE && (p->labels[t] < 0 || p->labels[t] >= p->V))
            return lg_fail(LG_ERR_INVALID, "lg_ref_lm_head_loss: token %lld has label %d, outside [0, %lld) and "
                           "not -100", (long long)t, p->labels[t], (long long)p->V);
    return LG_OK;
}

/* the next up to BLOCK counted rows from *t on; zeroes dx of the ignored rows passed over */
static void next_block(const struct lg_ref_lm_head *p, int64_t *t, struct block *k, float *dx)
{
    const int64_t H = p->H;
    k->nb = 0;
    memset(k->x, 0, sizeof *k->x * (size_t)(BLOCK * H));
    for (; *t < p->n && k->nb < BLOCK; ++*t) {
        if (p->labels[*t] == IGNORE) {
            if (dx)
                memset(dx + *t * H, 0, sizeof *dx * (size_t)H);
            continue;
        }
        memcpy(k->x + k->nb * H, p->x + *t * H, sizeof *k->x * (size_t)H);
        k->rows[k->nb++] = *t;
    }
}

enum lg_status lg_ref_lm_head_loss(const struct lg_ref_lm_head *p, double *loss, float *dx, int64_t *count)
{
    enum lg_status st = check(p);
    if (st != LG_OK)
        return st;
    const int64_t H = p->H, V = p->V;
    struct block k;
    k.z = malloc(sizeof *k.z * (size_t)(BLOCK * (V + H)));
    k.x = malloc(sizeof *k.x * (size_t)(BLOCK * H));
    if (!k.z || !k.x) {
        free(k.z), free(k.x);
        return lg_fail(LG_ERR_OOM, "lg_ref_lm_head_loss: %d rows of %lld logits", BLOCK, (long long)V);
    }
    k.dx = k.z + BLOCK * V;
    double sum = 0;
    int64_t counted = 0;
    for (int64_t t = 0; t < p->n;) {
        next_block(p, &t, &k, dx);
        if (!k.nb)
            continue;
        block_logits(p, &k);
        block_softmax(p, &k);
        for (int b = 0; b < k.nb; b++)
            sum += k.lse[b] - k.zlab[b];
        if (dx)
            block_dx(p, &k, dx);
        counted += k.nb;
    }
    free(k.z), free(k.x);
    if (loss)
        *loss = p->scale * sum;
    if (count)
        *count = counted;
    return LG_OK;
}
