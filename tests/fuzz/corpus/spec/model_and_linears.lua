-- One concern: both model and linears are given.
return {
  name = "bad-both",
  model = {
    hidden_size = 128, intermediate_size = 320, num_attention_heads = 4,
    num_key_value_heads = 2, num_hidden_layers = 2,
  },
  linears = {
    { name = "proj", in_features = 128, out_features = 128 },
  },
  lora = { rank = 8, alpha = 16 },
}
