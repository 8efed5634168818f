-- One concern: an error message with a NUL byte and a newline must be shown whole.
error("first\0second\nthird")
return { name = "x", lora = { rank = 8, alpha = 16 }, linears = { { name = "a", in_features = 64, out_features = 64 } } }
