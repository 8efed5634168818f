/* sched_pack.h (internal): the state of our planner, shared by the slot loop (pack.c), the bin filling
 * (fill.c), the regroup (regroup.c), the state's own file (pack_state.c), which sets it up and holds the
 * moves every other file makes on it, and the candidates of each slot (pack_cand.c). Calls go one way,
 * pack.c -> fill.c -> regroup.c -> pack_state.c -> pack_cand.c, so no file calls back into one that calls
 * it. A slot is one microbatch position on every DP rank; a bin is
 * one microbatch. */
#ifndef LG_SCHED_PACK_H
#define LG_SCHED_PACK_H

#include "sched_internal.h"

struct lg_sched_pk_item {
    uint32_t sample, len;
    uint32_t b;  /* its global batch (index into bt) */
    double cost; /* forward + backward per layer, the balancing unit */
    int bin;     /* -1 while unplaced */
};

struct lg_sched_pk_batch {
    int a;
    uint32_t g;
    uint32_t first, n; /* its items, longest first */
    uint32_t left;     /* unplaced items */
    uint64_t tok_left;
    double start_nom;  /* paced start slot */
    double deadline;   /* last slot that keeps the next batch on pace */
    long opened;       /* the slot its first item went to */
};

struct lg_sched_pk_bin {
    uint32_t tokens, n;
    double cost;
    long slot;
    int rank;
};

struct lg_sched_rg; /* regroup.c: scratch of the group knapsack */

struct lg_sched_pk {
    const lg_job_t *job;
    int D, S, A, tokens_only, no_pacing;
    uint32_t cap, tau;
    double c0, klim;             /* fixed cost of a bin; cost limit of a bin */
    double klim_max;             /* the regroup's cost limit: a lone sample of tau tokens */
    struct lg_sched_pk_item *it; /* batch after batch */
    struct lg_sched_pk_batch *bt;
    size_t nit, nbt, *bbase; /* batches of adapter a: bbase[a] .. bbase[a+1] */
    size_t *next;            /* [A] next batch to open (index into bt) */
    long *ready;             /* [A] first slot the next batch may use */
    long *open;              /* [A] the open batch, or -1 */
    long t;                  /* the slot being filled */
    struct lg_sched_pk_bin *bin;
    size_t nbin, cap_bin;
    uint32_t *cur; /* items of the bin being filled */
    uint32_t *trade; /* scratch of the trades (fill.c): as many as cur */
    size_t ncur;
    double *rank_cost;
    size_t unplaced;
    struct lg_sched_rg *rg;
    /* pack_cand.c: the slot's candidates, and where the other adapters wait */
    int *cand, ncand, kcand; /* adapters that may give items to slot t, ascending; kcand at most */
    int *openl, *opos, nopen; /* adapters with an open batch; opos[a]: a's place in openl, or -1 */
    int *rheap, *rpos, nrh;   /* adapters whose next batch may start, by its deadline; rpos[a]: place, or -1 */
    int *wheap, nwh;          /* adapters waiting until `ready`, by ready */
};

/* pack_state.c. Setting up: p->job, D, S, A, tokens_only, no_pacing, cap and tau are given; the rest is
 * allocated and laid out (but not p->rg: lg_sched_pk_regroup_init). lg_sched_pk_free frees what it made. */
enum lg_status lg_sched_pk_init(struct lg_sched_pk *p);
void lg_sched_pk_free(struct lg_sched_pk *p);
/* Appends an empty bin for the given slot: p->bin[p->nbin - 1]. */
enum lg_status lg_sched_pk_new_bin(struct lg_sched_pk *p, long slot);
/* The batch that item k belongs to. */
size_t lg_sched_pk_batch_of(const struct lg_sched_pk *p, uint32_t k);
/* Puts item k of batch b into bin bi (the bin being filled); the batch opens if it was not open. */
void lg_sched_pk_place(struct lg_sched_pk *p, size_t bi, size_t b, uint32_t k);
/* Takes item k back out of bin bi (the bin being filled). */
void lg_sched_pk_unplace(struct lg_sched_pk *p, size_t bi, uint32_t k);
/* Moves placed item k to bin bi of the same slot (its batch's counters do not change). */
void lg_sched_pk_move(struct lg_sched_pk *p, uint32_t k, size_t bi);
/* Batch b of adapter a may give items to slot t: it is open, or may start (on pace, or `early`). */
int lg_sched_pk_eligible(const struct lg_sched_pk *p, int a, long t, int early, size_t *b);

/* pack_cand.c. The candidates of a slot are the adapters with an open batch and, of those whose next batch
 * may start, those with the earliest deadlines: 2D of them, but at least LG_SCHED_PK_CAND and at most
 * LG_SCHED_PK_CAND_MAX. init after lg_sched_pk_init. */
#define LG_SCHED_PK_CAND 16
#define LG_SCHED_PK_CAND_MAX 256
enum lg_status lg_sched_pk_cand_init(struct lg_sched_pk *p);
void lg_sched_pk_cand_free(struct lg_sched_pk *p);
/* Starts slot t: adapters whose S slots are over may start again; when none may run at all, the earliest-ready
 * one starts anyway (the plan marks its wait); then p->cand lists the slot's candidates. */
void lg_sched_pk_slot_begin(struct lg_sched_pk *p, long t);
/* Ends slot t: batches with no items left close, and their adapters wait S slots. */
void lg_sched_pk_slot_end(struct lg_sched_pk *p, long t);
/* Adapter a's next batch has just opened (lg_sched_pk_place). */
void lg_sched_pk_opened(struct lg_sched_pk *p, int a);

/* fill.c: fills bin bi, the d-th of slot t: urgent shares, best fit, trades that close the room, then the
 * regroup. cand is scratch for A entries. */
void lg_sched_pk_fill(struct lg_sched_pk *p, size_t bi, long t, int d, size_t *cand);
/* With D > 1: evens out the modelled costs of the slot's bins first .. nbin-1 (every rank waits for the
 * slowest at the optimizer steps), giving an empty bin items first, so that each rank has a microbatch at
 * every position. items[0..n) are the slot's items. */
void lg_sched_pk_balance(struct lg_sched_pk *p, size_t first, const uint32_t *items, size_t n);

/* regroup.c: re-chooses bin bi of slot t as a group knapsack over the batches that may run, none
 * giving fewer tokens than it gives now, to close the room no single sample fits. Bins with more room than
 * LG_SCHED_RG_ROOM tokens are left as they are. */
#define LG_SCHED_RG_ROOM 4096
enum lg_status lg_sched_pk_regroup_init(struct lg_sched_pk *p);
void lg_sched_pk_regroup(struct lg_sched_pk *p, size_t bi, long t);
void lg_sched_pk_regroup_free(struct lg_sched_pk *p);

#endif
