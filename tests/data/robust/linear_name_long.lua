-- One concern: a linear name longer than the C struct keeps (it was cut, so two names could collide).
return {
  name = "x",
  lora = { rank = 8, alpha = 16 },
  linears = { { name = "a_name_of_more_than_thirty_one_bytes", in_features = 64, out_features = 64 } },
}
