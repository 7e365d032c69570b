"""The front end every path shares: detector boxes -> the crop the network was trained on.

A detector box, mapped through the crop calibration, frames a face only roughly (BlazeFace's box scale spreads by
an IQR of 0.22 on the training crops). The training crops follow ``roi_box_from_landmarks`` of the face's own
landmarks, so the front end aligns, re-crops from the landmarks it found, and can repeat that until the box stops
moving (less than ``CONVERGED_CROP_PX`` pixel of the network's 120-pixel input at any corner) or ``max_steps``
alignments are spent. One step's change of the box side is clamped to ``MAX_SCALE_STEP`` (a crop dominated by hair
or the back of the head can otherwise spiral down onto a part of the face).

Measured (docs/front-end.md): repeating the step does not bring the crop to the protocol crop's accuracy. With
mtcnn3d on the 998 aflw2000_dev images the detector finds, balanced NME after 0, 1, 2, 3, 4 re-crops is 4.41,
4.38, 4.42, 4.42, 4.46 (protocol crops of the same images: 3.99): the landmarks' own noise (a box scale spread of
about 4% between a prediction's box and the truth's, no bias) moves the box as much as the step corrects it.
So the default is one re-crop (``MAX_RECROP_STEPS``), the best of those caps. What does help is averaging the
noise out rather than following it: the kept alignment is a crop ensemble around the settled box
(engine/methods/crop_ensemble.py), 4.38 -> 4.33 on the same images (`python -m research.crop_rules`).

The e2e evaluation, ``annotate`` on images, the app's image-folder mode (all through ``FrameProcessor``) and the
live tracker's new faces use ``settle_boxes``; a tracked face in a video moves one re-crop step per frame from its
previous landmarks (the same map, one step per frame, no extra alignment).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.detect.crop_policy import crop_image, roi_box_from_landmarks
from engine.geometry.projection import CROP_SIZE, crop_to_image

MAX_RECROP_STEPS = 1        # alignments spent settling a new face's crop (before the one that is kept)
CONVERGED_CROP_PX = 0.5     # a corner moving less than this (in the 120-px crop) is converged
MAX_SCALE_STEP = 1.25       # one re-crop changes the box side by at most this factor


@dataclass
class SettledBox:
    box: np.ndarray             # the crop box to align at (x0, y0, x1, y1), image pixels
    steps: int                  # alignments spent settling it
    converged: bool             # the last step moved less than CONVERGED_CROP_PX
    lost: bool = False          # the method found no face in a settling crop (the box is the last one it had)


def recrop(landmarks_image: np.ndarray, box: np.ndarray, max_scale_step: float = MAX_SCALE_STEP) -> np.ndarray:
    """The training crops' box from landmarks found in ``box``, its side change clamped to ``max_scale_step``."""
    new = roi_box_from_landmarks(landmarks_image[:, :2])
    side_old, side_new = box[2] - box[0], new[2] - new[0]
    side = float(np.clip(side_new, side_old / max_scale_step, side_old * max_scale_step))
    if side != side_new:
        cx, cy = (new[0] + new[2]) / 2, (new[1] + new[3]) / 2
        new = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    return new


def crop_motion_px(old: np.ndarray, new: np.ndarray, size: int = CROP_SIZE) -> float:
    """Largest corner move between two boxes, in pixels of the network's size x size input."""
    return float(np.abs(np.asarray(new[:4]) - np.asarray(old[:4])).max() * size / max(old[2] - old[0], 1e-9))


def settle_boxes(method, image: np.ndarray, boxes: list[np.ndarray], max_steps: int = MAX_RECROP_STEPS,
                 tol_px: float = CONVERGED_CROP_PX) -> list[SettledBox]:
    """Repeat the landmark re-crop for every box (one batched alignment per step with ``method``) until each stops
    moving or ``max_steps`` alignments were spent; the returned boxes are where the kept alignment should run."""
    out = [SettledBox(np.asarray(b[:4], np.float64).copy(), 0, max_steps == 0) for b in boxes]
    active = list(range(len(out)))
    for _ in range(max_steps):
        if not active:
            break
        results = method.align_batch([crop_image(image, out[k].box) for k in active])
        still = []
        for k, r in zip(active, results):
            s = out[k]
            s.steps += 1
            if r is None:  # the method found no face in this crop: keep the box it had
                s.lost = True
                continue
            new = recrop(crop_to_image(r.landmarks, s.box), s.box)
            moved = crop_motion_px(s.box, new)
            s.box = new
            if moved < tol_px:
                s.converged = True
            else:
                still.append(k)
        active = still
    return out

