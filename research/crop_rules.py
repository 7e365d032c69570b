"""Crop rules after the detector, side by side: NME per |yaw| bucket of each rule's kept landmarks.

    python -m research.crop_rules [--method mtcnn3d] [--limit N] [--data aflw2000_dev]

Every rule starts from the same box: the app's detector on the whole image (``FaceDetector.detect``, tiles and
YuNet included, as e2e runs it), the detection matching the protocol crop box. The detections are cached in
runs/crop_rules/ (per data set) so a second method does not pay the detector again. Rules (``A(box)`` = the
method's landmarks aligned at ``box``, in image pixels; ``R`` = the front end's re-crop step):

- ``detector``: A(b0), the detector's crop alone.
- ``recrop`` / ``recrop2`` / ``recrop3``: b_k = R(A(b_k-1)), A(b_k): one re-crop is the front end before the crop
  ensemble.
- ``mean01``: the mean of A(b0) and A(b1) (no extra alignment for the primary method).
- ``pose_fit``: b1 from the mean shape rotated by A(b0)'s pose, scaled and shifted onto its 68 points (least
  squares), then A(b1): a box from all points, not from the min/max of a noisy prediction.
- ``jitterK``: the mean of A over b1 and K-1 boxes around it (engine/methods/crop_ensemble.ensemble_boxes: side
  x0.95 / x1.05, centre moved +-3% of the side): a test-time crop ensemble, K alignments.
- ``mean01_jitter5``: the mean of A(b0) and the 5 alignments of jitter5.
- ``recrop2_jitter5`` / ``recrop3_jitter5``: the 5-crop ensemble around b2 / b3.
- ``ensemble_recrop_jitter5``: a second re-crop from jitter5's averaged landmarks, the 5-crop ensemble there.
- ``adaptiveTpx``: re-crop again (up to 3) only while the last step moved a corner more than T px of the 120-px
  crop (the landmarks' noise moves it about 5 px), then A (or the 5-crop ensemble) at the last box.
- ``protocol`` / ``protocol_jitter5``: the protocol crop box (the ground truth's own), alone and as the 5-crop
  ensemble: what the ensemble does on the crop the networks were trained on.

Every alignment's landmarks are saved to runs/crop_rules/DATA_METHOD_landmarks.npz.
"""
from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np

from engine.paths import PROJECT_ROOT, data_path  # noqa: E402


def pose_fit_box(result_image, box: np.ndarray) -> np.ndarray:
    """The training crops' box of the mean face shape turned to ``result_image``'s pose and fitted (scale and shift,
    least squares over all 68 points) onto its landmarks (image pixels): a box from every point rather than from
    the extreme few that make the min/max box noisy; the front end's step clamp."""
    from engine.detect.front_end import recrop
    from engine.facemodel import N_MESH, load_face_model

    mean68 = load_face_model().mean[N_MESH:].astype(np.float64) @ result_image.rotation.T
    q = np.c_[mean68[:, 0], -mean68[:, 1]]  # model frame (y up) -> image (y down)
    lm = np.asarray(result_image.landmarks[:, :2], np.float64)
    qc, lc = q - q.mean(0), lm - lm.mean(0)
    scale = float((qc * lc).sum() / (qc * qc).sum())
    return recrop(scale * qc + lm.mean(0), box)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="mtcnn3d")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--data", default="aflw2000_dev")
    args = ap.parse_args()
    from engine.detect.crop_policy import crop_image, roi_box_from_detection
    from engine.detect.front_end import crop_motion_px, recrop
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.nme import bucket_summary, nme_per_image
    from engine.evaluation.protocol import match_subject
    from engine.geometry.projection import crop_to_image
    from engine.methods.crop_ensemble import ensemble_boxes
    from engine.methods.factory import create

    ds = load_set(data_path(args.data))
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    cache = PROJECT_ROOT / "runs" / "crop_rules" / f"{args.data}_subject_boxes.npy"
    if cache.exists() and len(np.load(cache)) >= n:
        start = np.load(cache)[:n]
    else:
        from engine.detect.face_detector import FaceDetector

        det = FaceDetector()
        start = np.full((n, 4), np.nan)
        for i in range(n):
            crops = [roi_box_from_detection(b) for b in det.detect(cv2.imread(str(ds.image_path(i))))]
            j = match_subject(crops, ds.roi_box[i])
            if j >= 0:
                start[i] = crops[j]
        det.close()
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, start)
    method = create(args.method)
    # every alignment's landmarks (image pixels) per image, saved so rules can be combined without re-aligning
    sets = ["protocol", "pose_fit", "a0", "a1", "a2", "a3"] + [f"p_j{j}" for j in range(1, 5)] + [f"b1_j{j}" for j in range(1, 9)] \
        + [f"b2_j{j}" for j in range(5)] + [f"b3_j{j}" for j in range(5)] + [f"e_j{j}" for j in range(5)]
    col = {name: c for c, name in enumerate(sets)}
    lms = np.full((n, len(sets), 68, 2), np.nan, np.float32)
    motion = np.full((n, 3), np.nan)

    def align_at(img: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        rs = method.align_batch([crop_image(img, b) for b in boxes])
        return [crop_to_image(r.landmarks, b)[:, :2] for r, b in zip(rs, boxes)]

    for i in range(n):
        if np.isnan(start[i, 0]):
            continue
        img = cv2.imread(str(ds.image_path(i)))
        got = {}
        pro = align_at(img, ensemble_boxes(ds.roi_box[i].astype(np.float64), 5))
        got["protocol"] = pro[0]
        got.update({f"p_j{j}": pro[j] for j in range(1, 5)})
        box = start[i]
        first = method.align(crop_image(img, box)).to_image(box)
        bp = pose_fit_box(first, box)
        (got["pose_fit"],) = align_at(img, [bp])
        chain = []
        for s_ in range(4):
            (lm,) = align_at(img, [box])
            got[f"a{s_}"] = lm
            chain.append(box)
            if s_ < 3:
                new_box = recrop(lm, box)
                motion[i, s_] = crop_motion_px(box, new_box)
                box = new_box
        b1, b2, b3 = chain[1], chain[2], chain[3]
        got.update({f"b1_j{j}": lm for j, lm in enumerate(align_at(img, ensemble_boxes(b1, 9)[1:]), 1)})
        got.update({f"b2_j{j}": lm for j, lm in enumerate(align_at(img, ensemble_boxes(b2, 5)))})
        got.update({f"b3_j{j}": lm for j, lm in enumerate(align_at(img, ensemble_boxes(b3, 5)))})
        # a second re-crop from the ensemble's (less noisy) landmarks, then the ensemble there
        be = recrop(np.mean([got["a1"]] + [got[f"b1_j{j}"] for j in range(1, 5)], axis=0), b1)
        got.update({f"e_j{j}": lm for j, lm in enumerate(align_at(img, ensemble_boxes(be, 5)))})
        for name, lm in got.items():
            lms[i, col[name]] = lm
    out = PROJECT_ROOT / "runs" / "crop_rules" / f"{args.data}_{args.method}_landmarks.npz"
    np.savez_compressed(out, lms=lms, sets=np.array(sets), motion=motion, truth=ds.pts68[:n, :, :2],
                        yaw=ds.yaw[:n], names=np.array(ds.names[:n]))
    found = ~np.isnan(start[:n, 0])
    print(f"{args.method} on {args.data}: {found.sum()} of {n} images (the detector's subject found); {out}")

    def nme_of(lm: np.ndarray) -> np.ndarray:
        return np.array([nme_per_image(lm[i], ds.pts68[i, :, :2]) if found[i] else np.nan for i in range(n)])

    def mean_of(*names: str) -> np.ndarray:
        return np.mean([lms[:, col[x]] for x in names], axis=0)

    j5 = lambda p: [f"{p}_j{j}" for j in range(5)]  # noqa: E731
    b1_5 = ["a1"] + [f"b1_j{j}" for j in range(1, 5)]
    rules = {
        "protocol": mean_of("protocol"), "protocol_jitter5": mean_of("protocol", "p_j1", "p_j2", "p_j3", "p_j4"),
        "detector": mean_of("a0"), "recrop": mean_of("a1"), "pose_fit": mean_of("pose_fit"), "recrop2": mean_of("a2"), "recrop3": mean_of("a3"),
        "mean01": mean_of("a0", "a1"), "jitter3": mean_of(*b1_5[:3]), "jitter5": mean_of(*b1_5),
        "jitter9": mean_of("a1", *[f"b1_j{j}" for j in range(1, 9)]), "mean01_jitter5": mean_of("a0", *b1_5),
        "recrop2_jitter5": mean_of(*j5("b2")), "recrop3_jitter5": mean_of(*j5("b3")),
        "ensemble_recrop_jitter5": mean_of(*j5("e")),
    }
    for tol in (6.0, 12.0):  # re-crop again only while a step moved more than the landmarks' noise moves the box
        for kind, sets_at in (("", lambda k: [f"a{k}"]), ("_jitter5", lambda k: (b1_5 if k == 1 else j5(f"b{k}")))):
            k = np.where(motion[:, 0] <= tol, 1, np.where(motion[:, 1] <= tol, 2, 3))
            pick = np.stack([np.mean([lms[i, col[x]] for x in sets_at(int(k[i]) if found[i] else 1)], axis=0)
                             for i in range(n)])
            rules[f"adaptive{tol:g}px{kind}"] = pick
    per_image = {}
    for name, lm in rules.items():
        e = nme_of(lm)
        per_image[name] = e
        b, _ = bucket_summary(e[found], ds.yaw[:n][found])
        print(f"{name:>24}: 0-30 {b['0-30']:.3f}  30-60 {b['30-60']:.3f}  60-90 {b['60-90']:.3f}  "
              f"balanced {b['balanced']:.3f}")
    print("steps taken by adaptive (tol 6 / 12 px):",
          [np.bincount(np.where(motion[found, 0] <= t, 1, np.where(motion[found, 1] <= t, 2, 3)), minlength=4)[1:]
           .tolist() for t in (6.0, 12.0)])
    worst = np.argsort(-np.nan_to_num(per_image["recrop"] - per_image["protocol"]))[:8]
    print("largest recrop - protocol:", [(ds.names[i], round(float(ds.yaw[i])),
                                          round(float(per_image["recrop"][i] - per_image["protocol"][i]), 1),
                                          round(float(per_image["recrop3"][i] - per_image["protocol"][i]), 1),
                                          round(float(motion[i, 0]), 1)) for i in worst])
    method.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
