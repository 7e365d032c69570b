"""Where a method's visibility model disagrees with AFLW's annotators, on a cross-validation fold of the fitting
crops (never the held-out split): per group of points, per |yaw| bucket, camera-facing half against the far half.

    python -m research.visibility_errors --method mtcnn3d

Fits the method's model (engine/evaluation/visibility_fit.fit_model) on one half of its cached fitting crops
(runs/visibility/NAME-fit.npz, made by ``python -m engine.evaluation.visibility_fit --collect-only``) and scores it
on the other half.
"""
from __future__ import annotations

import argparse

import numpy as np

from engine.evaluation.visibility_bench import GROUPS, YAW_BUCKETS, LabelledCrops, MethodOutputs, load_labelled, \
    twins
from engine.evaluation.visibility_fit import fit_model, fit_rows, raw_outputs
from engine.paths import data_path


def subset(c: LabelledCrops, sel: np.ndarray) -> LabelledCrops:
    return LabelledCrops(c.rows[sel], c.images[sel], c.human_visible[sel], c.yaw[sel], c.facing[sel], c.flags21[sel])


def subset_out(o: MethodOutputs, sel: np.ndarray) -> MethodOutputs:
    nv = None if o.normal_visibility is None else o.normal_visibility[sel]
    return MethodOutputs(o.points[sel], o.visible[sel], o.pose[sel], nv, o.found[sel])


def breakdown(pred: np.ndarray, crops: LabelledCrops) -> str:
    """Error rate (share of points that disagree) and the constant's, per group x yaw bucket x side."""
    h21, l68 = twins()
    p = pred[:, l68]
    wrong = p != crops.human_visible
    const = ~crops.human_visible
    ay = np.abs(crops.yaw)
    lines = ["| group | side | " + " | ".join(f"{lo:.0f}-{min(hi, 180):.0f}° err (const) [n]"
                                               for lo, hi in YAW_BUCKETS) + " | share of all errors |",
             "|---|---|" + "---|" * (len(YAW_BUCKETS) + 1)]
    total = wrong.sum()
    for g, members in GROUPS.items():
        cols = np.isin(h21, members)
        for side, mask in (("facing", crops.facing), ("far", ~crops.facing)):
            m = mask & cols[None]
            if not m.any():
                continue
            cells = []
            for lo, hi in YAW_BUCKETS:
                mm = m & ((ay >= lo) & (ay < hi))[:, None]
                cells.append(f"{wrong[mm].mean():.3f} ({const[mm].mean():.3f}) [{mm.sum()}]" if mm.any() else "–")
            lines.append(f"| {g} | {side} | " + " | ".join(cells) + f" | {wrong[m].sum() / total:.3f} |")
    lines.append(f"\nagreement {1 - wrong.mean():.4f} (constant {1 - const.mean():.4f}), "
                 f"{int(total)} disagreements on {wrong.size} points")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="mtcnn3d")
    args = ap.parse_args()
    from engine.evaluation.visibility_fit import fit_features, patch_net
    from engine.visibility_model import FEATURES, GEOMETRY

    n = len(np.load(data_path("aflw_train", "labels.npz"))["names"])
    rows = fit_rows(n)
    crops = load_labelled(rows)
    out = raw_outputs(args.method, "fit", rows, crops)
    net = patch_net(n)
    x_all = fit_features(out, crops, net)
    fold = np.random.default_rng(1).random(len(rows))[out.found] < 0.5
    found_idx = np.nonzero(out.found)[0]
    print(f"{args.method}: 2-fold cross-validation on the {len(rows)} fitting crops")
    variants = {"geometry only": list(GEOMETRY), "geometry + site logit": list(GEOMETRY) + ["site_logit"],
                "all features": list(FEATURES)}
    for label, names in variants.items():
        cols = [FEATURES.index(f) for f in names]
        pred = np.ones((len(rows), 68), bool)
        for train in (fold, ~fold):
            model = fit_model(args.method, subset_out(out, found_idx[train]), subset(crops, found_idx[train]), net, b"",
                              features=x_all[train][:, :, cols])
            z = np.einsum("blf,lf->bl", x_all[~train][:, :, cols], model.coef)
            pred[found_idx[~train]] = np.where(model.groups >= 0, z > 0,
                                               x_all[~train][:, :, FEATURES.index("geometric")] > 0.5)
        print(f"\n### {label}")
        print(breakdown(pred, crops))


if __name__ == "__main__":
    main()
