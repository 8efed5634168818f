-- One concern: a global batch past the C int it is read into (it was cast from a double).
return {
  adapters = {
    { name = "a", dataset = "../sched/small.trace",
      global_batch = 1e12 },
  },
}
