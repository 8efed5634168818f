/* lg_attn_iso.c: see lg_attn_iso.h. */
#include "lg_attn_iso.h"

#include "lg_gpu_util.h"
#include "lg_test.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *copy(const float *x, size_t n)
{
    float *y = malloc(sizeof(float) * (n ? n : 1));
    ck_assert_ptr_nonnull(y);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

void lg_attn_iso_perturb(const struct lg_attn_iso *s, const struct lg_attn_iso_in *from, int victim, uint64_t seed,
                         struct lg_attn_iso_in *out)
{
    const size_t nq = (size_t)s->T * s->hq * s->hd, nk = (size_t)s->T * s->hkv * s->hd;
    out->q = copy(from->q, nq), out->k = copy(from->k, nk), out->v = copy(from->v, nk);
    out->dout = copy(from->dout, nq);
    float *fresh = malloc(sizeof(float) * (nq ? nq : 1));
    ck_assert_ptr_nonnull(fresh);
    lg_test_fill(fresh, nq, seed, 1.5f);
    lg_host_round(fresh, nq, s->t);
    const int64_t b0 = s->cu[victim], b1 = s->cu[victim + 1];
    for (int64_t i = b0 * s->hq * s->hd; i < b1 * s->hq * s->hd; i++)
        out->q[i] = fresh[i], out->dout[i] = fresh[nq - 1 - i];
    for (int64_t i = b0 * s->hkv * s->hd; i < b1 * s->hkv * s->hd; i++)
        out->k[i] = fresh[i + 1], out->v[i] = -fresh[i];
    free(fresh);
}

void lg_attn_iso_free(struct lg_attn_iso_in *in)
{
    free(in->q), free(in->k), free(in->v), free(in->dout);
    *in = (struct lg_attn_iso_in){0};
}

void lg_attn_iso_check(const struct lg_attn_iso *s, int victim, const struct lg_attn_iso_out *a,
                       const struct lg_attn_iso_out *b, int exact_dq, const char *mode)
{
    const int64_t b0 = s->cu[victim], b1 = s->cu[victim + 1];
    const struct {
        const char *name;
        const float *x, *y;
        int64_t row;
    } t[] = {{"o", a->o, b->o, (int64_t)s->hq * s->hd},    {"lse", a->lse, b->lse, s->hq},
             {"dq", a->dq, b->dq, (int64_t)s->hq * s->hd}, {"dk", a->dk, b->dk, (int64_t)s->hkv * s->hd},
             {"dv", a->dv, b->dv, (int64_t)s->hkv * s->hd}};
    int changed_victim = 0;
    for (int k = 0; k < 5; k++) {
        const int exact = exact_dq || strcmp(t[k].name, "dq");
        for (int64_t i = 0; i < s->T * t[k].row; i++) {
            const int64_t tok = i / t[k].row;
            if (tok >= b0 && tok < b1) {
                changed_victim |= t[k].x[i] != t[k].y[i];
                continue;
            }
            const int same = exact ? !memcmp(&t[k].x[i], &t[k].y[i], 4)
                                   : fabsf(t[k].x[i] - t[k].y[i]) <= 1e-2f * (fabsf(t[k].x[i]) + 1e-3f);
            ck_assert_msg(same, "%s: %s of token %lld (outside the changed sample) changed: %g -> %g", mode,
                          t[k].name, (long long)tok, t[k].x[i], t[k].y[i]);
        }
    }
    ck_assert_msg(changed_victim, "%s: the changed sample's outputs did not change", mode);
}
