"""Why CPRFA's retrieval searches a sparse vertex set: on ground-truth DAFIs of training labels, the fraction of
VISIBLE vertices that retrieval finds (and their mean error in pixels) when the KD-tree holds all 38,365 no-neck
vertices, against the sparse candidates (engine/geometry/dafi.py: candidate_vertices) at two spacings.
    python -m research.cprfa_retrieval_sets [--labels 50]
"""
from __future__ import annotations

import argparse

import numpy as np

from engine.bfm import load_bfm
from engine.geometry.dafi import build_codebook, candidate_vertices, retrieve_kdtree
from engine.methods.cprfa.vertex_selection import VISIBLE_EPS, render_with_depth, visible_in_render
from engine.paths import data_path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--threshold", type=float, default=0.01)
    args = ap.parse_args()
    cb = build_codebook(load_bfm())
    params = np.load(data_path("aflw_train", "labels.npz"))["teacher_params"].astype(np.float64)
    rows = np.random.default_rng(0).choice(len(params), args.labels, replace=False)
    sets = {"all 38,365 vertices": np.arange(len(cb.codes)),
            "candidates 0.025 apart": candidate_vertices(cb, 0.025),
            "candidates 0.07 apart": candidate_vertices(cb, 0.07)}
    found = {k: [] for k in sets}
    err = {k: [] for k in sets}
    for r in rows:
        verts = cb.vertices(params[r])
        dafi, mask, depth = render_with_depth(cb, verts)
        vis = visible_in_render(verts, depth, VISIBLE_EPS * float(np.ptp(verts[:, 0])))
        for name, ids in sets.items():
            pos, f, _ = retrieve_kdtree(dafi, mask, cb.codes[ids], args.threshold)
            found[name].append(f[vis[ids]].mean())
            err[name].append(np.linalg.norm(pos - verts[ids, :2], axis=1)[f & vis[ids]].mean())
    for name, ids in sets.items():
        print(f"{name:24s} ({len(ids):5d}): found {np.mean(found[name]):.3f} of the visible, "
              f"error {np.mean(err[name]):.3f} px")


if __name__ == "__main__":
    main()
