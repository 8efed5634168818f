/* adamw.c: torch.optim.AdamW (decoupled weight decay, amsgrad off) with clip_grad_norm_ over a list of
 * tensors, for the LoRA parameters of the CPU backend (lg_ref_ops.h). Every reduction runs in list order and
 * element order, in double, so a step is deterministic. A step whose gradient norm is not finite changes
 * nothing and says so: the caller logs it and goes on with the next batch. */
#include "lg_ref_impl.h"

#include <math.h>

double lg_ref_grad_norm(const struct lg_ref_params *l)
{
    double ss = 0;
    for (int i = 0; i < l->n; i++)
        for (int64_t e = 0; e < l->count[i]; e++)
            ss += (double)l->g[i][e] * l->g[i][e];
    return sqrt(ss);
}

double lg_ref_grad_clip(const struct lg_ref_params *l, double max_norm, double norm)
{
    /* clip_coef = max_norm / (total_norm + 1e-6); clamped to 1, so only c < 1 changes anything */
    const double c = max_norm / (norm + 1e-6);
    if (!(c < 1.0))
        return 1.0;
    for (int i = 0; i < l->n; i++)
        for (int64_t e = 0; e < l->count[i]; e++)
            l->g[i][e] = (float)((double)l->g[i][e] * c);
    return c;
}

static enum lg_status check(const struct lg_ref_params *l, int64_t t)
{
    if (t < 1)
        return lg_fail(LG_ERR_INVALID, "lg_ref_adamw_step: step %lld; steps count from 1", (long long)t);
    if (l->n < 0 || (l->n > 0 && (!l->p || !l->g || !l->m || !l->v || !l->count)))
        return lg_fail(LG_ERR_INVALID, "lg_ref_adamw_step: %d tensors with a NULL list", l->n);
    for (int i = 0; i < l->n; i++)
        if (l->count[i] < 0 || (l->count[i] > 0 && (!l->p[i] || !l->g[i] || !l->m[i] || !l->v[i])))
            return lg_fail(LG_ERR_INVALID, "lg_ref_adamw_step: tensor %d: count %lld or a NULL array", i,
                           (long long)l->count[i]);
    return LG_OK;
}

enum lg_status lg_ref_adamw_step(const struct lg_ref_adamw *o, const struct lg_ref_params *l, int64_t t,
                                 double *grad_norm, int *skipped)
{
    enum lg_status st = check(l, t);
    if (st != LG_OK)
        return st;
    const double norm = lg_ref_grad_norm(l);
    if (grad_norm)
        *grad_norm = norm;
    if (skipped)
        *skipped = !isfinite(norm);
    if (!isfinite(norm))
        return LG_OK;
    if (o->max_grad_norm > 0 && isfinite(o->max_grad_norm))
        lg_ref_grad_clip(l, o->max_grad_norm, norm);
    const double b1 = o->beta1, b2 = o->beta2;
    const double decay = 1.0 - o->lr * o->weight_decay;
    const double step_size = o->lr / (1.0 - pow(b1, (double)t)), bc2_sqrt = sqrt(1.0 - pow(b2, (double)t));
    for (int i = 0; i < l->n; i++) {
        float *p = l->p[i], *m = l->m[i], *v = l->v[i];
        const float *g = l->g[i];
        for (int64_t e = 0; e < l->count[i]; e++) {
            const double gd = g[e];
            const double mn = b1 * m[e] + (1.0 - b1) * gd, vn = b2 * v[e] + (1.0 - b2) * gd * gd;
            const double pd = (double)p[e] * decay - step_size * mn / (sqrt(vn) / bc2_sqrt + o->eps);
            m[e] = (float)mn, v[e] = (float)vn, p[e] = (float)pd;
        }
    }
    return LG_OK;
}
