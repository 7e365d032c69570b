"""The per-face cost of the visibility tail: the shared test alone, the visibility model shipped at an older commit
and the current one, interleaved call by call on the same faces (wall-clock medians and mean CPU time; one thread,
as the app runs it).

    python -m research.visibility_tail_cost --method mtcnn3d --old 146fc7f

The older model's code and weights are read from git (engine/visibility_model.py and weights/visibility_NAME.npz
at ``--old``), so both run in one process on one machine. Faces: the method's outputs on the first held-out crops.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
import types

import numpy as np

from engine.paths import PROJECT_ROOT, data_path


def old_model(commit: str, method: str):
    """The visibility model of ``method`` as shipped at ``commit`` (its module and weights from git)."""
    def show(path: str) -> bytes:
        return subprocess.run(["git", "show", f"{commit}:{path}"], cwd=PROJECT_ROOT, check=True,
                              capture_output=True).stdout

    module = types.ModuleType("old_visibility_model")
    sys.modules[module.__name__] = module   # dataclasses look their module up
    exec(compile(show("engine/visibility_model.py"), f"{commit}:engine/visibility_model.py", "exec"),
         module.__dict__)
    z = np.load(io.BytesIO(show(f"weights/visibility_{method}.npz")))
    return module.VisibilityModel(method, z["coef"], z["groups"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="mtcnn3d")
    ap.add_argument("--old", required=True, help="the commit whose visibility model to compare")
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    from engine.evaluation.visibility_bench import load_labelled, run_method
    from engine.facemodel import load_face_model
    from engine.training.split import held_out_rows
    from engine.visibility import landmark_visibility_batch, warm_up_compiled_tail
    from engine.visibility_model import load_visibility_model

    n = len(np.load(data_path("aflw_train", "labels.npz"))["names"])
    crops = load_labelled(held_out_rows(n)[:args.faces]).images
    out = run_method(args.method, crops)
    keep = np.nonzero(out.found)[0]
    fm = load_face_model()
    warm_up_compiled_tail(fm)
    models = {"shared test only": None, f"model at {args.old}": old_model(args.old, args.method),
              "model now": load_visibility_model(args.method)}
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for c in range(args.calls):
        i = keep[c % len(keep)]
        pts = out.points[i:i + 1].astype(np.float64)
        nz = None if out.normal_visibility is None else out.normal_visibility[i:i + 1]
        for label, model in models.items():
            t, c0 = time.perf_counter(), time.process_time()
            landmark_visibility_batch(fm, pts, normal_z=nz, model=model, crops=crops[i:i + 1])
            times[label].append(time.perf_counter() - t)
            cpu[label].append(time.process_time() - c0)
    # wall-clock medians, and the process's CPU time (mean: its clock is coarse), which a loaded machine's
    # preemption does not inflate
    for label, t in times.items():
        print(f"{label}: {np.median(t) * 1e3:.3f} ms/face wall (median of {len(t)} calls), "
              f"{np.mean(cpu[label]) * 1e3:.3f} ms/face of CPU (mean)")


if __name__ == "__main__":
    main()
