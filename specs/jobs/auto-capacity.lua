-- Capacity chosen from a memory budget: the scheduler derives the most tokens whose activations fit 24 GB
-- under 1F1B (S microbatches in flight on stage 0), then picks its fill target by simulation. Two pipeline
-- stages, two data-parallel ranks; samples beyond the capacity are cut rather than rejected.
return {
  name = "auto-capacity",
  model = { hidden = 4096, ffn = 14336, layers = 32, heads = 32, kv_heads = 8, tflops = 400, attention_tflops = 250 },
  pipeline = { stages = 2, data_parallel = 2, p2p_us = 30, optimizer_us = 200 },
  batching = {
    capacity = "auto",
    memory_budget_gb = 24,
    pad_multiple = 64,
    oversize = "truncate",
    seed = 42,            -- shuffle each dataset before cutting it into global batches
  },
  adapters = {
    { name = "news",  dataset = "data/cnn.trace", global_batch = 16, rank = 16 },
    { name = "mixed", dataset = "data/mix.trace", global_batch = 16, rank = 64, alpha = 128, drop_last = true },
  },
}
