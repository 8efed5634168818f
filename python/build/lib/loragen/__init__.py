"""loragen: libloragen's FusedLoRA kernels inside existing PyTorch trainers.

    import loragen
    model = get_peft_model(base_model, LoraConfig(r=16, target_modules="all-linear", lora_dropout=0.05))
    report = loragen.patch_peft(model)      # every supported lora.Linear now runs FusedLoRA
    # ... train as before: Trainer, TRL, a plain loop; save_pretrained writes the usual PEFT adapter

The library is found from $LORAGEN_LIBRARY (the file or its folder), else a loragen checkout's build folders
(build-gpu, build, build-py, then any build*), else the system library path. Pure Python over ctypes: no
extension is compiled against torch."""

from ._lib import LibraryNotFound, LoragenError, library_path, limits, load_library

__version__ = "0.1.0"

_PEFT_NAMES = ("patch_peft", "unpatch_peft", "set_fused", "fused_layers", "set_backend", "get_backend", "LoragenWarning",
               "FusedLoraLinear", "PatchReport")
_LAYER_NAMES = ("FusedLoRAFunction", "FusedLayer", "LayerSpec", "CudaBackend")

__all__ = ["LibraryNotFound", "LoragenError", "library_path", "limits", "load_library", *_PEFT_NAMES,
           *_LAYER_NAMES]


def __getattr__(name):
    # torch and peft are imported on first use, so `import loragen` works (and finds the library) without them
    if name in _PEFT_NAMES:
        from . import peft_patch
        return getattr(peft_patch, name)
    if name in _LAYER_NAMES:
        from . import _layer
        return getattr(_layer, name)
    raise AttributeError(f"module 'loragen' has no attribute {name!r}")
