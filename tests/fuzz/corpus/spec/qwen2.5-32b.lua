-- Qwen2.5-32B (Qwen/Qwen2.5-32B config.json): q/k/v carry a bias. LoRA r=16 on every linear layer.
return {
  name = "qwen2.5-32b",
  model = {
    hidden_size = 5120,
    intermediate_size = 27648,
    num_attention_heads = 40,
    num_key_value_heads = 8,
    head_dim = 128,
    num_hidden_layers = 64,
    vocab_size = 152064,
    attention_bias = true,
  },
  lora = {
    rank = 16,
    alpha = 32,
    dropout = 0.05,
    target_modules = { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" },
  },
  dtype = "bf16",
  archs = { "sm_80", "sm_89", "sm_90" },
  tokens = 8192,
}
