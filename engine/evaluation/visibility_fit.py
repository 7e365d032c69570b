"""Fit each method's visibility model (engine/visibility_model.py) on the training split's human flags.

    python -m engine.evaluation.visibility_fit --methods mtcnn3d pifa prnet 3dstn cprfa baseline mediapipe

Runs each method on FIT_CROPS crops of aflw_train drawn (seeded) from the rows recipes train on (never the held-out
split, never aflw2000_dev), keeps its raw outputs in runs/visibility/ (reused on a re-run), fits the model and
writes weights/visibility_<method>.npz.
"""
from __future__ import annotations

import argparse

import numpy as np

from engine.evaluation.visibility_bench import LabelledCrops, MethodOutputs, load_labelled, run_method
from engine.paths import PROJECT_ROOT, data_path
from engine.visibility_model import VisibilityModel, model_file

FIT_CROPS = 3000
RAW_DIR = PROJECT_ROOT / "runs" / "visibility"


def fit_rows(n_labels: int, count: int = FIT_CROPS, seed: int = 0) -> np.ndarray:
    """``count`` training-split rows, a seeded draw (sorted)."""
    from engine.training.split import training_rows

    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(training_rows(n_labels), size=count, replace=False))


def raw_outputs(name: str, split: str, rows: np.ndarray, crops: LabelledCrops | None = None,
                log=print) -> MethodOutputs:
    """The method's outputs on ``rows`` (cached in runs/visibility/NAME-SPLIT.npz, keyed by the rows and the
    method's weights file)."""
    from engine.methods.base import registry

    RAW_DIR.mkdir(parents=True, exist_ok=True)
    path = RAW_DIR / f"{name}-{split}.npz"
    wfile = registry()[name].weights_path
    stamp = f"{wfile.stat().st_mtime_ns}-{wfile.stat().st_size}" if wfile.exists() else "none"
    if path.exists():
        z = np.load(path)
        if np.array_equal(z["rows"], rows) and str(z["stamp"]) == stamp:
            nv = z["normal_visibility"]
            return MethodOutputs(z["points"], z["visible"], z["pose"], None if nv.size == 0 else nv, z["found"])
    crops = crops or load_labelled(rows)
    out = run_method(name, crops.images,
                     progress=lambda i, n: log(f"[{name}] {i}/{n}") if i % 640 == 0 or i == n else None)
    np.savez_compressed(path, rows=rows, stamp=stamp, points=out.points, visible=out.visible, pose=out.pose,
                        normal_visibility=np.zeros(0) if out.normal_visibility is None else out.normal_visibility,
                        found=out.found)
    return out


def logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Coefficients of P(y) = sigmoid(x @ w) by Newton's method with an L2 penalty ``l2`` per sample on all but the
    first (bias) column. ``x`` (n, f), ``y`` (n,) 0/1."""
    n, f = x.shape
    w = np.zeros(f)
    pen = np.full(f, l2 * n)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + pen * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def fit_model(name: str, out: MethodOutputs, crops: LabelledCrops) -> VisibilityModel:
    """The method's VisibilityModel fitted on its outputs ``out`` for the training-split ``crops`` (faces the method
    missed are left out): per landmark, a logistic regression on its features against the human flag of its nearest
    AFLW point (engine/visibility_model.nearest_flags)."""
    from engine.facemodel import N_MESH, load_face_model
    from engine.visibility import visibility_terms
    from engine.visibility_model import FEATURES, design, landmark_groups, nearest_flags

    fm = load_face_model()
    groups = landmark_groups()
    flags = nearest_flags(fm.mean[N_MESH:N_MESH + 68])
    found = out.found
    points = out.points[found].astype(np.float64)
    terms = visibility_terms(fm, points, normal_z=None if out.normal_visibility is None
                             else out.normal_visibility[found])
    x_all = design(terms, crops.images[found], points)
    human = crops.flags21[found]
    coef = np.zeros((68, len(FEATURES)))
    for i in np.nonzero(groups >= 0)[0]:
        coef[i] = logistic_fit(x_all[:, i], human[:, flags[i]].astype(np.float64))
    return VisibilityModel(name, coef, groups)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--crops", type=int, default=FIT_CROPS)
    ap.add_argument("--collect-only", action="store_true", help="only run the methods (also on the held-out split)")
    args = ap.parse_args(argv)
    from engine.training.split import held_out_rows

    n = len(np.load(data_path("aflw_train", "labels.npz"))["names"])
    rows = fit_rows(n, args.crops)
    train_crops = load_labelled(rows)
    held = held_out_rows(n)
    held_crops = load_labelled(held) if args.collect_only else None
    for name in args.methods:
        out = raw_outputs(name, "fit", rows, train_crops)
        if args.collect_only:
            raw_outputs(name, "held", held, held_crops)
            continue
        model = fit_model(name, out, train_crops)
        model.save(model_file(name), fitted_on=f"{len(rows)} aflw_train training-split crops (seed 0)",
                   command=f"python -m engine.evaluation.visibility_fit --methods {name}")
        print(f"[{name}] wrote {model_file(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
