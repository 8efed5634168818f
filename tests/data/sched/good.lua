-- A small valid job: two adapters, JSONL and trace, auto capacity from a memory budget.
return {
  name = "good",
  model = { hidden = 1024, ffn = 4096, layers = 8, heads = 8, kv_heads = 2 },
  pipeline = { stages = 2, data_parallel = 2, optimizer_us = 10 },
  batching = { capacity = "auto", memory_budget_gb = 2, pad_multiple = 8, seed = 3 },
  adapters = {
    { name = "chat", dataset = "good.jsonl", global_batch = 2, rank = 4, drop_last = true },
    { name = "sum", dataset = "small.trace", global_batch = 2, rank = 8, alpha = 8, dropout = 0.1, lr = 3e-4 },
  },
}
