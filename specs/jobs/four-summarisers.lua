-- Four LoRA jobs on one Llama-3.1-8B-like base, each with its own summarisation-like dataset (length traces
-- from bench/gen_traces) and its own rank: the heterogeneous benchmark case. Plan it with
--   loragen plan specs/jobs/four-summarisers.lua --svg plan.svg
return {
  name = "four-summarisers",
  model = { hidden = 4096, ffn = 14336, layers = 32, heads = 32, kv_heads = 8 },
  pipeline = { stages = 4, data_parallel = 1 },
  batching = {
    capacity = 4096,      -- tokens per microbatch, padded
    pad_multiple = 16,
    oversize = "error",
  },
  adapters = {
    { name = "xsum",    dataset = "data/xsum.trace",    global_batch = 8, rank = 16 },
    { name = "cnn",     dataset = "data/cnn.trace",     global_batch = 8, rank = 16 },
    { name = "wikisum", dataset = "data/wikisum.trace", global_batch = 8, rank = 32, alpha = 64 },
    { name = "mix",     dataset = "data/mix.trace",     global_batch = 8, rank = 8, lr = 2e-4 },
  },
}
