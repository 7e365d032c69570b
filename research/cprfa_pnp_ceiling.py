"""CPRFA's geometric ceiling on ground-truth DAFIs: retrieve the selected vertices from each reference label's
exact DAFI (weights/cprfa_vertices.npz), fit the pose by DAFI + PnP (engine/geometry/cpr.py: fit_pose_pnp) with
the mean shape and with the label's own shape, and report the 68 landmarks' NME (mean 2D distance / sqrt(w h) of
the label's landmark box, in %) against the teacher's landmarks, per |yaw| bucket and balanced. What a perfect
HS-U-Net would give with no CPR regression at all; the CPR rounds have to beat the mean-shape number on real
DAFIs. Optional --noise adds Gaussian noise (code units) to the DAFI.
    python -m research.cprfa_pnp_ceiling [--limit 954] [--noise 0.0] [--selection weights/cprfa_vertices.npz]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from engine.bfm import bfm_vertices, load_bfm
from engine.geometry.cpr import fit_pose_pnp, params_to_pose, pose_to_params, shape_points
from engine.geometry.dafi import build_codebook, render_dafi, retrieve_kdtree
from engine.methods.cprfa.vertex_selection import load_vertex_selection
from engine.paths import data_path, weights_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--threshold", type=float, default=None, help="retrieval threshold (default the selection's)")
    ap.add_argument("--offset", type=int, default=0, help="evaluate on the reference rows + OFFSET (e.g. 10: labels "
                    "the selection never saw)")
    ap.add_argument("--selection", type=Path, default=None, help="a vertex selection file (default the committed one)")
    args = ap.parse_args()
    bfm = load_bfm()
    codebook = build_codebook(bfm)
    sel = load_vertex_selection(args.selection)
    labels = np.load(data_path("aflw_train", "labels.npz"))
    params = labels["teacher_params"].astype(np.float64)
    yaw = np.abs(labels["aflw_yaw"].astype(np.float64))
    reference = np.asarray(np.load(args.selection or weights_path("cprfa_vertices.npz"))["reference_rows"])
    rows = reference[:args.limit] + args.offset
    rows = rows[rows < len(params)]
    lmk = np.asarray(bfm["keypoints"][::3] // 3)
    rng = np.random.default_rng(0)
    nme = {"mean shape": [], "true shape": []}
    found_frac = []
    for r in rows:
        truth = bfm_vertices(bfm, params[r], lmk)[:, :2]
        dafi, mask = render_dafi(codebook, None, params[r])
        if args.noise:
            dafi = (dafi + rng.normal(0, args.noise, dafi.shape)).astype(np.float32)
        obs, found, _ = retrieve_kdtree(dafi, mask, sel.codes, args.threshold or sel.threshold)
        found_frac.append(found.mean())
        _, alpha = params_to_pose(sel.frame, params[r])
        norm = np.sqrt(np.prod(truth.max(0) - truth.min(0)))
        for name, a in (("mean shape", np.zeros(50)), ("true shape", alpha)):
            pose = fit_pose_pnp(sel.frame, obs, found, shape_points(sel.mean, sel.basis, a))
            pred = bfm_vertices(bfm, pose_to_params(sel.frame, pose, a), lmk)[:, :2]
            nme[name].append(np.linalg.norm(pred - truth, axis=1).mean() / norm * 100)
    buckets = [(0, 30), (30, 60), (60, 180)]
    out = {"labels": int(len(rows)), "noise": args.noise, "found_fraction": float(np.mean(found_frac))}
    for name, v in nme.items():
        v = np.array(v)
        per = [float(v[(yaw[rows] >= lo) & (yaw[rows] < hi)].mean()) for lo, hi in buckets]
        out[name] = {"0-30": per[0], "30-60": per[1], "60+": per[2], "balanced": float(np.mean(per)),
                     "mean": float(v.mean())}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
