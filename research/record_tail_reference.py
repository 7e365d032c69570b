"""Record each ONNX method's network outputs on 8 training crops spread over yaw, and what the tail made of
them at the time of recording: tests/data/tail_reference.npz, the reference tests/methods/test_tail_reference.py holds
every later tail (decode, visibility, frontal shape) to. Re-run only to change the reference on purpose:
    python -m research.record_tail_reference
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.methods.base import registry
from engine.methods.factory import create
from engine.methods.onnx_method import OnnxMethod
from engine.paths import data_path
from engine.runtime import crop_to_input

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "tail_reference.npz"
YAWS = np.linspace(-85, 85, 8)


def training_crops() -> list[np.ndarray]:
    root = data_path("aflw_train")
    labels = np.load(root / "labels.npz")
    yaw = labels["teacher_pose"][:, 0]
    picks = [int(np.argmin(np.abs(yaw - y))) for y in YAWS]
    return [cv2.imread(str(root / "images" / str(labels["names"][i]))) for i in picks]


def main() -> None:
    crops = training_crops()
    x = crop_to_input(np.stack(crops))
    record: dict[str, np.ndarray] = {}
    for name, info in sorted(registry().items()):
        if not (issubclass(info.factory, OnnxMethod) and info.available):
            continue
        m = create(name, threads=1)
        out = m.model(x)
        results = m.align_batch(crops)
        for k, v in out.items():
            record[f"{name}/out/{k}"] = v
        # float32 (~1e-5 px at crop scale): the tests hold points to 1e-4 px and the visibility decisions exactly
        record[f"{name}/points"] = np.stack([np.concatenate([r.mesh, r.landmarks]) for r in results]).astype(np.float32)
        record[f"{name}/pose"] = np.stack([r.pose for r in results])
        record[f"{name}/visible"] = np.stack([r.visible for r in results])
        if results[0].shape_frontal is not None:
            record[f"{name}/shape_frontal"] = np.stack([r.shape_frontal for r in results]).astype(np.float32)
        if results[0].normal_visibility is not None:
            record[f"{name}/normal_visibility"] = np.stack([r.normal_visibility for r in results])
        print(name, "hidden landmarks:", int((~record[f"{name}/visible"]).sum()), "of", record[f"{name}/visible"].size)
    np.savez_compressed(OUT, **record)
    print(OUT, OUT.stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
