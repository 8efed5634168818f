/* cmd_eval.c: `loragen eval JOB`: the loss and perplexity of base + adapter on a dataset, without training:
 * each adapter of the job (its trained output by default), on its validation set, or a dataset given. */
#include "cli.h"
#include "lg_train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: loragen eval JOB [--adapter-dir DIR] [--dataset FILE] [--adapter N] [--base] [--backend B]\n\n"
               "Loss and perplexity of the job's base model with each adapter (by default its trained PEFT output\n"
               "in the adapter's output directory) on its validation dataset (else its training dataset).\n\n"
               "options:\n"
               "  --adapter N        only the job's adapter N (0-based)\n"
               "  --adapter-dir DIR  evaluate this PEFT adapter directory instead of the job's output\n"
               "  --dataset FILE     a JSONL dataset (input_ids, labels or loss_mask) instead\n"
               "  --base             the base model alone, no adapter\n"
               "  --backend NAME     auto, cpu or cuda\n");
}

int lg_cmd_eval(int argc, char **argv)
{
    struct lg_eval_opts o = {.adapter = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--adapter-dir") && i + 1 < argc) {
            o.adapter_dir = argv[++i];
        } else if (!strcmp(a, "--dataset") && i + 1 < argc) {
            o.dataset = argv[++i];
        } else if (!strcmp(a, "--backend") && i + 1 < argc) {
            o.backend = argv[++i];
        } else if (!strcmp(a, "--base")) {
            o.base_only = 1;
        } else if (!strcmp(a, "--adapter") && i + 1 < argc) {
            char *end;
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 0) {
                lg_cli_error("eval", "--adapter needs an index >= 0, not '%s'", argv[i]);
                return 2;
            }
            o.adapter = (int)n;
        } else if (a[0] == '-' || o.job) {
            lg_cli_error("eval", "unexpected argument '%s' (see loragen eval --help)", a);
            return 2;
        } else {
            o.job = a;
        }
    }
    if (!o.job) {
        usage(stderr);
        return 2;
    }
    int k = o.adapter < 0 ? 0 : o.adapter;
    for (;;) {
        struct lg_eval_opts one = o;
        one.adapter = k;
        struct lg_eval_result r;
        if (lg_eval_run(&one, &r) != LG_OK) {
            lg_cli_error("eval", "%s", lg_last_error());
            return 1;
        }
        printf("adapter %d: loss %.6f, perplexity %.4f over %lld tokens of %lld samples%s\n", k, r.loss,
               r.perplexity, (long long)r.tokens, (long long)r.samples, o.base_only ? " (base model)" : "");
        if (o.adapter >= 0 || o.base_only || o.adapter_dir || ++k >= r.adapters)
            return 0;
    }
}
