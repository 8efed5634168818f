-- Issue 15's scaling configuration in the planner: four LoRA adapters (r = 16, p = 0.1) on a
-- Llama-3.1-70B-shaped base over 8 GPUs as 8 pipeline stages. For PP = 4 x DP = 2 set stages = 4,
-- data_parallel = 2; for the 4-GPU reference stages = 4, data_parallel = 1. Plan it with
--   loragen plan specs/jobs/seventy-b-eight-gpus.lua
-- (docs/perf.md, "issue 15's configurations in the simulator", has the bubbles at global batch 8 and 16).
return {
  name = "seventy-b-eight-gpus",
  model = { hidden = 8192, ffn = 28672, layers = 80, heads = 64, kv_heads = 8 },
  pipeline = { stages = 8, data_parallel = 1 },
  batching = { capacity = 4096, pad_multiple = 16, oversize = "error" },
  adapters = {
    { name = "xsum",    dataset = "data/xsum.trace",    global_batch = 16, rank = 16, dropout = 0.1 },
    { name = "cnn",     dataset = "data/cnn.trace",     global_batch = 16, rank = 16, dropout = 0.1 },
    { name = "wikisum", dataset = "data/wikisum.trace", global_batch = 16, rank = 16, dropout = 0.1 },
    { name = "mix",     dataset = "data/mix.trace",     global_batch = 16, rank = 16, dropout = 0.1 },
  },
}
