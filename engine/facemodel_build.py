"""Build weights/face_model.npz from ../shared/data/bfm and mediapipe's Face Mesh (``main.py build-face-model``).

The BFM-to-Face-Mesh correspondence is learned from data: Face Mesh and the teacher's dense mesh are computed on the
same near-frontal training crops; each Face Mesh vertex votes for the front-most BFM vertex under it, votes are
averaged in the model frame, and the nearest BFM vertex to that average is taken.
"""
from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
from scipy.spatial import cKDTree

from engine.bfm import bfm_vertices, keypoint_rows, load_bfm
from engine.facemodel import LMK68_FLIP, N_MESH
from engine.paths import data_path, weights_path


def unique_nearest(candidates: np.ndarray, targets: np.ndarray, k: int = 8) -> np.ndarray:
    """Index of a distinct candidate point for each target, minimising total distance (no two targets share one,
    which would collapse triangles)."""
    from scipy.optimize import linear_sum_assignment

    d, j = cKDTree(candidates).query(targets, k=k)
    cols = np.unique(j)
    pos = {c: i for i, c in enumerate(cols)}
    cost = np.full((len(targets), len(cols)), 1e18)
    for t in range(len(targets)):
        for dd, jj in zip(d[t], j[t]):
            cost[t, pos[jj]] = dd
    rows, sel = linear_sum_assignment(cost)
    return cols[sel[np.argsort(rows)]]


def triangles_from_edges(edges: list[tuple[int, int]], n: int) -> np.ndarray:
    """Faces of a triangulated mesh given only its edges: 3-cliques, keeping at most two faces per edge."""
    nbr = defaultdict(set)
    for a, b in edges:
        nbr[a].add(b)
        nbr[b].add(a)
    tris = set()
    for a, b in edges:
        for c in nbr[a] & nbr[b]:
            tris.add(tuple(sorted((a, b, c))))
    # A 3-clique whose three edges all border other faces too is a separating triangle, not a face.
    use = defaultdict(int)
    for t in tris:
        for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            use[e] += 1
    faces = [t for t in sorted(tris)
             if not all(use[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.array(faces, dtype=np.int32)


def orient_outward(tris: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Order each triangle counter-clockwise seen from outside (normal away from a point behind the face)."""
    centre = verts.mean(0) - np.array([0.0, 0.0, 0.6 * np.ptp(verts[:, 0])])
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    n = np.cross(b - a, c - a)
    out = ((a + b + c) / 3 - centre)
    flip = (n * out).sum(1) < 0
    tris = tris.copy()
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return tris


def mirror_permutation(verts: np.ndarray) -> tuple[np.ndarray, float]:
    """Bijective matching of each vertex to its mirror image through x = centre; returns (permutation, mean error)."""
    from scipy.optimize import linear_sum_assignment

    cx = np.median(verts[:, 0])
    m = verts.copy()
    m[:, 0] = 2 * cx - m[:, 0]
    cost = np.linalg.norm(m[:, None, :] - verts[None, :, :], axis=2)
    rows, j = linear_sum_assignment(cost)
    return j, float(cost[rows, j].mean())


def build(n_images: int = 1500, max_yaw: float = 12.0, seed: int = 0, log=print) -> dict[str, np.ndarray]:
    from engine.mp_runtime import FaceMeshRunner, tessellation_edges

    bfm = load_bfm()
    labels = np.load(data_path("aflw_train", "labels.npz"))
    params = labels["teacher_params"].astype(np.float64)
    yaw = labels["teacher_pose"][:, 0]
    rng = np.random.default_rng(seed)
    cand = np.where(np.abs(yaw) < max_yaw)[0]
    pick = rng.choice(cand, size=min(n_images, len(cand)), replace=False)
    noneck = bfm["noneck_indices"]
    mean_model = bfm["mean"].reshape(-1, 3)

    runner = FaceMeshRunner()
    votes = np.zeros((N_MESH, 3))
    counts = 0
    used = []
    meshes = []
    for k, i in enumerate(pick):
        img = cv2.imread(str(data_path("aflw_train", "images", labels["names"][i])))
        mp_pts = runner(img)
        if mp_pts is None:
            continue
        dense = bfm_vertices(bfm, params[i], noneck)
        tree = cKDTree(dense[:, :2])
        nb = tree.query_ball_point(mp_pts[:, :2], r=1.0)
        choice = np.empty(N_MESH, dtype=np.int64)
        for v in range(N_MESH):
            if nb[v]:
                cands = np.asarray(nb[v])
                choice[v] = cands[np.argmax(dense[cands, 2])]  # front-most under the point
            else:
                choice[v] = tree.query(mp_pts[v, :2])[1]
        votes += mean_model[noneck[choice]]
        counts += 1
        used.append(i)
        meshes.append(mp_pts)
        if (k + 1) % 250 == 0:
            log(f"  face mesh on {k + 1}/{len(pick)} crops ({counts} found)")
    runner.close()
    target = votes / counts
    bfm_index = noneck[unique_nearest(mean_model[noneck], target)]

    # residual: Face Mesh's 2D points against the corresponding teacher vertices, in crop pixels
    res = [np.linalg.norm(bfm_vertices(bfm, params[i], bfm_index)[:, :2] - m[:, :2], axis=1).mean()
           for i, m in zip(used, meshes)]
    residual = float(np.mean(res))
    log(f"correspondence from {counts} crops: mean 2D residual {residual:.2f} px (median {np.median(res):.2f})")

    kp = keypoint_rows(bfm)
    rows = np.concatenate([bfm_index, kp])
    mean = mean_model[rows].astype(np.float32)
    w_shape = bfm["w_shp"].reshape(-1, 3, 40)[rows].astype(np.float32)
    w_exp = bfm["w_exp"].reshape(-1, 3, 10)[rows].astype(np.float32)

    mesh = mean[:N_MESH].astype(np.float64)
    tris = orient_outward(triangles_from_edges(tessellation_edges(), N_MESH), mesh)
    # Face Mesh's own geometry is symmetric by design: take the mirror from its average frontal shape
    avg = np.mean([(m - m.mean(0)) / np.ptp(m[:, 0]) for m in meshes], axis=0)
    mesh_flip, mirror_err = mirror_permutation(avg)
    mirror_err *= np.ptp(mesh[:, 0])
    lmk_flip_data, _ = mirror_permutation(mean[N_MESH:].astype(np.float64))
    agree = float((lmk_flip_data == LMK68_FLIP).mean())
    log(f"{len(tris)} triangles; mesh mirror error {mirror_err:.0f} model units; 68-point flip agrees "
        f"with the data's mirror on {agree:.0%} of points")
    _, anchor = cKDTree(mesh).query(mean[N_MESH:])
    uv = bfm["uv"][bfm_index].astype(np.float32)
    lmk_uv = bfm["uv"][kp].astype(np.float32)  # jaw-contour landmarks lie beyond the mesh: their own BFM UVs
    return dict(mean=mean, w_shape=w_shape, w_exp=w_exp, triangles=tris, uv=uv, lmk_uv=lmk_uv, mesh_flip=mesh_flip,
                lmk_flip=LMK68_FLIP, lmk_anchor=anchor, bfm_index=bfm_index,
                correspondence_residual_px=np.float64(residual), n_images=np.int64(counts))


def build_and_save(n_images: int = 1500, log=print) -> str:
    out = weights_path("face_model.npz")
    data = build(n_images=n_images, log=log)
    tmp = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(out)
    # the teacher parameters' statistics: the mean-shape prediction that scores evaluation failures
    params = np.load(data_path("aflw_train", "labels.npz"))["teacher_params"]
    np.savez(weights_path("param_stats.npz"), mean=params.mean(0), std=params.std(0), n=len(params))
    return str(out)
