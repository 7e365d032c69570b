"""Learn Face Mesh 468 -> AFLW2000-3D 68 map on training crops (``python main.py fit-mediapipe-map``)."""
from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import cKDTree

from engine.facemodel import N_MESH, load_face_model
from engine.methods.mediapipe_ref import MAP_FILE
from engine.paths import data_path, weights_path


def fit(n_images: int = 3000, k: int = 24, ridge: float = 1e-2, seed: int = 0, log=print) -> dict:
    from engine.mp_runtime import FaceMeshRunner

    fm = load_face_model()
    lab = np.load(data_path("aflw_train", "labels.npz"))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(lab["names"]), size=min(n_images, len(lab["names"])), replace=False)
    runner = FaceMeshRunner()
    meshes, targets = [], []
    for j, i in enumerate(pick):
        m = runner(cv2.imread(str(data_path("aflw_train", "images", lab["names"][i]))))
        if m is not None:
            meshes.append(m)
            targets.append(lab["teacher_lm68"][i].astype(np.float64))
        if (j + 1) % 500 == 0:
            log(f"  face mesh on {j + 1}/{len(pick)} crops")
    runner.close()
    meshes, targets = np.array(meshes), np.array(targets)
    n = len(meshes)
    tr = np.arange(n) < int(0.85 * n)
    # MediaPipe's z has its own origin: centre both depths on their own means before fitting
    meshes[..., 2] -= meshes[..., 2].mean(1, keepdims=True)
    targets[..., 2] -= targets[..., 2].mean(1, keepdims=True)
    _, nb = cKDTree(fm.mean[:N_MESH]).query(fm.mean[N_MESH:], k=k)
    weights = np.zeros((68, k))
    for l in range(68):
        # affine combination: w = e0 + D u with sum(w) = 1; solve ridge for u over samples and coordinates
        v = meshes[:, nb[l], :]                     # (n, k, 3)
        a = (v[:, 1:, :] - v[:, :1, :]).transpose(0, 2, 1).reshape(-1, k - 1)
        b = (targets[:, l, :] - v[:, 0, :]).reshape(-1)
        rows = np.repeat(tr, 3)
        u = np.linalg.solve(a[rows].T @ a[rows] + ridge * np.eye(k - 1) * len(a), a[rows].T @ b[rows])
        weights[l] = np.concatenate([[1 - u.sum()], u])
    pred = np.einsum("lk,nlkc->nlc", weights, meshes[:, nb, :])
    err = np.linalg.norm(pred[..., :2] - targets[..., :2], axis=2).mean(1)
    log(f"fit on {tr.sum()} crops: mean 2D error {err[tr].mean():.2f} px (train), {err[~tr].mean():.2f} px (held out "
        f"{(~tr).sum()}); Face Mesh found a face in {n}/{len(pick)} crops")
    return dict(neighbours=nb.astype(np.int64), weights=weights.astype(np.float32), n_images=np.int64(n),
                heldout_px=np.float64(err[~tr].mean()), train_px=np.float64(err[tr].mean()))


def fit_and_save(n_images: int = 3000, log=print) -> str:
    out = weights_path(MAP_FILE)
    d = fit(n_images=n_images, log=log)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **d)
    tmp.replace(out)
    return str(out)
