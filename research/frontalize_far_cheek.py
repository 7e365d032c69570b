"""The far cheek at about 40 degrees of yaw, frontalized three ways, side by side (look at the PNG): the former
rule (only triangles turned away take the mirrored side), the default ramp (MIN_FACING), and a ramp from 0.3.
The four aflw2000_dev images closest to 40 degrees of |yaw|, aligned with mtcnn3d.

    .venv/bin/python -m research.frontalize_far_cheek out/front40.png
"""
from __future__ import annotations

import sys


import engine  # noqa: E402,F401

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def main(out: str) -> None:
    from engine.evaluation.aflw2000 import load_set
    from engine.facemodel import load_face_model
    from engine.geometry.frontalize import FrontalSampler, frontal_raster
    from engine.paths import data_path
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    ds = load_set(data_path("aflw2000_dev"))
    yaw = np.load(data_path("aflw2000_dev", "labels.npz"))["yaw"]
    fm = load_face_model()
    sampler = FrontalSampler(frontal_raster(fm.mean[:468] * np.array([1.0, -1.0, 1.0]), fm.triangles),
                             fm.triangles, 468)
    proc = FrameProcessor(["mtcnn3d"])
    rows = []
    for i in np.argsort(np.abs(np.abs(yaw) - 40))[:4]:
        img = cv2.imread(str(ds.image_path(int(i))))
        proc.tracker.reset()
        res = proc.process(Frame(0, 0.0, img))
        if not res.faces:
            continue
        mesh = res.faces[0].results["mtcnn3d"].mesh
        rows.append(np.hstack([sampler(img, mesh, min_facing=0.0), sampler(img, mesh),
                               sampler(img, mesh, min_facing=0.3)]))
        print(f"image {int(i)}: yaw {float(yaw[i]):.1f}")
    proc.close()
    cv2.imwrite(out, np.vstack(rows))


if __name__ == "__main__":
    main(sys.argv[1])
