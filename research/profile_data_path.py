"""Cost of the training data path per image on one thread (as the prefetch thread runs it), issue 11.

    OMP_NUM_THREADS=1 python -m research.profile_data_path NAME [--crops 1024] [--stages] [--cprofile]

Prints ms per image for the old path (``ds[i]`` per sample + default_collate, as `--legacy` trains) and the new one
(AlignmentDataset.batch: batch-wise uint8 augmentation, one float conversion), alternating over 3 rounds, both
followed by the recipe's batch_targets and a channels_last image. ``--stages`` first times each stage of today's
per-sample augmentation (the second of two passes, so the crops are in memory); ``--cprofile`` profiles the new path.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import cv2
import numpy as np
import torch
from torch.utils.data import default_collate


from engine.training.augment import add_occluder, colour_jitter, geometric_matrix, warp_points
from engine.training.dataset import HUMAN21_FLIP, image_to_tensor
from engine.training.recipes import get_recipe
from engine.training.targets import load_training_set


def stages(ds, ts, cfg, order: list[int], batch: int) -> None:
    """Each stage of AlignmentDataset.__getitem__ (today's per-sample path) timed on its own."""
    for _ in range(2):
        t: dict[str, float] = {}
        items = []
        t_all = time.perf_counter()
        for i in order:
            marks = [time.perf_counter()]
            img, pts, p21 = np.asarray(ts.images[i]), ts.points[i], ts.pts21[i]
            marks.append(time.perf_counter())
            rng = np.random.default_rng((0, 0, i))
            flip = bool(rng.random() < cfg.flip)
            m = geometric_matrix(rng, cfg, flip)
            marks.append(time.perf_counter())
            out = cv2.warpAffine(img, m, (120, 120), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            marks.append(time.perf_counter())
            q = [warp_points(p, m) for p in (pts, p21)]
            q = [w[perm] if flip else w for w, perm in zip(q, (ds.perm, HUMAN21_FLIP))]
            marks.append(time.perf_counter())
            out = colour_jitter(out, rng, cfg)
            marks.append(time.perf_counter())
            if rng.random() < cfg.occlude:
                out = add_occluder(out, rng)
            marks.append(time.perf_counter())
            x = image_to_tensor(out)
            marks.append(time.perf_counter())
            items.append({"image": x, "points": torch.from_numpy(q[0]),
                          "pts21": torch.from_numpy(np.nan_to_num(q[1], nan=0.0)),
                          "mask21": torch.from_numpy(~np.isnan(q[1][:, 0])),
                          "coefs": torch.from_numpy(ts.params[i, 12:62].astype(np.float32)),
                          "affine": torch.from_numpy(m.astype(np.float32)), "flipped": torch.tensor(flip),
                          "index": torch.tensor(i, dtype=torch.int64)})
            marks.append(time.perf_counter())
            names = ("cache read", "random draws", "warpAffine", "label transform", "colour jitter", "occluder",
                     "float conversion", "sample tensors")
            for k, a, b in zip(names, marks, marks[1:]):
                t[k] = t.get(k, 0.0) + b - a
        t0 = time.perf_counter()
        for s in range(0, len(items), batch):
            default_collate(items[s:s + batch])["image"].contiguous(memory_format=torch.channels_last)
        t["collate + channels_last"] = time.perf_counter() - t0
        total = time.perf_counter() - t_all
    n = len(order)
    print(f"stages of the per-sample path: {total / n * 1e3:.3f} ms/image")
    for k, v in t.items():
        print(f"  {k:<24} {v / n * 1e3:7.4f} ms  {100 * v / total:5.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--crops", type=int, default=1024)
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--cprofile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    ts = load_training_set(limit=2 * args.crops, log=lambda s: None)
    recipe = get_recipe(args.name)
    recipe.build(ts)
    ds = recipe.make_dataset(ts, 0)
    bs = recipe.batch_size
    n = args.crops // bs * bs
    order = np.random.default_rng(0).permutation(len(ts))[:n].tolist()
    if args.stages:
        stages(ds, ts, recipe.augment, order, bs)

    def old() -> None:
        for s in range(0, n, bs):
            b = recipe.batch_targets(default_collate([ds[i] for i in order[s:s + bs]]))
            b["image"].contiguous(memory_format=torch.channels_last)

    def new() -> None:
        for s in range(0, n, bs):
            b = recipe.batch_targets(ds.batch(order[s:s + bs]))
            b["image"].contiguous(memory_format=torch.channels_last)

    res: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(3):
        for k, f in (("old", old), ("new", new)):
            t = time.perf_counter()
            f()
            res[k].append((time.perf_counter() - t) / n * 1e3)
    for k, v in res.items():
        med = float(np.median(v))
        print(f"{args.name} {k}: {med:.3f} ms/image ({1e3 / med:.0f} images/s; rounds "
              f"{', '.join(f'{x:.3f}' for x in v)})")
    if args.cprofile:
        prof = cProfile.Profile()
        prof.runcall(new)
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
