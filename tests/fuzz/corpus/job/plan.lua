return {
  name = "pl",
  pipeline = { stages = 2, data_parallel = 2, p2p_us = 5, optimizer_us = 10 },
  batching = { capacity = "auto", memory_budget_gb = 2, pad_multiple = 16 },
  cost = { layer_us = 100, token_us = 0.5, calibration = {
    { tokens = 1024, sum_len2 = 1e5, us = 900 }, { tokens = 2048, sum_len2 = 4e5, us = 1800 },
    { tokens = 4096, sum_len2 = 1e6, us = 3700 }, { tokens = 512, sum_len2 = 2e4, us = 480, rank_tokens = 4096 } } },
  adapters = {
    { name = "j", dataset = "train.jsonl", global_batch = 2, drop_last = true },
    { name = "t", dataset = "lens.trace", format = "trace", global_batch = 3, rank = 32, dropout = 0.1 },
  },
}
