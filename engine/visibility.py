"""Landmark and vertex visibility of a face-model mesh (normals + z-buffer), shared by every method.

The 17 jaw-contour landmarks lie beyond Face Mesh's face oval (behind it in depth and outside it in a frontal
view), so the 468-vertex mesh alone cannot decide their visibility: seen almost from the front, a jaw point that a
method places a few pixels inside the oval sits 15-20% of the face width behind the mesh and every z-test hides
it. Their visibility is computed against a surface that contains them: the mesh plus a strip of triangles joining
the jaw contour to the lower arc of the face oval (the same 536 points, no new vertices). A jaw point is visible
when that surface's normal there, turned by the head rotation, faces the camera, and no part of the surface
outside the point's own patch (its ``JAW_PATCH_RINGS``-ring) lies in front of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.facemodel import N_LMK, N_MESH, FaceModel
from engine.geometry.rotation import best_rotation, best_rotations, centred_source
from engine.geometry.mesh import (boundary_loops, occluded_by_mesh, occluded_by_mesh_batch,
                                  point_visibility, stitch_polylines, vertex_normals, vertex_rings)

if TYPE_CHECKING:
    from engine.visibility_model import VisibilityModel

N_JAW = 17
# The jaw point's own patch never hides it: one ring is the strip (the wall from the oval to the jaw), two more
# cover the mesh just inside the oval, where a method's jaw point may land when its contour is a few pixels
# inside its own oval (MediaPipe's 68 points are affine mixes of its mesh vertices, so its jaw runs up to 10% of
# the face width inside the oval on near-frontal frames of the test clip, under the surface).
JAW_PATCH_RINGS = 3
GRAZING = -0.2       # normals just across the view still count as visible (silhouette points)
EPS_FRACTION = 0.02  # depth tolerance, fraction of the mesh width

_ANCHOR_INCIDENCE: dict[int, np.ndarray] = {}
_SURFACES: dict[int, "JawSurface"] = {}


@dataclass(frozen=True)
class JawSurface:
    triangles: np.ndarray     # (T + S, 3) into the 536 points: the mesh's T triangles, then the S-triangle strip
    rim: np.ndarray           # the face-oval vertices the strip joins, from the jaw's first point to its last
    jaw_normals: np.ndarray   # (17, 3) unit normals of the surface at the jaw points, mean shape, pixel frame
    own_patch: np.ndarray     # (17, T + S) bool: triangles of each jaw point's own patch (cannot hide it)


def _pixel_frame(model_points: np.ndarray) -> np.ndarray:
    return np.asarray(model_points, np.float64) * np.array([1.0, -1.0, 1.0])


def jaw_surface(fm: FaceModel) -> JawSurface:
    """The mesh extended by a strip from the lower face oval to the jaw contour (built once per face model)."""
    key = id(fm.triangles)
    if key in _SURFACES:
        return _SURFACES[key]
    mean = fm.mean.astype(np.float64)
    oval = max(boundary_loops(fm.triangles), key=len)  # the outer boundary; the others are the eyes and lips
    jaw = np.arange(N_MESH, N_MESH + N_JAW)
    ends = [int(np.argmin(np.linalg.norm(mean[oval] - mean[j], axis=1))) for j in (jaw[0], jaw[-1])]
    forward = np.roll(oval, -ends[0])[: (ends[1] - ends[0]) % len(oval) + 1]
    backward = np.roll(oval[::-1], -(len(oval) - 1 - ends[0]))[: (ends[0] - ends[1]) % len(oval) + 1]
    # the arc through the chin (model frame: y up), not the one over the forehead
    rim = forward if mean[forward, 1].mean() < mean[backward, 1].mean() else backward
    strip = stitch_polylines(mean, rim, jaw)
    # wind each strip triangle outward: its normal points away from a head centre behind the face
    centre = mean[:N_MESH].mean(0) - np.array([0.0, 0.0, 0.5 * np.ptp(mean[:N_MESH, 0])])
    a, b, c = mean[strip[:, 0]], mean[strip[:, 1]], mean[strip[:, 2]]
    inward = (np.cross(b - a, c - a) * ((a + b + c) / 3 - centre)).sum(1) < 0
    strip[inward] = strip[inward][:, [0, 2, 1]]
    tris = np.concatenate([fm.triangles, strip]).astype(np.int32)
    normals = vertex_normals(_pixel_frame(mean), tris)[jaw]
    patch = vertex_rings(tris, fm.n_points, jaw, JAW_PATCH_RINGS)[:, tris].any(2)
    surface = JawSurface(tris, rim, normals, patch)
    _SURFACES[key] = surface
    return surface


def rotation_from_mean(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """Rotation (pixel frame) of the best similarity taking the mean shape onto (536, 3) pixel-frame points."""
    return best_rotation(_pixel_frame(fm.mean[: len(points)]), points)


def _anchor_incidence(fm: FaceModel) -> np.ndarray:
    """(68, T) 0/1: which triangles touch each landmark's anchor vertex (its normal is their area-weighted sum)."""
    key = id(fm.triangles)
    if key not in _ANCHOR_INCIDENCE:
        inc = (fm.triangles[None, :, :] == fm.lmk_anchor[:, None, None]).any(2)
        _ANCHOR_INCIDENCE[key] = inc.astype(np.float64)
    return _ANCHOR_INCIDENCE[key]


def jaw_visibility(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(17,) visibility of the jaw-contour landmarks from (536, 3) pixel-frame points, against the jaw surface."""
    surface = jaw_surface(fm)
    points = np.asarray(points, np.float64)
    # the surface's normal at the jaw, from the model turned by this face's rotation: a method's own jaw points
    # can fold the strip (contour inside the oval), so its local normal would say nothing about the head's turn
    normals = surface.jaw_normals @ rotation_from_mean(fm, points).T
    visible = normals[:, 2] > GRAZING
    eps = EPS_FRACTION * float(np.ptp(points[:N_MESH, 0]) + 1e-9)
    jaw = points[N_MESH:N_MESH + N_JAW]
    visible[visible] = ~occluded_by_mesh(jaw[visible], points, surface.triangles, eps,
                                         ignore=surface.own_patch[visible])
    return visible


def landmark_visibility(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(68,) visibility of the landmarks from (536, 3) pixel-frame points: normals and a z-buffer test.

    The 51 inner landmarks lie on the mesh: their anchor vertex's normal and a z-test against the mesh. The 17
    jaw points: ``jaw_visibility``.
    """
    return landmark_visibility_batch(fm, np.asarray(points)[None])[0]


def mesh_visibility(fm: FaceModel, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Visibility of the 468 mesh vertices and the 68 landmarks (exact z-buffer test for both; ~20 ms)."""
    mesh = points[:N_MESH]
    normals = vertex_normals(mesh, fm.triangles)
    vis_mesh = point_visibility(mesh, normals, mesh, fm.triangles)
    return vis_mesh, landmark_visibility(fm, points)


@dataclass(frozen=True)
class _BatchTables:
    """What ``landmark_visibility_batch`` precomputes once per face model."""
    tris: np.ndarray          # (T + S, 3) the jaw surface's triangles (the mesh's first)
    ignore: np.ndarray        # (68, T + S) bool: pairs that may not occlude (inner: the strip; jaw: own patch)
    normal_corners: np.ndarray  # (K * 3,) corner vertices of the K mesh triangles touching an inner anchor
    incidence: np.ndarray     # (51, K) 0/1: which of them each inner anchor's normal sums
    mean_pixel: np.ndarray    # (536, 3) the mean shape, pixel frame (the jaw's rotation is taken from it)
    mean_pixel_centred: tuple[np.ndarray, np.ndarray]  # centred_source(mean_pixel)
    normal_tris: np.ndarray   # (K, 3) the K triangles again, for the compiled normal sums
    normal_ptr: np.ndarray    # (52,) inner anchor j sums triangles normal_members[normal_ptr[j]:normal_ptr[j + 1]]
    normal_members: np.ndarray  # the incidence matrix's nonzeros, row by row (CSR)


_BATCH_TABLES: dict[int, _BatchTables] = {}


def _batch_tables(fm: FaceModel) -> _BatchTables:
    key = id(fm.triangles)
    if key not in _BATCH_TABLES:
        surface = jaw_surface(fm)
        n_mesh_tris = len(fm.triangles)
        ignore = np.zeros((N_LMK, len(surface.triangles)), bool)
        ignore[:N_JAW] = surface.own_patch
        ignore[N_JAW:, n_mesh_tris:] = True  # the inner landmarks are tested against the mesh alone
        inc = _anchor_incidence(fm)[N_JAW:]
        used = np.nonzero(inc.any(0))[0]
        src = _pixel_frame(fm.mean)
        incidence = np.ascontiguousarray(inc[:, used])
        rows, members = np.nonzero(incidence)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(incidence)))])
        _BATCH_TABLES[key] = _BatchTables(surface.triangles, ignore, fm.triangles[used].ravel(), incidence, src,
                                          centred_source(src), np.ascontiguousarray(fm.triangles[used]),
                                          ptr.astype(np.int64), members.astype(np.int64))
    return _BATCH_TABLES[key]


def _inner_facing(t: _BatchTables, mesh: np.ndarray) -> np.ndarray:
    """The numpy form of the inner landmarks' facing test (the tail runs ``compiled.summed_normal_z``; the tests
    hold the two to each other): (B, 51) whether each inner landmark's anchor normal on (B, 468, 3) meshes faces
    the camera."""
    # inner anchors' normals: only the z component and the length decide "facing"
    corners = np.take(mesh, t.normal_corners, axis=1).reshape(len(mesh), -1, 3, 3)  # (B, K, corner, xyz)
    e1, e2 = corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0]
    # face_normals' -cross(e1, e2), written out (np.cross costs more in axis bookkeeping than in arithmetic)
    fn = np.stack([e1[..., 2] * e2[..., 1] - e1[..., 1] * e2[..., 2], e1[..., 0] * e2[..., 2] - e1[..., 2] * e2[..., 0],
                   e1[..., 1] * e2[..., 0] - e1[..., 0] * e2[..., 1]], -1)
    normals = t.incidence @ fn                                              # (B, 51, 3)
    # the norm as linalg.norm computes it (sqrt of the same sum), without its slow size-3 reduction
    length = np.maximum(np.sqrt(normals[..., 0] ** 2 + normals[..., 1] ** 2 + normals[..., 2] ** 2), 1e-12)
    return normals[:, :, 2] / length > GRAZING


@dataclass(frozen=True)
class VisibilityTerms:
    """What the shared test computes per landmark, (B, 68) each: its decision and the two normals it can read."""
    geometric: np.ndarray     # bool: the normals + z-buffer test's decision
    local_z: np.ndarray       # z of the landmark's unit normal on the face's own mesh (jaw: ``turned_z``)
    turned_z: np.ndarray      # z of the mean face's landmark normal turned by the face's rotation


_MEAN_NORMALS: dict[int, np.ndarray] = {}


def mean_landmark_normals(fm: FaceModel) -> np.ndarray:
    """(68, 3) unit normals of the mean face at the landmarks, pixel frame: the jaw surface's at the 17 jaw points,
    each inner landmark's anchor-vertex normal on the mesh."""
    key = id(fm.triangles)
    if key not in _MEAN_NORMALS:
        normals = vertex_normals(_pixel_frame(fm.mean[:N_MESH]), fm.triangles)[fm.lmk_anchor]
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        normals[:N_JAW] = jaw_surface(fm).jaw_normals   # as the jaw's facing test reads them
        _MEAN_NORMALS[key] = normals
    return _MEAN_NORMALS[key]


def visibility_terms(fm: FaceModel, points: np.ndarray, rotations: np.ndarray | None = None,
                     normal_z: np.ndarray | None = None) -> VisibilityTerms:
    """The shared test on (B, 536, 3) pixel-frame points and the normals it reads (``landmark_visibility_batch``
    for the arguments)."""
    from engine.geometry.compiled import best_rotations_compiled, summed_normal_z  # numba: on first use only

    t = _batch_tables(fm)
    p = np.asarray(points, np.float64)
    mesh = p[:, :N_MESH]
    # jaw: the rotation of the best similarity from the mean, as rotation_from_mean, batched
    if rotations is not None:
        rot = rotations
    elif p.shape[1] == len(t.mean_pixel):
        rot = best_rotations_compiled(t.mean_pixel_centred, p)
    else:
        rot = best_rotations(t.mean_pixel[: p.shape[1]], p)
    turned = rot[:, 2] @ mean_landmark_normals(fm).T                        # z of the turned mean normals
    local = turned.copy()
    if normal_z is not None:
        local[:, N_JAW:] = normal_z[:, N_JAW:]
    else:
        local[:, N_JAW:] = summed_normal_z(mesh, t.normal_tris, t.normal_ptr, t.normal_members)
    facing = local > GRAZING   # jaw: the turned jaw normals (the strip's own normals say nothing, see above)
    eps = EPS_FRACTION * (np.ptp(mesh[:, :, 0], axis=1) + 1e-9)
    return VisibilityTerms(facing & ~occluded_by_mesh_batch(p[:, N_MESH:], p, t.tris, eps, t.ignore), local, turned)


def landmark_visibility_batch(fm: FaceModel, points: np.ndarray, rotations: np.ndarray | None = None,
                              normal_z: np.ndarray | None = None, model: "VisibilityModel | None" = None,
                              crops: np.ndarray | None = None) -> np.ndarray:
    """(B, 68) ``landmark_visibility`` of (B, 536, 3) pixel-frame points, every face of a frame at once.

    The same tests in float64: inner landmarks by their anchor normal (summed over the triangles that touch the
    anchor only) and a z-test against the mesh; jaw points by the model's jaw normals turned by each face's
    rotation and a z-test against the jaw surface outside their own patch; one batched z-test for all 68.
    ``rotations``: (B, 3, 3) those rotations (pixel frame, best similarity from the mean to ``points``) when the
    caller has already computed them for the pose; otherwise they are computed here. ``normal_z``: (B, 68) z of
    each landmark's unit anchor normal on ``points``' mesh when the method's graph computes it (MT-CNN 3D's
    N_c . N_i: the same sum over the anchor's triangles, in float32); the inner landmarks' facing test uses it.
    ``model``: a method's visibility model fitted to human flags (engine/visibility_model.py) that decides from
    these terms and the faces' (B, 120, 120, 3) ``crops`` instead of the geometric test alone; None keeps the
    geometric test (the one the training targets and MT-CNN 3D's MSIF patches use).
    """
    terms = visibility_terms(fm, points, rotations, normal_z)
    if model is None or crops is None:
        return terms.geometric
    return model.predict(terms, crops, points)


def warm_up_compiled_tail(fm: FaceModel | None = None) -> None:
    """Compile (or load from numba's on-disk cache) the visibility test's loops for the argument types the tail
    passes, on the mean face: the first aligned face then costs what every other one does. Once per process."""
    from engine.facemodel import load_face_model

    if _WARM:
        return
    fm = fm or load_face_model()
    landmark_visibility_batch(fm, _pixel_frame(fm.mean)[None] + 60.0)
    _WARM.append(True)


_WARM: list[bool] = []
