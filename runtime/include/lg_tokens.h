/* lg_tokens.h: the token ids and training targets of a JSONL dataset, as the trainer feeds them to the model.
 *
 * One sample a line: {"input_ids": [...]} with optional "labels" (-100 masks a position, as Hugging Face does)
 * or "loss_mask" (0/1 or booleans; 1 = the token is predicted). Blank lines are skipped, so sample i is the
 * i-th non-blank line, exactly as the scheduler's lg_dataset_load counts them. Targets follow Hugging Face's
 * causal-LM shift: position t of a sample predicts label t+1; the last position predicts nothing. So a
 * sample of n tokens has at most n-1 loss tokens, and the first label is never used.
 *
 * Ownership: lg_tokens_t owns its arrays; lg_tokens_free releases them.
 *
 *   lg_tokens_t *tk;
 *   if (lg_tokens_load("data/train.jsonl", 128256, &tk) != LG_OK) puts(lg_last_error());
 *   const int32_t *ids, *labels; int64_t n;
 *   lg_tokens_sample(tk, 0, &ids, &labels, &n);   // labels[t]: -100 or the id predicted at t-1
 *   lg_tokens_free(tk);
 */
#ifndef LG_TOKENS_H
#define LG_TOKENS_H

#include "lg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lg_tokens lg_tokens_t;

/* Loads path; vocab > 0 rejects ids outside [0, vocab) and labels other than -100 outside it, naming the file,
 * line and position (0: no check). Every malformed line is an error naming file and line. */
LG_API enum lg_status lg_tokens_load(const char *path, int64_t vocab, lg_tokens_t **out);
LG_API void lg_tokens_free(lg_tokens_t *tk);

LG_API size_t lg_tokens_count(const lg_tokens_t *tk);
/* Sample i: its ids and labels (aligned with ids, unshifted: -100 where masked), length n. */
LG_API enum lg_status lg_tokens_sample(const lg_tokens_t *tk, size_t i, const int32_t **ids, const int32_t **labels,
                                       int64_t *n);
/* Loss tokens of sample i after the shift: positions t >= 1 whose label is not -100. */
LG_API int64_t lg_tokens_loss_count(const lg_tokens_t *tk, size_t i);
/* The source line of sample i, for messages. */
LG_API size_t lg_tokens_line(const lg_tokens_t *tk, size_t i);
LG_API const char *lg_tokens_path(const lg_tokens_t *tk);

#ifdef __cplusplus
}
#endif
#endif
