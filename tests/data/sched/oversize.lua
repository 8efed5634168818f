return {
  pipeline = { stages = 2 },
  batching = { capacity = 4096 },
  adapters = {
    { name = "long", dataset = "long.trace", global_batch = 1 },
  },
}
