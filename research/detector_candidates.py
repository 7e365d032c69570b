"""Face detector candidates side by side on aflw2000_dev: misses, duplicates and other faces per |yaw| bucket, and
CPU ms per image and per 1280x720 video frame.

    python -m research.detector_candidates [--limit N] [--frames 10] [--json OUT.json]

Every image holds one annotated subject. A detection matches it when its training-policy crop box overlaps the
protocol crop box (roi_box) with IoU >= 0.3; the subject is missed when none does. Other detections are counted as
duplicates when their centre lies inside the subject's crop box (a second box on the same face, an ear) and as
elsewhere otherwise (a background person, or a false face: look at them). CPU time (time.process_time, so other
jobs on a shared machine do not inflate it) of each detector run is summed per candidate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np


from engine.paths import data_path  # noqa: E402

BUCKETS = ((0, 30, "0-30"), (30, 60, "30-60"), (60, 1e9, "60-90"))
CANDIDATES = {  # name -> detector runs merged (face_detector.merge_boxes)
    "blazeface (short, full if none)": None,  # the e2e evaluation's detector before this comparison
    "blazeface short+full": ("short", "full"),
    "blazeface short+full+tiles (app)": ("short", "full", "tiles"),
    "yunet": ("yunet",),
    "blazeface short+full + yunet": ("short", "full", "yunet"),
    "blazeface short+full+tiles + yunet": ("short", "full", "tiles", "yunet"),
}


def runs_for(det, image: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    from engine.detect.yunet import to_blazeface_frame

    out, ms = {}, {}
    for name, fn in (("short", lambda: det.short(image).copy()), ("full", lambda: det.full(image).copy()),
                     ("tiles", lambda: np.concatenate(
                         [r.reshape(-1, 5) for r in det._tiled(image, min(image.shape[:2]) // 2)] + [np.zeros((0, 5))])),
                     ("yunet", lambda: to_blazeface_frame(det.yunet(image)))):
        t0 = time.process_time()
        out[name] = np.asarray(fn(), np.float64).reshape(-1, 5)
        ms[name] = (time.process_time() - t0) * 1e3
    return out, ms


def candidate(runs: dict[str, np.ndarray], ms: dict[str, float], parts) -> tuple[np.ndarray, float]:
    from engine.detect.face_detector import merge_boxes

    if parts is None:
        if len(runs["short"]):
            return runs["short"], ms["short"]
        return runs["full"], ms["short"] + ms["full"]
    return merge_boxes(np.concatenate([runs[p] for p in parts])), sum(ms[p] for p in parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--frames", type=int, default=10, help="1280x720 frames of the test clip to time")
    ap.add_argument("--json", default=None, help="write the table here")
    args = ap.parse_args()
    from engine.detect.crop_policy import roi_box_from_detection
    from engine.detect.face_detector import FaceDetector
    from engine.detect.tracker import iou

    det = FaceDetector(yunet=True)
    dev = np.load(data_path("aflw2000_dev", "labels.npz"))
    n = len(dev["names"]) if args.limit is None else min(args.limit, len(dev["names"]))
    stats = {c: {b: {"n": 0, "missed": 0, "duplicates": 0, "elsewhere": 0} for _, _, b in BUCKETS} | {"ms": []}
             for c in CANDIDATES}
    listing: dict[str, list] = {c: [] for c in CANDIDATES}
    for i in range(n):
        name = str(dev["names"][i])
        image = cv2.imread(str(data_path("aflw2000_dev", "images", name)))
        gt = dev["roi_box"][i]
        bucket = next(b for lo, hi, b in BUCKETS if lo <= abs(dev["yaw"][i]) < hi)
        runs, ms = runs_for(det, image)
        for c, parts in CANDIDATES.items():
            boxes, t = candidate(runs, ms, parts)
            crops = [roi_box_from_detection(b) for b in boxes]
            scores = [iou(gt, c_) for c_ in crops]
            s = stats[c][bucket]
            s["n"] += 1
            stats[c]["ms"].append(t)
            hit = int(np.argmax(scores)) if scores and max(scores) >= 0.3 else -1
            s["missed"] += hit < 0
            for j, cb in enumerate(crops):
                if j == hit:
                    continue
                cx, cy = (cb[0] + cb[2]) / 2, (cb[1] + cb[3]) / 2
                inside = gt[0] <= cx <= gt[2] and gt[1] <= cy <= gt[3]
                s["duplicates" if inside else "elsewhere"] += 1
                listing[c].append((name, "duplicate" if inside else "elsewhere"))
            if hit < 0:
                listing[c].append((name, "missed"))
    # 1280x720: the test clip's frames
    cap = cv2.VideoCapture(str(data_path("video", "obama.mp4")))
    frames = []
    while len(frames) < args.frames:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    frame_ms: dict[str, list] = {c: [] for c in CANDIDATES}
    for f in frames:
        runs, ms = runs_for(det, f)
        for c, parts in CANDIDATES.items():
            frame_ms[c].append(candidate(runs, ms, parts)[1])
    det.close()
    table = []
    for c in CANDIDATES:
        row = {"candidate": c, "ms_per_dev_image": float(np.median(stats[c]["ms"])),
               "ms_per_1280x720": float(np.median(frame_ms[c])) if frame_ms[c] else None}
        for _, _, b in BUCKETS:
            row[b] = stats[c][b]
        row["missed"] = sum(stats[c][b]["missed"] for _, _, b in BUCKETS)
        row["images"] = [x for x in listing[c]]
        table.append(row)
        per = "  ".join(f"{b}: {stats[c][b]['missed']}/{stats[c][b]['n']} missed, {stats[c][b]['duplicates']} dup, "
                        f"{stats[c][b]['elsewhere']} else" for _, _, b in BUCKETS)
        print(f"{c:36s} {per}  | {row['ms_per_dev_image']:.1f} ms/450px, {row['ms_per_1280x720'] or 0:.1f} ms/1280x720")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
