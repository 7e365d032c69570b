"""Landmark and vertex visibility of a face-model mesh (normals + z-buffer), shared by every method."""
from __future__ import annotations

import numpy as np

from engine.facemodel import N_MESH, FaceModel
from engine.geometry.mesh import face_normals, point_visibility, vertex_normals

_ANCHOR_INCIDENCE: dict[int, np.ndarray] = {}


def _anchor_incidence(fm: FaceModel) -> np.ndarray:
    """(68, T) 0/1: which triangles touch each landmark's anchor vertex (its normal is their area-weighted sum)."""
    key = id(fm.triangles)
    if key not in _ANCHOR_INCIDENCE:
        inc = (fm.triangles[None, :, :] == fm.lmk_anchor[:, None, None]).any(2)
        _ANCHOR_INCIDENCE[key] = inc.astype(np.float64)
    return _ANCHOR_INCIDENCE[key]


def landmark_visibility(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(68,) visibility of the landmarks from (536, 3) pixel-frame points: normals and a z-buffer test."""
    mesh, lmk = points[:N_MESH], points[N_MESH:]
    # only the 68 anchors' normals are needed: one (68, T) product instead of all 468 vertex normals
    normals = _anchor_incidence(fm) @ face_normals(mesh, fm.triangles)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return point_visibility(lmk, normals, mesh, fm.triangles)


def mesh_visibility(fm: FaceModel, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visibility of the 468 mesh vertices and the 68 landmarks (exact z-buffer test for both; ~20 ms)."""
    mesh, lmk = points[:N_MESH], points[N_MESH:]
    normals = vertex_normals(mesh, fm.triangles)
    vis_mesh = point_visibility(mesh, normals, mesh, fm.triangles)
    vis_lmk = point_visibility(lmk, normals[fm.lmk_anchor], mesh, fm.triangles)
    return vis_mesh, vis_lmk
