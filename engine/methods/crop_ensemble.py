"""A test-time crop ensemble: align one face at its crop box and a few boxes around it, average in image pixels.

Why: the front end's crop comes from a first alignment's landmarks, whose noise moves the box by a few percent
(docs/front-end.md: side sd 3.4-4.4%, no bias), and a network's error depends on exactly where its crop falls.
Averaging the alignments of a handful of slightly moved and scaled crops averages that dependence out, as flip
averaging (engine/methods/flip.py) does for the mirror. The boxes are ``ensemble_boxes``: the box itself, its side
x0.95 and x1.05, and its centre moved by 3% of the side left, right, up and down (the first ``k``).

All crops of all faces go through the method's ``align_batch`` together (one network call for the ONNX methods),
so the cost is about ``k`` alignments per face. The front end can use it (``crop_ensemble=`` / ``--crops``; off by default) where it aligns a face it has just found
(still images, the image-folder mode, ``annotate``, e2e evaluation, a new face in video); a tracked face in video
aligns once per frame, its temporal filter already averaging over frames.
"""
from __future__ import annotations

import numpy as np

from engine.detect.crop_policy import crop_image
from engine.geometry.rotation import euler_to_matrix, matrix_to_euler, nearest_rotation
from engine.result import AlignmentResult

# crops per face by default: the settled box alone. 5 (the box, two scales, two horizontal shifts) is the measured
# option (`--crops 5`, docs/front-end.md 2b: mtcnn3d detected-only 4.38 -> 4.33); not the default until the e2e
# table is re-measured with it, and because a new face in live video would then cost 5 alignments per method
ENSEMBLE_CROPS = 1
RECOMMENDED_ENSEMBLE_CROPS = 5
ENSEMBLE_SCALE = 0.05   # side x (1 - s) and x (1 + s)
ENSEMBLE_SHIFT = 0.03   # centre moved by this share of the side

# (dx, dy, side factor) of each member, in the order they are taken
_MEMBERS = [(0.0, 0.0, 1.0), (0.0, 0.0, 1.0 - ENSEMBLE_SCALE), (0.0, 0.0, 1.0 + ENSEMBLE_SCALE),
            (ENSEMBLE_SHIFT, 0.0, 1.0), (-ENSEMBLE_SHIFT, 0.0, 1.0), (0.0, ENSEMBLE_SHIFT, 1.0),
            (0.0, -ENSEMBLE_SHIFT, 1.0), (ENSEMBLE_SHIFT, ENSEMBLE_SHIFT, 1.0), (-ENSEMBLE_SHIFT, -ENSEMBLE_SHIFT, 1.0)]
MAX_ENSEMBLE_CROPS = len(_MEMBERS)


def ensemble_boxes(box: np.ndarray, k: int = ENSEMBLE_CROPS) -> list[np.ndarray]:
    """``box`` (x0, y0, x1, y1) and the k - 1 first of its moved or scaled variants (the first is ``box``)."""
    if not 1 <= k <= MAX_ENSEMBLE_CROPS:
        raise ValueError(f"a crop ensemble has 1 to {MAX_ENSEMBLE_CROPS} crops, got {k}")
    b = np.asarray(box[:4], np.float64)
    cx, cy, side = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0]
    out = []
    for dx, dy, f in _MEMBERS[:k]:
        x, y, h = cx + dx * side, cy + dy * side, side * f / 2
        out.append(np.array([x - h, y - h, x + h, y + h]))
    return out


def _mean_or_none(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    if any(a is None for a in arrays):
        return None
    return np.mean([np.asarray(a, np.float64) for a in arrays], axis=0)


def average_results(results: list[AlignmentResult]) -> AlignmentResult:
    """One result from alignments of one face in image pixels (``to_image`` already applied): mean landmarks,
    mesh, dense surface, frontal shape and normal visibility; the pose as the chordal mean of the rotations (right
    across +-180 degrees); a landmark visible when at least half the members say so (each member's own test, the
    method's visibility model included); timings summed (the ensemble's whole cost)."""
    if not results:
        raise ValueError("no results to average")
    if any(r.frame != "image" for r in results):
        raise ValueError("average_results needs results in image pixels (to_image first)")
    first = results[0]
    if len(results) == 1:
        return first
    timings: dict[str, float] = {}
    for r in results:
        for stage, ms in r.timings.items():
            timings[stage] = timings.get(stage, 0.0) + ms
    dense = _mean_or_none([r.dense for r in results])
    votes = np.mean([np.asarray(r.visible, bool) for r in results], axis=0)
    return AlignmentResult(
        landmarks=np.mean([r.landmarks for r in results], axis=0), visible=votes >= 0.5,
        mesh=np.mean([r.mesh for r in results], axis=0),
        pose=matrix_to_euler(nearest_rotation(sum(euler_to_matrix(*r.pose) for r in results))),
        confidence=float(np.mean([r.confidence for r in results])), timings=timings, dense=dense,
        dense_faces=first.dense_faces if dense is not None else None, method=first.method, frame="image",
        shape_frontal=_mean_or_none([r.shape_frontal for r in results]),
        normal_visibility=_mean_or_none([r.normal_visibility for r in results]))


def align_ensembles(method, image: np.ndarray, boxes: list[np.ndarray],
                    k: int = ENSEMBLE_CROPS) -> list[AlignmentResult | None]:
    """Each face's crop ensemble (``ensemble_boxes`` of its box) aligned by ``method`` in one ``align_batch``,
    averaged per face in image pixels; None for a face where the method found no face in any of its crops (the
    members where it did are averaged)."""
    member_boxes = [ensemble_boxes(b, k) for b in boxes]
    flat = [mb for face in member_boxes for mb in face]
    raw = method.align_batch([crop_image(image, mb) for mb in flat]) if flat else []
    out: list[AlignmentResult | None] = []
    for f, face in enumerate(member_boxes):
        got = [r.to_image(mb) for r, mb in zip(raw[f * k:(f + 1) * k], face) if r is not None]
        out.append(average_results(got) if got else None)
    return out
