/* lg_attn_iso.h: the isolation check the attention GPU suites make for every backend (tests/
 * test_attention_gpu_calls.c for the generated kernels, tests/test_attention_cudnn_gpu.c for cuDNN): fresh
 * inputs for one sample of a pack, then every output and gradient of the other samples must be unchanged. On
 * plain fp32 arrays (dtype-rounded), so that each suite keeps its own case and buffer types. Tests only. */
#ifndef LG_ATTN_ISO_H
#define LG_ATTN_ISO_H

#include "lg_common.h"

#include <stdint.h>

struct lg_attn_iso {
    int64_t T;          /* tokens of the pack */
    const int32_t *cu;  /* sample starts, nseq + 1 */
    int hq, hkv, hd;
    enum lg_dtype t;
};

/* Tensors in the order o, lse, dq, dk, dv (outputs) and q, k, v, dout (inputs). */
struct lg_attn_iso_out {
    const float *o, *lse, *dq, *dk, *dv;
};
struct lg_attn_iso_in {
    float *q, *k, *v, *dout;
};

/* Copies of q, k, v, dout with sample `victim`'s rows replaced by fresh values (seeded, rounded to s->t). */
void lg_attn_iso_perturb(const struct lg_attn_iso *s, const struct lg_attn_iso_in *from, int victim, uint64_t seed,
                         struct lg_attn_iso_in *out);
void lg_attn_iso_free(struct lg_attn_iso_in *in);

/* Asserts (Check) that every token outside sample `victim` has the same o, lse, dq, dk, dv in a and b (bit
 * for bit, but dQ when !exact_dq: a fast mode sums it in atomic order, compared to rounding), and that the
 * victim's outputs changed. `mode` names the run in the messages. */
void lg_attn_iso_check(const struct lg_attn_iso *s, int victim, const struct lg_attn_iso_out *a,
                       const struct lg_attn_iso_out *b, int exact_dq, const char *mode);

#endif
