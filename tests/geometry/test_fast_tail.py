"""The fast shared tail against the implementation it replaced (kept here as the reference), and batched
alignment against one face at a time."""
import numpy as np
import pytest

from engine.facemodel import N_EXP, N_LMK, N_MESH, N_SHAPE, load_face_model
from engine.geometry.mesh import (face_normals, occluded_by_mesh, occluded_by_mesh_batch, occluded_by_mesh_batch_numpy,
                                  point_visibility)
from engine.geometry.rotation import euler_to_matrix
from engine.paths import weights_path
from engine.visibility import N_JAW, _anchor_incidence, jaw_visibility, landmark_visibility, landmark_visibility_batch


def reference_landmark_visibility(fm, points: np.ndarray) -> np.ndarray:
    """``landmark_visibility`` as it was before the batched version (commit e7a5868): per face, the anchor normals
    from all triangles' normals and two separate z-tests (inner landmarks against the mesh, jaw against the jaw
    surface)."""
    mesh, lmk = points[:N_MESH], points[N_MESH:]
    normals = _anchor_incidence(fm) @ face_normals(mesh, fm.triangles)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    inner = slice(N_JAW, N_LMK)
    visible = np.empty(N_LMK, bool)
    visible[inner] = point_visibility(lmk[inner], normals[inner], mesh, fm.triangles)
    visible[:N_JAW] = jaw_visibility(fm, points)
    return visible


def posed_faces(n: int, seed: int = 0) -> np.ndarray:
    """(n, 536, 3) pixel-frame face-model shapes (random coefficients) at yaws across +-95 degrees, with pitch
    and roll: every kind of self-occlusion the z-test decides."""
    fm = load_face_model()
    std = np.load(weights_path("param_stats.npz"))["std"]      # the training labels' coefficient spread
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        shape = fm.shape(rng.normal(0, 1, N_SHAPE) * std[12:12 + N_SHAPE], rng.normal(0, 1, N_EXP) * std[12 + N_SHAPE:])
        yaw = -95 + 190 * k / max(n - 1, 1)
        r = euler_to_matrix(yaw, rng.uniform(-25, 25), rng.uniform(-20, 20))
        pts = (shape.astype(np.float64) - shape.mean(0)) @ r.T * rng.uniform(4e-4, 8e-4)
        out.append(pts * np.array([1.0, -1.0, 1.0]) + np.array([60.0, 60.0, 0.0]))
    return np.array(out)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return posed_faces(40)


def test_the_posed_faces_exercise_the_z_test(faces):
    fm = load_face_model()
    width = np.ptp(faces[:, :N_MESH, 0], axis=1)
    assert 40 < width.min() and width.max() < 130  # crop-sized faces
    hidden = np.array([~reference_landmark_visibility(fm, f) for f in faces])
    assert 0.1 < hidden.mean() < 0.6 and hidden[:, N_JAW:].any() and hidden[:, :N_JAW].any()


def test_batched_visibility_equals_the_reference(faces):
    fm = load_face_model()
    want = np.array([reference_landmark_visibility(fm, f) for f in faces])
    assert np.array_equal(landmark_visibility_batch(fm, faces), want)
    assert np.array_equal(np.array([landmark_visibility(fm, f) for f in faces]), want)


def test_batched_occlusion_equals_the_per_face_test():
    rng = np.random.default_rng(1)
    fm = load_face_model()
    faces = posed_faces(6, seed=2)
    pts = faces[:, N_MESH:] + rng.normal(0, 2.0, (6, N_LMK, 3))   # points off the surface, both sides
    eps = 0.02 * np.ptp(faces[:, :N_MESH, 0], axis=1)
    ignore = rng.random((N_LMK, len(fm.triangles))) < 0.05
    got = occluded_by_mesh_batch(pts, faces, fm.triangles, eps, ignore)
    want = np.array([occluded_by_mesh(pts[b], faces[b], fm.triangles, eps[b], ignore=ignore) for b in range(6)])
    assert want.any() and (~want).any()
    assert np.array_equal(got, want)
    assert np.array_equal(occluded_by_mesh_batch_numpy(pts, faces, fm.triangles, eps, ignore), want)
    assert not occluded_by_mesh_batch(pts[:, :0], faces, fm.triangles, eps).size


def test_compiled_occlusion_equals_the_numpy_version_on_many_posed_faces():
    # the compiled loop (engine.geometry.compiled) against the numpy grid version: 48 faces over the whole yaw
    # range, points scattered both sides of the surface, with and without an ignore table
    rng = np.random.default_rng(7)
    fm = load_face_model()
    faces = posed_faces(48, seed=8)
    pts = faces[:, N_MESH:] + rng.normal(0, 3.0, (48, N_LMK, 3))
    eps = 0.02 * np.ptp(faces[:, :N_MESH, 0], axis=1)
    ignore = rng.random((N_LMK, len(fm.triangles))) < 0.1
    for table in (None, ignore):
        want = occluded_by_mesh_batch_numpy(pts, faces, fm.triangles, eps, table)
        assert want.sum() > 200 and (~want).sum() > 200
        assert np.array_equal(occluded_by_mesh_batch(pts, faces, fm.triangles, eps, table), want)


def test_batched_occlusion_decides_points_on_triangle_box_edges_like_the_per_face_test():
    # points whose x (and y) equal mesh vertices' coordinates lie exactly on triangle boxes' edges, where the
    # x-sweep's binary searches (and the shift between faces) must still keep every candidate pair
    rng = np.random.default_rng(4)
    fm = load_face_model()
    faces = posed_faces(5, seed=5)
    pick = rng.integers(0, N_MESH, (5, N_LMK))
    pts = np.take_along_axis(faces, pick[:, :, None], 1)
    pts[:, :, 2] += rng.choice([-3.0, 3.0], (5, N_LMK))                                  # under or over the surface
    pts[:, ::2, 1] += rng.normal(0, 1.0, (5, (N_LMK + 1) // 2))                         # half: only x on an edge
    eps = 0.02 * np.ptp(faces[:, :N_MESH, 0], axis=1)
    got = occluded_by_mesh_batch(pts, faces, fm.triangles, eps)
    want = np.array([occluded_by_mesh(pts[b], faces[b], fm.triangles, eps[b]) for b in range(5)])
    assert want.sum() > 20 and (~want).sum() > 20
    assert np.array_equal(got, want)
    assert np.array_equal(occluded_by_mesh_batch_numpy(pts, faces, fm.triangles, eps), want)
    assert np.array_equal(occluded_by_mesh_batch(pts[:1], faces[:1], fm.triangles, eps[:1]), want[:1])


# --- 3DSTN's re-warp as it was before batching (commit 90f8712), the reference for the batched decode ---

def _ref_project(camera, pts):
    h = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ camera.T
    xy = h[:, :2] / h[:, 2:3]
    r1, r2 = camera[0, :3], -camera[1, :3]
    s = (np.linalg.norm(r1) + np.linalg.norm(r2)) / 2
    n = np.cross(r1 / np.linalg.norm(r1), r2 / np.linalg.norm(r2))
    n /= np.linalg.norm(n)
    return np.concatenate([xy, (pts @ n * s)[:, None]], 1)


def _ref_rewarp(camera, shape, refined_xy):
    from engine.geometry.tps import tps_kernel_sq

    lm = shape[N_MESH:]
    rows = np.stack([camera[0][None] - refined_xy[:, :1] * camera[2][None],
                     camera[1][None] - refined_xy[:, 1:2] * camera[2][None]], axis=1)
    m, b = rows[:, :, :3], -rows[:, :, 3]
    resid = np.einsum("nij,nj->ni", m, lm) - b
    lam = np.linalg.solve(m @ m.transpose(0, 2, 1), resid[..., None])[..., 0]
    targets = lm - np.einsum("nij,ni->nj", m, lam)
    k = len(lm)
    d = lm[:, None] - lm[None]
    a = np.zeros((k + 4, k + 4))
    p = np.concatenate([np.ones((k, 1)), lm], axis=1)
    a[:k, :k], a[:k, k:], a[k:, :k] = tps_kernel_sq((d * d).sum(2)) + 1e-6 * np.eye(k), p, p.T
    rhs = np.zeros((k + 4, 3))
    rhs[:k] = targets
    params = np.linalg.solve(a, rhs).T
    d2 = (shape * shape).sum(1)[:, None] + (lm * lm).sum(1)[None, :] - 2.0 * shape @ lm.T
    return tps_kernel_sq(d2) @ params[:, :k].T + shape @ params[:, k + 1:].T + params[:, k]


def _network_outputs(method, n: int = 8) -> dict:
    """The shipped network's outputs on n crops (real dev crops when the shared data is there, drawn faces
    otherwise: the decode's maths does not depend on which)."""
    from engine.evaluation.bench import fixed_crops
    from engine.runtime import crop_to_input

    return method.model(crop_to_input(np.stack(fixed_crops(n))))


def _create_or_skip(name: str):
    from engine.methods.base import registry
    from engine.methods.factory import create

    if not registry()[name].available:
        pytest.skip(f"weights/{registry()[name].weights} missing")
    return create(name, threads=1)


def test_batched_3dstn_decode_equals_the_per_face_reference():
    from engine.methods.base import pose_from_points

    m = _create_or_skip("3dstn")
    out = _network_outputs(m)
    decoded = m.decode_batch(out)
    for i, dec in enumerate(decoded):
        cam, shape = out["camera"][i].astype(np.float64), out["shape"][i].astype(np.float64)
        want_shape = _ref_rewarp(cam, shape, out["refined"][i].astype(np.float64))
        want = _ref_project(cam, want_shape)
        assert np.allclose(dec.shape, want_shape, atol=1e-9) and np.allclose(dec.points, want, atol=1e-7)
        assert np.allclose(dec.pose, pose_from_points(m.fm, want), atol=1e-7)


@pytest.mark.parametrize("name", ["baseline", "3dstn", "prnet"])
def test_align_batch_equals_one_face_at_a_time(name):
    from engine.evaluation.bench import fixed_crops

    m = _create_or_skip(name)
    crops = fixed_crops(6)
    single = [m.align(c) for c in crops]
    batch = m.align_batch(crops)
    assert len(batch) == len(crops) and m.align_batch([]) == []
    for a, b in zip(single, batch):
        # ONNX Runtime's float32 convolutions may round differently at another batch size (3dstn: ~1e-5 px)
        assert np.allclose(a.landmarks, b.landmarks, atol=1e-4) and np.allclose(a.mesh, b.mesh, atol=1e-4)
        assert np.allclose(a.pose, b.pose, atol=1e-4)
        assert np.array_equal(a.visible, b.visible)
        assert (a.dense is None) == (b.dense is None) and (a.shape_frontal is None) == (b.shape_frontal is None)
        assert set(b.timings) >= {"network", "decode", "visibility", "total"}


@pytest.mark.parametrize("name", ["baseline", "prnet"])
def test_batched_decode_equals_the_per_face_decode(name):
    m = _create_or_skip(name)
    out = _network_outputs(m)
    for i, dec in enumerate(m.decode_batch(out)):
        want = m.decode({k: v[i:i + 1] for k, v in out.items()})
        # baseline: the float32 coefficient product summed in another order (~1e-5 px)
        assert np.allclose(dec.points, want.points, atol=1e-4) and np.allclose(dec.pose, want.pose, atol=1e-4)
        assert (dec.dense is None) == (want.dense is None)


def test_batched_frontal_shape_and_pose_equal_the_per_face_functions(faces):
    from engine.methods.base import frontal_shape, frontal_shape_batch, pose_from_points, pose_from_points_batch

    fm = load_face_model()
    model_frame = faces * np.array([1.0, -1.0, 1.0])
    got = frontal_shape_batch(fm, model_frame)
    assert np.allclose(got, np.array([frontal_shape(fm, s) for s in model_frame]), atol=1e-9)
    assert np.allclose(pose_from_points_batch(fm, faces), np.array([pose_from_points(fm, f) for f in faces]),
                       atol=1e-9)


def test_visibility_with_the_pose_rotation_equals_its_own(faces):
    # 3dstn and prnet hand their pose's model-frame rotation R to the visibility test as diag(1,-1,1) R diag(1,-1,1)
    from engine.methods.base import rotations_from_points_batch
    from engine.methods.onnx_method import _FLIP_Y_BOTH_SIDES

    fm = load_face_model()
    rotations = rotations_from_points_batch(fm, faces) * _FLIP_Y_BOTH_SIDES
    assert np.array_equal(landmark_visibility_batch(fm, faces, rotations), landmark_visibility_batch(fm, faces))
    wrong = rotations_from_points_batch(fm, faces)          # without the frame change the jaw decisions differ
    assert not np.array_equal(landmark_visibility_batch(fm, faces, wrong), landmark_visibility_batch(fm, faces))


def test_visibility_with_given_landmark_normals_equals_its_own(faces):
    # mtcnn3d hands its graph's N_c . N_i (z of the anchors' unit normals) to the visibility test
    from engine.geometry.mesh import vertex_normals

    fm = load_face_model()
    normal_z = np.stack([vertex_normals(f[:N_MESH], fm.triangles)[fm.lmk_anchor, 2] for f in faces])
    assert np.array_equal(landmark_visibility_batch(fm, faces, normal_z=normal_z), landmark_visibility_batch(fm, faces))
    assert np.array_equal(landmark_visibility_batch(fm, faces, normal_z=normal_z.astype(np.float32)),
                          landmark_visibility_batch(fm, faces))
    facing_none = np.full_like(normal_z, -1.0)          # all inner landmarks turned away: all hidden
    assert not landmark_visibility_batch(fm, faces, normal_z=facing_none)[:, N_JAW:].any()


def test_batched_euler_angles_equal_the_per_matrix_functions():
    from engine.geometry.rotation import (camera_to_euler, camera_to_euler_batch, euler_to_matrix,
                                          matrix_to_euler, matrix_to_euler_batch)

    rng = np.random.default_rng(3)
    angles = np.concatenate([rng.uniform(-89, 89, (30, 3)), [[90.0, 10.0, 0.0], [-90.0, -20.0, 0.0]]])
    rots = np.array([euler_to_matrix(*a) for a in angles])
    assert np.allclose(matrix_to_euler_batch(rots), np.array([matrix_to_euler(r) for r in rots]), atol=1e-9)
    # scaled, slightly skewed cameras as a network regresses them
    cams = np.concatenate([rots * rng.uniform(0.5, 2, (32, 1, 1)) + rng.normal(0, 0.01, (32, 3, 3)),
                           rng.normal(0, 50, (32, 3, 1))], 2)
    assert np.allclose(camera_to_euler_batch(cams), np.array([camera_to_euler(c) for c in cams]), atol=1e-9)


def test_every_shipped_onnx_model_has_a_dynamic_batch_axis():
    from engine.methods.base import registry
    from engine.methods.onnx_method import OnnxMethod

    checked = 0
    for name, info in registry().items():
        if not (issubclass(info.factory, OnnxMethod) and info.available):
            continue
        m = info.factory(threads=1)
        shapes = [i.shape for i in m.model.session.get_inputs()] + [o.shape for o in m.model.session.get_outputs()]
        assert all(isinstance(s[0], str) for s in shapes), f"{name}: fixed batch axis in {shapes}"
        checked += 1
    if not checked:
        pytest.skip("no ONNX weights present")


def test_compiled_anchor_normals_equal_the_numpy_sums():
    from engine.geometry.compiled import summed_normal_z
    from engine.visibility import _batch_tables, _inner_facing

    fm = load_face_model()
    t = _batch_tables(fm)
    faces = posed_faces(24, seed=9)
    mesh = faces[:, :N_MESH]
    got = summed_normal_z(mesh, t.normal_tris, t.normal_ptr, t.normal_members)
    normals = np.stack([t.incidence @ face_normals(m, t.normal_tris) for m in mesh])      # (B, 51, 3)
    want = normals[..., 2] / np.linalg.norm(normals, axis=-1)
    assert np.allclose(got, want, rtol=0, atol=1e-12)
    assert ((want > 0.5).any() and (want < -0.5).any())                                # both sides of the view
    assert np.array_equal(got > -0.2, _inner_facing(t, mesh))


def test_compiled_rotations_equal_numpy_procrustes():
    from engine.geometry.compiled import best_rotations_compiled
    from engine.geometry.rotation import best_rotations, centred_source

    fm = load_face_model()
    src = fm.mean.astype(np.float64) * np.array([1.0, -1.0, 1.0])
    faces = posed_faces(24, seed=10)
    got = best_rotations_compiled(centred_source(src), faces)
    assert np.allclose(got, best_rotations(src, faces), rtol=0, atol=1e-10)
    assert np.allclose(np.linalg.det(got), 1.0)
