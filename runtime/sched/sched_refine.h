/* sched_refine.h (internal): the state of the window-wide passes over a packed plan, shared by the smoothing
 * (refine.c, which owns it), the merge (merge.c) and the moves on it (sm_moves.c). Calls go one way: refine.c
 * calls merge.c and sm_moves.c, merge.c calls sm_moves.c. */
#ifndef LG_SCHED_REFINE_H
#define LG_SCHED_REFINE_H

#include "sched_internal.h"

struct lg_sched_sm {
    const struct lg_sched_refine_in *in;
    double *c;          /* [nbin] cost */
    uint32_t *tok;      /* [nbin] tokens */
    uint32_t **items;   /* [nbin] item lists */
    uint32_t *nit, *cap_it;
    long *first, *last; /* [nbatch] slot extent */
    size_t *pb, *nb;    /* [nbin] previous / next bin of the same rank, or SIZE_MAX */
    long *slot;         /* [nbin] current slot (the merge pass deletes slots) */
    size_t *slot_first; /* [slots + 1] */
    long nslot;
    uint8_t *dead;      /* [nbin] emptied and deleted */
    size_t *lastr;      /* [D] scratch */
    long *rpos;         /* [nbin] position in its rank's chain */
    int dp;             /* D > 1, once the merge is done: Phi over slot costs (phi.c) */
    struct lg_sched_phi ph;
};

/* The longest run of bins one change's Phi is computed over. */
#define LG_SCHED_SM_MAXSEG (4 * LG_SCHED_MAX_STAGES)

/* sm_moves.c: the moves. Each keeps the bins' costs, tokens and item lists (and Phi's slot costs) in step. */
void lg_sched_sm_extent(struct lg_sched_sm *m, size_t b);
/* Phi's change when bins i and j take costs ci and cj (sm_moves.c's delta_win over their windows). */
double lg_sched_sm_delta2(const struct lg_sched_sm *m, size_t i, double ci, size_t j, double cj);
/* Batch b keeps S slots clear of its adapter's neighbouring batches. */
int lg_sched_sm_batch_ok(const struct lg_sched_sm *m, size_t b);
void lg_sched_sm_index_bins(struct lg_sched_sm *m);
void lg_sched_sm_take_out(struct lg_sched_sm *m, size_t i, uint32_t x);
/* -1 on OOM. */
int lg_sched_sm_put_in(struct lg_sched_sm *m, size_t j, uint32_t x);
/* Moves items xi from bin i to j and xj from j to i; keeps the change when every rule it touches holds
 * (1), else undoes it (0); -1 on OOM. */
int lg_sched_sm_try_change(struct lg_sched_sm *m, size_t i, size_t j, const uint32_t *xi, int ni, const uint32_t *xj,
                           int nj);

/* merge.c: empties and deletes up to `limit` of the least-filled slots; -1 on OOM. */
int lg_sched_sm_merge(struct lg_sched_sm *m, size_t limit);

#endif
