-- One concern: rank 12 is not a multiple of 8.
return {
  name = "bad-rank-12",
  model = {
    hidden_size = 128, intermediate_size = 320, num_attention_heads = 4,
    num_key_value_heads = 2, num_hidden_layers = 2,
  },
  lora = {
    alpha = 16,
    rank = 12,
  },
}
