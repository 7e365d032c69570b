"""What the live view's background re-detection saves the worker: ms per frame of ``FrameProcessor.process`` with
the periodic re-detection in the frame (as before) and on the tracker's own thread, alternating, on every frame of
a clip in order (consecutive frames, so no frame is stale and only the periodic detections differ), one method:

    python -m research.detect_in_background out/obama_640x360.mp4 [--method mtcnn3d] [--passes 3]

Prints one JSON object: per mode the median, mean, 90th percentile and max ms per frame, the share of frames
longer than the clip's 40 ms frame period, and the detections run.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import engine  # noqa: F401  (pins BLAS threads before numpy loads, as main.py does)

import numpy as np  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--method", default="mtcnn3d")
    ap.add_argument("--passes", type=int, default=3, help="passes over the clip per mode, alternating")
    args = ap.parse_args()
    import cv2

    from engine.pipeline import FrameProcessor
    from engine.runtime import SessionPolicy, set_session_policy
    from engine.sources import open_source

    set_session_policy(SessionPolicy(threads=1, spinning=False))  # the app's policy
    cv2.setNumThreads(1)
    frames = list(open_source(args.clip).frames())
    procs = {mode: FrameProcessor([args.method], frontalize=True, background_detection=mode == "background")
             for mode in ("in the frame", "background")}
    times: dict[str, list[float]] = {m: [] for m in procs}
    for p in procs.values():  # warm-up: models loaded, first detection done
        for f in frames[:5]:
            p.process(f)
    for _ in range(args.passes):
        for mode, p in procs.items():
            p.tracker.reset()
            p._last_t = None
            for f in frames:
                t = time.perf_counter()
                p.process(f)
                times[mode].append((time.perf_counter() - t) * 1e3)
    report = {"clip": args.clip, "method": args.method, "frames": len(frames), "passes": args.passes,
              "load_1min": round(os.getloadavg()[0], 1)}
    for mode, ts in times.items():
        a = np.array(ts)
        report[mode] = {"median_ms": round(float(np.median(a)), 2), "mean_ms": round(float(a.mean()), 2),
                        "p90_ms": round(float(np.percentile(a, 90)), 2), "max_ms": round(float(a.max()), 2),
                        "share_over_40ms": round(float((a > 40).mean()), 3),
                        "detections": procs[mode].tracker.detections_run}
    for p in procs.values():
        p.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
