-- One concern: a seed beyond what a double holds exactly.
return {
  batching = { capacity = 4096,
    seed = 2 ^ 60 },
  adapters = { { name = "a", dataset = "../sched/small.trace", global_batch = 1 } },
}
