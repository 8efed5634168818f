/* lg_ref_impl.h (internal to ref): what the op files of the CPU reference share. */
#ifndef LG_REF_IMPL_H
#define LG_REF_IMPL_H

#include "lg_base.h"
#include "lg_ref_ops.h"

/* Checks cu_seqlens (cu[0] = 0, strictly increasing, cu[nseq] = n) and gives the longest sample's length.
 * `what` names the caller in the detail ("lg_ref_attn_forward"). */
enum lg_status lg_ref_seqs_check(const struct lg_ref_seqs *s, const char *what, int64_t *maxlen);

/* acc[a][b] = x_a · w_b for 4 contiguous rows of x and 4 of w, each of length K: 16 double sums in k order
 * (linear.c; the LM head uses it for its logits). */
void lg_ref_dot4x4(const float *x, const float *w, int64_t K, double acc[4][4]);

#endif
