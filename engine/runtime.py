"""ONNX Runtime sessions: one place that picks the execution provider and the thread count."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SessionPolicy:
    """How sessions created without an explicit thread count use the cores.

    ONNX Runtime's default gives every session its own intra-op pool with one thread per core, whose threads
    spin-wait after each run. Fine for one session alone; a front end running several sessions per frame (compare
    mode: seven) next to a decoder and a GUI thread gets pools fighting for the same cores and spinning threads
    stealing them (research/app_speed.py measures it). The app sets one thread per session, no spinning, and runs
    methods side by side instead (engine.pipeline.FrameProcessor's ``workers``).
    """

    threads: int | None = None   # intra-op threads per session; None: ONNX Runtime's default (one per core)
    spinning: bool = True        # False: pool threads sleep between runs instead of spin-waiting


_policy = SessionPolicy()


def set_session_policy(policy: SessionPolicy) -> SessionPolicy:
    """Use ``policy`` for sessions created from now on (an explicit ``threads`` or FACEALIGN_THREADS still wins for
    the thread count); returns the previous one."""
    global _policy
    previous, _policy = _policy, policy
    return previous


def session_policy() -> SessionPolicy:
    return _policy


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
        n = n or (_policy.threads or 0)
        if n:
            so.intra_op_num_threads = n
            so.inter_op_num_threads = 1
        if not _policy.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers or preferred_providers())
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_name = self.input_names[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.path = path

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return self.run({self.input_name: x})

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name, for a graph with more than one input (CPR-H: the image and another method's
        landmarks)."""
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs))


def crop_to_input(crop_bgr: np.ndarray) -> np.ndarray:
    """uint8 (120, 120, 3) BGR or (B, 120, 120, 3) -> float32 NCHW in [-1, 1] (the training convention)."""
    x = np.asarray(crop_bgr, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) / 127.5 - 1.0
