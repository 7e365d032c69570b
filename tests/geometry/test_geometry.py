import numpy as np
import pytest

from engine.geometry.mesh import occluded_by_mesh, point_visibility, rasterize, vertex_normals
from engine.geometry.projection import crop_to_image, crop_to_model, image_to_crop, model_to_crop, project
from engine.geometry.rotation import (angle_difference, camera_to_euler, compose_camera, decompose_camera,
                                      euler_to_matrix, matrix_to_euler)


@pytest.mark.parametrize("angles", [(0, 0, 0), (30, -10, 5), (-75, 20, -40), (89, 0, 10), (10, 80, -170)])
def test_euler_round_trip(angles):
    r = euler_to_matrix(*angles)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)
    back = matrix_to_euler(r)
    assert np.allclose(euler_to_matrix(*back), r, atol=1e-9)
    assert angle_difference(back, angles).max() < 1e-6


def test_yaw_sign_is_3ddfa_convention():
    # 3DDFA's matrix2angle: yaw = asin(R[2, 0])
    r = euler_to_matrix(25, 0, 0)
    assert np.isclose(np.rad2deg(np.arcsin(r[2, 0])), 25)


def test_camera_decompose_compose():
    r = euler_to_matrix(40, 10, -20)
    p = compose_camera(0.0005, r, np.array([60.0, 55.0, -10.0]))
    s, r2, t = decompose_camera(p)
    assert np.isclose(s, 0.0005) and np.allclose(r2, r) and np.allclose(t, [60, 55, -10])
    assert np.allclose(camera_to_euler(p), [40, 10, -20])


def test_projection_conventions():
    pts = np.array([[0.0, 0.0, 0.0], [10.0, 20.0, 5.0]])
    cam = compose_camera(2.0, np.eye(3), np.array([30.0, 40.0, 0.0]))
    out = project(cam, pts)
    # model y up -> crop y down; x shifted by one pixel (3DDFA convention)
    assert np.allclose(out[0], [29.0, 80.0, 0.0])
    assert np.allclose(out[1], [49.0, 40.0, 10.0])
    assert np.allclose(crop_to_model(model_to_crop(pts)), pts)
    box = np.array([100.0, 50.0, 340.0, 290.0])
    assert np.allclose(image_to_crop(crop_to_image(out, box), box), out)
    assert np.allclose(crop_to_image(np.array([[0.0, 0.0]]), box), [[100.0, 50.0]])


def sphere(n_lat: int = 16, n_lon: int = 32, r: float = 30.0):
    """UV sphere in the pixel frame, triangles counter-clockwise seen from outside in the y-up frame."""
    verts = [(0, 0, r), (0, 0, -r)]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append((r * np.sin(th) * np.cos(ph), r * np.sin(th) * np.sin(ph), r * np.cos(th)))
    verts = np.array(verts)
    idx = lambda i, j: 2 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    tris = []
    for j in range(n_lon):
        tris.append((0, idx(1, j), idx(1, j + 1)))
        tris.append((1, idx(n_lat - 1, j + 1), idx(n_lat - 1, j)))
        for i in range(1, n_lat - 1):
            tris.append((idx(i, j), idx(i + 1, j), idx(i + 1, j + 1)))
            tris.append((idx(i, j), idx(i + 1, j + 1), idx(i, j + 1)))
    tris = np.array(tris)
    # orient outward in the y-up frame, then express vertices in the pixel frame (y down)
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    flip = (np.cross(b - a, c - a) * (a + b + c)).sum(1) < 0
    tris[flip] = tris[flip][:, [0, 2, 1]]
    return verts * np.array([1, -1, 1]), tris


@pytest.mark.parametrize("yaw", [0.0, 50.0, -80.0])
def test_visibility_on_rotated_sphere(yaw):
    verts, tris = sphere()
    r = euler_to_matrix(yaw, 20, 0)
    # rotate in the y-up frame, back to pixel frame
    flipy = np.array([1, -1, 1])
    v = ((verts * flipy) @ r.T) * flipy + np.array([60, 60, 0])
    n = vertex_normals(v, tris)
    # outward normals point away from the centre
    assert ((n * (v - [60, 60, 0])).sum(1) > 0).all()
    vis = point_visibility(v, n, v, tris, grazing=0.0)
    front = v[:, 2] > 1.0
    back = v[:, 2] < -1.0
    assert vis[front].all()
    assert not vis[back].any()


def test_occlusion_by_a_plane():
    plane = np.array([[0, 0, 10.0], [20, 0, 10.0], [0, 20, 10.0], [20, 20, 10.0]])
    tris = np.array([[0, 1, 2], [1, 3, 2]])
    pts = np.array([[5, 5, 0.0], [5, 5, 20.0], [30, 30, 0.0]])
    assert occluded_by_mesh(pts, plane, tris, eps=0.5).tolist() == [True, False, False]


def test_rasterize_front_most():
    near = np.array([[0, 0, 5.0], [9, 0, 5.0], [0, 9, 5.0]])
    far = np.array([[0, 0, 1.0], [9, 0, 1.0], [0, 9, 1.0]])
    verts = np.concatenate([far, near])
    tri_id, bary = rasterize(verts, np.array([[0, 1, 2], [3, 4, 5]]), 12, 12)
    assert tri_id[2, 2] == 1 and tri_id[11, 11] == -1
    assert np.allclose(bary[2, 2].sum(), 1.0)


def test_tps_identity_and_interpolation():
    from engine.geometry.tps import farthest_points, identity_params, tps_apply, tps_fit

    rng = np.random.default_rng(0)
    pts = rng.normal(size=(200, 3))
    ctrl = pts[farthest_points(pts, 12)]
    assert np.allclose(tps_apply(pts, ctrl, identity_params(12)), pts)
    targets = ctrl + rng.normal(scale=0.1, size=ctrl.shape)
    params = tps_fit(ctrl, targets)
    assert np.allclose(tps_apply(ctrl, ctrl, params), targets, atol=1e-8)
    # a pure affine map is reproduced exactly everywhere (kernel weights vanish)
    a = np.array([[1.1, 0.2, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 1.2]])
    params = tps_fit(ctrl, ctrl @ a.T + [1, 2, 3])
    assert np.allclose(tps_apply(pts, ctrl, params), pts @ a.T + [1, 2, 3], atol=1e-6)
    assert np.abs(params[:, :12]).max() < 1e-6


def test_tps_kernel_is_r2_log_r():
    from engine.geometry.tps import tps_kernel

    r = np.array([0.0, 0.5, 1.0, 2.0])
    assert np.allclose(tps_kernel(r), [0.0, 0.25 * np.log(0.5), 0.0, 4 * np.log(2.0)])


def test_tps_kernel_from_squared_distances_matches_kernel_of_distances():
    from engine.geometry.tps import tps_kernel, tps_kernel_sq

    r = np.array([0.0, 1e-7, 0.3, 1.0, 2.5, 40.0])
    assert np.allclose(tps_kernel_sq(r * r), tps_kernel(r), atol=1e-12)


def test_anchor_normals_equal_vertex_normals_at_the_anchors():
    from engine.facemodel import N_MESH, load_face_model
    from engine.geometry.mesh import face_normals, vertex_normals
    from engine.visibility import _anchor_incidence

    fm = load_face_model()
    mesh = fm.mean[:N_MESH].astype(np.float64) * np.array([1.0, -1.0, 1.0]) + np.random.default_rng(0).normal(0, 0.01, (N_MESH, 3))
    n = _anchor_incidence(fm) @ face_normals(mesh, fm.triangles)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    assert np.allclose(n, vertex_normals(mesh, fm.triangles)[fm.lmk_anchor])


def test_occlusion_matches_a_per_pair_loop_on_the_face_mesh():
    """The pruned z-test against the direct one: every (point, triangle) pair, barycentrics and depth."""
    from engine.facemodel import N_MESH, load_face_model
    from engine.geometry.rotation import euler_to_matrix

    fm = load_face_model()
    rng = np.random.default_rng(1)
    for yaw in (0.0, 50.0, 85.0):
        v = fm.mean.astype(np.float64) @ euler_to_matrix(yaw, 10.0, 0.0).T * np.array([1.0, -1.0, 1.0])
        mesh = v[:N_MESH]
        pts = np.concatenate([v[N_MESH:], mesh[rng.choice(N_MESH, 40)] - [0.0, 0.0, 0.05]])
        eps = 0.02 * np.ptp(mesh[:, 0])
        expected = []
        for p in pts:
            hidden = False
            for i, j, k in fm.triangles:
                a, b, c = mesh[i], mesh[j], mesh[k]
                den = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
                if abs(den) < 1e-9:
                    continue
                l1 = ((p[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (p[1] - a[1])) / den
                l2 = ((b[0] - a[0]) * (p[1] - a[1]) - (p[0] - a[0]) * (b[1] - a[1])) / den
                l0 = 1 - l1 - l2
                if min(l0, l1, l2) >= 0 and l0 * a[2] + l1 * b[2] + l2 * c[2] > p[2] + eps:
                    hidden = True
                    break
            expected.append(hidden)
        got = occluded_by_mesh(pts, mesh, fm.triangles, eps)
        assert got.tolist() == expected
        assert (yaw == 0.0) or any(expected)  # the turned heads do hide something


def test_painter_raster_matches_the_exact_raster_on_the_face():
    from engine.facemodel import N_MESH, load_face_model
    from engine.geometry.mesh import rasterize_painter

    fm = load_face_model()
    v = fm.mean[:N_MESH].astype(np.float64) * np.array([1.0, -1.0, 1.0])
    v = (v - v.min(0)) * (150.0 / np.ptp(v[:, 0])) + [20.0, 20.0, 0.0]
    exact, _ = rasterize(v, fm.triangles, 192, 192)
    tri_id, bary = rasterize_painter(v, fm.triangles, 192, 192)
    a, b = exact >= 0, tri_id >= 0
    assert (a & b).sum() / (a | b).sum() > 0.97
    # each covered pixel maps back to itself through its triangle and barycentrics (edges: within a pixel)
    t = np.where(b, tri_id, 0)
    p = (v[fm.triangles[t]][..., :2] * bary[..., None]).sum(-2)
    ys, xs = np.mgrid[0:192, 0:192]
    err = np.hypot(p[..., 0] - xs, p[..., 1] - ys)[b]
    assert err.mean() < 0.15 and (err > 1.0).mean() < 0.005
    assert np.allclose(bary[b].sum(1), 1.0, atol=1e-5)


def test_frontal_shape_removes_rotation_and_position():
    from engine.facemodel import N_MESH, load_face_model
    from engine.geometry.rotation import euler_to_matrix
    from engine.methods.base import frontal_shape

    fm = load_face_model()
    mean = fm.mean[:N_MESH].astype(np.float64)
    turned = mean @ euler_to_matrix(40.0, -15.0, 10.0).T + [3.0, -2.0, 5.0]
    want = (mean - mean.mean(0)) * np.array([1.0, -1.0, 1.0])
    assert np.allclose(frontal_shape(fm, turned), want, atol=1e-9)


def test_best_similarity_recovers_scale_rotation_and_translation():
    """The one Procrustes (engine/geometry/rotation.py) with its scale: a known similarity comes back, and its rotation
    is best_rotations' on the same points."""
    from engine.geometry.rotation import best_rotations, best_similarity, euler_to_matrix

    rng = np.random.default_rng(5)
    src = rng.normal(size=(40, 3))
    r = euler_to_matrix(35.0, -20.0, 10.0)
    dst = 2.5 * src @ r.T + np.array([3.0, -1.0, 7.0])
    s, rot, t = best_similarity(src, dst)
    assert np.isclose(s, 2.5) and np.allclose(rot, r) and np.allclose(t, [3.0, -1.0, 7.0])
    assert np.allclose(best_rotations(src, dst[None])[0], rot)
    with pytest.raises(ValueError, match="degenerate"):
        best_similarity(np.zeros((5, 3)), dst[:5])


def test_nearest_rotation_projects_onto_rotations():
    from engine.geometry.rotation import euler_to_matrix, nearest_rotation

    r = euler_to_matrix(-60.0, 15.0, 5.0)
    assert np.allclose(nearest_rotation(r), r)
    noisy = nearest_rotation(r + 0.05 * np.random.default_rng(1).normal(size=(3, 3)))
    assert np.allclose(noisy @ noisy.T, np.eye(3)) and np.isclose(np.linalg.det(noisy), 1.0)
    assert np.abs(noisy - r).max() < 0.1
    # the mean of two rotations (flip averaging's pose) lies between them
    mid = nearest_rotation(euler_to_matrix(10.0, 0, 0) + euler_to_matrix(30.0, 0, 0))
    assert np.allclose(mid, euler_to_matrix(20.0, 0, 0))
