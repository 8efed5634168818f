"""_lib.py: libloragen.so through ctypes: finding and loading the library, the C structs the binding passes
(mirrors of runtime/include/lg_lora.h and lg_ctx.h, checked by tests/test_lora_api.c and
tests/python/test_binding_cpu.py), status checking, and one context per CUDA device.

The library works in the device's primary context (lg_ctx_init retains it), the context the CUDA runtime and
so PyTorch use: torch's device pointers and streams are valid in it as they are. No torch import here."""

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

LG_BF16, LG_FP16, LG_FP32 = 0, 1, 2
LG_LORA_BASE_OWNED, LG_LORA_BASE_BORROWED = 0, 1
LG_OK, LG_ERR_NO_GPU = 0, 9

_u64, _i64 = ctypes.c_uint64, ctypes.c_int64


class LoragenError(RuntimeError):
    """A libloragen call failed; the message is the library's own detail (lg_last_error)."""

    def __init__(self, status, what, detail):
        self.status = status
        super().__init__(f"{what}: {detail}")


class LibraryNotFound(LoragenError):
    """libloragen.so was not found (or not loadable); the message lists every place tried."""

    def __init__(self, message):
        RuntimeError.__init__(self, message)
        self.status = None


# ---- the structs (field order and types exactly as in the C headers) ----

class LoraParams(ctypes.Structure):  # struct lg_lora_params
    _fields_ = [("in_features", _i64), ("out_features", _i64), ("rank", ctypes.c_int),
                ("alpha", ctypes.c_float), ("dropout", ctypes.c_float), ("dtype", ctypes.c_int),
                ("has_bias", ctypes.c_int), ("layer_id", ctypes.c_uint32), ("base", ctypes.c_int)]


class LoraFwd(ctypes.Structure):  # struct lg_lora_fwd
    _fields_ = [("n", _i64), ("x", _u64), ("ldx", _i64), ("s", _u64), ("lds", _i64), ("y", _u64),
                ("ldy", _i64), ("seed", _u64)]


class LoraBwd(ctypes.Structure):  # struct lg_lora_bwd
    _fields_ = [("n", _i64), ("x", _u64), ("ldx", _i64), ("s", _u64), ("lds", _i64), ("dy", _u64),
                ("lddy", _i64), ("dx", _u64), ("lddx", _i64), ("da", _u64), ("db", _u64),
                ("grad_beta", ctypes.c_float), ("seed", _u64), ("ws", _u64), ("ws_size", ctypes.c_size_t)]


class AdapterSrc(ctypes.Structure):  # struct lg_lora_adapter_src
    _fields_ = [("dtype", ctypes.c_int), ("a", _u64), ("lda", _i64), ("b", _u64), ("ldb", _i64)]


class CtxParams(ctypes.Structure):  # struct lg_ctx_params
    _fields_ = [("device", ctypes.c_int), ("cache_dir", ctypes.c_char_p), ("blas_workspace", ctypes.c_size_t)]


class GenLimits(ctypes.Structure):  # struct lg_gen_limits
    _fields_ = [("rank_min", ctypes.c_int), ("rank_max", ctypes.c_int), ("rank_multiple", ctypes.c_int),
                ("feature_multiple", ctypes.c_int), ("dtypes", ctypes.c_uint)]


# sizes the C compiler gives (tests/test_lora_api.c binding_struct_layout asserts the same numbers)
STRUCT_SIZES = {LoraParams: 48, LoraFwd: 64, LoraBwd: 120, AdapterSrc: 40, CtxParams: 24, GenLimits: 20}

_P = ctypes.c_void_p
_SIGNATURES = {
    "lg_last_error": (ctypes.c_char_p, []),
    "lg_status_str": (ctypes.c_char_p, [ctypes.c_int]),
    "lg_gen_limits_get": (ctypes.c_int, [ctypes.POINTER(GenLimits)]),
    "lg_ctx_init": (ctypes.c_int, [ctypes.POINTER(CtxParams), ctypes.POINTER(_P)]),
    "lg_ctx_free": (None, [_P]),
    "lg_ctx_device_name": (ctypes.c_char_p, [_P]),
    "lg_ctx_arch": (ctypes.c_int, [_P]),
    "lg_lora_init": (ctypes.c_int, [_P, ctypes.POINTER(LoraParams), ctypes.POINTER(_P)]),
    "lg_lora_free": (None, [_P]),
    "lg_lora_set_base": (ctypes.c_int, [_P, _u64, _i64, _u64]),
    "lg_lora_base_weight": (_u64, [_P, ctypes.POINTER(_i64)]),
    "lg_lora_set_adapter_device": (ctypes.c_int, [_P, ctypes.POINTER(AdapterSrc), _P]),
    "lg_lora_forward": (ctypes.c_int, [_P, ctypes.POINTER(LoraFwd), _P]),
    "lg_lora_backward": (ctypes.c_int, [_P, ctypes.POINTER(LoraBwd), _P]),
    "lg_lora_backward_workspace": (ctypes.c_int, [_P, ctypes.POINTER(LoraBwd), ctypes.POINTER(ctypes.c_size_t)]),
    "lg_lora_ds_buffer": (_u64, [_P]),
}

# ---- finding the library ----

_BUILD_PREFERENCE = ("build-gpu", "build", "build-py")


def _repo_roots():
    """Checkouts of loragen this package may belong to: the one above this file (a source tree or an editable
    install), then the current directory and its parents."""
    seen = []
    here = Path(__file__).resolve().parent
    starts = [here.parent.parent, Path.cwd()]
    for start in starts:
        for d in [start, *start.parents]:
            if (d / "runtime" / "include" / "lg_lora.h").is_file() and d not in seen:
                seen.append(d)
                break
    return seen


def _build_dirs(root):
    named = [root / b for b in _BUILD_PREFERENCE]
    others = sorted((p for p in root.glob("build*") if p.is_dir() and p not in named),
                    key=lambda p: -p.stat().st_mtime)
    return named + others


def candidates():
    """(label, path-or-name) in search order: $LORAGEN_LIBRARY, the repository's build folders, the system."""
    out = []
    env = os.environ.get("LORAGEN_LIBRARY")
    if env:
        p = Path(env)
        out.append(("$LORAGEN_LIBRARY", p / "libloragen.so" if p.is_dir() else p))
        return out  # an explicit choice is never second-guessed
    for root in _repo_roots():
        for b in _build_dirs(root):
            out.append((f"build folder {b}", b / "libloragen.so"))
    found = ctypes.util.find_library("loragen")
    out.append(("the system library path", found or "libloragen.so.0"))
    return out


def _dlopen(path):
    # RTLD_DEEPBIND: libloragen's own cuBLASLt/NVRTC (CUDA 13) must win over the copies torch loaded with
    # RTLD_GLOBAL, which may be another CUDA major with the same symbol names.
    mode = ctypes.RTLD_LOCAL
    if os.environ.get("LORAGEN_DEEPBIND", "1") != "0" and hasattr(os, "RTLD_DEEPBIND"):
        mode |= os.RTLD_DEEPBIND
    return ctypes.CDLL(str(path), mode=mode)


def _declare(lib):
    for name, (res, args) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


_lock = threading.RLock()
_lib = None
_lib_path = None


def load_library():
    """The loaded libloragen (once per process). Raises LibraryNotFound naming every place it looked."""
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for label, path in candidates():
            is_file = isinstance(path, Path)
            if is_file and not path.exists():
                tried.append(f"  {label}: {path} (absent)")
                continue
            try:
                lib = _declare(_dlopen(path))
            except OSError as e:
                tried.append(f"  {label}: {path} ({e})")
                continue
            except AttributeError as e:  # an older build, from before the functions this binding calls
                tried.append(f"  {label}: {path} (too old for this binding: {e})")
                continue
            _lib, _lib_path = lib, str(path)
            return _lib
        raise LibraryNotFound("libloragen.so not found; looked in:\n" + "\n".join(tried) +
                              "\nbuild it (cmake -S . -B build && cmake --build build) or set LORAGEN_LIBRARY "
                              "to the library file or its folder")


def library_path():
    load_library()
    return _lib_path


def check(status, what):
    if status != LG_OK:
        lib = load_library()
        detail = (lib.lg_last_error() or b"").decode(errors="replace")
        name = (lib.lg_status_str(status) or b"?").decode()
        raise LoragenError(status, what, f"{name}: {detail}")


_limits = None


def limits():
    """The kernels' shape rules from the generator (one source of truth: generator/limits.lua):
    dict(rank_min, rank_max, rank_multiple, feature_multiple, dtypes={'bf16', 'fp16'})."""
    global _limits
    if _limits is None:
        lib = load_library()
        g = GenLimits()
        check(lib.lg_gen_limits_get(ctypes.byref(g)), "lg_gen_limits_get")
        names = {LG_BF16: "bf16", LG_FP16: "fp16", LG_FP32: "fp32"}
        _limits = dict(rank_min=g.rank_min, rank_max=g.rank_max, rank_multiple=g.rank_multiple,
                       feature_multiple=g.feature_multiple,
                       dtypes={n for t, n in names.items() if g.dtypes >> t & 1})
    return _limits


def rank_ok(r):
    lim = limits()
    return lim["rank_min"] <= r <= lim["rank_max"] and r % lim["rank_multiple"] == 0


def rank_rule():
    lim = limits()
    return f"a multiple of {lim['rank_multiple']} in {lim['rank_min']}..{lim['rank_max']}"


class Context:
    """One lg_ctx_t for one CUDA device (the device's primary context, shared with the CUDA runtime). Kept
    for the life of the process: layers hold it, and freeing it at interpreter exit would race torch's own
    teardown of the device."""

    def __init__(self, device):
        lib = load_library()
        self.device = device
        self.handle = _P()
        cp = CtxParams(device=device, cache_dir=None, blas_workspace=0)
        check(lib.lg_ctx_init(ctypes.byref(cp), ctypes.byref(self.handle)), f"lg_ctx_init(device {device})")
        self.name = lib.lg_ctx_device_name(self.handle).decode()
        self.arch = lib.lg_ctx_arch(self.handle)


_contexts = {}


def context(device):
    """The context of CUDA device ordinal `device`, created on first use."""
    with _lock:
        ctx = _contexts.get(device)
        if ctx is None:
            ctx = _contexts[device] = Context(device)
        return ctx
