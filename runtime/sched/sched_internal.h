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
    uint32_t cap_limit; /* fixed capacity or the memory-derived one */
};

struct lg_pseg {
    int adapter;
    uint32_t batch;
    uint32_t first, n; /* samples plan->samp[first .. first+n) */
    int wait;
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

/* pack.c: ours with the fill target chosen by simulating candidates. */
enum lg_status lg_sched_plan_search(const lg_job_t *job, uint32_t capacity, unsigned flags, lg_plan_t **out);

static inline uint32_t lg_sched_pad_up(uint32_t x, uint32_t m) { return m > 1 ? (x + m - 1) / m * m : x; }

#endif
