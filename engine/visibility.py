"""Landmark and vertex visibility of a face-model mesh (normals + z-buffer), shared by every method."""
from __future__ import annotations

import numpy as np

from engine.facemodel import N_MESH, FaceModel
from engine.geometry.mesh import point_visibility, vertex_normals


def landmark_visibility(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(68,) visibility of the landmarks from (536, 3) pixel-frame points: normals and a z-buffer test."""
    mesh, lmk = points[:N_MESH], points[N_MESH:]
    normals = vertex_normals(mesh, fm.triangles)
    return point_visibility(lmk, normals[fm.lmk_anchor], mesh, fm.triangles)


def mesh_visibility(fm: FaceModel, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visibility of the 468 mesh vertices and the 68 landmarks (exact z-buffer test for both; ~20 ms)."""
    mesh, lmk = points[:N_MESH], points[N_MESH:]
    normals = vertex_normals(mesh, fm.triangles)
    vis_mesh = point_visibility(mesh, normals, mesh, fm.triangles)
    vis_lmk = point_visibility(lmk, normals[fm.lmk_anchor], mesh, fm.triangles)
    return vis_mesh, vis_lmk
