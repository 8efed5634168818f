-- One concern: a NUL byte in a dataset path (C would open "../sched/small").
return {
  adapters = {
    { name = "a",
      dataset = "../sched/small\0.trace", global_batch = 1 },
  },
}
