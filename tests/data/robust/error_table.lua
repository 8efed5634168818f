-- One concern: error() with a table, which has no message to show.
error({ code = 1 })
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
