-- One concern: alpha given as a string.
return {
  name = "bad-wrong-type",
  model = {
    hidden_size = 128, intermediate_size = 320, num_attention_heads = 4,
    num_key_value_heads = 2, num_hidden_layers = 2,
  },
  lora = {
    rank = 8,
    alpha = "16",
  },
}
