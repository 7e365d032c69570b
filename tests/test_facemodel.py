from collections import Counter

import numpy as np
import pytest

from engine.facemodel import LMK68_FLIP, N_MESH, load_face_model
from engine.geometry.mesh import vertex_normals


@pytest.fixture(scope="module")
def fm():
    return load_face_model()


def test_shapes(fm):
    assert fm.mean.shape == (N_MESH + 68, 3)
    assert fm.w_shape.shape == (N_MESH + 68, 3, 40) and fm.w_exp.shape == (N_MESH + 68, 3, 10)
    assert fm.uv.shape == (N_MESH, 2) and (fm.uv >= 0).all() and (fm.uv <= 1).all()


def test_triangles_valid(fm):
    t = fm.triangles
    assert t.min() >= 0 and t.max() < N_MESH
    assert (t[:, 0] != t[:, 1]).all() and (t[:, 1] != t[:, 2]).all() and (t[:, 0] != t[:, 2]).all()
    assert len({tuple(sorted(x)) for x in t}) == len(t)
    edges = Counter(tuple(sorted(e)) for a, b, c in t for e in ((a, b), (b, c), (a, c)))
    assert max(edges.values()) <= 2  # a manifold surface
    assert len(np.unique(t)) == N_MESH  # every vertex used
    # outward orientation: the frontal mean's normals mostly face the camera (+z in the model frame)
    n = vertex_normals(fm.mean[:N_MESH] * [1, -1, 1], t)
    front = fm.mean[:N_MESH, 2] > np.percentile(fm.mean[:N_MESH, 2], 50)
    assert (n[front, 2] > 0).mean() > 0.95


def point_triangle_distance(p, a, b, c):
    """Distance from p to triangles (a, b, c) (vectorised over triangles), by projection + edge clamping."""
    best = np.full(len(a), np.inf)
    n = np.cross(b - a, c - a)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    d = ((p - a) * n).sum(1)
    q = p - d[:, None] * n
    v0, v1, v2 = b - a, c - a, q - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    v = (d11 * d20 - d01 * d21) / den
    w = (d00 * d21 - d01 * d20) / den
    inside = (v >= 0) & (w >= 0) & (v + w <= 1)
    best[inside] = np.abs(d[inside])
    for s, e in ((a, b), (b, c), (c, a)):
        t = np.clip(((p - s) * (e - s)).sum(1) / ((e - s) ** 2).sum(1), 0, 1)
        best = np.minimum(best, np.linalg.norm(p - (s + t[:, None] * (e - s)), axis=1))
    return best


def test_landmarks_on_the_surface(fm):
    mesh = fm.mean[:N_MESH].astype(np.float64)
    a, b, c = (mesh[fm.triangles[:, k]] for k in range(3))
    width = np.ptp(mesh[:, 0])
    dist = np.array([point_triangle_distance(p, a, b, c).min() for p in fm.mean[N_MESH:]])
    # the 51 inner landmarks lie on the coarse Face Mesh surface (within 2% of the face width; median 0.3%);
    # the 17 jaw-contour points are BFM vertices beyond Face Mesh's face oval (checked against the BFM below)
    assert dist[17:].max() < 0.02 * width and np.median(dist[17:]) < 0.005 * width
    assert dist[:17].min() > 0.01 * width


def test_landmarks_are_the_bfm_keypoints(train_dir):
    bfm = np.load(train_dir.parent / "bfm" / "bfm_3ddfa.npz")
    fm = load_face_model()
    kp = bfm["keypoints"][::3] // 3
    assert np.allclose(fm.mean[N_MESH:], bfm["mean"].reshape(-1, 3)[kp])
    assert np.allclose(fm.mean[:N_MESH], bfm["mean"].reshape(-1, 3)[fm.bfm_index])
    assert len(np.unique(fm.bfm_index)) == N_MESH


def test_symmetric_pairs_mirror_the_mean(fm):
    for pts, perm in ((fm.mean[:N_MESH], fm.mesh_flip), (fm.mean[N_MESH:], fm.lmk_flip)):
        assert sorted(perm) == list(range(len(perm)))
        assert (perm[perm] == np.arange(len(perm))).all()
        cx = np.median(pts[:, 0])
        mirrored = pts[perm] * [-1, 1, 1] + [2 * cx, 0, 0]
        err = np.linalg.norm(mirrored - pts, axis=1)
        assert np.median(err) < 0.02 * np.ptp(pts[:, 0])
    assert (fm.lmk_flip == LMK68_FLIP).all()


def test_points_of_zero_coefficients_are_the_mean(fm):
    p = np.zeros(62)
    p[:12] = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert np.allclose(fm.points(p), fm.mean * [1, -1, 1] + [-1, 120, 0], atol=1e-3)


def test_the_face_model_is_the_bfm_at_its_rows(fm, train_dir):
    """engine/bfm.py (the one BFM loader and its vertex subsets) and the face model built from it agree: the same
    62 parameters put the face model's points and the BFM's vertices at its rows on the same crop pixels."""
    from engine.bfm import bfm_vertices, keypoint_rows, load_bfm, noneck_rows

    bfm = load_bfm()
    assert load_bfm() is bfm                                     # loaded once per process
    kp = keypoint_rows(bfm)
    assert kp.shape == (68,) and set(fm.bfm_index) <= set(noneck_rows(bfm))
    params = np.load(train_dir / "labels.npz")["teacher_params"][:3].astype(np.float64)
    for p in params:
        want = bfm_vertices(bfm, p, np.concatenate([fm.bfm_index, kp]))
        assert np.abs(fm.points(p) - want).max() < 1e-2         # the face model stores float32 bases
