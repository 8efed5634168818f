return {
  pipeline = { stages = 2 },
  batching = { capacity = 4096 },
  adapters = {
    { name = "a", dataset = "small.trace", global_batch = 2 },
    { name = "b", dataset = "does_not_exist.trace", global_batch = 2 },
  },
}
