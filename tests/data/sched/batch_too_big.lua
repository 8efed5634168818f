return {
  pipeline = { stages = 1 },
  batching = { capacity = 4096 },
  adapters = {
    { name = "ok", dataset = "small.trace", global_batch = 2 },
    { name = "big", dataset = "small.trace", global_batch = 9 },
  },
}
