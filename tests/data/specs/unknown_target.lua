-- One concern: a target module the model does not have (qkv_proj).
return {
  name = "bad-target",
  model = {
    hidden_size = 128, intermediate_size = 320, num_attention_heads = 4,
    num_key_value_heads = 2, num_hidden_layers = 2,
  },
  lora = {
    rank = 8,
    alpha = 16,
    target_modules = {
      "q_proj",
      "qkv_proj",
    },
  },
  archs = { "sm_80" },
}
