return {
  pipeline = { stages = "four", data_paralel = 2 },
  batching = { capacity = 4000, pad_multiple = 16 },
  adapters = {
    { name = "a", dataset = "small.trace", global_batch = 0 },
    { name = "a", dataset = "small.trace", global_batch = 2, rank = 8.5 },
  },
}
