-- Tokenised JSONL datasets: `labels` with -100 on the prompt, or a `loss_mask`. The cost model is calibrated
-- from measured per-layer forward times (tokens, sum of len^2, microseconds) instead of FLOP estimates.
return {
  name = "chat-jsonl",
  pipeline = { stages = 2 },
  batching = { capacity = 512, pad_multiple = 8 },
  cost = {
    backward_linear = 1.05,
    backward_attention = 2.5,
    calibration = {
      { tokens = 128,  sum_len2 = 8192,    us = 182.0 },
      { tokens = 256,  sum_len2 = 16384,   us = 322.5 },
      { tokens = 512,  sum_len2 = 32768,   us = 604.1 },
      { tokens = 512,  sum_len2 = 262144,  us = 611.6 },
      { tokens = 1024, sum_len2 = 1048576, us = 1200.6 },
      { tokens = 2048, sum_len2 = 131072,  us = 2295.3 },
    },
  },
  adapters = {
    { name = "chat",     dataset = "data/chat.jsonl",     global_batch = 6, rank = 8 },
    { name = "instruct", dataset = "data/instruct.jsonl", global_batch = 4, rank = 16, dropout = 0.05 },
  },
}
