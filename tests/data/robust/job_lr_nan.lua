-- One concern: a NaN learning rate (0/0).
return {
  adapters = {
    { name = "a", dataset = "../sched/small.trace", global_batch = 1,
      lr = 0 / 0 },
  },
}
