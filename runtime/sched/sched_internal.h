/* sched_internal.h: the scheduler's object layouts and the calls between its files, shared by the files of
 * runtime/sched and nothing else (io reads and writes through lg_sched.h and lg_sched_build.h). The public
 * view is lg_sched.h; the verifier (verify.c) deliberately uses only that public view. */
#ifndef LG_SCHED_INTERNAL_H
#define LG_SCHED_INTERNAL_H

#include "lg_sched.h"

#include <stdint.h>

struct lg_dataset {
    size_t n;
    uint32_t *len;  /* tokens per sample */
    uint32_t *loss; /* loss tokens per sample, after the causal shift (< len) */
    uint32_t *line; /* source line of each sample, for error messages */
    char *path;     /* "" for in-memory datasets */
    size_t cap;     /* room in len, loss and line */
};

struct lg_adapter {
    struct lg_adapter_params p; /* p.name points at `name` */
    char *name;
    char *where;          /* prefix of its error messages: "job.lua:12: error: adapters[2] ('x')" */
    lg_dataset_t *ds;
    uint32_t *len;        /* [ds->n] effective length (0: skipped) */
    long *batch_of;       /* [ds->n] global batch, -1 when skipped or dropped */
    uint32_t *order;      /* kept samples, batch after batch */
    size_t *batch_start;  /* [nbatches + 1] offsets into order */
    uint64_t *batch_loss; /* [nbatches] */
    size_t nbatches;
    struct lg_adapter_info info;
};

struct lg_job {
    struct lg_job_params p;
    char *name;
    struct lg_adapter *ad;
    int nad, cap_ad;
    int *names;       /* open-addressed index of the adapters by name: -1 empty, else an index into ad */
    size_t cap_names; /* a power of two, at least twice nad */
    uint32_t cap_limit; /* fixed capacity or the memory-derived one */
};

struct lg_pseg {
    int adapter;
    uint32_t batch;
    uint32_t first, n; /* samples plan->samp[first .. first+n) */
    int wait;
    int head; /* the first segment of its global batch on its rank: where a wait can hold the forward (the
                 later ones come after it in order, once the step is done) */
};

struct lg_pmb {
    int rank;
    uint32_t pos;
    uint32_t tokens, padded;
    double sum_len2, rank_tokens;
    uint32_t seg_first, nseg;
};

struct lg_plan {
    enum lg_plan_algo algo;
    int ranks;
    struct lg_pmb *mb;
    size_t nmb, cap_mb;
    struct lg_pseg *seg;
    size_t nseg, cap_seg;
    uint32_t *samp;
    size_t nsamp, cap_samp;
    struct lg_plan_summary sum;
};

/* costmodel.c: the layers stage s runs, and a microbatch's per-layer cost used for balancing. */
int lg_sched_stage_layers(const struct lg_costmodel *cm, int stages, int s);
/* Capacity from a memory budget: activations of S microbatches in flight on stage 0. 0 when none fits. */
uint32_t lg_sched_memory_capacity(const struct lg_job_params *p);

/* builder.c: building a plan one microbatch at a time, for the planners. Samples are added in any order;
 * finishing the microbatch groups them by adapter into segments. */
struct lg_sched_builder {
    lg_plan_t *plan;
    const lg_job_t *job;
    struct lg_pseg *cur;   /* pending (adapter, batch, sample) triples of the open microbatch */
    size_t ncur, cap_cur;
    int open;
};
enum lg_status lg_sched_builder_init(struct lg_sched_builder *b, const lg_job_t *job, enum lg_plan_algo algo,
                                     int ranks);
void lg_sched_builder_add(struct lg_sched_builder *b, int adapter, uint32_t batch, uint32_t sample);
/* Closes the open microbatch as (rank, pos); an empty one is dropped. */
enum lg_status lg_sched_builder_end_mb(struct lg_sched_builder *b, int rank, uint32_t pos);
/* Marks waits, fills the summary; the plan then belongs to the caller. */
enum lg_status lg_sched_builder_finish(struct lg_sched_builder *b, uint32_t capacity, lg_plan_t **out);
void lg_sched_builder_abort(struct lg_sched_builder *b);
/* Recounts the summary's waits (segments marked) and wait_forwards (microbatches whose forward a mark can
 * hold: with a marked head segment). */
void lg_sched_plan_count_waits(lg_plan_t *p);

/* The planners, called by lg_plan_build (plan.c): ours (pack.c) with a given fill target, and the two
 * baselines (baseline.c). */
enum lg_status lg_sched_plan_packed(const lg_job_t *job, uint32_t capacity, uint32_t target, unsigned flags,
                                    lg_plan_t **out);
enum lg_status lg_sched_plan_megatron(const lg_job_t *job, uint32_t capacity, int samples_per_mb, lg_plan_t **out);
enum lg_status lg_sched_plan_mlora(const lg_job_t *job, uint32_t capacity, int samples_per_mb, lg_plan_t **out);
/* refine.c: the window-wide merge and the smoothing local search over a packed plan. Bins come in slot
 * order; items of one global batch are contiguous. Only item -> bin assignments change. */
struct lg_sched_refine_in {
    size_t nitem, nbin, nbatch;
    int S, D;
    const uint32_t *len;       /* [nitem] tokens */
    const double *cost;        /* [nitem] forward + backward per layer */
    const size_t *batch;       /* [nitem] its global batch */
    uint32_t *bin;             /* [nitem] its microbatch: read and rewritten */
    const size_t *bfirst;      /* [nbatch + 1] the items of batch b are bfirst[b] .. bfirst[b+1] */
    const int *adapter;        /* [nbatch] */
    const size_t *prev, *next; /* [nbatch] the adapter's neighbouring batches, or SIZE_MAX */
    const long *slot;          /* [nbin] nondecreasing */
    const int *rank;           /* [nbin] */
    long reach;                /* slots an item may move */
    uint32_t tau;              /* token limit of a microbatch */
    double c0;                 /* fixed cost of a microbatch */
};
/* Empties and deletes up to merge_limit of the least-filled slots, then runs up to `passes` passes of
 * smoothing. Bins left empty are to be dropped by the caller. */
enum lg_status lg_sched_refine(const struct lg_sched_refine_in *in, size_t merge_limit, int passes);

/* phi.c: the makespan model of a data-parallel plan: Phi over the sequence of slot costs, a slot costing what
 * its dearest bin costs (the ranks wait for each other at the optimizer steps). Bins are in slot order:
 * slot t holds bins slot_first[t] .. slot_first[t+1]; slot and slot_first belong to the caller and may be
 * rewritten in place as long as the slots' bins stay the same. Costs start at 0: set each bin's. */
struct lg_sched_phi_top {
    double cost[3]; /* a slot's three dearest bins, dearest first */
    size_t bin[3];  /* SIZE_MAX where the slot has fewer */
};
struct lg_sched_phi {
    size_t nbin;
    long nslot;
    int S;
    const long *slot;         /* [nbin] */
    const size_t *slot_first; /* [nslot + 1] */
    double *cost;             /* [nbin] */
    double *smax;             /* [nslot] */
    struct lg_sched_phi_top *top; /* [nslot] */
};
enum lg_status lg_sched_phi_init(struct lg_sched_phi *ph, size_t nbin, long nslot, int S, const long *slot,
                                 const size_t *slot_first);
void lg_sched_phi_free(struct lg_sched_phi *ph);
void lg_sched_phi_set(struct lg_sched_phi *ph, size_t bin, double cost);
/* The change of Phi if bins chg[0..n) took costs nc[0..n) (nothing is changed). */
double lg_sched_phi_delta(const struct lg_sched_phi *ph, const size_t *chg, const double *nc, int n);

/* sim.c: whether the simulated timeline held the forward of plan segment seg's microbatch on stage 0 for
 * that segment's previous global batch (its optimizer step was not done when stage 0 could have run it). */
int lg_sched_sim_held(const lg_sim_t *sim, size_t seg);

/* pack.c: ours with the fill target chosen by simulating candidates. */
enum lg_status lg_sched_plan_search(const lg_job_t *job, uint32_t capacity, unsigned flags, lg_plan_t **out);
/* pack.c: an estimate of our planner's work on the job, with the target search (search) or a given target;
 * lg_plan_build refuses jobs over LG_SCHED_WORK_LIMIT (about 10 s of one core) with a message saying so. */
double lg_sched_plan_work(const lg_job_t *job, uint32_t capacity, int search);
#define LG_SCHED_WORK_LIMIT 1e8

static inline uint32_t lg_sched_pad_up(uint32_t x, uint32_t m) { return m > 1 ? (x + m - 1) / m * m : x; }

#endif
