#!/usr/bin/env python3
"""Flip averaging's cost per face, plain against flip-averaged in one process on the same crops.

For each method: the first N aflw2000_dev protocol crops, aligned one face per call (what `main.py eval` does)
with the plain method and with the same loaded model flip-averaged, in alternating rounds so that machine load
falls on both alike. Prints one JSON object: per method the median (and the least) ms per face of each arm over the
rounds, the medians' ratio, the median CPU time of the process per face (time.process_time: what the method
computes, less distorted than wall time on a loaded machine) and its ratio, and the median of the ``flip`` timing
stage (the mirrored pass plus the averaging).

    OMP_NUM_THREADS=1 python -m research.flip_cost --methods pifa,prnet --faces 50 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import sys
import time


import engine  # noqa: E402,F401  (pins BLAS threads before numpy loads)


def main() -> int:
    import cv2
    import numpy as np

    from engine.evaluation.aflw2000 import crop_image, load_set
    from engine.methods.base import NoFaceError, available_methods
    from engine.methods.factory import create
    from engine.methods.flip import with_flip
    from engine.paths import data_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", help="NAME[,NAME...] (default: every method with weights)")
    p.add_argument("--faces", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    ds = load_set(data_path("aflw2000_dev"))
    crops = [crop_image(cv2.imread(str(ds.image_path(i))), ds.roi_box[i]) for i in range(min(args.faces, len(ds)))]
    names = args.methods.split(",") if args.methods else available_methods()
    out = {"faces": len(crops), "rounds": args.rounds, "methods": {}}
    for name in names:
        plain = create(name)
        flipped = with_flip(plain, True)
        for m in (plain, flipped):  # warm-up: first-call allocations and compiled loops
            for c in crops[:3]:
                try:
                    m.align(c)
                except NoFaceError:
                    pass
        ms = {"plain": [], "flip": []}
        cpu = {"plain": [], "flip": []}
        flip_stage = []
        for _ in range(args.rounds):
            for arm, m in (("plain", plain), ("flip", flipped)):
                t0, c0 = time.perf_counter(), time.process_time()
                for c in crops:
                    try:
                        r = m.align(c)
                    except NoFaceError:
                        continue
                    if arm == "flip":
                        flip_stage.append(r.timings["flip"])
                ms[arm].append((time.perf_counter() - t0) * 1e3 / len(crops))
                cpu[arm].append((time.process_time() - c0) * 1e3 / len(crops))
        a, b = float(np.median(ms["plain"])), float(np.median(ms["flip"]))
        out["methods"][name] = {"ms_per_face_plain": a, "ms_per_face_flip": b, "ratio": b / a,
                                "ms_per_face_plain_min": float(np.min(ms["plain"])),
                                "ms_per_face_flip_min": float(np.min(ms["flip"])),
                                "cpu_ms_per_face_plain": float(np.median(cpu["plain"])),
                                "cpu_ms_per_face_flip": float(np.median(cpu["flip"])),
                                "cpu_ratio": float(np.median(cpu["flip"]) / np.median(cpu["plain"])),
                                "flip_stage_ms_median": float(np.median(flip_stage)) if flip_stage else None}
        c = out["methods"][name]
        print(f"{name}: plain {a:.2f} ms, flip {b:.2f} ms per face ({b / a:.2f}x); CPU time "
              f"{c['cpu_ms_per_face_plain']:.2f} -> {c['cpu_ms_per_face_flip']:.2f} ms ({c['cpu_ratio']:.2f}x)",
              file=sys.stderr)
        plain.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
