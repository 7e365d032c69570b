"""How many faces of tiled aflw2000_dev mosaics the app's detector finds.

    python -m research.many_faces [--grids 4x2@450,6x3@300,8x4@225,12x6@150] [--tile-levels 1,2] [--json]

Each mosaic is 1800x900 here (cols x rows tiles of the given side; |yaw| <= 30, seed 0). See
engine/evaluation/many_faces.py for what counts as found.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


from engine.paths import data_path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grids", default="4x2@450,6x3@300,8x4@225,12x6@150")
    ap.add_argument("--tile-levels", default=None, help="detector tile levels, e.g. 1,2 (default: the app's); "
                                                        "'' for none")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from engine.detect.face_detector import DEFAULT_TILE_LEVELS, FaceDetector
    from engine.evaluation.many_faces import build_mosaic, count_found

    levels = DEFAULT_TILE_LEVELS if args.tile_levels is None else \
        tuple(int(v) for v in args.tile_levels.split(",") if v.strip())
    det = FaceDetector(tile_levels=levels)
    rows = []
    for spec in args.grids.split(","):
        grid, tile = spec.split("@")
        cols, nrows = (int(v) for v in grid.split("x"))
        m = build_mosaic(data_path("aflw2000_dev"), cols, nrows, int(tile))
        t0 = time.perf_counter()
        boxes = det.detect(m.image)
        ms = (time.perf_counter() - t0) * 1e3
        rows.append({"mosaic": spec, "size": f"{m.image.shape[1]}x{m.image.shape[0]}", "faces": len(m.faces),
                     "found": count_found(m.faces, boxes), "detections": len(boxes), "ms": round(ms, 1)})
    det.close()
    if args.json:
        print(json.dumps({"tile_levels": list(levels), "mosaics": rows}, indent=1))
    else:
        for r in rows:
            print(f"{r['mosaic']:>9} ({r['size']}): found {r['found']}/{r['faces']} ({r['detections']} detections, "
                  f"{r['ms']:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
