"""Where one face's tail goes: median µs per face of each stage of ``align_batch`` (the ONNX call, the decode and
its parts, the visibility test and its parts, the frontal shape), each stage timed on its own on the stage's
recorded inputs, one thread, of the engine it imports (its folder is printed first):
    python -m research.profile_tail [--faces 1] [--methods baseline,3dstn,prnet,mtcnn3d]
To profile another tree's engine (set up as research/tail_ab.py says): PYTHONPATH=TREE:. python -P -m research.profile_tail
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def median_us(fn, repeats: int = 300) -> float:
    import numpy as np

    for _ in range(20):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=1)
    ap.add_argument("--methods", default="baseline,3dstn,prnet,mtcnn3d")
    args = ap.parse_args()
    import numpy as np

    import engine

    from engine.evaluation.bench import fixed_crops
    from engine.facemodel import N_MESH
    from engine.geometry.mesh import occluded_by_mesh_batch
    from engine.geometry.compiled import best_rotations_compiled
    from engine.methods.base import frontal_shape_batch, pose_from_points_batch
    from engine.methods.factory import create
    from engine.runtime import crop_to_input
    from engine.visibility import _batch_tables, landmark_visibility_batch

    print(f"engine: {Path(engine.__file__).resolve().parent}")
    crops = fixed_crops()
    n = args.faces
    for name in args.methods.split(","):
        m = create(name, threads=1)
        frame = [crops[k % len(crops)] for k in range(n)]
        x = crop_to_input(np.stack(frame))
        out = m.model(x)
        decoded = m.decode_batch(out)
        pts = np.stack([d.points for d in decoded])
        t = _batch_tables(m.fm)
        eps = 0.02 * (np.ptp(pts[:, :N_MESH, 0], axis=1) + 1e-9)
        rows = {"input conversion": lambda: crop_to_input(np.stack(frame)), "ONNX call": lambda: m.model(x),
                "decode": lambda: m.decode_batch(out),
                "visibility": lambda: landmark_visibility_batch(m.fm, pts),
                "  Procrustes SVD": lambda: best_rotations_compiled(t.mean_pixel_centred, pts),
                "  z-buffer test": lambda: occluded_by_mesh_batch(pts[:, N_MESH:], pts, t.tris, eps, t.ignore)}
        if name == "3dstn":
            from engine.geometry.tps import tps_apply, tps_fit
            from engine.methods.stn3d.geometry import closest_on_rays, project

            cam, shape = out["camera"].astype(np.float64), out["shape"].astype(np.float64)
            refined, lm = out["refined"].astype(np.float64), out["shape"].astype(np.float64)[:, N_MESH:]
            targets = closest_on_rays(cam, refined, lm)
            params = tps_fit(lm, targets, reg=1e-6)
            warped = tps_apply(shape, lm, params)
            rows.update({"  rays": lambda: closest_on_rays(cam, refined, lm),
                         "  TPS solve": lambda: tps_fit(lm, targets, reg=1e-6),
                         "  TPS warp": lambda: tps_apply(shape, lm, params),
                         "  projection": lambda: project(cam, warped),
                         "  pose SVD": lambda: pose_from_points_batch(m.fm, pts),
                         "frontal shape": lambda: frontal_shape_batch(m.fm, warped)})
        rows["whole align_batch"] = lambda: m.align_batch(frame)
        print(f"== {name}, {n} face{'s' if n > 1 else ''} per call: µs per face")
        for label, fn in rows.items():
            print(f"  {label:22s} {median_us(fn) / n:8.1f}")


if __name__ == "__main__":
    main()
