"""test_peft_gpu.py: the binding on the GPU, through libloragen's kernels: a patched PEFT Llama (small, random)
against the unpatched one (loss and LoRA gradients over optimizer steps at p = 0, bf16 and fp16; at p > 0 the
mean gradient over masks and the loss over steps), against the reference backend on the same GPU, the dropout
mask's rate and scale, repeatability under torch.manual_seed, activation checkpointing, save_pretrained into an
unpatched model, and the no-copy rule (the kernels read torch's own W, workspace and outputs in place).
Skipped without a GPU (tests/python/run.sh exits 77 then)."""

import ctypes
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU", allow_module_level=True)

import loragen  # noqa: E402
from loragen import _lib, reference  # noqa: E402
from loragen import peft_patch as pp  # noqa: E402
from loragen._layer import FusedLayer, LayerSpec  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

import peft_models as pm  # noqa: E402

DEV = "cuda"


@pytest.fixture(autouse=True)
def cuda_backend():
    old = pp.set_backend(loragen.CudaBackend())
    pp._warned.clear()
    yield
    pp.set_backend(old)


def patched(model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", loragen.LoragenWarning)
        rep = loragen.patch_peft(model, **kw)
    assert not rep.skipped and len(rep.patched) == 14, rep.skipped
    return rep


def _compare(a, b, loss_tol, grad_tol, what):
    worst = 0.0
    for step, ((la, ga), (lb, gb)) in enumerate(zip(a, b)):
        assert abs(la - lb) <= loss_tol * abs(lb), (what, step, la, lb)
        assert ga.keys() == gb.keys() and len(ga) == 28
        for k in ga:
            e = pm.rel_err(ga[k], gb[k])
            worst = max(worst, e)
            assert e <= grad_tol, (what, step, k, e)
    print(f"{what}: losses {[round(x, 5) for x, _ in a]} vs {[round(x, 5) for x, _ in b]}, "
          f"worst LoRA-gradient rel err {worst:.2e}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_matches_unpatched_peft_p0(dtype):
    ref = pm.peft_model(DEV, dtype=dtype)
    fused = pm.twin(ref)
    patched(fused)
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-2
    _compare(pm.train(fused, 4, DEV), pm.train(ref, 4, DEV), 3e-3, tol, f"kernels vs PEFT ({dtype})")
    assert {layer.refreshes for _, layer in loragen.fused_layers(fused)} == {4}


def test_kernels_match_reference_backend():
    ref = pm.peft_model(DEV)
    fused = pm.twin(ref)
    patched(fused)
    a = pm.train(fused, 3, DEV)
    pp.set_backend(reference.ReferenceBackend(devices=("cuda",)))
    patched(ref)  # the same wiring, the kernels' math in torch ops
    _compare(a, pm.train(ref, 3, DEV), 2e-3, 2e-2, "kernels vs reference backend")


def test_dropout_statistically_like_peft():
    ref = pm.peft_model(DEV, dropout=0.1)
    fused = pm.twin(ref)
    patched(fused)
    t, z = pm.same_mean(pm.grad_draws(fused, 12, DEV), pm.grad_draws(ref, 12, DEV))
    print(f"p = 0.1, 12 masks each: mean-gradient T = {t:.3f} (about 1 when equal), loss z = {z:.2f}")
    assert t < 2.5 and abs(z) < 4
    a, b = pm.train(fused, 4, DEV), pm.train(ref, 4, DEV)
    print(f"p = 0.1 losses over steps: {[round(x, 4) for x, _ in a]} vs PEFT {[round(x, 4) for x, _ in b]}")
    for (la, _), (lb, _) in zip(a, b):
        assert abs(la - lb) <= 2e-2 * abs(lb)


def test_dropout_mask_rate_and_scale():
    # X = 1 and A = [I 0]: S[n, j] = s/keep * mask[n, j], so S shows the mask itself
    n, K, M, r, p = 8192, 256, 128, 8, 0.25
    spec = LayerSpec(K, M, r, 1.0, p, torch.bfloat16, False, 5)
    layer = FusedLayer(pp.get_backend(), spec, torch.device(DEV))
    w = torch.randn(M, K, device=DEV, dtype=torch.bfloat16)
    a = torch.zeros(r, K, device=DEV)
    a[:, :r] = torch.eye(r, device=DEV)
    b = torch.zeros(M, r, device=DEV)
    layer.bind_base(w, None)
    layer.refresh(a, b)
    x = torch.ones(n, K, device=DEV, dtype=torch.bfloat16)

    def s_of(seed):
        s = torch.empty(n, r, device=DEV, dtype=torch.bfloat16)
        y = torch.empty(n, M, device=DEV, dtype=torch.bfloat16)
        layer.backend.forward(layer.handle, spec, x, s, y, seed)
        return s.float()
    s1, s2 = s_of(17), s_of(18)
    kept = (s1 != 0).float().mean().item()
    print(f"p = {p}: kept {kept:.4f} (want {1 - p}), kept value {s1[s1 != 0].unique().tolist()}")
    assert abs(kept - (1 - p)) < 4 * (p * (1 - p) / s1.numel()) ** 0.5
    assert torch.allclose(s1[s1 != 0], torch.tensor(1 / (1 - p), device=DEV), rtol=1e-2)
    assert torch.equal(s1, s_of(17)) and not torch.equal(s1, s2)


def test_repeatable_under_manual_seed():
    def run(seed):
        m = pm.peft_model(DEV, dropout=0.1)
        patched(m)
        torch.manual_seed(seed)
        return pm.train(m, 3, DEV)
    a, b, c = run(3), run(3), run(4)
    assert [x for x, _ in a] == pytest.approx([x for x, _ in b], rel=1e-6)
    assert [x for x, _ in a] != [x for x, _ in c]


def test_activation_checkpointing():
    def run(ckpt):
        m = pm.peft_model(DEV, dropout=0.1)
        patched(m)
        if ckpt:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.train()
        torch.manual_seed(21)
        return pm.train(m, 3, DEV)
    _compare(run(True), run(False), 1e-4, 1e-3, "checkpointed vs not (p = 0.1, same masks)")


def test_save_pretrained_loads_into_unpatched_peft(tmp_path):
    m = pm.peft_model(DEV, dropout=0.05, live_b=False)
    patched(m)
    pm.train(m, 3, DEV, lr=1e-2)
    m.save_pretrained(tmp_path)
    ids, _ = pm.batch(DEV, seed=99)
    m.eval()
    with torch.no_grad():
        fused_logits = m(input_ids=ids).logits.float()
    loragen.unpatch_peft(m)
    with torch.no_grad():
        peft_logits = m(input_ids=ids).logits.float()
    fresh = PeftModel.from_pretrained(pm.base_model(DEV), tmp_path).eval()
    with torch.no_grad():
        fresh_logits = fresh(input_ids=ids).logits.float()
    print(f"save/load: loaded vs trained (PEFT path) max |diff| {(fresh_logits - peft_logits).abs().max().item():.3g}; "
          f"fused vs PEFT rel err {pm.rel_err(fused_logits, peft_logits):.2e}")
    assert torch.equal(fresh_logits, peft_logits)
    assert pm.rel_err(fused_logits, peft_logits) < 1e-2


class _Stack(torch.nn.Module):
    def __init__(self, d, n):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(d, d, bias=False) for _ in range(n))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_no_copies_of_torch_memory():
    # warm up the context and the kernels (r = 16, bf16, p = 0) on the small model
    small = pm.peft_model(DEV)
    patched(small)
    pm.train(small, 1, DEV)
    d, nl = 4096, 4
    base = _Stack(d, nl).to(DEV, torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["0", "1", "2", "3"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", loragen.LoragenWarning)
        assert len(loragen.patch_peft(model).patched) == nl
    x = torch.randn(2048, d, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    torch.cuda.synchronize()
    free0, res0 = torch.cuda.mem_get_info()[0], torch.cuda.memory_reserved()
    model(x).float().square().mean().backward()
    torch.cuda.synchronize()
    free1, res1 = torch.cuda.mem_get_info()[0], torch.cuda.memory_reserved()
    own = (free0 - free1) - (res1 - res0)  # device memory the library allocated itself
    weights = nl * d * d * 2
    print(f"no-copy: base weights {weights >> 20} MiB; the library allocated {own / 2**20:.1f} MiB itself "
          f"(A/B copies {nl * 2 * 16 * d * 2 >> 10} KiB); torch reserved {(res1 - res0) >> 20} MiB more")
    assert own < 16 << 20
    layers = loragen.fused_layers(model)
    lib = _lib.load_library()
    for name, layer in layers:
        w = model.get_submodule(name).get_base_layer().weight
        ptr, ld = layer.backend.base_pointer(layer.handle)
        assert ptr == w.data_ptr() and ld == w.stride(0) == d
        ws_ptr, ws_size = layer.handle.last_ws
        ds = lib.lg_lora_ds_buffer(layer.handle.ptr)
        assert ws_ptr <= ds < ws_ptr + ws_size  # dS lived inside torch's block
    # the kernels read W where torch keeps it: zeroing it in place leaves only the LoRA term
    one = model.get_submodule(layers[0][0])
    with torch.no_grad():
        xx = torch.randn(64, d, device=DEV, dtype=torch.bfloat16)
        a, b = one.lora_A["default"].weight, one.lora_B["default"].weight
        b.normal_()  # PEFT starts B at zero; the version bump makes the next forward refresh the copy
        one.get_base_layer().weight.zero_()
        y = one(xx).float()
        want = (xx.float() @ a.t()) @ b.t() * one.scaling["default"]
    assert want.abs().max() > 0 and pm.rel_err(y, want) < 2e-2
    assert ctypes.sizeof(_lib.LoraBwd) == 120
