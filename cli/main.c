/* main.c: `loragen VERB ...` dispatch. The verbs are thin: the work lives in libloragen. */
#include "cli.h"
#include "lg_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct verb {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
};

static const struct verb verbs[] = {
    {"gen", lg_cmd_gen, "write the fused kernels of a spec and check they compile (no GPU needed)"},
    {"plan", lg_cmd_plan, "plan microbatches for a multi-adapter job and simulate the pipeline"},
    {"train", lg_cmd_train, "train a job's LoRA adapters (GPU, or the CPU backend for tiny models)"},
    {"eval", lg_cmd_eval, "loss and perplexity of base + adapter on a dataset"},
    {"merge", lg_cmd_merge, "write a Hugging Face model with an adapter merged into its weights"},
    {"tune", lg_cmd_tune, "tune the kernels a spec needs on the local GPU into a tuning database"},
    {"init-model", lg_cmd_init_model, "write a model directory with random weights for a spec's dimensions"},
    {NULL, NULL, NULL},
};

void lg_cli_error(const char *verb, const char *fmt, ...)
{
    fprintf(stderr, "loragen %s: ", verb);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: loragen VERB [options]\n\nverbs:\n");
    for (const struct verb *v = verbs; v->name; v++)
        fprintf(out, "  %-10s %s\n", v->name, v->help);
    fprintf(out, "\nRun `loragen VERB --help` for a verb's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("loragen 0.1.0\n");
        return 0;
    }
    for (const struct verb *v = verbs; v->name; v++)
        if (!strcmp(argv[1], v->name))
            return v->fn(argc - 1, argv + 1);
    fprintf(stderr, "loragen: unknown verb '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
