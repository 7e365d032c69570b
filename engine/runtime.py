"""ONNX Runtime sessions: one place that picks the execution provider and the thread count."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def preferred_providers() -> list[str]:
    """CUDA when onnxruntime-gpu sees a GPU, else CPU. FACEALIGN_PROVIDER=cpu forces the CPU."""
    if os.environ.get("FACEALIGN_PROVIDER", "").lower() == "cpu":
        return ["CPUExecutionProvider"]
    av = available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in av]


class OnnxModel:
    """A loaded ONNX model; ``provider`` says where it actually runs."""

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"weights not found: {path}")
        so = ort.SessionOptions()
        n = threads if threads is not None else int(os.environ.get("FACEALIGN_THREADS", "0") or 0)
        if n:
            so.intra_op_num_threads = n
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers or preferred_providers())
        self.provider = self.session.get_providers()[0]
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.path = path

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: x})
        return dict(zip(self.output_names, outs))


def crop_to_input(crop_bgr: np.ndarray) -> np.ndarray:
    """uint8 (120, 120, 3) BGR or (B, 120, 120, 3) -> float32 NCHW in [-1, 1] (the training convention)."""
    x = np.asarray(crop_bgr, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) / 127.5 - 1.0
