#!/usr/bin/env python3
"""Render the README's accuracy and speed tables from measured JSON files in docs/results/:
NAME_protocol.json and NAME_e2e.json (`main.py eval --json`), bench.json (`main.py bench --json`),
stability.json (`main.py stability --json`)."""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results")
names = sorted({p.stem.rsplit("_", 1)[0] for p in root.glob("*_protocol.json")})
print("| method | 0-30 | 30-60 | 60-90 | balanced | overall | failures | e2e balanced | e2e failures | "
      "pose MAE y/p/r (mean), FSA-Net protocol |")
print("|---|---|---|---|---|---|---|---|---|---|")
for n in names:
    p = json.loads((root / f"{n}_protocol.json").read_text())
    e = json.loads((root / f"{n}_e2e.json").read_text()) if (root / f"{n}_e2e.json").exists() else None
    b, pm = p["nme"], p["pose_mae"]
    print(f"| {n} | {b['0-30']:.2f} | {b['30-60']:.2f} | {b['60-90']:.2f} | **{b['balanced']:.2f}** | "
          f"{b['overall']:.2f} | {p['failures']} | {e['nme']['balanced']:.2f} | {e['failures']} | "
          f"{pm['yaw']:.2f} / {pm['pitch']:.2f} / {pm['roll']:.2f} ({pm['mean']:.2f}) |" if e else "")
bench = root / "bench.json"
if bench.exists():
    print()
    print("| method | ms/face, 1 thread | ms/face, 2 threads | pipeline FPS (test video) | frames with a face | provider |")
    print("|---|---|---|---|---|---|")
    for n, r in json.loads(bench.read_text())["methods"].items():
        print(f"| {n} | {r['ms_per_face_1t']:.2f} | {r['ms_per_face_2t']:.2f} | {r['pipeline_fps']:.1f} | "
              f"{r['pipeline_frames_with_face']}/{r['pipeline_frames']} | {r['provider']} |")
    methods = json.loads(bench.read_text())["methods"]
    ks = next((list(r["ms_per_face_by_faces"]) for r in methods.values() if "ms_per_face_by_faces" in r), [])
    if ks:  # ms per face with 1, 4, 16 faces per frame (one align_batch call), split into network + tail
        print()
        print("| method | " + " | ".join(f"{k} face{'s' if k != '1' else ''} per frame" for k in ks)
              + f" | {ks[-1]} vs {ks[0]} |")
        print("|---|" + "---|" * (len(ks) + 1))
        for n, r in methods.items():
            f, net, tail = r["ms_per_face_by_faces"], r["network_ms_by_faces"], r["tail_ms_by_faces"]
            print(f"| {n} | " + " | ".join(f"**{f[k]:.2f}** ({net[k]:.2f} + {tail[k]:.2f})" for k in ks)
                  + f" | {100 * (f[ks[-1]] / f[ks[0]] - 1):+.0f}% |")
stab = root / "stability.json"
if stab.exists():
    print()
    print("| method | still, raw | still, One-Euro | moving, raw | moving, One-Euro | One-Euro lag | frames tracked "
          "| pose jitter still / moving (deg) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, r in sorted(json.loads(stab.read_text())["methods"].items()):
        pose = (f"{r['pose_still_deg']:.2f} / {r['pose_moving_deg']:.2f}" if "pose_still_deg" in r else "–")
        print(f"| {n} | {r['still_raw']:.2f} | {r['still_smoothed']:.2f} | {r['moving_raw']:.2f} | "
              f"{r['moving_smoothed']:.2f} | {r['lag_frames']:.1f} frames ({r['lag_ms']:.0f} ms) | "
              f"{r['frames_tracked']}/{r['frames']} | {pose} |")
