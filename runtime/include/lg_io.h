/* lg_io.h: the scheduler's files. Reads datasets (JSONL and length traces) and Lua job files into the
 * objects of lg_sched.h, and writes plans as JSON (for the trainer) and simulated timelines as SVG (for
 * people). The io part owns these readers and writers; the objects themselves belong to sched.
 *
 * Ownership:
 *   lg_dataset_load and lg_job_load hand back a new object the caller frees with lg_dataset_free or
 *   lg_job_free (lg_sched.h); a dataset given to lg_job_add_adapter belongs to the job from then on.
 *   The writers only read their arguments and own nothing after they return. The JSON is written to
 *   PATH.tmp and renamed into place, so a reader never sees half a plan.
 *
 * Errors come back as a status, with the detail in lg_last_error(): a reader's names the file and line
 * ("jobs/a.lua:12: error: adapters[2].dataset: jobs/data/x.jsonl:7:3: malformed JSON: ...").
 *
 * Usage:
 *   lg_job_t *job;
 *   lg_plan_t *plan;
 *   lg_sim_t *sim;
 *   if (lg_job_load("specs/jobs/four-summarisers.lua", &job) != LG_OK) {
 *       fprintf(stderr, "%s\n", lg_last_error());
 *       ...
 *   }
 *   struct lg_plan_params pp = lg_plan_params_default();
 *   CHECK(lg_plan_build(job, &pp, &plan));
 *   struct lg_sim_params sp = {.record_events = 1};            // the SVG draws every op
 *   CHECK(lg_sim_run(job, plan, &sp, &sim));
 *   CHECK(lg_plan_write_json(job, plan, sim, "plan.json"));
 *   CHECK(lg_sim_write_svg(job, plan, sim, "timeline.svg"));
 *   lg_sim_free(sim); lg_plan_free(plan); lg_job_free(job);
 */
#ifndef LG_IO_H
#define LG_IO_H

#include "lg_common.h"
#include "lg_sched.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- datasets ------------------------------------------------------------------------------------------ */

enum lg_dataset_format {
    LG_DATASET_AUTO = 0, /* from the extension: .jsonl is JSONL, anything else a length trace */
    LG_DATASET_JSONL,    /* {"input_ids": [...], "labels": [...]} or {"input_ids": [...], "loss_mask": [...]} */
    LG_DATASET_TRACE,    /* one length a line; blank lines and '#' comments are skipped */
};

/* Loads a dataset. Errors name the file and line (and JSON column): missing file, malformed line, no
 * samples, a sample with no tokens, labels/loss_mask whose length differs from input_ids. */
LG_API enum lg_status lg_dataset_load(const char *path, enum lg_dataset_format fmt, lg_dataset_t **out);

/* ---- jobs ---------------------------------------------------------------------------------------------- */

/* Loads a Lua job file (schema: generator/job.lua). Dataset paths are relative to the job file. Errors read
 * "path:line: error: field: message", every schema error at once. */
LG_API enum lg_status lg_job_load(const char *path, lg_job_t **out);
/* The same job as a trainer reads it: capacity = "auto" may come without batching.memory_budget_gb (the
 * trainer sizes it from the device). capacity 0: such a job is loaded at the schema's largest capacity (its
 * samples' lengths, batches and the pipeline shape are then known); capacity N > 0: any job is loaded with a
 * fixed capacity of N tokens, as if its file said capacity = N (the oversize policy applies at N). */
LG_API enum lg_status lg_job_load_device(const char *path, uint32_t capacity, lg_job_t **out);

/* ---- plans and timelines ------------------------------------------------------------------------------- */

/* Writes the plan (and, when sim is not NULL, its predicted timing) as JSON. */
LG_API enum lg_status lg_plan_write_json(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim,
                                         const char *path);

/* Draws the timeline: one row per (rank, stage), a box per op coloured by adapter (forwards light,
 * backwards dark; mixed microbatches striped), gaps left blank as bubbles. The simulation must have been
 * run with record_events. */
LG_API enum lg_status lg_sim_write_svg(const lg_job_t *job, const lg_plan_t *plan, const lg_sim_t *sim,
                                       const char *path);

#ifdef __cplusplus
}
#endif
#endif
