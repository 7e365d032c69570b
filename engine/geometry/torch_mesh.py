"""Torch twins of engine/geometry/mesh.py's normals, for networks that need a mesh's normals inside their graph
(MT-CNN 3D's visibility zeroing of its shape-indexed patches). Same pixel frame: x right, y down, z toward the
camera, so a normal's z > 0 means "facing the camera".

The cross product is written out component by component (not torch.cross) so the graph exports to ONNX.
"""
from __future__ import annotations

import numpy as np
import torch


def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cross product over the last axis (size 3)."""
    ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx], dim=-1)


def face_normals(verts: torch.Tensor, tris: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) vertices, (T, 3) long triangles -> (B, T, 3) unnormalised outward (area-weighted) normals.

    Twin of mesh.face_normals: the minus sign undoes the y-down frame's handedness.
    """
    a, b, c = verts[:, tris[:, 0]], verts[:, tris[:, 1]], verts[:, tris[:, 2]]
    return -cross(b - a, c - a)


def incidence_matrix(tris: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(len(vertices), T) 0/1: which triangles touch each of ``vertices`` (a vertex normal sums those)."""
    return (np.asarray(tris)[None, :, :] == np.asarray(vertices)[:, None, None]).any(2).astype(np.float32)


def selected_vertex_normals(verts: torch.Tensor, tris: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) unit area-weighted vertex normals of the K vertices whose triangle incidence is ``incidence``
    (K, T): mesh.vertex_normals restricted to those vertices, with one (K, T) product instead of all of them."""
    n = torch.einsum("kt,btd->bkd", incidence, face_normals(verts, tris))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
