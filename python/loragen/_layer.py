"""_layer.py: one FusedLoRA layer inside PyTorch: the autograd Function and the per-adapter layer state.

FusedLoRAFunction computes  y = x·Wᵀ (+ bias) + s·D(x)·Aᵀ·Bᵀ  and its backward (dx, dA, dB; no dW) through a
backend: CudaBackend calls libloragen's lg_lora_forward / lg_lora_backward on torch's current CUDA stream
with torch's own tensors (data pointers and strides; W and the bias are borrowed, never copied);
loragen.reference.ReferenceBackend does the same math with torch ops (CPU or GPU) for tests.

Gradients for A and B are returned to autograd, which accumulates them into PEFT's own parameters (.grad),
so optimizers, gradient accumulation, DDP hooks and gradient checkpointing see ordinary gradients.

The kernels read bf16/fp16 copies of A and B that the layer keeps (inside the lg_lora_t). They are refreshed
from the parameters when the parameters change: each forward compares the parameters' data pointers and
version counters (every in-place update bumps the counter) and the count of optimizer steps taken in the
process (a global torch.optim step hook, in case a fused optimizer kernel bumps no counter) with those of the
last refresh (refresh="version", the default), or refreshes every forward (refresh="always"). A write through
`param.data` is seen by neither: use refresh="always" for code that updates parameters that way."""

import ctypes

import torch

from . import _lib

_DTYPES = {torch.bfloat16: _lib.LG_BF16, torch.float16: _lib.LG_FP16, torch.float32: _lib.LG_FP32}


_optimizer_steps = [0]


def _count_step(*_args, **_kwargs):
    _optimizer_steps[0] += 1


try:
    from torch.optim.optimizer import register_optimizer_step_post_hook
except ImportError:  # torch < 2.0: version counters alone
    register_optimizer_step_post_hook = None
if register_optimizer_step_post_hook is not None:
    register_optimizer_step_post_hook(_count_step)


def _ptr(t):
    return t.data_ptr() if t is not None else 0


def _rows_ok(t):
    """2-D with unit column stride, 16-byte rows and a 16-byte aligned start: what the kernels and cuBLASLt take
    as they are (anything else is made contiguous first)."""
    return (t.dim() == 2 and t.stride(1) == 1 and t.stride(0) % 8 == 0 and t.stride(0) >= t.shape[1]
            and t.data_ptr() % 16 == 0)


def as_rows(t):
    return t if _rows_ok(t) else t.contiguous()


class LayerSpec:
    """What one fused layer is: shapes, rank, scale, dropout rate, dtype, bias, dropout counter."""

    __slots__ = ("in_features", "out_features", "rank", "scaling", "dropout", "dtype", "has_bias", "layer_id")

    def __init__(self, in_features, out_features, rank, scaling, dropout, dtype, has_bias, layer_id):
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.scaling, self.dropout, self.dtype = float(scaling), float(dropout), dtype
        self.has_bias, self.layer_id = bool(has_bias), int(layer_id)


class CudaBackend:
    """libloragen on the GPU. One lg_lora_t per layer, in the borrowed-base mode."""

    name = "cuda"

    def accepts(self, x):
        return x.is_cuda

    def create(self, spec, device):
        lib = _lib.load_library()
        ctx = _lib.context(device.index if device.index is not None else torch.cuda.current_device())
        p = _lib.LoraParams(in_features=spec.in_features, out_features=spec.out_features, rank=spec.rank,
                            alpha=spec.scaling * spec.rank, dropout=spec.dropout, dtype=_DTYPES[spec.dtype],
                            has_bias=int(spec.has_bias), layer_id=spec.layer_id, base=_lib.LG_LORA_BASE_BORROWED)
        h = ctypes.c_void_p()
        with torch.cuda.device(device):
            _lib.check(lib.lg_lora_init(ctx.handle, ctypes.byref(p), ctypes.byref(h)), "lg_lora_init")
        return _CudaHandle(h, ctx)

    def set_base(self, h, weight, bias):
        lib = _lib.load_library()
        _lib.check(lib.lg_lora_set_base(h.ptr, weight.data_ptr(), weight.stride(0), _ptr(bias)), "lg_lora_set_base")

    def set_adapter(self, h, spec, a, b):
        """a [r,K], b [M,r]: fp32 packed (converted on the device) or the layer's dtype with unit column stride."""
        lib = _lib.load_library()
        src = _lib.AdapterSrc(dtype=_DTYPES[a.dtype], a=a.data_ptr(), lda=a.stride(0), b=b.data_ptr(),
                              ldb=b.stride(0))
        _lib.check(lib.lg_lora_set_adapter_device(h.ptr, ctypes.byref(src), _stream(a)),
                   "lg_lora_set_adapter_device")

    def forward(self, h, spec, x, s, y, seed):
        lib = _lib.load_library()
        f = _lib.LoraFwd(n=x.shape[0], x=x.data_ptr(), ldx=x.stride(0), s=s.data_ptr(), lds=s.stride(0),
                         y=y.data_ptr(), ldy=y.stride(0), seed=seed)
        _lib.check(lib.lg_lora_forward(h.ptr, ctypes.byref(f), _stream(x)), "lg_lora_forward")

    def backward(self, h, spec, x, s, dy, dx, da, db, seed):
        lib = _lib.load_library()
        b = _lib.LoraBwd(n=x.shape[0], x=x.data_ptr(), ldx=x.stride(0), s=s.data_ptr(), lds=s.stride(0),
                         dy=dy.data_ptr(), lddy=dy.stride(0), dx=_ptr(dx), lddx=dx.stride(0) if dx is not None else 0,
                         da=da.data_ptr(), db=db.data_ptr(), grad_beta=0.0, seed=seed)
        need = ctypes.c_size_t()
        _lib.check(lib.lg_lora_backward_workspace(h.ptr, ctypes.byref(b), ctypes.byref(need)),
                   "lg_lora_backward_workspace")
        # from torch's caching allocator on this stream: one block serves every layer in turn, stream-ordered
        ws = torch.empty(max(need.value, 256), dtype=torch.uint8, device=x.device)
        b.ws, b.ws_size = ws.data_ptr(), ws.numel()
        _lib.check(lib.lg_lora_backward(h.ptr, ctypes.byref(b), _stream(x)), "lg_lora_backward")
        h.last_ws = (ws.data_ptr(), ws.numel())  # for the no-copy test: dS lies inside torch's block

    def base_pointer(self, h):
        lib = _lib.load_library()
        ld = ctypes.c_int64()
        return lib.lg_lora_base_weight(h.ptr, ctypes.byref(ld)), ld.value


def _stream(t):
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


class _CudaHandle:
    __slots__ = ("ptr", "ctx", "last_ws", "__weakref__")

    def __init__(self, ptr, ctx):
        self.ptr, self.ctx, self.last_ws = ptr, ctx, None

    def __del__(self):
        # not at interpreter exit: the driver may be gone by then; the process's end frees the device memory
        try:
            if self.ptr and _lib._lib is not None and not _shutting_down():
                _lib._lib.lg_lora_free(self.ptr)
        except Exception:
            pass
        self.ptr = None


def _shutting_down():
    import sys
    return sys.is_finalizing()


class FusedLayer:
    """One adapter of one PEFT lora.Linear on one device with one dropout rate: the backend's handle, the base
    pointers it was given, and what its A/B copies were refreshed from."""

    def __init__(self, backend, spec, device, refresh="version"):
        self.backend, self.spec, self.device, self.refresh_mode = backend, spec, device, refresh
        self.handle = backend.create(spec, device)
        self._base_key = None
        self._adapter_key = None
        self.refreshes = 0  # how many times A/B were copied in (tests and the benchmark read it)

    def bind_base(self, weight, bias):
        key = (weight.data_ptr(), weight.stride(0), _ptr(bias))
        if key != self._base_key:
            self.backend.set_base(self.handle, weight, bias)
            self._base_key = key

    def refresh(self, a, b, force=False):
        """Copies A and B in when they changed since the last refresh (or always, with refresh="always")."""
        key = (a.data_ptr(), a._version, a.dtype, b.data_ptr(), b._version, b.dtype, _optimizer_steps[0])
        if not force and self.refresh_mode == "version" and key == self._adapter_key:
            return
        self.backend.set_adapter(self.handle, self.spec, _adapter_src(a, self.spec.dtype),
                                 _adapter_src(b, self.spec.dtype))
        self._adapter_key = key
        self.refreshes += 1


def _adapter_src(t, dtype):
    t = t.detach()
    if t.dtype == torch.float32:
        return t.contiguous()
    if t.dtype != dtype:
        t = t.to(dtype)
    return as_rows(t)


class FusedLoRAFunction(torch.autograd.Function):
    """y = x·Wᵀ (+ bias) + s·D(x)·Aᵀ·Bᵀ for x [..., K]; gradients for x, A and B (W and the bias are frozen).

    apply(x, weight, bias, lora_a, lora_b, layer, seed): weight [M,K] and bias [M] are the base layer's
    tensors (borrowed, never copied); lora_a [r,K] and lora_b [M,r] are PEFT's parameters (any float dtype);
    `seed` picks the dropout mask, and backward reuses it (so the mask is regenerated, never stored)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, layer, seed):
        spec = layer.spec
        lead = x.shape[:-1]
        x2 = as_rows(x.reshape(-1, spec.in_features))
        layer.bind_base(weight, bias if spec.has_bias else None)
        layer.refresh(lora_a, lora_b)
        n = x2.shape[0]
        y = torch.empty((n, spec.out_features), dtype=spec.dtype, device=x.device)
        s = torch.empty((n, spec.rank), dtype=spec.dtype, device=x.device)
        layer.backend.forward(layer.handle, spec, x2, s, y, seed)
        if bias is not None and not spec.has_bias:  # a bias the GEMM epilogue cannot take (dtype, alignment)
            y += bias.to(y.dtype)
        ctx.save_for_backward(x2, s, lora_a, lora_b)
        ctx.layer, ctx.seed, ctx.x_shape = layer, seed, x.shape
        ctx.base = (weight, bias if spec.has_bias else None)  # frozen: held, not saved for autograd
        return y.view(*lead, spec.out_features)

    @staticmethod
    def backward(ctx, dy):
        x2, s, lora_a, lora_b = ctx.saved_tensors  # raises if A or B changed in place since the forward
        layer = ctx.layer
        spec = layer.spec
        layer.bind_base(*ctx.base)
        layer.refresh(lora_a, lora_b)  # no-op unless the copies serve another version meanwhile
        dy2 = as_rows(dy.reshape(-1, spec.out_features).to(spec.dtype))
        n = x2.shape[0]
        dx = torch.empty((n, spec.in_features), dtype=spec.dtype, device=x2.device) if ctx.needs_input_grad[0] else None
        da = torch.empty((spec.rank, spec.in_features), dtype=torch.float32, device=x2.device)
        db = torch.empty((spec.out_features, spec.rank), dtype=torch.float32, device=x2.device)
        layer.backend.backward(layer.handle, spec, x2, s, dy2, dx, da, db, ctx.seed)
        ga = da.to(lora_a.dtype) if ctx.needs_input_grad[3] else None
        gb = db.to(lora_b.dtype) if ctx.needs_input_grad[4] else None
        return (dx.view(ctx.x_shape) if dx is not None else None), None, None, ga, gb, None, None

