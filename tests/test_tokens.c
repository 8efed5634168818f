/* test_tokens.c: the trainer's token reader (lg_tokens.h): ids and labels per sample, the causal shift in the
 * loss count, loss_mask and labels together, the same sample order as the scheduler's dataset reader, and
 * every bad line named by file and line (vocabulary range, lengths, types, duplicate keys, binary data). */
#include "lg_io.h"
#include "lg_sched.h"
#include "lg_test.h"
#include "lg_tokens.h"

#include <check.h>
#include <string.h>

static char *write_tmp(const char *name, const char *text)
{
    static char *dir;
    if (!dir)
        dir = lg_test_tmpdir("lg_tokens");
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

START_TEST(reads_ids_and_labels)
{
    char *p = write_tmp("a.jsonl", "{\"input_ids\": [5, 6, 7, 8]}\n\n"
                                   "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 2, 3]}\n"
                                   "{\"input_ids\": [9, 9, 9], \"loss_mask\": [1, 0, true]}\n"
                                   "{\"input_ids\": [4, 4], \"labels\": [4, 4], \"loss_mask\": [1, 0]}\n");
    lg_tokens_t *tk;
    CHECK(lg_tokens_load(p, 16, &tk));
    ck_assert_uint_eq(lg_tokens_count(tk), 4);
    const int32_t *ids, *lb;
    int64_t n;
    CHECK(lg_tokens_sample(tk, 0, &ids, &lb, &n));
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(ids[3], 8);
    ck_assert_int_eq(lb[0], 5); /* no labels: every token is its own label */
    ck_assert_int_eq(lg_tokens_loss_count(tk, 0), 3); /* the first position is never a target */
    CHECK(lg_tokens_sample(tk, 1, &ids, &lb, &n));
    ck_assert_int_eq(lb[0], -100);
    ck_assert_int_eq(lg_tokens_loss_count(tk, 1), 2);
    CHECK(lg_tokens_sample(tk, 2, &ids, &lb, &n));
    ck_assert_int_eq(lb[1], -100);
    ck_assert_int_eq(lb[2], 9);
    ck_assert_int_eq(lg_tokens_loss_count(tk, 2), 1);
    ck_assert_int_eq(lg_tokens_loss_count(tk, 3), 0); /* labels AND loss_mask */
    ck_assert_uint_eq(lg_tokens_line(tk, 1), 3);       /* the blank line counts as a line, not a sample */
    /* the same samples, in the same order, as the scheduler sees them */
    lg_dataset_t *ds;
    CHECK(lg_dataset_load(p, LG_DATASET_JSONL, &ds));
    ck_assert_uint_eq(lg_dataset_size(ds), lg_tokens_count(tk));
    for (size_t i = 0; i < lg_tokens_count(tk); i++) {
        CHECK(lg_tokens_sample(tk, i, NULL, NULL, &n));
        ck_assert_uint_eq(lg_dataset_length(ds, i), (uint32_t)n);
    }
    lg_dataset_free(ds);
    lg_tokens_free(tk);
    free(p);
}
END_TEST

static void expect_error(const char *name, const char *text, int64_t vocab, const char *frag)
{
    char *p = write_tmp(name, text);
    lg_tokens_t *tk = NULL;
    enum lg_status s = lg_tokens_load(p, vocab, &tk);
    ck_assert_msg(s != LG_OK, "%s: loaded", name);
    ck_assert_ptr_null(tk);
    ck_assert_msg(strstr(lg_last_error(), p), "message lacks the path: %s", lg_last_error());
    ck_assert_msg(strstr(lg_last_error(), frag), "message lacks '%s': %s", frag, lg_last_error());
    free(p);
}

START_TEST(bad_lines_are_named)
{
    expect_error("vocab.jsonl", "{\"input_ids\": [1]}\n{\"input_ids\": [1, 16]}\n", 16, ":2: input_ids[1] = 16");
    expect_error("neg.jsonl", "{\"input_ids\": [-3]}\n", 0, ":1: input_ids[0] = -3");
    expect_error("label.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1, 99]}\n", 16, "labels[1] = 99");
    expect_error("len.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1]}\n", 0, "as long as input_ids");
    expect_error("mask.jsonl", "{\"input_ids\": [1, 2], \"loss_mask\": [1, 2]}\n", 0, "loss_mask[1] must be 0, 1");
    expect_error("empty.jsonl", "{\"input_ids\": []}\n", 0, ":1: expected an object");
    expect_error("type.jsonl", "{\"input_ids\": [1.5]}\n", 0, "input_ids[0] is not an integer");
    expect_error("dup.jsonl", "{\"input_ids\": [1], \"input_ids\": [2]}\n", 0, ":1:");
    expect_error("json.jsonl", "{\"input_ids\": [1,\n", 0, ":1:");
    expect_error("none.jsonl", "\n\n", 0, "no samples");
}
END_TEST

START_TEST(not_a_regular_file)
{
    lg_tokens_t *tk;
    ck_assert_int_ne(lg_tokens_load("/dev/zero", 0, &tk), LG_OK);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "not a regular file"));
    ck_assert_int_ne(lg_tokens_load("tests", 0, &tk), LG_OK);
    ck_assert_ptr_nonnull(strstr(lg_last_error(), "directory"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokens");
    TCase *tc = tcase_create("tokens");
    tcase_add_test(tc, reads_ids_and_labels);
    tcase_add_test(tc, bad_lines_are_named);
    tcase_add_test(tc, not_a_regular_file);
    suite_add_tcase(s, tc);
    return lg_test_run(s, 0);
}
