"""ONNX export of a trained recipe, with a parity check against torch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def example_inputs(recipe) -> dict[str, torch.Tensor]:
    """The export's example inputs by graph input name: the recipe's ``export_inputs()`` where it has one (a graph
    with more inputs than the image, e.g. CPR-H's landmarks), else one random image."""
    if hasattr(recipe, "export_inputs"):
        return recipe.export_inputs()
    return {"image": torch.randn(1, 3, 120, 120).clamp(-1, 1)}


def export_onnx(recipe, model: torch.nn.Module, path: Path, check: bool = True) -> Path:
    mod = recipe.export_module(model).eval()
    inputs = example_inputs(recipe)
    names = list(inputs)
    tmp = path.with_suffix(".tmp.onnx")
    # a recipe may need a newer opset than 17 (pifa's z-buffer: ScatterElements with reduction "max", opset 18)
    torch.onnx.export(mod, tuple(inputs.values()), str(tmp), input_names=names,
                      output_names=list(recipe.output_names),
                      dynamic_axes={n: {0: "batch"} for n in names + list(recipe.output_names)},
                      opset_version=getattr(recipe, "opset", 17), dynamo=False)
    if check:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {n: v.numpy() for n, v in inputs.items()})
        with torch.no_grad():
            want = mod(*inputs.values())
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
