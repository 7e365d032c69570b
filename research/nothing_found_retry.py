"""The detector's retry when nothing is found (YuNet on the padded image): what it rescues, what false faces it adds
on images without a face, and what it costs.

    python -m research.nothing_found_retry [--limit N]

- Rescues: aflw2000_dev images where the full scan without the retry finds no face, and what the retry finds there
  (matched to the protocol crop box as e2e does).
- False faces: the same dev images with the annotated face painted over (its protocol crop box filled with the
  image's mean colour, so most are scenes without a face; a background person is still a face): how many the
  scan leaves empty, and on how many of those the retry then reports a box.
- Cost: median CPU ms (time.process_time) of the retry on a 1280x720 frame (video/obama.mp4's first frame), and of
  the full scan on the same frame, 10 runs each.
"""
from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from engine.paths import data_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    from engine.detect.crop_policy import roi_box_from_detection
    from engine.detect.face_detector import FaceDetector
    from engine.evaluation.aflw2000 import load_set
    from engine.evaluation.protocol import match_subject

    ds = load_set(data_path("aflw2000_dev"))
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    det = FaceDetector()
    retry = det._padded_retry
    rescued, empty_faces, empty_painted, false_boxes = [], [], 0, []
    for i in range(n):
        img = cv2.imread(str(ds.image_path(i)))
        det._padded_retry = lambda image: np.zeros((0, 5))  # the scan without the retry
        if len(det.detect(img)) == 0:
            boxes = retry(img)
            j = match_subject([roi_box_from_detection(b) for b in boxes], ds.roi_box[i])
            empty_faces.append(ds.names[i])
            rescued.append((ds.names[i], round(float(ds.yaw[i])), len(boxes), j >= 0,
                            [round(float(b[4]), 2) for b in boxes]))
        painted = img.copy()
        x0, y0, x1, y1 = [int(round(v)) for v in ds.roi_box[i]]
        h, w = img.shape[:2]
        painted[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = img.reshape(-1, 3).mean(0).astype(np.uint8)
        if len(det.detect(painted)) == 0:
            empty_painted += 1
            boxes = retry(painted)
            if len(boxes):
                false_boxes.append((ds.names[i], [round(float(b[4]), 2) for b in boxes]))
    det._padded_retry = retry
    print(f"{n} dev images; the scan found nothing on {len(empty_faces)}: {rescued}")
    print(f"face painted over: the scan found nothing on {empty_painted} of {n}; the retry then reported a box on "
          f"{len(false_boxes)}: {false_boxes}")
    cap = cv2.VideoCapture(str(data_path("video", "obama.mp4")))
    ok, frame = cap.read()
    cap.release()
    if ok:
        frame = cv2.resize(frame, (1280, 720))
        cost = {"retry": [], "full scan": []}
        for _ in range(10):
            t = time.process_time()
            retry(frame)
            cost["retry"].append((time.process_time() - t) * 1e3)
            t = time.process_time()
            det.detect(frame)
            cost["full scan"].append((time.process_time() - t) * 1e3)
        print("CPU ms per 1280x720 frame (median of 10): "
              + ", ".join(f"{k} {np.median(v):.1f}" for k, v in cost.items()))
    det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
