"""peft_models.py: small random PEFT Llamas for the binding's tests (CPU and GPU): a model built in memory from
transformers' LlamaConfig (no download), a fixed batch, training steps that record loss and LoRA gradients,
and the comparisons the tests share."""

import copy

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

# every projection's in/out features a multiple of 64 (the kernels' rule); k/v out = 2 heads x 32 = 64
TINY = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            num_hidden_layers=2, vocab_size=320, max_position_embeddings=256, rms_norm_eps=1e-5)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def base_model(device, dtype=torch.bfloat16, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = LlamaConfig(**{**TINY, **overrides})
    cfg._attn_implementation = "eager"  # the same attention on CPU and GPU, no optional kernels
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def peft_model(device, dtype=torch.bfloat16, r=16, alpha=32, dropout=0.0, seed=0, targets=ALL_LINEAR,
               live_b=True, **lora_kw):
    """A PEFT model; live_b: B starts random (PEFT starts it at zero, which hides half of the gradients)."""
    base = base_model(device, dtype, seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, **lora_kw)
    torch.manual_seed(seed + 1)
    m = get_peft_model(base, cfg)
    if live_b:
        for name, p in m.named_parameters():
            if "lora_B" in name:
                with torch.no_grad():
                    p.copy_(torch.randn_like(p) * 0.05)
    return m


def twin(model):
    """An identical copy (weights, adapters, config), e.g. one to patch and one to leave to PEFT."""
    return copy.deepcopy(model)


def batch(device, n_seq=2, seq=64, vocab=TINY["vocab_size"], seed=123):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n_seq, seq), generator=g)
    return ids.to(device), ids.clone().to(device)


def lora_grads(model):
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def train(model, steps, device, lr=1e-3, seed=7, accumulate=1):
    """`steps` AdamW steps; returns [(loss, {param: grad})] per step (the grads of the step's last backward)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    out = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        losses = []
        for k in range(accumulate):
            ids, labels = batch(device, seed=seed + 31 * step + k)
            loss = model(input_ids=ids, labels=labels).loss / accumulate
            loss.backward()
            losses.append(loss.item())
        out.append((sum(losses), lora_grads(model)))
        opt.step()
    return out


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def grad_draws(model, k, device, seed=1000):
    """k forward/backward passes on one batch at fixed parameters, each with its own dropout masks (torch's
    seed k): [(loss, {param: grad})]."""
    ids, labels = batch(device, seed=seed)
    out = []
    for i in range(k):
        torch.manual_seed(seed + i)
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        out.append((loss.item(), lora_grads(model)))
    model.zero_grad(set_to_none=True)
    return out


def same_mean(a, b):
    """Two sets of draws (grad_draws) with one expectation? Returns T = sum of squared differences of the mean
    gradients over the sum of their estimated variances (about 1 when the expectations agree, far above when
    they do not), and the same z-score for the loss."""
    k = len(a)
    num = den = 0.0
    for name in a[0][1]:
        ga = torch.stack([g[name] for _, g in a]).double()
        gb = torch.stack([g[name] for _, g in b]).double()
        num += ((ga.mean(0) - gb.mean(0)) ** 2).sum().item()
        den += ((ga.var(0) + gb.var(0)) / k).sum().item()
    la = torch.tensor([x for x, _ in a], dtype=torch.float64)
    lb = torch.tensor([x for x, _ in b], dtype=torch.float64)
    z = ((la.mean() - lb.mean()) / ((la.var() + lb.var()) / k).sqrt().clamp_min(1e-12)).item()
    return num / max(den, 1e-300), z
