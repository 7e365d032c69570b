"""CPRFA geometry: DAFI rendering (engine/geometry/dafi.py), vertex retrieval, vertex selection and the CPR kernels
(engine/geometry/cpr.py, torch_cpr.py), each against a direct computation."""
from __future__ import annotations

import numpy as np
import pytest

from engine.geometry import mesh
from engine.geometry.dafi import (build_codebook, dafi_from_vertices, rasterize_vectorized, render_dafi,
                                  check_sparse, render_dafi_batch, retrieve_kdtree)
from tests.conftest import _need


@pytest.fixture(scope="module")
def bfm() -> dict[str, np.ndarray]:
    path = _need("bfm", "bfm_3ddfa.npz")
    return {k: v for k, v in np.load(path).items()}


@pytest.fixture(scope="module")
def codebook(bfm):
    return build_codebook(bfm)


@pytest.fixture(scope="module")
def train_params() -> np.ndarray:
    path = _need("aflw_train", "labels.npz")
    labels = np.load(path)
    return labels["teacher_params"].astype(np.float64), labels["teacher_pose"].astype(np.float64)


def _random_mesh(rng: np.random.Generator, n_tris: int = 60, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping random triangles of a few pixels, random depths and windings."""
    centres = rng.uniform(0, size, (n_tris, 1, 3))
    verts = (centres + rng.normal(0, 2.5, (n_tris, 3, 3))).reshape(-1, 3)
    return verts, np.arange(3 * n_tris).reshape(-1, 3)


# ---------------------------------------------------------------------------------------------------- DAFI
def test_vectorized_raster_matches_the_triangle_loop():
    rng = np.random.default_rng(0)
    verts, tris = _random_mesh(rng)
    tri_id, bary, depth = rasterize_vectorized(verts, tris, 24, 20, cull_back=False)
    ref_id, ref_bary = mesh.rasterize(verts, tris, 24, 20)
    assert (tri_id >= 0).sum() > 50
    np.testing.assert_array_equal(tri_id, ref_id)
    np.testing.assert_allclose(bary, ref_bary, atol=1e-6)
    fg = tri_id >= 0
    z = (bary[fg] * verts[tris[tri_id[fg]], 2]).sum(1)
    np.testing.assert_allclose(depth[fg], z, atol=1e-4)


def test_back_face_culling_is_the_loop_over_front_facing_triangles():
    rng = np.random.default_rng(1)
    verts, tris = _random_mesh(rng)
    front = mesh.face_normals(verts, tris)[:, 2] > 0
    tri_id, bary, _ = rasterize_vectorized(verts, tris, 24, 24, cull_back=True)
    ref_id, ref_bary = mesh.rasterize(verts, tris[front], 24, 24)
    ref_id = np.where(ref_id >= 0, np.flatnonzero(front)[ref_id], -1)
    np.testing.assert_array_equal(tri_id, ref_id)
    np.testing.assert_allclose(bary, ref_bary, atol=1e-6)


def test_codebook_normalisation(codebook, bfm):
    assert codebook.codes.shape == (len(bfm["noneck_indices"]), 3)
    np.testing.assert_allclose(codebook.codes.min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(codebook.codes.max(0), 1.0, atol=1e-6)
    mean = bfm["mean"].reshape(-1, 3)[bfm["noneck_indices"]]
    np.testing.assert_allclose(codebook.normalise(mean), codebook.codes, atol=1e-6)
    # nose tip (largest model z) has z code 1; the winding was fixed so a frontal mean face faces the camera
    frontal = codebook.mean * np.array([1.0, -1.0, 1.0])
    assert (mesh.face_normals(frontal, codebook.tris)[:, 2] > 0).mean() > 0.8


def test_codebook_vertices_match_the_data_readme_formula(codebook, bfm, train_params):
    params = train_params[0][7]
    mean = bfm["mean"].reshape(-1, 3)[codebook.rows].astype(np.float64)
    ws = bfm["w_shp"].reshape(-1, 3, 40)[codebook.rows].astype(np.float64)
    we = bfm["w_exp"].reshape(-1, 3, 10)[codebook.rows].astype(np.float64)
    s = mean + ws @ params[12:52] + we @ params[52:62]
    m = params[:12].reshape(3, 4)
    v = s @ m[:, :3].T + m[:, 3]
    ref = np.stack([v[:, 0] - 1, 120 - v[:, 1], v[:, 2]], 1)
    np.testing.assert_allclose(codebook.vertices(params), ref, atol=1e-3)


@pytest.mark.parametrize("which", ["frontal", "profile"])
def test_render_dafi_against_brute_force_pixels(codebook, train_params, which):
    """Sampled pixels: the front-most front-facing triangle over the pixel centre, searched over all triangles,
    and its barycentric code mix."""
    params, pose = train_params
    i = int(np.argmin(np.abs(pose[:, 0]))) if which == "frontal" else int(np.argmax(np.abs(pose[:, 0])))
    dafi, mask = render_dafi(codebook, None, params[i])
    assert dafi.shape == (120, 120, 3) and dafi.dtype == np.float32 and mask.dtype == bool
    assert 2000 < mask.sum() < 12000
    assert (dafi[~mask] == 0).all() and dafi[mask].min() >= 0 and dafi[mask].max() <= 1
    v = codebook.vertices(params[i])
    a, b, c = (v[codebook.tris[:, k]] for k in range(3))
    front = mesh.face_normals(v, codebook.tris)[:, 2] > 0
    rng = np.random.default_rng(2)
    ys, xs = np.nonzero(mask)
    pick = rng.choice(len(ys), 40, replace=False)
    bg_ys, bg_xs = np.nonzero(~mask)
    pick_bg = rng.choice(len(bg_ys), 40, replace=False)
    for y, x, fg in [(ys[j], xs[j], True) for j in pick] + [(bg_ys[j], bg_xs[j], False) for j in pick_bg]:
        lam = mesh._barycentrics(v, codebook.tris, np.arange(len(a)), np.full(len(a), float(x)),
                                 np.full(len(a), float(y)))
        inside = front & (np.nan_to_num(lam, nan=-1).min(1) >= -1e-9)
        assert inside.any() == fg, (y, x)
        if fg:
            z = (lam * np.stack([a[:, 2], b[:, 2], c[:, 2]], 1)).sum(1)
            t = np.flatnonzero(inside)[np.argmax(z[inside])]
            code = (lam[t, :, None] * codebook.codes[codebook.tris[t]]).sum(0)
            np.testing.assert_allclose(dafi[y, x], code, atol=1e-5)


def test_render_dafi_sizes_and_batch(codebook, train_params):
    params = train_params[0][:3]
    dafi, mask = render_dafi_batch(codebook, params)
    assert dafi.shape == (3, 120, 120, 3) and mask.shape == (3, 120, 120)
    one, one_mask = render_dafi(codebook, None, params[1])
    np.testing.assert_array_equal(dafi[1], one)
    np.testing.assert_array_equal(mask[1], one_mask)
    # the same crop at 60 px: each 2x2 block of the 120 render mostly agrees with the 60 px pixel at its centre
    small, small_mask = render_dafi(codebook, None, params[1], size=60)
    block = mask[1].reshape(60, 2, 60, 2).mean((1, 3))
    assert ((block > 0.5) == small_mask).mean() > 0.98
    both = small_mask & (block == 1)
    block_code = dafi[1].reshape(60, 2, 60, 2, 3).mean((1, 3))
    err = np.abs(block_code[both] - small[both]).max(1)
    # smooth surface: the block mean and the centre sample agree; only pixels astride a fold (nose side) differ more
    assert np.percentile(err, 99) < 0.01 and err.max() < 0.1


def test_dafi_bad_input_is_refused(codebook):
    with pytest.raises(ValueError, match="62 parameters"):
        render_dafi(codebook, None, np.zeros(50))
    with pytest.raises(ValueError, match="no-neck vertices"):
        dafi_from_vertices(codebook, np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"\(B, 62\)"):
        render_dafi_batch(codebook, np.zeros(62))


# ------------------------------------------------------------------------------------------------ retrieval
def _retrieve_loop(dafi, mask, codes, threshold):
    """Direct loop: every foreground pixel against every searched vertex."""
    h, w = mask.shape
    sums, counts = np.zeros((len(codes), 2)), np.zeros(len(codes), int)
    for y in range(h):
        for x in range(w):
            if mask[y, x]:
                d = np.linalg.norm(codes - dafi[y, x], axis=1)
                k = int(np.argmin(d))
                if d[k] < threshold:
                    sums[k] += (x, y)
                    counts[k] += 1
    return np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], 0.0), counts > 0, counts


def test_kdtree_retrieval_matches_a_direct_loop():
    rng = np.random.default_rng(3)
    codes = rng.uniform(0, 1, (12, 3))
    dafi = (codes[rng.integers(0, 12, (14, 16))] + rng.normal(0, 0.02, (14, 16, 3))).astype(np.float32)
    mask = rng.uniform(size=(14, 16)) < 0.8
    pos, found, counts = retrieve_kdtree(dafi, mask, codes, threshold=0.03)
    ref_pos, ref_found, ref_counts = _retrieve_loop(dafi.astype(np.float64), mask, codes, 0.03)
    assert 0 < found.sum() < 12 or found.all()
    assert counts.sum() > 20
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(found, ref_found)
    np.testing.assert_allclose(pos, ref_pos, atol=1e-12)


def _sparse_codes(rng: np.random.Generator, n: int, separation: float) -> np.ndarray:
    out = []
    while len(out) < n:
        c = rng.uniform(0, 1, 3)
        if all(np.linalg.norm(c - o) > separation for o in out):
            out.append(c)
    return np.array(out)


def test_dense_torch_retrieval_matches_the_kdtree():
    torch = pytest.importorskip("torch")
    from engine.geometry.torch_dafi import retrieve_dense

    rng = np.random.default_rng(4)
    codes = _sparse_codes(rng, 20, 0.085)
    check_sparse(codes, 0.04)
    dafis, masks = [], []
    for _ in range(3):
        dafis.append((codes[rng.integers(0, 20, (18, 18))] + rng.normal(0, 0.03, (18, 18, 3))).astype(np.float32))
        masks.append(rng.uniform(size=(18, 18)) < 0.7)
    dafi_t = torch.from_numpy(np.stack(dafis)).permute(0, 3, 1, 2)
    pos, found = retrieve_dense(dafi_t, torch.from_numpy(np.stack(masks)), torch.from_numpy(codes).float(), 0.04)
    for i in range(3):
        ref_pos, ref_found, _ = retrieve_kdtree(dafis[i], masks[i], codes, 0.04)
        assert 0 < ref_found.sum()
        np.testing.assert_array_equal(found[i].numpy() > 0, ref_found)
        np.testing.assert_allclose(pos[i].numpy(), ref_pos, atol=1e-4)


def test_dense_retrieval_equals_kdtree_on_rendered_dafis(codebook, train_params):
    """Real DAFIs and the sparse candidate set: the same vertices found at the same positions (a pixel whose
    distance lies within float32 rounding of the threshold may fall either way: such vertices are excluded)."""
    torch = pytest.importorskip("torch")
    from scipy.spatial import cKDTree

    from engine.geometry.dafi import candidate_vertices
    from engine.geometry.torch_dafi import retrieve_dense

    cand = candidate_vertices(codebook)
    codes = codebook.codes[cand]
    check_sparse(codes, 0.01)
    params, pose = train_params
    for i in (0, int(np.argmax(np.abs(pose[:, 0])))):
        dafi, mask = render_dafi(codebook, None, params[i])
        ref_pos, ref_found, _ = retrieve_kdtree(dafi, mask, codes)
        d, j = cKDTree(codes.astype(np.float64)).query(dafi[mask].astype(np.float64))
        borderline = np.zeros(len(codes), bool)
        borderline[j[np.abs(d - 0.01) < 1e-5]] = True
        pos, found = retrieve_dense(torch.from_numpy(dafi).permute(2, 0, 1)[None], torch.from_numpy(mask)[None],
                                    torch.from_numpy(codes))
        ok = ~borderline
        assert ref_found.sum() > 300 and borderline.sum() < 10
        np.testing.assert_array_equal(found[0].numpy()[ok] > 0, ref_found[ok])
        np.testing.assert_allclose(pos[0].numpy()[ok], ref_pos[ok], atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dense_retrieval_exports_to_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from engine.geometry.torch_dafi import pixel_centre_grid, retrieve_dense

    rng = np.random.default_rng(5)
    codes = torch.from_numpy(_sparse_codes(rng, 16, 0.11).astype(np.float32))

    class Retrieval(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("codes", codes)
            self.register_buffer("xy", pixel_centre_grid(12, 12))

        def forward(self, dafi, mask_logit):
            return retrieve_dense(dafi, mask_logit > 0, self.codes, 0.05, self.xy)

    dafi = torch.from_numpy(codes.numpy()[rng.integers(0, 16, (2, 12, 12))] +
                            rng.normal(0, 0.03, (2, 12, 12, 3)).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    logit = torch.from_numpy(rng.normal(0, 1, (2, 12, 12)).astype(np.float32))
    path = tmp_path / "retrieval.onnx"
    torch.onnx.export(Retrieval(), (dafi, logit), str(path), opset_version=18, dynamo=False,
                      input_names=["dafi", "mask_logit"], output_names=["positions", "found"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pos, found = sess.run(None, {"dafi": dafi.numpy(), "mask_logit": logit.numpy()})
    ref_pos, ref_found = Retrieval()(dafi, logit)
    assert ref_found.sum() > 0
    np.testing.assert_array_equal(found, ref_found.numpy())
    np.testing.assert_allclose(pos, ref_pos.numpy(), atol=1e-5)


def test_check_sparse_refuses_close_vertices():
    check_sparse(np.array([[0.0, 0, 0], [0.03, 0, 0]]), 0.01)
    with pytest.raises(ValueError, match="apart in code space"):
        check_sparse(np.array([[0.0, 0, 0], [0.015, 0, 0]]), 0.01)


def test_dense_retrieval_ignores_background_pixels():
    torch = pytest.importorskip("torch")
    from engine.geometry.torch_dafi import retrieve_dense

    codes = torch.tensor([[0.2, 0.2, 0.2], [0.8, 0.8, 0.8]])
    dafi = torch.zeros(1, 3, 2, 2)
    dafi[0, :, 0, 0] = 0.2
    dafi[0, :, 1, 1] = 0.2
    dafi[0, :, 0, 1] = 0.8
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    pos, found = retrieve_dense(dafi, mask, codes)
    np.testing.assert_array_equal(found.numpy(), [[1.0, 1.0]])
    np.testing.assert_allclose(pos.numpy(), [[[0.0, 0.0], [1.0, 0.0]]])   # the masked (1, 1) pixel not counted


# ------------------------------------------------------------------------------------------- pose and CPR kernels
def _frame():
    from engine.geometry.cpr import PoseFrame

    return PoseFrame(centre=np.array([1500.0, 8000.0, 60000.0]), scale=5.8e-4)


def test_euler_matrix_follows_the_project_convention():
    from engine.geometry.cpr import euler_matrix
    from engine.geometry.rotation import euler_to_matrix

    yaw, pitch, roll = 37.0, -12.0, 8.0
    r = euler_matrix(np.deg2rad(pitch), np.deg2rad(-yaw), np.deg2rad(roll))
    np.testing.assert_allclose(r, euler_to_matrix(yaw, pitch, roll), atol=1e-12)


def test_pose_params_round_trip_and_projection():
    from engine.geometry.cpr import params_to_pose, pose_to_params, project
    from engine.geometry.uv_dense import camera_to_crop

    rng = np.random.default_rng(6)
    frame = _frame()
    pose = np.stack([rng.uniform(-0.6, 0.6, 5), rng.uniform(-1.4, 1.4, 5), rng.uniform(-0.5, 0.5, 5),
                     rng.uniform(0.7, 1.3, 5), rng.uniform(-0.1, 0.1, 5), rng.uniform(-0.1, 0.1, 5)], 1)
    alpha = rng.normal(0, 1, (5, 50))
    params = pose_to_params(frame, pose, alpha)
    back, alpha_back = params_to_pose(frame, params)
    np.testing.assert_allclose(back, pose, atol=1e-9)
    np.testing.assert_allclose(alpha_back, alpha)
    pts = rng.normal(0, 5e4, (7, 3))
    for i in range(5):
        np.testing.assert_allclose(project(frame, pose[i], pts), camera_to_crop(pts, params[i]), atol=1e-6)
    # the init is the mean face's box centre at the crop centre
    np.testing.assert_allclose(project(frame, np.array([0, 0, 0, 1.0, 0, 0]), frame.centre[None])[0, :2], [59.5, 59.5])


def _kernel_inputs(rng, c=10, b=None, missing=(2, 7)):
    shape = (c, 2) if b is None else (b, c, 2)
    obs = rng.uniform(20, 100, shape)
    gen = obs + rng.normal(0, 4, shape)
    found = np.ones(shape[:-1], bool)
    found[..., list(missing)] = False
    layout = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 2, 4, 6, 8]])
    return obs, gen, found, layout


def _kernels_by_loop(obs, gen, found, layout, eps=1.0):
    """The cpr.py docstring's rules, one entry at a time."""
    n = layout.shape[1]
    t = np.zeros((6, n, n)); s = np.zeros((3, n, n)); r = np.zeros((3, n, n)); c = np.zeros((6, n, n))
    for ch in range(3):
        ids = layout[ch]
        f = found[ids]
        cen_o = obs[ids][f].mean(0) if f.any() else np.zeros(2)
        cen_g = gen[ids][f].mean(0) if f.any() else np.zeros(2)
        for i in range(n):
            for j in range(n):
                a, b = ids[i], ids[j]
                if not (found[a] and found[b]):
                    continue
                d = ((obs[a] - gen[a]) + (obs[b] - gen[b])) / 2
                t[ch, i, j], t[3 + ch, i, j] = d
                do, dg = obs[b] - obs[a], gen[b] - gen[a]
                if i != j:
                    s[ch, i, j] = (np.hypot(*dg) + eps) / (np.hypot(*do) + eps)
                r[ch, i, j] = (dg[0] * do[1] - dg[1] * do[0]) / (np.hypot(*dg) * np.hypot(*do) + eps ** 2)
                for k, (pts, cen) in enumerate(((obs, cen_o), (gen, cen_g))):
                    u, v = pts[a] - cen, pts[b] - cen
                    c[3 * k + ch, i, j] = u @ v / (np.hypot(*u) * np.hypot(*v) + eps ** 2)
    return np.concatenate([t, s, r, c])


def test_cpr_kernels_match_a_direct_loop():
    from engine.geometry.cpr import cpr_all

    obs, gen, found, layout = _kernel_inputs(np.random.default_rng(7))
    got = cpr_all(obs, gen, found, layout)
    assert got.shape == (18, 5, 5)
    np.testing.assert_allclose(got, _kernels_by_loop(obs, gen, found, layout), atol=1e-12)
    # missing vertex 2 (channel 0 position 2, channel 2 position 1): its rows and columns are zero everywhere
    assert (got[[0, 3, 6, 9, 12, 15], 2] == 0).all() and (got[[0, 3, 6, 9, 12, 15], :, 2] == 0).all()
    assert (got[[2, 5, 8, 11, 14, 17], 1] == 0).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_cpr_kernel_properties():
    from engine.geometry.cpr import cpr_in_plane, cpr_out_of_plane, cpr_scale, cpr_translation, euler_matrix

    rng = np.random.default_rng(8)
    gen = rng.uniform(20, 100, (10, 2))
    found = np.ones(10, bool)
    layout = np.arange(10).reshape(2, 5)[[0, 1, 0]]
    # translation: O = G + shift -> every entry is the shift
    t = cpr_translation(gen + [3.0, -2.0], gen, found, layout)
    np.testing.assert_allclose(t[:3], 3.0)
    np.testing.assert_allclose(t[3:], -2.0)
    # scale: O = k G about any point -> 1/k off the diagonal (eps = 0)
    s = cpr_scale(1.5 * (gen - 50) + 50, gen, found, layout, eps=0.0)
    np.testing.assert_allclose(s[:, ~np.eye(5, dtype=bool)], 1 / 1.5)
    # in-plane: O = G turned the way +delta of rz turns the image -> -sin(delta) everywhere (eps = 0)
    delta = 0.3
    r = euler_matrix(0.0, 0.0, delta)[:2, :2]
    flip = np.diag([1.0, -1.0])                      # model y up <-> image y down
    obs = (gen - 60) @ (flip @ r @ flip).T + 60
    rot = cpr_in_plane(obs, gen, found, layout, eps=0.0)
    np.testing.assert_allclose(rot[:, ~np.eye(5, dtype=bool)], -np.sin(delta), atol=1e-12)
    # out-of-plane cosines are unchanged by a 2D similarity of O (eps = 0)
    cos = cpr_out_of_plane(2.0 * (obs - 60) + 80, gen, found, layout, eps=0.0)
    np.testing.assert_allclose(cos[:3], cos[3:], atol=1e-12)


def test_torch_kernels_match_numpy_in_value_and_gradient():
    torch = pytest.importorskip("torch")
    from engine.geometry import cpr, torch_cpr

    obs, gen, found, layout = _kernel_inputs(np.random.default_rng(9), b=2)
    lay = torch.from_numpy(layout)
    o, g, f = (torch.from_numpy(a) for a in (obs, gen, found))
    got = torch_cpr.cpr_all(o, g, f, lay)
    for i in range(2):
        np.testing.assert_allclose(got[i].numpy(), cpr.cpr_all(obs[i], gen[i], found[i], layout), atol=1e-12)
    # gradient: torch's autograd against central differences of the numpy kernels (a random linear read-out)
    w = np.random.default_rng(10).normal(size=(18, 5, 5))
    g_t = g.clone().requires_grad_(True)
    o_t = o.clone().requires_grad_(True)
    (torch_cpr.cpr_all(o_t, g_t, f, lay)[0] * torch.from_numpy(w)).sum().backward()
    h = 1e-6
    for which, grad in (("gen", g_t.grad[0].numpy()), ("obs", o_t.grad[0].numpy())):
        num = np.zeros((10, 2))
        for v in range(10):
            for d in range(2):
                plus, minus = [a[0].copy() for a in (obs, gen)], [a[0].copy() for a in (obs, gen)]
                k = 1 if which == "gen" else 0
                plus[k][v, d] += h
                minus[k][v, d] -= h
                num[v, d] = ((cpr.cpr_all(plus[0], plus[1], found[0], layout) * w).sum() -
                             (cpr.cpr_all(minus[0], minus[1], found[0], layout) * w).sum()) / (2 * h)
        np.testing.assert_allclose(grad, num, atol=1e-5)
        assert np.abs(grad[[2, 7]]).max() == 0          # missing vertices get no gradient


def test_torch_kernels_gradcheck():
    torch = pytest.importorskip("torch")
    from engine.geometry import torch_cpr

    obs, gen, found, layout = _kernel_inputs(np.random.default_rng(11), c=6, b=1, missing=(1,))
    layout = np.array([[0, 1, 2], [3, 4, 5], [0, 2, 4]])
    o = torch.from_numpy(obs).requires_grad_(True)
    g = torch.from_numpy(gen).requires_grad_(True)
    f, lay = torch.from_numpy(found), torch.from_numpy(layout)
    for kernel in (torch_cpr.cpr_translation, torch_cpr.cpr_scale, torch_cpr.cpr_in_plane, torch_cpr.cpr_out_of_plane):
        assert torch.autograd.gradcheck(lambda a, b: kernel(a, b, f, lay), (o, g), eps=1e-6, atol=1e-6)


def test_torch_projection_matches_numpy_and_gradchecks():
    torch = pytest.importorskip("torch")
    from engine.geometry import cpr, torch_cpr

    rng = np.random.default_rng(12)
    frame = _frame()
    pose = np.array([[0.2, -0.9, 0.1, 1.1, 0.03, -0.02], [-0.3, 0.5, -0.2, 0.9, -0.05, 0.04]])
    mean, basis = rng.normal(0, 5e4, (6, 3)), rng.normal(0, 1, (6, 3, 50))
    alpha = rng.normal(0, 100, (2, 50))
    pts = torch_cpr.shape_points(torch.from_numpy(mean), torch.from_numpy(basis), torch.from_numpy(alpha))
    np.testing.assert_allclose(pts.numpy(), cpr.shape_points(mean, basis, alpha), rtol=1e-12)
    got = torch_cpr.project(torch.from_numpy(pose), pts, torch.from_numpy(frame.centre), frame.scale)
    np.testing.assert_allclose(got.numpy(), cpr.project(frame, pose, pts.numpy()), atol=1e-9)
    p = torch.from_numpy(pose).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda q: torch_cpr.project(q, pts, torch.from_numpy(frame.centre), frame.scale), (p,), eps=1e-7, atol=1e-5)


def _reprojection_by_loop(frame, pose, direction, pts, obs, found, m, kappa):
    from engine.geometry.cpr import project

    ids = [i for i in range(len(found)) if found[i]]          # default keys: the vertex order
    chosen = ids[:int(np.ceil(kappa * found.sum()))]
    out = []
    for k in range(1, 2 * m + 1):
        proj = project(frame, pose + k / m * direction, pts)[:, :2]
        out.append(np.mean([np.linalg.norm(proj[i] - obs[i]) for i in chosen]))
    return np.array(out), chosen


def test_reprojection_sampling_matches_a_loop_and_gradchecks():
    torch = pytest.importorskip("torch")
    from engine.geometry import torch_cpr
    from engine.geometry.cpr import project

    rng = np.random.default_rng(13)
    frame = _frame()
    c = 40
    pts = rng.normal(0, 5e4, (2, c, 3))
    pose = np.array([[0.1, -0.4, 0.05, 1.0, 0.01, 0.0], [-0.2, 0.8, -0.1, 0.95, -0.02, 0.03]])
    truth = pose + rng.normal(0, 0.05, pose.shape)
    obs = np.stack([project(frame, truth[i], pts[i])[:, :2] for i in range(2)]) + rng.normal(0, 1.0, (2, c, 2))
    obs[0, :5] += 25.0                                      # outlying detections
    found = rng.uniform(size=(2, c)) < 0.8
    direction = (truth - pose) / 1.3
    args = [torch.from_numpy(a) for a in (pose, direction, pts, obs, found)]
    got = torch_cpr.sample_reprojection_errors(*args, torch.from_numpy(frame.centre), frame.scale, m=5, kappa=0.1)
    assert got.shape == (2, 10)
    for i in range(2):
        ref, chosen = _reprojection_by_loop(frame, pose[i], direction[i], pts[i], obs[i], found[i], 5, 0.1)
        assert len(chosen) == int(np.ceil(0.1 * found[i].sum()))
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-9)
    # the error is smallest near t = 1.3 (the true pose) along the direction
    assert int(np.argmin(got[1].numpy())) in (5, 6, 7)
    # other keys choose other vertices (the same count)
    keys = torch.from_numpy(rng.permutation(c).astype(np.float64))
    other = torch_cpr.sample_reprojection_errors(*args, torch.from_numpy(frame.centre), frame.scale, keys=keys)
    assert not torch.allclose(other, got)
    p = args[0].clone().requires_grad_(True)
    d = args[1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: torch_cpr.sample_reprojection_errors(a, b, args[2], args[3], args[4],
                                                          torch.from_numpy(frame.centre), frame.scale),
        (p, d), eps=1e-7, atol=1e-4)


def test_kappa_subset_counts_per_face():
    torch = pytest.importorskip("torch")
    from engine.geometry.torch_cpr import kappa_subset

    found = torch.zeros(3, 50)
    found[0, :50] = 1
    found[1, ::3] = 1                        # 17 found
    w = kappa_subset(found, 0.1)
    assert w.sum(1).tolist() == [5.0, 2.0, 0.0]
    assert (w <= found).all()
    assert w[1].nonzero().flatten().tolist() == [0, 3]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cpr_and_reprojection_export_to_onnx(tmp_path):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from engine.geometry import torch_cpr

    frame = _frame()
    obs, gen, found, layout = _kernel_inputs(np.random.default_rng(14), b=2)
    rng = np.random.default_rng(15)
    pts = rng.normal(0, 5e4, (2, 10, 3)).astype(np.float32)

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("layout", torch.from_numpy(layout))
            self.register_buffer("centre", torch.from_numpy(frame.centre.astype(np.float32)))

        def forward(self, obs, gen, found, pose, direction, pts):
            cpr = torch_cpr.cpr_all(obs, gen, found, self.layout)
            err = torch_cpr.sample_reprojection_errors(pose, direction, pts, obs, found, self.centre, frame.scale)
            return cpr, err, torch_cpr.pose_euler_degrees(pose)

    inputs = (torch.from_numpy(obs.astype(np.float32)), torch.from_numpy(gen.astype(np.float32)),
              torch.from_numpy(found.astype(np.float32)),
              torch.tensor([[0.1, -0.3, 0.0, 1.0, 0.0, 0.0], [0.0, 0.4, 0.1, 0.9, 0.02, -0.01]]),
              torch.tensor([[0.05, 0.1, -0.02, 0.05, 0.01, 0.0], [0.0, -0.1, 0.0, 0.0, 0.0, 0.01]]),
              torch.from_numpy(pts))
    names = ["obs", "gen", "found", "pose", "direction", "pts"]
    path = tmp_path / "cpr.onnx"
    torch.onnx.export(Graph(), inputs, str(path), opset_version=18, dynamo=False, input_names=names,
                      output_names=["cpr", "errors", "euler"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    want = Graph()(*inputs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ vertex selection
def _toy_codebook(n_vertices: int = 40):
    from engine.geometry.dafi import DafiCodebook

    rng = np.random.default_rng(16)
    mean = rng.uniform(-1, 1, (n_vertices, 3)).astype(np.float32)
    return DafiCodebook(rows=np.arange(n_vertices), tris=np.zeros((0, 3), np.int64), codes=(mean + 1) / 2,
                        lo=-np.ones(3), hi=np.ones(3), mean=mean, basis=np.zeros((n_vertices, 3, 50), np.float32))


def test_select_vertices_layout_and_ranking():
    from engine.methods.cprfa.vertex_selection import SelectionStats, select_vertices, selection_score

    cb = _toy_codebook()
    candidates = np.arange(0, 40, 2)                 # 20 candidates
    rng = np.random.default_rng(17)
    stats = SelectionStats(visible=rng.uniform(size=20), found=rng.uniform(size=20), error=rng.uniform(0, 2, 20),
                           false_found=np.zeros(20), n=10)
    stats.error[3] = np.inf
    side = cb.mean[candidates, 0] >= 0
    c = 8 if min(side.sum(), (~side).sum()) >= 4 else 4
    vertex, layout = select_vertices(cb, candidates, stats, c=c, seed=3)
    n = c // 2
    assert vertex.shape == (c,) and layout.shape == (3, n) and len(set(vertex.tolist())) == c
    assert (cb.mean[vertex[:n], 0] < 0).all() and (cb.mean[vertex[n:], 0] >= 0).all()
    assert (layout[0] < n).all() and (layout[1] >= n).all()
    assert (layout[2] < n).sum() == n // 2 and len(set(layout[2].tolist())) == n
    score = selection_score(stats)
    assert score[3] == 0
    for s, part in ((False, vertex[:n]), (True, vertex[n:])):
        ids = np.flatnonzero(side == s)
        best = set(candidates[ids[np.argsort(-score[ids])[:n]]].tolist())
        assert set(part.tolist()) == best
    again, layout_again = select_vertices(cb, candidates, stats, c=c, seed=3)
    np.testing.assert_array_equal(again, vertex)
    np.testing.assert_array_equal(layout_again, layout)
    with pytest.raises(ValueError, match="multiple of 4"):
        select_vertices(cb, candidates, stats, c=6)


def test_visibility_from_the_zbuffer():
    from engine.methods.cprfa.vertex_selection import visible_in_render

    depth = np.full((4, 4), -np.inf, np.float32)
    depth[1:3, 1:3] = 5.0
    verts = np.array([[1.2, 1.1, 5.0], [2.0, 2.0, 1.0], [0.0, 0.0, 9.0], [1.0, 2.0, 4.5], [7.0, 1.0, 5.0]])
    np.testing.assert_array_equal(visible_in_render(verts, depth, eps=1.0), [True, False, False, True, False])


def test_selection_statistics_use_the_given_dafis(codebook, train_params):
    from engine.geometry.dafi import candidate_vertices
    from engine.methods.cprfa.vertex_selection import selection_statistics

    params, pose = train_params
    rows = [int(np.argmin(np.abs(pose[:, 0]))), int(np.argmin(np.abs(np.abs(pose[:, 0]) - 60)))]
    cand = candidate_vertices(codebook)
    clean = selection_statistics(codebook, cand, params[rows])
    assert clean.n == 2 and 0.4 < clean.visible.mean() < 0.95
    assert clean.found[clean.visible == 1].mean() > 0.8
    assert np.median(clean.error[np.isfinite(clean.error)]) < 0.5
    rng = np.random.default_rng(18)

    def noisy(i):
        dafi, mask = render_dafi(codebook, None, params[rows[i]])
        return (dafi + rng.normal(0, 0.01, dafi.shape)).astype(np.float32), mask

    worse = selection_statistics(codebook, cand, params[rows], noisy)
    np.testing.assert_array_equal(worse.visible, clean.visible)      # visibility is the label's, not the DAFI's
    assert worse.found[clean.visible == 1].mean() < clean.found[clean.visible == 1].mean() - 0.1
    assert np.nanmean(np.where(np.isfinite(worse.error), worse.error, np.nan)) > \
        np.nanmean(np.where(np.isfinite(clean.error), clean.error, np.nan))


def test_committed_vertex_selection_is_consistent(codebook):
    from engine.methods.cprfa.vertex_selection import load_vertex_selection
    from engine.paths import weights_path

    if not weights_path("cprfa_vertices.npz").exists():
        pytest.skip("weights/cprfa_vertices.npz not built (python -m engine.methods.cprfa.vertex_selection)")
    sel = load_vertex_selection()
    c = len(sel.vertex)
    assert c in (128, 256, 512) and sel.layout.shape == (3, c // 2)
    np.testing.assert_array_equal(codebook.rows[sel.vertex], sel.bfm_vertex)
    np.testing.assert_allclose(sel.codes, codebook.codes[sel.vertex])
    np.testing.assert_allclose(sel.mean, codebook.mean[sel.vertex])
    np.testing.assert_allclose(sel.basis, codebook.basis[sel.vertex])
    check_sparse(sel.codes, sel.threshold)
    np.testing.assert_allclose(sel.frame.centre, (codebook.lo + codebook.hi) / 2)
    assert 3e-4 < sel.frame.scale < 1e-3
    assert sel.lmk68_mean.shape == (68, 3) and sel.lmk68_basis.shape == (68, 3, 50)
    assert sel.lmk68_layout.shape == (3, 34) and sorted(sel.lmk68_layout[:2].ravel().tolist()) == list(range(68))


def test_landmark_layout_splits_the_sides():
    from engine.methods.cprfa.vertex_selection import landmark_layout, reference_rows

    rng = np.random.default_rng(20)
    mean = rng.normal(0, 1, (68, 3))
    layout = landmark_layout(mean, seed=1)
    assert layout.shape == (3, 34)
    assert mean[layout[0], 0].max() <= mean[layout[1], 0].min()
    assert np.isin(layout[2], layout[0]).sum() == 17 and len(set(layout[2].tolist())) == 34
    np.testing.assert_array_equal(landmark_layout(mean, seed=1), layout)
    np.testing.assert_array_equal(reference_rows(45), [0, 20, 40])


def test_pose_euler_degrees_follow_rotation_py():
    torch = pytest.importorskip("torch")
    from engine.geometry import cpr, torch_cpr
    from engine.geometry.rotation import matrix_to_euler

    rng = np.random.default_rng(19)
    pose = np.concatenate([rng.uniform(-1.5, 1.5, (6, 3)), np.ones((6, 1)), np.zeros((6, 2))], 1)
    pose[0, :3] = [0.1, -0.5, 0.2]
    got = cpr.pose_euler_degrees(pose)
    np.testing.assert_allclose(got[0], np.rad2deg([0.5, 0.1, 0.2]), atol=1e-9)     # yaw = -ry, pitch, roll
    for i in range(6):
        np.testing.assert_allclose(got[i], matrix_to_euler(cpr.euler_matrix(*pose[i, :3])), atol=1e-9)
    np.testing.assert_allclose(torch_cpr.pose_euler_degrees(torch.from_numpy(pose)).numpy(), got, atol=1e-9)


def test_similarity_pose_moves_the_projection_with_the_image():
    import cv2

    from engine.geometry.cpr import project, similarity_pose

    frame = _frame()
    rng = np.random.default_rng(21)
    pts = rng.normal(0, 5e4, (9, 3)) + frame.centre
    pose = np.array([0.2, -0.7, 0.1, 1.05, 0.02, -0.03])
    affine = cv2.getRotationMatrix2D((61.0, 57.5), 17.0, 1.12)
    affine[:, 2] += [3.0, -4.0]
    new = similarity_pose(pose, affine)
    before, after = project(frame, pose, pts), project(frame, new, pts)
    np.testing.assert_allclose(after[:, :2], before[:, :2] @ affine[:, :2].T + affine[:, 2], atol=1e-9)
    np.testing.assert_allclose(after[:, 2], 1.12 * before[:, 2], atol=1e-9)
    with pytest.raises(ValueError, match="not a similarity"):
        similarity_pose(pose, np.array([[-1.0, 0, 119], [0, 1, 0]]))


def test_pnp_recovers_a_weak_perspective_pose():
    from engine.geometry.cpr import fit_pose_pnp, project

    frame = _frame()
    rng = np.random.default_rng(22)
    pts = rng.normal(0, 5e4, (40, 3)) + frame.centre
    pose = np.array([0.3, -1.1, 0.2, 0.93, 0.04, -0.02])
    obs = project(frame, pose, pts)[:, :2]
    found = rng.uniform(size=40) < 0.7
    obs[~found] = 0.0                                       # missing entries carry nothing
    np.testing.assert_allclose(fit_pose_pnp(frame, obs, found, pts), pose, atol=1e-9)
    noisy = fit_pose_pnp(frame, obs + rng.normal(0, 0.5, obs.shape), found, pts)
    assert np.abs(noisy[:3] - pose[:3]).max() < 0.05 and abs(noisy[3] - pose[3]) < 0.02
    with pytest.raises(ValueError, match="at least 4"):
        fit_pose_pnp(frame, obs, np.arange(40) < 3, pts)


def test_the_chain_agrees_on_real_labels(codebook, train_params):
    """DAFI render -> retrieval of the committed selection -> O, and teacher params -> pose -> G: the two meet (the
    conventions of every module agree), and a perturbed estimate shows in the kernel that should carry it."""
    from engine.geometry import cpr
    from engine.methods.cprfa.vertex_selection import load_vertex_selection
    from engine.paths import weights_path

    if not weights_path("cprfa_vertices.npz").exists():
        pytest.skip("weights/cprfa_vertices.npz not built (python -m engine.methods.cprfa.vertex_selection)")
    sel = load_vertex_selection()
    params, pose_deg = train_params
    i = int(np.argmin(np.abs(np.abs(pose_deg[:, 0]) - 35)))
    dafi, mask = render_dafi(codebook, None, params[i])
    obs, found, _ = retrieve_kdtree(dafi, mask, sel.codes, sel.threshold)
    pose, alpha = cpr.params_to_pose(sel.frame, params[i])
    pts = cpr.shape_points(sel.mean, sel.basis, alpha)
    gen = cpr.project(sel.frame, pose, pts)[:, :2]
    assert found.mean() > 0.6
    assert np.median(np.linalg.norm(obs - gen, axis=1)[found]) < 0.6
    on = cpr.pair_mask(found[sel.layout].astype(float)) * (1 - np.eye(sel.layout.shape[1])) > 0

    def kernels(p):
        g = cpr.project(sel.frame, p, pts)[:, :2]
        return (cpr.cpr_translation(obs, g, found, sel.layout), cpr.cpr_scale(obs, g, found, sel.layout),
                cpr.cpr_in_plane(obs, g, found, sel.layout))

    t, s, r = kernels(pose)
    assert abs(np.median(t[:3][on])) < 0.5 and abs(np.median(s[on]) - 1) < 0.02 and abs(np.median(r[on])) < 0.02
    shifted = pose + [0, 0, 0, 0, 4.0 / 120, 0]              # G 4 px right of O
    assert abs(np.median(kernels(shifted)[0][:3][on]) + 4.0) < 0.5
    bigger = pose * [1, 1, 1, 1.1, 1, 1]
    assert abs(np.median(kernels(bigger)[1][on]) - 1.1) < 0.03
    turned = pose + [0, 0, 0.1, 0, 0, 0]                     # G turned by +0.1 in rz: O is G turned by -0.1
    assert abs(np.median(kernels(turned)[2][on]) - np.sin(0.1)) < 0.02
    # DAFI + PnP from the retrieved points recovers the label's pose
    fit = cpr.fit_pose_pnp(sel.frame, obs, found, pts)
    assert np.abs(fit[:3] - pose[:3]).max() < 0.03 and abs(fit[3] - pose[3]) < 0.02


def test_observed_pairs_are_reused_across_estimates():
    torch = pytest.importorskip("torch")
    from engine.geometry import torch_cpr

    obs, gen, found, layout = _kernel_inputs(np.random.default_rng(23), b=2)
    o, f, lay = torch.from_numpy(obs), torch.from_numpy(found), torch.from_numpy(layout)
    op = torch_cpr.ObservedPairs(o, f, lay)
    for shift in (0.0, 3.0):
        g = torch.from_numpy(gen + shift)
        np.testing.assert_allclose(op.kernels(g).numpy(), torch_cpr.cpr_all(o, g, f, lay).numpy(), atol=1e-12)
        both = op.kernels(g, ("in_plane", "translation")).numpy()
        np.testing.assert_allclose(both[:, :3], torch_cpr.cpr_in_plane(o, g, f, lay).numpy(), atol=1e-12)
        np.testing.assert_allclose(both[:, 3:], torch_cpr.cpr_translation(o, g, f, lay).numpy(), atol=1e-12)
    g = torch.from_numpy(gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: op.kernels(x), (g,), eps=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unknown CPR kernel"):
        op.kernels(g, ("rotation",))
