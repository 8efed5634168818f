-- One concern: a non-finite alpha (1/0) in a job file.
return {
  adapters = {
    { name = "a", dataset = "../sched/small.trace", global_batch = 1,
      alpha = 1 / 0 },
  },
}
