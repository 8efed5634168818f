"""peft_patch.py: patch_peft(model) runs every supported PEFT lora.Linear through FusedLoRA.

A patched module keeps everything PEFT gave it (parameters, adapters, config, merge/unmerge, save_pretrained);
only its class becomes FusedLoraLinear, whose forward takes the fused path when the call is the plain case
(one active adapter, not merged, not disabled, no mixed-batch adapter_names, a bf16/fp16 CUDA input matching
the base weight) and otherwise hands the call to PEFT's own forward. What the kernels cannot run at all (DoRA
and the other LoRA variants, lora_bias, quantized bases, fan_in_fan_out, several active adapters, trainable
base weights or biases, ranks and shapes outside the kernels' rules, fp32 bases) is left unpatched, with one
warning per reason naming the modules."""

import math
import warnings
import weakref

import torch
from torch import nn

try:
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer
except ImportError as e:  # pragma: no cover - the package imports this module lazily
    raise ImportError("loragen.patch_peft needs peft (pip install peft)") from e

from . import _lib
from ._layer import CudaBackend, FusedLayer, FusedLoRAFunction, LayerSpec, _rows_ok
from .reference import quantised_rate


class LoragenWarning(UserWarning):
    """A LoRA layer (or one call of it) is left to PEFT's unfused forward; the message says why."""


_STATES = weakref.WeakKeyDictionary()  # patched module -> _ModuleState (never pickled or deep-copied with it)
_warned = set()
_backend = None


def get_backend():
    global _backend
    if _backend is None:
        _backend = CudaBackend()
    return _backend


def set_backend(backend):
    """Routes every patched layer through `backend` (CudaBackend, or reference.ReferenceBackend for tests);
    layers already built for another backend are kept and rebuilt on demand. Returns the previous one."""
    global _backend
    old, _backend = get_backend(), backend
    return old


def _warn_once(reason):
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"loragen: a LoRA layer call is left to PEFT: {reason}", LoragenWarning, stacklevel=3)


def _quantized_name(m):
    base = m.get_base_layer() if hasattr(m, "get_base_layer") else None
    mod = type(m).__module__
    for tag in ("bnb", "gptq", "awq", "aqlm", "eetq", "hqq", "torchao", "hadamard", "inc", "quanto"):
        if f".{tag}" in mod:
            return type(base).__name__ if base is not None else type(m).__name__
    w = getattr(base, "weight", None)
    if isinstance(w, torch.Tensor) and not w.is_floating_point():
        return type(base).__name__
    if any(hasattr(base, a) for a in ("quant_state", "qweight", "quant_method")):
        return type(base).__name__
    return None


def _active(m):
    return [a for a in m.active_adapters if a in m.lora_A]


def adapter_reason(m, name):
    """Why adapter `name` of lora.Linear `m` cannot be fused (None when it can)."""
    variant = getattr(m, "lora_variant", {}).get(name)
    if variant is not None or getattr(m, "use_dora", {}).get(name, False):
        kind = "DoRA (use_dora=True)" if m.use_dora.get(name, False) else f"LoRA variant {type(variant).__name__}"
        return f"{kind}: the kernels compute plain LoRA"
    if getattr(m, "lora_bias", {}).get(name, False):
        return "lora_bias=True (a bias on lora_B): the kernels have none"
    r = m.r[name]
    if not _lib.rank_ok(r):
        return f"rank {r}: the kernels take {_lib.rank_rule()}"
    drop = m.lora_dropout[name]
    if type(drop) not in (nn.Dropout, nn.Identity):
        return f"lora_dropout is {type(drop).__name__}: the kernels draw plain dropout"
    if type(drop) is nn.Dropout and not 0 <= drop.p < 1:
        return f"lora_dropout p = {drop.p}: the kernels take 0 <= p < 1"
    s = m.scaling[name]
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        return f"scaling = {s!r}: the kernels take a positive number"
    a, b = m.lora_A[name], m.lora_B[name]
    if type(a) is not nn.Linear or type(b) is not nn.Linear or a.weight.shape != (r, m.in_features) \
            or b.weight.shape != (m.out_features, r):
        return "lora_A/lora_B are not the plain [r, in] and [out, r] linear layers"
    return None


def module_reason(m):
    """Why PEFT layer `m` cannot be patched (None when it can)."""
    if type(m) is not LoraLinear and type(m) is not FusedLoraLinear:
        q = _quantized_name(m)
        if q:
            return f"quantized base layer ({q}): the kernels need a bf16/fp16 nn.Linear"
        return f"{type(m).__name__} is not a PEFT lora.Linear"
    base = m.get_base_layer()
    if type(base) is not nn.Linear:
        q = _quantized_name(m)
        what = f"quantized base layer ({q})" if q else f"base layer {type(base).__name__}"
        return f"{what}: the kernels need a bf16/fp16 nn.Linear"
    lim = _lib.limits()
    dt = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(base.weight.dtype)
    if dt not in lim["dtypes"]:
        return f"base weight dtype {base.weight.dtype}: the kernels take {' or '.join(sorted(lim['dtypes']))}"
    if getattr(m, "fan_in_fan_out", False):
        return "fan_in_fan_out=True (Conv1D-style transposed weight)"
    fm = lim["feature_multiple"]
    if m.in_features % fm or m.out_features % fm:
        return f"features {m.in_features} -> {m.out_features}: the kernels need multiples of {fm}"
    if base.weight.requires_grad:
        return "the base weight is trainable: the kernels compute no dW"
    if base.bias is not None and base.bias.requires_grad:
        return "a trainable base bias (bias='all' or 'lora_only'): the kernels compute no bias gradient"
    active = _active(m)
    if len(active) > 1:
        return f"{len(active)} active adapters ({', '.join(active)}): FusedLoRA runs one (FusedMultiLoRA is planned)"
    return adapter_reason(m, active[0]) if active else None


class _ModuleState:
    def __init__(self, layer_id, refresh):
        self.layer_id, self.refresh = layer_id, refresh
        self.enabled = True
        self.layers = {}
        self.reasons = {}  # adapter name -> adapter_reason (adapters are checked once)

    def reason(self, m, name):
        if name not in self.reasons:
            self.reasons[name] = adapter_reason(m, name)
        return self.reasons[name]


def _draw_seed():
    # torch's default (CPU) generator: torch.manual_seed makes runs repeatable, and activation checkpointing
    # (which restores the RNG state before recomputing) redraws the same seed, hence the same mask
    return int(torch.randint(0, 1 << 62, (1,)).item())


def _is_compiling():
    comp = getattr(torch, "compiler", None)
    return bool(comp and hasattr(comp, "is_compiling") and comp.is_compiling())


def _plan(m, st, x):
    """The fused call for this forward, or None to leave it to PEFT (warning once when that is a surprise)."""
    if not st.enabled or m.disable_adapters or m.merged or _is_compiling():
        return None
    active = _active(m)
    if not active:
        return None
    if len(active) > 1:
        _warn_once(f"{len(active)} active adapters ({', '.join(active)}): FusedLoRA runs one")
        return None
    name = active[0]
    why = st.reason(m, name)
    if why:
        _warn_once(f"adapter {name!r}: {why}")
        return None
    base = m.get_base_layer()
    w, bias = base.weight, base.bias
    backend = get_backend()
    if not backend.accepts(x):
        _warn_once(f"input on {x.device} (the {backend.name} backend runs on {'CUDA' if backend.name == 'cuda' else 'its devices'})")
        return None
    if x.dtype != w.dtype or x.device != w.device:
        _warn_once(f"input {x.dtype} on {x.device} does not match the base weight ({w.dtype} on {w.device})")
        return None
    if w.requires_grad or (bias is not None and bias.requires_grad):
        _warn_once("the base weight or bias is trainable: the kernels compute no dW")
        return None
    if base._forward_hooks or base._forward_pre_hooks:
        _warn_once("the base layer has forward hooks (offloading?), which the fused path would skip")
        return None
    if x.numel() == 0 or x.numel() // m.in_features > (1 << 31) - 1:
        return None
    if not _rows_ok(w):
        _warn_once("the base weight is not row-major with 16-byte rows: it cannot be borrowed without a copy")
        return None
    lora_a, lora_b = m.lora_A[name].weight, m.lora_B[name].weight
    if lora_a.device != x.device or lora_b.device != x.device:
        _warn_once("the LoRA parameters are on another device than the input")
        return None
    drop = m.lora_dropout[name]
    p = float(drop.p) if type(drop) is nn.Dropout and drop.training else 0.0
    epilogue = bias is not None and bias.dtype == w.dtype and bias.is_contiguous() and bias.data_ptr() % 16 == 0
    scaling = float(m.scaling[name])
    key = (backend.name, name, x.device, p, scaling, w.dtype, epilogue)
    layer = st.layers.get(key)
    if layer is None:
        spec = LayerSpec(m.in_features, m.out_features, m.r[name], scaling, p, w.dtype, epilogue, st.layer_id)
        layer = st.layers[key] = FusedLayer(backend, spec, x.device, st.refresh)
    seed = _draw_seed() if quantised_rate(p) > 0 else 0
    return layer, w, bias, lora_a, lora_b, seed


class FusedLoraLinear(LoraLinear):
    """A PEFT lora.Linear whose plain-case forward runs FusedLoRA (see the module docstring)."""

    def forward(self, x, *args, **kwargs):
        st = _STATES.get(self)
        plan = _plan(self, st, x) if st is not None and not args and not kwargs else None
        if plan is None:
            return super().forward(x, *args, **kwargs)
        layer, w, bias, lora_a, lora_b, seed = plan
        return FusedLoRAFunction.apply(x, w, bias, lora_a, lora_b, layer, seed)


class PatchReport:
    """What patch_peft did: `patched` (module names) and `skipped` ({module name: reason})."""

    def __init__(self):
        self.patched, self.skipped = [], {}

    def __repr__(self):
        return f"PatchReport(patched={len(self.patched)}, skipped={len(self.skipped)})"


def patch_peft(model, refresh="version", warn=True):
    """Runs every supported PEFT lora.Linear of `model` through FusedLoRA, in place; returns a PatchReport.

    refresh: "version" (default) copies lora_A/lora_B into the kernels' bf16/fp16 copies when a parameter's
    version counter or storage changed since the last copy; "always" copies at every forward.
    Unsupported layers stay PEFT's, with one LoragenWarning per reason (warn=False: none)."""
    if refresh not in ("version", "always"):
        raise ValueError(f"refresh = {refresh!r}: use 'version' or 'always'")
    _lib.limits()  # loads the library now: a missing one is reported here, naming where it looked
    report = PatchReport()
    by_reason = {}
    lora_layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    for index, (name, m) in enumerate(lora_layers):
        why = module_reason(m)
        if why:
            report.skipped[name] = why
            by_reason.setdefault(why, []).append(name)
            continue
        if m not in _STATES:
            # the dropout counter: the module's place in the model, so masks differ between layers and a
            # rerun (same model, same torch.manual_seed) draws the same masks, in this process or another
            m.__class__ = FusedLoraLinear
            _STATES[m] = _ModuleState(index + 1, refresh)
        else:
            _STATES[m].refresh = refresh
        report.patched.append(name)
    if warn:
        for why, names in by_reason.items():
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            warnings.warn(f"loragen: {len(names)} LoRA layer(s) left to PEFT ({shown}): {why}", LoragenWarning,
                          stacklevel=2)
    return report


def unpatch_peft(model):
    """Gives every patched layer of `model` back to PEFT's own forward; returns how many."""
    n = 0
    for m in model.modules():
        if type(m) is FusedLoraLinear:
            m.__class__ = LoraLinear
            _STATES.pop(m, None)
            n += 1
    return n


def set_fused(model, enabled):
    """Turns the fused path of every patched layer of `model` off (PEFT's own forward runs) or back on,
    keeping the fused layers built so far (e.g. to compare the two in one process). Returns how many."""
    n = 0
    for m in model.modules():
        st = _STATES.get(m)
        if st is not None:
            st.enabled = bool(enabled)
            n += 1
    return n


def fused_layers(model):
    """(module name, FusedLayer) for every fused layer built so far (for tests and benchmarks)."""
    out = []
    for name, m in model.named_modules():
        st = _STATES.get(m)
        if st is not None:
            out.extend((name, layer) for layer in st.layers.values())
    return out
