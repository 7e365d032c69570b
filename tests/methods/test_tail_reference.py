"""Every ONNX method's tail (decode, visibility, frontal shape, result) against what it made of the same recorded
network outputs when tests/data/tail_reference.npz was written (research/record_tail_reference.py, before issue 16's
second tail speed-up): the faster tail must give the same points, poses and visibility decisions."""
from pathlib import Path

import numpy as np
import pytest

from engine.methods.base import registry
from engine.methods.factory import create

REFERENCE = Path(__file__).parents[1] / "data" / "tail_reference.npz"
METHODS = ["3dstn", "baseline", "mtcnn3d", "prnet"]


class _Recorded:
    """Stands in for the ONNX session: returns the recorded outputs for the batch it is given."""

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        assert len(x) == len(next(iter(self.outputs.values())))
        return dict(self.outputs)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", METHODS)
def test_tail_equals_the_recorded_tail(name, reference):
    if not registry()[name].available:
        pytest.skip(f"weights/{registry()[name].weights} missing")
    prefix = f"{name}/out/"
    outputs = {k[len(prefix):]: v for k, v in reference.items() if k.startswith(prefix)}
    m = create(name, threads=1)
    if set(outputs) != set(m.model.output_names):
        pytest.skip(f"weights/{m.weights} changed outputs since the recording; re-run python -m research.record_tail_reference")
    m.model = _Recorded(outputs)
    m.visibility_model = None   # the recording holds the geometric test; tests/evaluation/test_visibility_bench.py the fitted one
    # the recording holds each network's own pose; the declared pose source on top of it (a Procrustes rotation and
    # a fitted correction, engine/methods/pose_output.py) is tested in tests/geometry/test_head_pose.py
    m.pose_output = None
    n = len(reference[f"{name}/pose"])
    results = m.align_batch([np.zeros((120, 120, 3), np.uint8)] * n)
    points = np.stack([np.concatenate([r.mesh, r.landmarks]) for r in results])
    visible = np.stack([r.visible for r in results])
    want_visible = reference[f"{name}/visible"]
    assert (~want_visible).sum() > 50 and want_visible.sum() > 300   # the recording exercises both decisions
    assert np.array_equal(visible, want_visible)
    assert np.allclose(points, reference[f"{name}/points"], atol=1e-4)   # recorded as float32
    assert np.allclose(np.stack([r.pose for r in results]), reference[f"{name}/pose"], atol=1e-7)
    if f"{name}/shape_frontal" in reference:
        assert np.allclose(np.stack([r.shape_frontal for r in results]), reference[f"{name}/shape_frontal"],
                           atol=1e-5)
    else:
        assert all(r.shape_frontal is None for r in results)
    if f"{name}/normal_visibility" in reference:
        assert np.allclose(np.stack([r.normal_visibility for r in results]), reference[f"{name}/normal_visibility"],
                           atol=1e-7)
    if "position_map" in outputs:   # prnet: the dense surface is the valid texels of the map
        pmap = outputs["position_map"].transpose(0, 2, 3, 1).astype(np.float64) * 120.0
        for r, p in zip(results, pmap):
            assert np.array_equal(r.dense, p[m.valid])
