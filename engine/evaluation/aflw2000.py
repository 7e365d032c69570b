"""AFLW2000-3D-style folders: images/*.jpg with their .mat labels, optionally labels.npz (roi_box, yaw)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.detect.crop_policy import crop_image, roi_box_from_landmarks  # noqa: F401 (re-exported)
from engine.geometry.projection import CROP_SIZE


@dataclass
class Aflw2000Set:
    root: Path
    names: list[str]
    pts68: np.ndarray       # (N, 68, 3) official points in image pixels
    yaw: np.ndarray         # (N,) degrees
    # (N, 3) Pose_Para's [pitch, yaw, roll] in degrees, as stored (its own convention: engine/geometry/head_pose.py,
    # rotation_from_pose_para); NaN where an image has no .mat
    pose_para: np.ndarray
    roi_box: np.ndarray     # (N, 4)

    def image_path(self, i: int) -> Path:
        return self.root / "images" / self.names[i]

    def __len__(self) -> int:
        return len(self.names)


def load_set(root: str | Path) -> Aflw2000Set:
    import scipy.io as sio

    root = Path(root)
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{root} has no images/ folder (expected an AFLW2000-3D-style folder)")
    lab = root / "labels.npz"
    if lab.exists():
        z = np.load(lab)
        names = [str(n) for n in z["names"]]
        pts = np.transpose(z["pts68"], (0, 2, 1)).astype(np.float64)
        yaw = z["yaw"].astype(np.float64)
        roi = z["roi_box"].astype(np.float64)
    else:
        names = sorted(p.name for p in img_dir.glob("*.jpg"))
        pts, yaw, roi = [], [], []
        for n in names:
            m = sio.loadmat(str(img_dir / n.replace(".jpg", ".mat")))
            p = m["pt3d_68"].T.astype(np.float64)
            pts.append(p)
            yaw.append(np.rad2deg(m["Pose_Para"][0, 1]))
            roi.append(roi_box_from_landmarks(p))
        pts, yaw, roi = np.array(pts), np.array(yaw), np.array(roi)
    if not names:
        raise FileNotFoundError(f"{img_dir} holds no .jpg images")
    pose_para = np.full((len(names), 3), np.nan)
    for i, n in enumerate(names):
        mp = img_dir / n.replace(".jpg", ".mat")
        if mp.exists():
            # Pose_Para = [pitch, yaw, roll, tx, ty, tz, scale], angles in radians
            pose_para[i] = np.rad2deg(sio.loadmat(str(mp), variable_names=["Pose_Para"])["Pose_Para"][0, :3])
    return Aflw2000Set(root, names, pts, yaw, pose_para, roi)


def load_protocol_crops(ds: Aflw2000Set, size: int = CROP_SIZE) -> np.ndarray:
    """(N, size, size, 3) BGR crops at each roi_box."""
    out = np.zeros((len(ds), size, size, 3), np.uint8)
    for i in range(len(ds)):
        img = cv2.imread(str(ds.image_path(i)), cv2.IMREAD_COLOR)
        out[i] = crop_image(img, ds.roi_box[i], size)
    return out
