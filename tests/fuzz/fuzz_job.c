/* fuzz_job.c: a job file (arbitrary Lua source) through both of its readers: the scheduler's lg_job_load
 * (which also loads the datasets it names, relative to the job file) and the trainer's lg_train_config_load
 * (model directory, training settings, per-adapter optimizer fields). Fixtures beside it: a JSONL dataset, a
 * length trace and an empty model directory, so the seeds are valid jobs. */
#include "fuzz_util.h"
#include "lg_io.h"
#include "lg_trainjob.h"

#include <math.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lg_fuzz_fixture("train.jsonl", "{\"input_ids\": [1, 2, 3, 4]}\n{\"input_ids\": [5, 6], \"labels\": [-100, 6]}\n"
                                   "{\"input_ids\": [7, 8, 9], \"loss_mask\": [0, 1, 1]}\n{\"input_ids\": [1, 2]}\n");
    lg_fuzz_fixture("lens.trace", "# lengths\n12\n40\n7\n\n300\n64\n");
    lg_fuzz_mkdir("model");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = lg_fuzz_write("job.lua", data, size);
    lg_job_t *job;
    if (lg_job_load(path, &job) == LG_OK)
        lg_job_free(job);
    struct lg_train_config tc;
    if (lg_train_config_load(path, &tc) == LG_OK) {
        for (int i = 0; i < tc.nadapters; i++) {
            const struct lg_train_adapter *a = &tc.adapters[i];
            /* what the schema promises the trainer: bounded integers, finite numbers, C-string paths */
            if (a->rank <= 0 || a->rank > 4096 || a->global_batch <= 0 || a->global_batch > (1 << 24) ||
                a->steps < 0 || a->epochs < 1 || !(a->lr > 0) || !isfinite(a->lr) || !isfinite(a->alpha) ||
                !isfinite(a->warmup) || !isfinite(a->eps) || !isfinite(a->grad_clip) ||
                !isfinite(a->weight_decay) || !(a->beta1 >= 0 && a->beta1 < 1) || !(a->beta2 >= 0 && a->beta2 < 1))
                abort();
        }
        lg_train_config_free(&tc);
    }
    return 0;
}
