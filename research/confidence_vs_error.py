"""How the exports' per-face ``confidence`` (the detector's score, docs/exports.md) relates to the landmark error.

Runs annotate's own per-image path (FrameProcessor, the tracker reset for every image) on the first N images of
aflw2000_dev, takes the face nearest the labelled one, and reports per |yaw| bucket the median confidence and the
mean NME (the standard 68-point, bounding-box-normalised error), the Spearman correlation between confidence and
NME, and the mean NME of the least confident quarter against the rest. Evaluation only: nothing is tuned on it.

    FACEALIGN_DATA=../shared/data OMP_NUM_THREADS=1 python -m research.confidence_vs_error --method mtcnn3d --limit 300
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="mtcnn3d")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--data", default=os.environ.get("FACEALIGN_DATA", "../shared/data"))
    args = ap.parse_args()

    import cv2
    from scipy.stats import spearmanr

    from engine.detect.tracker import FaceTracker
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    dev = Path(args.data) / "aflw2000_dev"
    labels = np.load(dev / "labels.npz")
    tracker = FaceTracker(redetect_every=1)
    proc = FrameProcessor([args.method], tracker=tracker)
    rows, missed = [], 0
    for i, name in enumerate(labels["names"][:args.limit]):
        gt = labels["pts68"][i][:2].T
        img = cv2.imread(str(dev / "images" / name))
        tracker.reset()
        res = proc.process(Frame(i, 0.0, img, str(name)))
        if not res.faces:
            missed += 1
            continue
        centre = gt.mean(0)
        face = min(res.faces, key=lambda f: np.linalg.norm(f.results[args.method].landmarks[:, :2].mean(0) - centre))
        lm = face.results[args.method].landmarks[:, :2]
        w, h = gt.max(0) - gt.min(0)
        nme = float(np.linalg.norm(lm - gt, axis=1).mean() / np.sqrt(w * h) * 100)
        rows.append((abs(float(labels["yaw"][i])), float(face.results[args.method].confidence), nme))
    proc.close()
    a = np.array(rows)
    out: dict = {"method": args.method, "images": int(min(args.limit, len(labels["names"]))), "faces": len(a),
                 "missed": missed, "buckets": {}}
    for lo, hi in ((0, 30), (30, 60), (60, 90.1)):
        m = (a[:, 0] >= lo) & (a[:, 0] < hi)
        if m.any():
            out["buckets"][f"{lo}-{int(hi)}"] = {"n": int(m.sum()), "median_confidence": round(float(np.median(a[m, 1])), 3),
                                                 "mean_nme": round(float(a[m, 2].mean()), 2)}
    rho = spearmanr(a[:, 1], a[:, 2])
    q = a[:, 1] <= np.quantile(a[:, 1], 0.25)
    out["spearman_confidence_vs_nme"] = round(float(rho.statistic), 3)
    out["spearman_p"] = float(f"{rho.pvalue:.2g}")
    out["mean_nme_least_confident_quarter"] = round(float(a[q, 2].mean()), 2)
    out["mean_nme_rest"] = round(float(a[~q, 2].mean()), 2)
    out["distinct_confidences"] = int(len(np.unique(a[:, 1])))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
