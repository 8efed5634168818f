-- One concern: a NUL byte in a name, which C would cut short.
return {
  name = "x",
  lora = { rank = 8, alpha = 16 },
  linears = { { name = "a\0b", in_features = 64, out_features = 64 } },
}
