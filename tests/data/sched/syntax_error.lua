return {
  pipeline = { stages = 2 },
  batching = { capacity = 4096
  adapters = {},
}
