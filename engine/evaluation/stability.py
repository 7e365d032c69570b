"""`main.py stability`: landmark stability on clips with known motion, synthesised from aflw2000_dev images.

Per image two clips of ``frames`` frames at ``FPS``, each frame with Gaussian sensor noise and JPEG compression
drawn afresh (so consecutive frames differ as a camera's do):
- still: the image itself, no motion;
- moving: the image under slow sub-pixel motion about its centre (``SHIFT_PX`` per frame and ``ROTATE_DEG`` per
  frame), bilinear resampling, so the ground-truth 68 points move by a known affine map each frame.
Each method runs as the app runs it (detector, tracker re-cropping from the method's own landmarks, one method per
run so the crops are its own). With e_t = prediction_t - truth_t (2D, the 68 points), the jitter is LDEQ-style:
RMS over consecutive frame pairs of the RMS over landmarks of |e_t - e_(t-1)|, divided by the face size
(sqrt(w*h) of the ground-truth box), in percent. The known motion cancels, a constant error cancels, what is left
is the frame-to-frame wobble. "smoothed" is the same with the app's One-Euro filter (engine/smoothing.py, its
default parameters) on the predictions. Lag: how many frames the smoothed landmarks trail the raw ones on the
moving clips, the least-squares delay L in smoothed_t ~ raw_t - L * (truth_t - truth_(t-1)), after a warm-up.
Pose jitter: RMS over consecutive frame pairs of the angle (degrees) between the reported rotation R_t and the
previous one carried by the known motion, Z_t Z_(t-1)^T R_(t-1) (Z_t the clip's in-plane rotation about the camera
axis, engine/geometry/head_pose.py's convention; identity on the still clips), raw (the app does not smooth pose).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.smoothing import OneEuroFilter

FPS = 25.0
NOISE_SIGMA = 3.0       # grey levels, per pixel and channel
JPEG_QUALITY = 80
SHIFT_PX = (0.30, 0.20)  # x, y per frame
ROTATE_DEG = 0.08        # per frame, about the image centre
WARMUP = 5               # frames before the lag estimate starts (the filter's start-up)


@dataclass
class Clip:
    kind: str                 # "still" or "moving"
    name: str
    frames: list[np.ndarray]  # BGR
    truth: np.ndarray         # (T, 68, 2) ground-truth points per frame
    face_size: float


def _degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = np.clip(img.astype(np.float32) + rng.normal(0.0, NOISE_SIGMA, img.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def motion_matrix(t: int, centre: tuple[float, float]) -> np.ndarray:
    """(2, 3) affine map of frame t of the moving clip: rotation t*ROTATE_DEG about ``centre``, then the shift."""
    m = cv2.getRotationMatrix2D(centre, t * ROTATE_DEG, 1.0)
    m[:, 2] += np.array(SHIFT_PX) * t
    return m


def make_clips(dev_dir: str | Path, n_images: int, n_frames: int, max_abs_yaw: float = 30.0,
               seed: int = 0) -> list[Clip]:
    """A still and a moving clip for each of ``n_images`` aflw2000_dev images (|yaw| <= max_abs_yaw: faces the
    app can keep tracking; beyond, re-detections dominate what is measured)."""
    dev_dir = Path(dev_dir)
    lab = np.load(dev_dir / "labels.npz")
    pool = np.nonzero(np.abs(lab["yaw"]) <= max_abs_yaw)[0]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(pool, min(n_images, len(pool)), replace=False))
    clips = []
    for i in pick:
        name = str(lab["names"][i])
        img = cv2.imread(str(dev_dir / "images" / name))
        if img is None:
            raise FileNotFoundError(dev_dir / "images" / name)
        pts = lab["pts68"][i][:2].T.astype(np.float64)
        wh = pts.max(0) - pts.min(0)
        size = float(np.sqrt(wh[0] * wh[1]))
        h, w = img.shape[:2]
        still = [_degrade(img, rng) for _ in range(n_frames)]
        clips.append(Clip("still", name, still, np.repeat(pts[None], n_frames, 0), size))
        centre = ((w - 1) / 2.0, (h - 1) / 2.0)
        frames, truth = [], []
        for t in range(n_frames):
            m = motion_matrix(t, centre)
            frames.append(_degrade(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR,
                                                  borderMode=cv2.BORDER_REFLECT), rng))
            truth.append(pts @ m[:, :2].T + m[:, 2])
        clips.append(Clip("moving", name, frames, np.array(truth), size))
    return clips


def jitter_percent(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, face_size: float) -> tuple[float, int]:
    """RMS over consecutive valid frame pairs of the RMS over landmarks of the change of the error, in percent of
    ``face_size``; and the number of pairs. pred, truth (T, 68, 2); valid (T,) bool."""
    err = pred - truth
    pairs = valid[1:] & valid[:-1]
    if not pairs.any():
        return float("nan"), 0
    d = err[1:][pairs] - err[:-1][pairs]                      # (P, 68, 2)
    per_pair = np.sqrt((d ** 2).sum(-1).mean(-1))             # RMS over landmarks
    return float(np.sqrt((per_pair ** 2).mean()) / face_size * 100.0), int(pairs.sum())


def smooth(pred: np.ndarray, valid: np.ndarray, fps: float = FPS) -> np.ndarray:
    """The app's One-Euro filter over a sequence (restarted after a gap, as the app's per-track filter is)."""
    out = pred.copy()
    f = OneEuroFilter()
    last = -2
    for t in range(len(pred)):
        if not valid[t]:
            continue
        if t != last + 1:
            f = OneEuroFilter()
        out[t] = f(pred[t], t / fps)
        last = t
    return out


def lag_frames(raw: np.ndarray, smoothed: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Least-squares delay (frames) of smoothed behind raw along the known per-frame motion; returns (numerator,
    denominator) so clips can be pooled."""
    step = truth[1:] - truth[:-1]                           # known motion from t-1 to t
    ok = valid[1:] & valid[:-1]
    ok[:WARMUP] = False
    lagged = (raw[1:] - smoothed[1:])[ok]
    return float((lagged * step[ok]).sum()), float((step[ok] ** 2).sum())


def motion_rotation(t: int) -> np.ndarray:
    """(3, 3) the moving clip's in-plane rotation at frame t in head_pose's camera axes (y up, z toward the
    camera): cv2's positive angle turns the image counter-clockwise on screen, a positive turn about +z."""
    a = np.deg2rad(t * ROTATE_DEG)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def pose_jitter_degrees(rotations: np.ndarray, valid: np.ndarray, moving: bool) -> tuple[float, int]:
    """RMS over consecutive valid frame pairs of the angle between R_t and Z_t Z_(t-1)^T R_(t-1), in degrees;
    and the number of pairs. rotations (T, 3, 3), valid (T,)."""
    pairs = np.nonzero(valid[1:] & valid[:-1])[0] + 1
    if len(pairs) == 0:
        return float("nan"), 0
    ang = []
    for t in pairs:
        step = motion_rotation(t) @ motion_rotation(t - 1).T if moving else np.eye(3)
        d = rotations[t] @ (step @ rotations[t - 1]).T
        ang.append(np.degrees(np.arccos(np.clip((np.trace(d) - 1.0) / 2.0, -1.0, 1.0))))
    return float(np.sqrt(np.mean(np.square(ang)))), len(pairs)


def _track(method: str, clip: Clip) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run one method over a clip as the app does; the face nearest the ground truth each frame: its (T, 68, 2)
    landmarks, (T,) found and (T, 3, 3) rotations."""
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    proc = FrameProcessor([method])
    pred = np.zeros_like(clip.truth)
    valid = np.zeros(len(clip.frames), bool)
    rotations = np.tile(np.eye(3), (len(clip.frames), 1, 1))
    try:
        for t, img in enumerate(clip.frames):
            res = proc.process(Frame(t, t / FPS, img))
            best = None
            for face in res.faces:
                r = face.results.get(method)
                if r is None:
                    continue
                d = np.linalg.norm(r.landmarks[:, :2].mean(0) - clip.truth[t].mean(0))
                if d < 0.25 * clip.face_size and (best is None or d < best[0]):
                    best = (d, r.landmarks[:, :2], r.rotation)
            if best is not None:
                pred[t], valid[t], rotations[t] = best[1], True, best[2]
    finally:
        proc.close()
    return pred, valid, rotations


def stability(methods: list[str], dev_dir: str | Path, n_images: int = 8, n_frames: int = 40,
              progress: Callable[[str], None] | None = None) -> dict:
    """Per method: jitter (raw and One-Euro) on the still and moving clips, One-Euro's lag, frames tracked."""
    t0 = time.perf_counter()
    clips = make_clips(dev_dir, n_images, n_frames)
    out: dict = {"methods": {}, "protocol": {
        "images": n_images, "frames_per_clip": n_frames, "fps": FPS, "noise_sigma": NOISE_SIGMA,
        "jpeg_quality": JPEG_QUALITY, "shift_px_per_frame": list(SHIFT_PX), "rotate_deg_per_frame": ROTATE_DEG,
        "max_abs_yaw": 30.0, "images_used": sorted({c.name for c in clips}),
        "jitter": "RMS over frame pairs of RMS over 68 points of the change of (prediction - truth), % of face size",
        "pose_jitter": "RMS over frame pairs of the angle between R_t and the known motion applied to R_(t-1), "
                       "degrees, raw"}}
    for m in methods:
        acc = {k: [] for k in ("still_raw", "still_smoothed", "moving_raw", "moving_smoothed")}
        pose_acc: dict[str, list] = {"still": [], "moving": []}
        lag_num = lag_den = 0.0
        frames = tracked = 0
        for clip in clips:
            pred, valid, rotations = _track(m, clip)
            pj, pn = pose_jitter_degrees(rotations, valid, clip.kind == "moving")
            if pn:
                pose_acc[clip.kind].append((pj, pn))
            sm = smooth(pred, valid)
            frames += len(valid)
            tracked += int(valid.sum())
            for tag, seq in (("raw", pred), ("smoothed", sm)):
                j, n = jitter_percent(seq, clip.truth, valid, clip.face_size)
                if n:
                    acc[f"{clip.kind}_{tag}"].append((j, n))
            if clip.kind == "moving":
                a, b = lag_frames(pred, sm, clip.truth, valid)
                lag_num, lag_den = lag_num + a, lag_den + b
        row = {}
        for k, v in acc.items():
            # pooled RMS over every frame pair of every clip of the kind
            row[k] = float(np.sqrt(sum(j * j * n for j, n in v) / sum(n for _, n in v))) if v else float("nan")
        for kind, v in pose_acc.items():
            row[f"pose_{kind}_deg"] = (float(np.sqrt(sum(j * j * n for j, n in v) / sum(n for _, n in v)))
                                       if v else float("nan"))
        lag = lag_num / lag_den if lag_den > 0 else float("nan")
        row.update(lag_frames=lag, lag_ms=lag * 1000.0 / FPS, frames=frames, frames_tracked=tracked)
        out["methods"][m] = row
        if progress:
            progress(m)
    out["seconds"] = time.perf_counter() - t0
    return out
