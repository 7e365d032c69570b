"""Method instances from the registry's declarations (engine/methods/base.py holds the data, this module builds):
the one place that turns a name, and optionally its declared INT8 variant, into a running ``Method``."""
from __future__ import annotations

from engine.methods.base import Method, MethodUnavailable, quantized_name, registry
from engine.paths import weights_path


def create(name: str, quantized: bool = False, flip: bool = False, **kwargs) -> Method:
    """An instance of method ``name``. Raises KeyError for an unknown name and ``MethodUnavailable`` (with the
    reason) when its weights are missing. ``quantized``: its INT8 ONNX variant (weights/NAME.int8.onnx, made by
    ``python main.py quantize NAME``) instead of the float model; ValueError for a method that declares none.
    ``flip``: flip averaging (the crop and its mirror, averaged; engine/methods/flip.py), twice the network cost."""
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(reg))}")
    info = reg[name]
    reason = info.unavailable_reason()
    if reason:
        raise MethodUnavailable(reason)
    if quantized:
        if info.int8 is None:
            raise ValueError(f"method {name!r} has no ONNX model, so no INT8 variant")
        path = weights_path(quantized_name(info.weights))
        if not path.exists():
            raise MethodUnavailable(f"method {name!r} has no INT8 variant: {path} is missing (make it with "
                                    f"`python main.py quantize {name}`)")
        kwargs["weights_file"] = path.name
    method = info.factory(**kwargs)
    if flip:
        from engine.methods.flip import FlipAveraged

        return FlipAveraged(method)
    return method
