"""`main.py visibility`: each method's landmark visibility against AFLW's human visibility flags.

AFLW's annotators marked each of 21 points visible or not (``pts21`` is NaN where not). 14 of them have a twin
among the 68 landmarks (``HUMAN21_TO_68``); a method's ``visible`` at the twin is compared with the flag. Measured
on the held-out split of aflw_train (every 20th crop, 954; engine/training/split.py), which no recipe trains on.
"Hidden" is the positive class: precision / recall / F1 of the points a method paints red. AFLW's flags also mark
points hidden by hair, hands or glasses, which no geometric test can see: ``facing_share`` is the share of the
disagreements at points on the half of the face turned toward the camera (by AFLW's yaw label; midline points
count as facing), where self-occlusion cannot be the reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.paths import PROJECT_ROOT, data_path

# the methods' raw outputs on the fitting crops and the held-out split (engine/evaluation/visibility_fit.py)
RAW_DIR = PROJECT_ROOT / "runs" / "visibility"

YAW_BUCKETS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0), (90.0, 181.0))
# human-point index (AFLW's 21) -> group; the 68-point twin comes from HUMAN21_TO_68
GROUPS = {"brows": (0, 2, 3, 5), "eyes": (6, 8, 9, 11), "nose": (13, 14, 15), "mouth": (17, 19), "chin": (20,)}
# 68-point groups (the standard iBUG ranges): what each landmark's group is, for models shared within a group
LANDMARK_GROUPS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
                   "mouth": range(48, 68)}
# AFLW's points on the image-left half of a frontal face (L = image left), the image-right half; the rest midline
IMAGE_LEFT = (0, 1, 2, 6, 7, 8, 12, 13, 17)
IMAGE_RIGHT = (3, 4, 5, 9, 10, 11, 15, 16, 19)


def twins() -> tuple[np.ndarray, np.ndarray]:
    """(human-21 indices, their 68-point twins), in HUMAN21_TO_68's order."""
    from engine.training.dataset import HUMAN21_TO_68

    return np.array(list(HUMAN21_TO_68)), np.array(list(HUMAN21_TO_68.values()))


@dataclass
class LabelledCrops:
    rows: np.ndarray          # rows of aflw_train
    images: np.ndarray        # (N, 120, 120, 3) uint8 BGR
    human_visible: np.ndarray  # (N, 14) bool: the annotator's flag at each twin
    yaw: np.ndarray           # (N,) AFLW's yaw label, degrees
    facing: np.ndarray        # (N, 14) bool: the twin is on the half of the face turned toward the camera
    flags21: np.ndarray       # (N, 21) bool: every AFLW point's flag (True: visible)


def facing_side(yaw: np.ndarray, human_idx: np.ndarray) -> np.ndarray:
    """(N, K) whether human point ``human_idx`` is on the half of the face the yaw turns toward the camera. AFLW's
    positive yaw turns the image-left half away: on aflw_train at yaw > 45 the image-left eye's outer corner is
    flagged hidden on 0.97 of the faces and the image-right one on 0.08 (0.07 and 0.98 at yaw < -45). Midline
    points count as facing."""
    yaw = np.asarray(yaw, np.float64)[:, None]
    left = np.isin(human_idx, IMAGE_LEFT)[None]
    right = np.isin(human_idx, IMAGE_RIGHT)[None]
    return ~((left & (yaw > 0)) | (right & (yaw < 0)))


def load_labelled(rows: np.ndarray, root=None) -> LabelledCrops:
    """The crops of aflw_train ``rows`` with the annotators' flags at the 14 twins."""
    from engine.training.targets import load_images

    root = root or data_path("aflw_train")
    if not (root / "labels.npz").exists():
        raise FileNotFoundError(f"aflw_train not found at {root} (set FACEALIGN_DATA)")
    lab = np.load(root / "labels.npz")
    rows = np.asarray(rows, np.int64)
    h21, _ = twins()
    pts21 = lab["pts21"][rows]
    yaw = lab["aflw_yaw"][rows].astype(np.float64)
    return LabelledCrops(rows, load_images(root / "images", lab["names"][rows]), ~np.isnan(pts21[:, h21, 0]), yaw,
                         facing_side(yaw, h21), ~np.isnan(pts21[:, :, 0]))


@dataclass
class MethodOutputs:
    points: np.ndarray        # (N, 536, 3) crop pixels
    visible: np.ndarray       # (N, 68) the method's ``visible``
    pose: np.ndarray          # (N, 3)
    normal_visibility: np.ndarray | None  # (N, 68) where the method defines it (MT-CNN 3D's N_c . N_i)
    found: np.ndarray         # (N,) False where the method found no face (its points are zeros)
    ms_visibility: float = 0.0  # median ms/face of the visibility stage


def run_method(name: str, images: np.ndarray, batch: int = 32,
               progress: Callable[[int, int], None] | None = None) -> MethodOutputs:
    """``create(name).align_batch`` over the crops, ``batch`` at a time."""
    from engine.methods.factory import create

    m = create(name)
    n = len(images)
    pts, vis = np.zeros((n, 536, 3), np.float32), np.ones((n, 68), bool)
    pose, nv, found = np.zeros((n, 3)), np.full((n, 68), np.nan), np.zeros(n, bool)
    ms: list[float] = []
    for s in range(0, n, batch):
        results = m.align_batch(list(images[s:s + batch]))
        for k, r in enumerate(results):
            if r is None:
                continue
            i = s + k
            pts[i, :468], pts[i, 468:] = r.mesh, r.landmarks
            vis[i], pose[i], found[i] = r.visible, r.pose, True
            ms.append(r.timings.get("visibility", 0.0))
            if r.normal_visibility is not None:
                nv[i] = r.normal_visibility
        if progress:
            progress(min(s + batch, n), n)
    m.close()
    return MethodOutputs(pts, vis, pose, None if np.isnan(nv).all() else nv, found,
                         float(np.median(ms)) if ms else 0.0)


def raw_outputs(name: str, split: str, rows: np.ndarray, crops: LabelledCrops | None = None,
                log=print) -> MethodOutputs:
    """The method's outputs on ``rows`` (cached in runs/visibility/NAME-SPLIT.npz, keyed by the rows and the
    method's weights file)."""
    from engine.methods.base import registry

    RAW_DIR.mkdir(parents=True, exist_ok=True)
    path = RAW_DIR / f"{name}-{split}.npz"
    wfile = registry()[name].weights_path
    stamp = f"{wfile.stat().st_mtime_ns}-{wfile.stat().st_size}" if wfile.exists() else "none"
    if path.exists():
        z = np.load(path)
        if np.array_equal(z["rows"], rows) and str(z["stamp"]) == stamp:
            nv = z["normal_visibility"]
            return MethodOutputs(z["points"], z["visible"], z["pose"], None if nv.size == 0 else nv, z["found"])
    crops = crops or load_labelled(rows)
    out = run_method(name, crops.images,
                     progress=lambda i, n: log(f"[{name}] {i}/{n}") if i % 640 == 0 or i == n else None)
    np.savez_compressed(path, rows=rows, stamp=stamp, points=out.points, visible=out.visible, pose=out.pose,
                        normal_visibility=np.zeros(0) if out.normal_visibility is None else out.normal_visibility,
                        found=out.found)
    return out


def shipped_visibility(name: str, out: MethodOutputs, images: np.ndarray) -> np.ndarray:
    """(N, 68) the visibility the method's tail gives its outputs ``out`` now: its shipped visibility model
    (engine/visibility_model.py) on the crops ``images``, the geometric test without one; all visible where it
    found no face. What ``align_batch`` computes from the same points (tests/evaluation/test_visibility_bench.py
    holds the two equal), without running the network again."""
    from engine.facemodel import load_face_model
    from engine.visibility import landmark_visibility_batch
    from engine.visibility_model import load_visibility_model

    visible = np.ones((len(images), 68), bool)
    found = out.found
    if found.any():
        nz = None if out.normal_visibility is None else out.normal_visibility[found]
        visible[found] = landmark_visibility_batch(load_face_model(), out.points[found].astype(np.float64),
                                                   normal_z=nz, model=load_visibility_model(name),
                                                   crops=images[found])
    return visible


@dataclass
class Scores:
    n_points: int
    agreement: float
    precision: float | None   # of the points called hidden, the share people marked hidden (None: none called)
    recall: float             # of the points people marked hidden, the share called hidden
    f1: float
    constant_agreement: float  # the constant all-visible's agreement on the same points
    facing_share: float | None = None  # share of the disagreements on the camera-facing half
    by_yaw: dict[str, "Scores"] = field(default_factory=dict)
    by_group: dict[str, "Scores"] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("by_yaw", "by_group")}
        if self.by_yaw:
            d["by_yaw"] = {k: s.as_dict() for k, s in self.by_yaw.items()}
        if self.by_group:
            d["by_group"] = {k: s.as_dict() for k, s in self.by_group.items()}
        return d


def _scores(pred_visible: np.ndarray, human_visible: np.ndarray, facing: np.ndarray | None = None) -> Scores:
    p, h = ~np.asarray(pred_visible, bool).ravel(), ~np.asarray(human_visible, bool).ravel()  # hidden = positive
    n = len(p)
    tp, fp, fn = int((p & h).sum()), int((p & ~h).sum()), int((~p & h).sum())
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    wrong = p != h
    share = None
    if facing is not None and wrong.any():
        share = float(np.asarray(facing, bool).ravel()[wrong].mean())
    return Scores(n, float(1 - wrong.mean()) if n else float("nan"), prec, rec, f1,
                  float(1 - h.mean()) if n else float("nan"), share)


def score(visible68: np.ndarray, crops: LabelledCrops, found: np.ndarray | None = None) -> Scores:
    """Scores of (N, 68) visibility against the flags, overall, per |yaw| bucket and per group of points. Faces
    the method did not find count as all-visible (what an overlay would not show is not a hidden call)."""
    h21, l68 = twins()
    pred = np.asarray(visible68, bool)[:, l68].copy()
    if found is not None:
        pred[~found] = True
    total = _scores(pred, crops.human_visible, crops.facing)
    ay = np.abs(crops.yaw)
    for lo, hi in YAW_BUCKETS:
        sel = (ay >= lo) & (ay < hi)
        if sel.any():
            total.by_yaw[f"{lo:.0f}-{min(hi, 180):.0f}"] = _scores(pred[sel], crops.human_visible[sel],
                                                                   crops.facing[sel])
    for g, members in GROUPS.items():
        cols = np.isin(h21, members)
        total.by_group[g] = _scores(pred[:, cols], crops.human_visible[:, cols], crops.facing[:, cols])
    return total


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def table(rows: dict[str, Scores]) -> str:
    """A markdown table: one row per method (or ablation), overall and per |yaw| bucket."""
    first = next(iter(rows.values()))
    buckets = list(first.by_yaw)
    head = ("| method | agreement | precision | recall | F1 (hidden) | facing share | "
            + " | ".join(f"agree {b}° (const)" for b in buckets) + " |")
    lines = [head, "|" + "---|" * (6 + len(buckets))]
    lines.append(f"| constant all-visible | {first.constant_agreement:.3f} | – | 0 | 0 | – | "
                 + " | ".join(f"{first.by_yaw[b].constant_agreement:.3f}" for b in buckets) + " |")
    for name, s in rows.items():
        lines.append(f"| {name} | {s.agreement:.3f} | {_fmt(s.precision)} | {s.recall:.3f} | {s.f1:.3f} | "
                     f"{_fmt(s.facing_share)} | "
                     + " | ".join(f"{s.by_yaw[b].agreement:.3f} ({s.by_yaw[b].constant_agreement:.3f})"
                                  for b in buckets if b in s.by_yaw) + " |")
    return "\n".join(lines)


def group_table(rows: dict[str, Scores]) -> str:
    groups = list(next(iter(rows.values())).by_group)
    lines = ["| method | " + " | ".join(f"{g} agree / F1" for g in groups) + " |", "|" + "---|" * (1 + len(groups))]
    first = next(iter(rows.values()))
    lines.append("| constant all-visible | " + " | ".join(f"{first.by_group[g].constant_agreement:.3f} / 0"
                                                         for g in groups) + " |")
    for name, s in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{s.by_group[g].agreement:.3f} / {s.by_group[g].f1:.2f}"
                                                 for g in groups) + " |")
    return "\n".join(lines)


def ablations(name: str, out: MethodOutputs) -> dict[str, np.ndarray]:
    """The visibility definitions the shipped one is measured against, recomputed from the method's own points:
    the shared normals + z-buffer test (``geometric``) and, where the paper defines one, its own (MT-CNN 3D's
    Eq. 9: visible when N_c . N_i > 0)."""
    from engine.facemodel import load_face_model
    from engine.visibility import landmark_visibility_batch

    fm = load_face_model()
    rows = {f"{name} shared normals + z-buffer": landmark_visibility_batch(
        fm, out.points.astype(np.float64), normal_z=out.normal_visibility)}
    if out.normal_visibility is not None:
        rows[f"{name} paper (Eq. 9, N_c.N_i > 0)"] = out.normal_visibility > 0
    return rows


def benchmark(methods: list[str], rows: np.ndarray | None = None, limit: int | None = None,
              with_ablations: bool = True, reuse_outputs: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Scores]:
    """Scores of each method's ``visible`` (and its ablation rows) on the held-out split (or ``rows``).
    ``reuse_outputs``: on the whole held-out split, take each network's outputs from runs/visibility/NAME-held.npz
    when they were made with its current weights file (``raw_outputs``; made and kept otherwise) and recompute
    the visibility through its shipped model (``shipped_visibility``): after a visibility re-fit, the same
    numbers without running the networks again."""
    from engine.training.split import held_out_rows

    whole = rows is None and limit is None
    if rows is None:
        lab = np.load(data_path("aflw_train", "labels.npz"))
        rows = held_out_rows(len(lab["names"]))
    rows = np.asarray(rows)[:limit]
    crops = load_labelled(rows)
    results: dict[str, Scores] = {}
    for name in methods:
        if reuse_outputs and whole:
            out = raw_outputs(name, "held", rows, crops, log=log)
            out.visible = shipped_visibility(name, out, crops.images)
            how = "visibility recomputed on the kept outputs"
        else:
            out = run_method(name, crops.images)
            how = f"visibility {out.ms_visibility:.3f} ms/face"
        results[name] = score(out.visible, crops, out.found)
        log(f"[visibility] {name}: agreement {results[name].agreement:.3f}, F1 {results[name].f1:.3f} "
            f"({len(rows)} crops, {how})")
        if with_ablations:
            for label, vis in ablations(name, out).items():
                results[label] = score(vis, crops, out.found)
    return results


def to_json(results: dict[str, Scores]) -> str:
    return json.dumps({k: v.as_dict() for k, v in results.items()}, indent=1)


def save_results(results: dict[str, Scores], path=None):
    """Merge ``results`` into docs/results/visibility.json (the model cards read it); returns the path."""
    from engine.export.atomic import atomic_write_text
    from engine.paths import PROJECT_ROOT

    path = path or PROJECT_ROOT / "docs" / "results" / "visibility.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update({k: v.as_dict() for k, v in results.items()})
    atomic_write_text(path, json.dumps(old, indent=1) + "\n")
    return path
