"""ONNX export of a trained recipe, with a parity check against torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def export_onnx(recipe, model: torch.nn.Module, path: Path, check: bool = True) -> Path:
    mod = recipe.export_module(model).eval()
    x = torch.randn(1, 3, 120, 120).clamp(-1, 1)
    tmp = path.with_suffix(".tmp.onnx")
    # a recipe may need a newer opset than 17 (pifa's z-buffer: ScatterElements with reduction "max", opset 18)
    torch.onnx.export(mod, (x,), str(tmp), input_names=["image"], output_names=list(recipe.output_names),
                      dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in recipe.output_names}},
                      opset_version=getattr(recipe, "opset", 17), dynamo=False)
    if check:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = mod(x)
        want = want if isinstance(want, (tuple, list)) else (want,)
        for g, w in zip(got, want):
            err = np.abs(g - w.numpy()).max() / (np.abs(w.numpy()).max() + 1e-6)
            if err > 1e-3:
                raise RuntimeError(f"ONNX export of {recipe.name} differs from torch (relative {err:.2e})")
    metadata = recipe.onnx_metadata() if hasattr(recipe, "onnx_metadata") else {}
    if metadata:  # what the weights declare about themselves (e.g. PRNet's UV layout), read back by the decoder
        import onnx

        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path
