/* sched_pack.h (internal): the state of our planner, shared by the slot loop (sched_pack.c) and the bin
 * filling (sched_fill.c). A slot is one microbatch position on every DP rank; a bin is one microbatch. */
#ifndef LG_SCHED_PACK_H
#define LG_SCHED_PACK_H

#include "sched_internal.h"

struct pk_item {
    uint32_t sample, len;
    double cost; /* forward + backward per layer, the balancing unit */
    int bin;     /* -1 while unplaced */
};

struct pk_batch {
    int a;
    uint32_t g;
    uint32_t first, n; /* its items, longest first */
    uint32_t left;     /* unplaced items */
    uint64_t tok_left;
    double start_nom;  /* paced start slot */
    double deadline;   /* last slot that keeps the next batch on pace */
};

struct pk_bin {
    uint32_t tokens, n;
    double cost;
    long slot;
    int rank;
};

struct lg_rg; /* sched_regroup.c: scratch of the group knapsack */

struct pk {
    const lg_job_t *job;
    int D, S, A, tokens_only, no_pacing;
    uint32_t cap, tau;
    double c0, klim;    /* fixed cost of a bin; cost limit of a bin */
    double klim_max;    /* the regroup's cost limit: a lone sample of tau tokens */
    struct pk_item *it; /* batch after batch */
    struct pk_batch *bt;
    size_t nit, nbt, *bbase; /* batches of adapter a: bbase[a] .. bbase[a+1] */
    size_t *next;            /* [A] next batch to open (index into bt) */
    long *ready;             /* [A] first slot the next batch may use */
    long *open;              /* [A] the open batch, or -1 */
    long *open_at_slot;      /* [A] the open batch when the slot began */
    struct pk_bin *bin;
    size_t nbin, cap_bin;
    uint32_t *cur; /* items of the bin being filled */
    size_t ncur;
    double *rank_cost;
    size_t unplaced;
    struct lg_rg *rg;
};

/* sched_fill.c */
size_t lg_pk_batch_of(const struct pk *p, uint32_t k);
void lg_pk_place(struct pk *p, size_t bi, size_t b, uint32_t k);
/* Takes item k back out of bin bi (the bin being filled). */
void lg_pk_unplace(struct pk *p, size_t bi, uint32_t k);
/* Batch b of adapter a may give items to slot t: it is open, or may start (on pace, or `early`). */
int lg_pk_eligible(const struct pk *p, int a, long t, int early, size_t *b);
/* Fills bin bi, the d-th of slot t: urgent shares, best fit, trades that close the room, then the regroup.
 * cand is scratch for A entries. */
void lg_pk_fill(struct pk *p, size_t bi, long t, int d, size_t *cand);

/* sched_regroup.c: re-chooses bin bi of slot t as a group knapsack over the batches that may run, none
 * giving fewer tokens than it gives now, to close the room no single sample fits. Bins with more room than
 * LG_RG_ROOM tokens are left as they are. */
#define LG_RG_ROOM 4096
enum lg_status lg_pk_regroup_init(struct pk *p);
void lg_pk_regroup(struct pk *p, size_t bi, long t);
void lg_pk_regroup_free(struct pk *p);

#endif
