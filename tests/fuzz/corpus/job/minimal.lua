return { adapters = { { name = "x", dataset = "lens.trace", global_batch = 1 } } }
