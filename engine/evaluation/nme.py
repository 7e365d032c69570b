"""Normalised mean error as the AFLW2000-3D protocol defines it (3DDFA / PRNet / SynergyNet papers)."""
from __future__ import annotations

import numpy as np

YAW_BUCKETS = ((0.0, 30.0, "0-30"), (30.0, 60.0, "30-60"), (60.0, 90.0, "60-90"))


def nme_per_image(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean 2D point distance / sqrt(w*h) of the ground-truth points' box, in percent.

    pred, gt: (N, 68, 2+) or (68, 2+). Hidden points are included, as in the protocol.
    """
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    gt = np.asarray(gt, dtype=np.float64)[..., :2]
    single = pred.ndim == 2
    if single:
        pred, gt = pred[None], gt[None]
    wh = gt.max(axis=1) - gt.min(axis=1)
    norm = np.sqrt(wh[:, 0] * wh[:, 1])
    err = np.linalg.norm(pred - gt, axis=2).mean(axis=1) / norm * 100.0
    return err[0] if single else err


def bucket_summary(nme: np.ndarray, yaw: np.ndarray) -> tuple[dict[str, float], dict[str, int]]:
    """Mean NME per |yaw| bucket, the balanced mean of the three, and the overall mean."""
    nme = np.asarray(nme, dtype=np.float64)
    ay = np.abs(np.asarray(yaw, dtype=np.float64))
    out: dict[str, float] = {}
    counts: dict[str, int] = {}
    for lo, hi, name in YAW_BUCKETS:
        # the standard split puts every |yaw| >= 60 (a few AFLW2000-3D labels exceed 90) in the last bucket
        sel = (ay >= lo) if hi == 90.0 else (ay >= lo) & (ay < hi)
        out[name] = float(nme[sel].mean()) if sel.any() else float("nan")
        counts[name] = int(sel.sum())
    out["balanced"] = float(np.mean([out[b[2]] for b in YAW_BUCKETS]))
    out["overall"] = float(nme.mean())
    counts["overall"] = int(len(nme))
    return out, counts
