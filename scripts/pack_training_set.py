#!/usr/bin/env python3
"""Pack the training set (and the aflw2000_dev protocol crops) into .pack/ so a training run can travel to the
device machine, which gets the checkout but not ../shared/data.

    python scripts/pack_training_set.py [--out .pack/aflw_train] [--quality 85] [--budget-mib 64] [--limit N]

Writes, into an ignored folder (``/.pack/`` is in .gitignore; never commit it):
    images.bin + offsets.npy   the 120x120 crops as WebP, back to back (crop i = images.bin[offsets[i]:offsets[i+1]])
    labels.npz                 names, teacher_params (float32), pts21: all the harness reads from labels
    dev/                       aflw2000_dev's 1,000 protocol crops (WebP) + roi_box, pts68 (x, y), yaw, so the run
                               still reports validation NME per epoch
    manifest.json              counts, WebP quality, sizes, the source fingerprint
WebP quality 85 makes the 19,080 crops about 53 MiB, but what travels is the whole checkout (about 24 MiB of
tracked files, mostly weights/) plus the carried pack (labels about 7 MiB, dev crops about 2 MiB), at most 64 MiB:
when quality 85 would not fit ``--budget-mib``, the script takes the highest quality (85, 80, ..., 60) whose
estimate, from 400 sampled crops, fits, says so, and records it in the manifest. ``--quality Q`` forces Q.

Training from it (any machine; the harness decodes the pack once into its validated uint8 cache in runs/cache/):
    FACEALIGN_PACK=.pack/aflw_train python main.py train NAME [--epochs N] [--resume]
    python main.py train NAME --pack .pack/aflw_train ...                  (same)

On the device machine (the `run` tool of this workplace: carry ".pack", and "runs/NAME" to continue a run;
the harness picks CUDA there):
    command: PYTHONUNBUFFERED=1 python3 main.py train NAME --pack .pack/aflw_train --epochs N --resume \\
             --out runs/NAME && cp runs/NAME/last.pt runs/NAME/history.json $OUT/
Copy the returned last.pt to runs/NAME/last.pt here; `python main.py train NAME --epochs M --resume` continues it
on the CPU (checkpoints load with map_location="cpu"), and without --out a run ships weights/NAME.* as usual.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.paths import data_path  # noqa: E402
from engine.training.cache import files_fingerprint  # noqa: E402

QUALITIES = (85, 80, 75, 70, 65, 60)
DEV_QUALITY = 75


def encode(images, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """WebP bytes back to back and (N + 1,) offsets."""
    blobs = []
    for img in images:
        ok, buf = cv2.imencode(".webp", np.ascontiguousarray(img), [cv2.IMWRITE_WEBP_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not encode WebP")
        blobs.append(buf.reshape(-1))
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.concatenate(blobs) if blobs else np.zeros(0, np.uint8), offsets


def travelling_checkout_bytes() -> int:
    """Bytes of the files that travel without being carried: tracked plus untracked-not-ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return sum((ROOT / f).stat().st_size for f in out.split("\0") if f and (ROOT / f).is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / ".pack" / "aflw_train"))
    ap.add_argument("--quality", type=int, help="WebP quality (default: 85, or the highest that fits the budget)")
    ap.add_argument("--budget-mib", type=float, default=64.0,
                    help="what may travel to the device machine, checkout included (default 64)")
    ap.add_argument("--limit", type=int, help="only the first N training crops (tests)")
    ap.add_argument("--no-dev", action="store_true", help="leave out the aflw2000_dev validation crops")
    ap.add_argument("--force", action="store_true", help="replace an existing pack")
    args = ap.parse_args(argv)

    from engine.training.targets import load_training_set

    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out} exists (--force replaces it)", file=sys.stderr)
        return 1
    src = data_path("aflw_train")
    if not (src / "labels.npz").exists():
        print(f"error: no training set at {src} (set FACEALIGN_DATA)", file=sys.stderr)
        return 1
    t0 = time.time()
    ts = load_training_set(limit=args.limit)   # decoded crops from the validated cache
    n = len(ts)
    lab = np.load(src / "labels.npz")

    dev = None
    if not args.no_dev and (data_path("aflw2000_dev") / "labels.npz").exists():
        from engine.training.harness import Validator

        dev = Validator(None if args.limit is None else min(args.limit, 1000))
    checkout = travelling_checkout_bytes()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "dev").mkdir(parents=True) if dev is not None else tmp.mkdir(parents=True)
    try:
        # labels and dev crops first: the crops get what is left of the budget
        np.savez_compressed(tmp / "labels.npz", names=lab["names"][:n],
                            teacher_params=lab["teacher_params"][:n].astype(np.float32),
                            pts21=lab["pts21"][:n].astype(np.float32))
        manifest = {"format": 1, "count": n, "source": str(src),
                    "source_fingerprint": files_fingerprint([src / "labels.npz"], {"n": n}),
                    "checkout_bytes_when_packed": checkout}
        if dev is not None:
            dblob, doff = encode(dev.crops, DEV_QUALITY)
            dblob.tofile(tmp / "dev" / "images.bin")
            np.save(tmp / "dev" / "offsets.npy", doff)
            np.savez_compressed(tmp / "dev" / "labels.npz", roi_box=dev.roi_box, pts68=dev.pts68[:, :, :2],
                                yaw=dev.yaw)
            manifest["dev"] = {"count": dev.n, "webp_quality": DEV_QUALITY, "images_bytes": int(len(dblob))}
        side = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        budget = args.budget_mib * 2**20 - checkout - side - (1 << 19)  # 0.5 MiB slack (offsets, manifest)

        quality = args.quality
        if quality is None:
            rng = np.random.default_rng(0)
            sample = ts.images[np.sort(rng.choice(n, size=min(400, n), replace=False))]
            for q in QUALITIES:
                quality = q
                if len(encode(sample, q)[0]) / len(sample) * n * 1.02 <= budget:  # 2% for the estimate's error
                    break
            if quality != QUALITIES[0]:
                print(f"WebP quality {QUALITIES[0]} would not fit: the checkout takes {checkout / 2**20:.1f} MiB and "
                      f"labels + dev crops {side / 2**20:.1f} MiB of the {args.budget_mib:g} MiB that travel; using "
                      f"quality {quality}")
        blob, offsets = encode(ts.images, quality)
        blob.tofile(tmp / "images.bin")
        np.save(tmp / "offsets.npy", offsets)
        manifest.update(webp_quality=quality, images_bytes=int(len(blob)))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.replace(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    travel = (total + checkout) / 2**20
    print(f"packed {n} crops (WebP q{quality}) into {out}: {total / 2**20:.1f} MiB; with the checkout "
          f"{travel:.1f} MiB travel (budget {args.budget_mib:g}) in {time.time() - t0:.0f}s")
    if travel > args.budget_mib:
        print(f"warning: over the {args.budget_mib:g} MiB budget; pass a lower --quality", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
