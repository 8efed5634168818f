"""reference.py: FusedLoRA's math in plain torch ops, as a backend of the binding (loragen._layer).

The same contract as the CUDA backend, so the binding's wiring (patching, shapes, dtypes, autograd, dropout
seeds, A/B refresh, save/load) is testable on a machine without a GPU, and the GPU tests can compare the
kernels with it. It follows the kernels' numerics where they matter: S and dS are rounded to the layer's dtype
(the kernels store them so), products accumulate in fp32, the dropout rate is quantised to 1/65536 as the
Philox mask's threshold is, and kept elements are scaled by 1/keep. Its mask comes from torch's generator
seeded by (seed, layer_id), not from Philox: the two backends' masks differ, their distribution does not.

    from loragen import reference, set_backend
    set_backend(reference.ReferenceBackend())   # every patched layer now runs these ops
"""

import torch


def quantised_rate(p):
    """The dropout rate the kernels apply: thresh16 = round(p * 65536) (templates/common/lg_philox.h)."""
    return round(p * 65536) / 65536.0


class _Handle:
    __slots__ = ("weight", "bias", "a", "b")

    def __init__(self):
        self.weight = self.bias = self.a = self.b = None


class ReferenceBackend:
    name = "reference"

    def __init__(self, devices=("cpu", "cuda")):
        self.devices = set(devices)

    def accepts(self, x):
        return x.device.type in self.devices

    def create(self, spec, device):
        return _Handle()

    def set_base(self, h, weight, bias):
        h.weight, h.bias = weight, bias  # borrowed, as the kernels borrow them

    def set_adapter(self, h, spec, a, b):
        h.a = a.detach().to(spec.dtype).clone()
        h.b = b.detach().to(spec.dtype).clone()

    def _mask(self, spec, x, seed):
        p = quantised_rate(spec.dropout)
        if p == 0:
            return None
        g = torch.Generator(device=x.device)
        g.manual_seed((int(seed) * 1000003 + spec.layer_id) % (1 << 63))
        keep = torch.rand(x.shape, generator=g, device=x.device) >= p
        return keep.float() / (1.0 - p)

    def forward(self, h, spec, x, s, y, seed):
        xf = x.float()
        m = self._mask(spec, x, seed)
        xd = xf * m if m is not None else xf
        s.copy_((spec.scaling * (xd @ h.a.float().t())).to(spec.dtype))
        out = xf @ h.weight.float().t()
        if h.bias is not None:
            out += h.bias.float()
        out += s.float() @ h.b.float().t()
        y.copy_(out.to(spec.dtype))

    def backward(self, h, spec, x, s, dy, dx, da, db, seed):
        dyf = dy.float()
        db.copy_(dyf.t() @ s.float())
        ds = (spec.scaling * (dyf @ h.b.float())).to(spec.dtype).float()
        xf = x.float()
        m = self._mask(spec, x, seed)
        xd = xf * m if m is not None else xf
        da.copy_(ds.t() @ xd)
        if dx is not None:
            corr = ds @ h.a.float()
            if m is not None:
                corr = corr * m
            dx.copy_((dyf @ h.weight.float() + corr).to(dx.dtype))

    def base_pointer(self, h):
        return h.weight.data_ptr(), h.weight.stride(0)
