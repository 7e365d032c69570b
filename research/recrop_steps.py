"""Does repeating the landmark re-crop converge on the training crop? NME after each re-crop step, per |yaw| bucket.

    python -m research.recrop_steps [--method mtcnn3d] [--steps 5] [--limit N] [--start detector|protocol]

``--start detector``: the app's detector (whole image, no tiles), the detection matching the protocol crop box (as
e2e picks it); ``--start protocol``: the protocol crop box itself. Each step aligns at the current box and moves it
with the front end's step (engine/detect/front_end.recrop); row k is the NME of the alignment after k re-crops,
and "mean of 0..k" the NME of the landmarks averaged over the alignments 0..k (a rule that averages the crop's
noise out instead of following it).
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np


from engine.paths import data_path  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="mtcnn3d")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--start", choices=["detector", "protocol"], default="detector")
    args = ap.parse_args()
    from engine.detect.crop_policy import crop_image, roi_box_from_detection
    from engine.detect.face_detector import FaceDetector
    from engine.detect.front_end import recrop
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.nme import bucket_summary, nme_per_image
    from engine.evaluation.protocol import match_subject
    from engine.geometry.projection import crop_to_image
    from engine.methods.factory import create

    ds = load_set(data_path("aflw2000_dev"))
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    method = create(args.method)
    det = FaceDetector() if args.start == "detector" else None
    err = np.full((n, args.steps), np.nan)
    err_mean = np.full((n, args.steps), np.nan)
    for i in range(n):
        img = cv2.imread(str(ds.image_path(i)))
        if det is None:
            box = ds.roi_box[i].copy()
        else:
            crops = [roi_box_from_detection(b) for b in det.detect(img, tiles=False)]
            j = match_subject(crops, ds.roi_box[i])
            if j < 0:
                continue
            box = crops[j]
        seen = []
        for s in range(args.steps):
            lm = crop_to_image(method.align(crop_image(img, box)).landmarks, box)[:, :2]
            seen.append(lm)
            err[i, s] = nme_per_image(lm, ds.pts68[i, :, :2])
            err_mean[i, s] = nme_per_image(np.mean(seen, axis=0), ds.pts68[i, :, :2])
            box = recrop(lm, box)
    found = ~np.isnan(err[:, 0])
    print(f"{args.method}, start {args.start}: {found.sum()} of {n} images")
    for s in range(args.steps):
        b, _ = bucket_summary(err[found, s], ds.yaw[:n][found])
        print(f"after {s} re-crops: 0-30 {b['0-30']:.3f}  30-60 {b['30-60']:.3f}  60-90 {b['60-90']:.3f}  "
              f"balanced {b['balanced']:.3f}")
    for s in range(1, args.steps):
        b, _ = bucket_summary(err_mean[found, s], ds.yaw[:n][found])
        print(f"mean of 0..{s}: 0-30 {b['0-30']:.3f}  30-60 {b['30-60']:.3f}  60-90 {b['60-90']:.3f}  "
              f"balanced {b['balanced']:.3f}")
    method.close()
    if det is not None:
        det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
