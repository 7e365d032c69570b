"""MT-CNN 3D: the torch normals twin, the MSIF layer against a direct computation, stage 2 depending on its
patches, the pose targets, a tiny overfit run, ONNX parity and the method's output contract."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.facemodel import N_MESH, load_face_model  # noqa: E402


@pytest.fixture(scope="module")
def fm():
    return load_face_model()


def _posed_points(fm, yaw_deg: float, seed: int = 0) -> np.ndarray:
    """(536, 3) pixel-frame points of the mean face turned by ``yaw_deg``, slightly perturbed."""
    from engine.geometry.rotation import euler_to_matrix

    r = euler_to_matrix(yaw_deg, 5.0, -3.0)
    pts = fm.mean.astype(np.float64) @ r.T
    pts = pts / np.ptp(pts[:, 0]) * 80 * np.array([1.0, -1.0, 1.0]) + np.array([60.0, 60.0, 0.0])
    return pts + np.random.default_rng(seed).normal(scale=0.3, size=pts.shape)


def _training_set(points: np.ndarray):
    """A TrainingSet holding only ``points`` (what MTCNN3DRecipe.build reads: the output statistics)."""
    from engine.training.targets import TrainingSet

    n = len(points)
    return TrainingSet(np.zeros((n, 120, 120, 3), np.uint8), np.zeros((n, 62), np.float32),
                       points.astype(np.float32), np.full((n, 21, 2), np.nan, np.float32),
                       np.zeros((n, 3), np.float32), np.array([f"synthetic{i}" for i in range(n)]))


# ---- torch twin of the mesh normals ----------------------------------------------------------------------------
def test_torch_normals_match_numpy_in_value_and_gradient(fm):
    from engine.geometry.mesh import face_normals, vertex_normals
    from engine.geometry.torch_mesh import face_normals as t_face_normals
    from engine.geometry.torch_mesh import incidence_matrix, selected_vertex_normals

    tris = fm.triangles.astype(np.int64)
    inc = torch.from_numpy(incidence_matrix(tris, fm.lmk_anchor)).double()
    pts = _posed_points(fm, 40.0)[:N_MESH]
    v = torch.from_numpy(pts)[None].requires_grad_(True)
    assert np.allclose(t_face_normals(v, torch.from_numpy(tris))[0].detach().numpy(), face_normals(pts, tris))
    got = selected_vertex_normals(v, torch.from_numpy(tris), inc)[0]
    assert np.allclose(got.detach().numpy(), vertex_normals(pts, tris)[fm.lmk_anchor], atol=1e-10)

    # gradient of a weighted sum of the normals against central differences of the numpy function
    w = np.random.default_rng(1).normal(size=(68, 3))
    (got * torch.from_numpy(w)).sum().backward()
    grad = v.grad[0].numpy()
    moved = np.unique(tris[inc.numpy().astype(bool).any(0)])  # the vertices the anchors' normals depend on
    for i in moved[::7]:
        for d in range(3):
            step = np.zeros_like(pts)
            step[i, d] = 1e-5
            fd = ((vertex_normals(pts + step, tris)[fm.lmk_anchor] * w).sum()
                  - (vertex_normals(pts - step, tris)[fm.lmk_anchor] * w).sum()) / 2e-5
            assert abs(fd - grad[i, d]) < 1e-5 * max(1.0, abs(fd))


def test_pose_targets_match_pose_from_points(fm):
    from engine.methods.base import pose_from_points
    from engine.methods.mtcnn3d.train import pose_targets

    pts = np.stack([_posed_points(fm, y, seed=i) for i, y in enumerate([-60.0, -20.0, 0.0, 35.0, 70.0])])
    got = pose_targets(torch.from_numpy(pts).float(), torch.from_numpy(fm.mean)).numpy()
    want = np.stack([pose_from_points(fm, p) for p in pts])
    assert np.abs(got - want).max() < 0.05
    assert np.abs(got[:, 0] - [-60, -20, 0, 35, 70]).max() < 2.0   # and it is the yaw we turned the face by


# ---- MSIF: patches around the keypoints, zeroed where invisible ------------------------------------------------
def _bilinear(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Direct bilinear sample of a (C, H, W) image at pixel-centre coordinates, 0 outside (grid_sample's zeros)."""
    c, h, w = img.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= xx < w and 0 <= yy < h:
                out += img[:, yy, xx] * wx * wy
    return out


def test_msif_samples_patches_tiles_them_and_zeroes_invisible_ones():
    from engine.methods.mtcnn3d.network import PATCH, PATCH_COLS, PATCH_ROWS, msif

    rng = np.random.default_rng(0)
    img = rng.uniform(-1, 1, (2, 3, 120, 120))
    kp = rng.uniform(-5, 125, (2, 68, 2))          # some patches run off the crop
    vis = (rng.uniform(size=(2, 68)) > 0.3).astype(np.float64)
    out = msif(torch.from_numpy(img), torch.from_numpy(kp), torch.from_numpy(vis)).numpy()
    assert out.shape == (2, 3, PATCH_ROWS * PATCH, PATCH_COLS * PATCH)
    half = (PATCH - 1) / 2
    for b in range(2):
        for k in range(0, 68, 5):
            r, c = divmod(k, PATCH_COLS)
            tile = out[b, :, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
            if vis[b, k] == 0:
                assert not tile.any()
                continue
            for i, j in ((0, 0), (3, 11), (PATCH - 1, PATCH - 1), (7, 8)):
                want = _bilinear(img[b], kp[b, k, 0] - half + j, kp[b, k, 1] - half + i)
                assert np.allclose(tile[:, i, j], want, atol=1e-9)
    assert not out[:, :, (PATCH_ROWS - 1) * PATCH:, (68 % PATCH_COLS) * PATCH:].any()  # the unused slots


def test_stage1_normal_test_decides_which_patches_are_zeroed(fm):
    """A face turned 70 degrees: the keypoints the numpy normals call turned away get zero patches in the model."""
    from engine.geometry.mesh import vertex_normals
    from engine.methods.mtcnn3d.train import MTCNN3DRecipe

    pts = _posed_points(fm, 70.0).astype(np.float32)
    ts = _training_set(np.stack([pts, pts]))
    model = MTCNN3DRecipe().build(ts).eval()
    got = model.keypoint_normals_z(torch.from_numpy(pts)[None])[0].numpy()
    want = vertex_normals(pts[:N_MESH].astype(np.float64), fm.triangles)[fm.lmk_anchor][:, 2]
    assert np.allclose(got, want, atol=1e-5)
    assert 5 < (want <= 0).sum() < 40          # a real mix of facing and turned-away keypoints
    # the model is built on these points: with all-zero raw outputs stage 1 predicts exactly the mean = pts
    for m in model.stage1.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 120, 120))
    assert np.array_equal(out["msif_visible"][0].numpy(), (want > 0).astype(np.float32))


def test_stage2_depends_on_its_patches(monkeypatch, fm):
    """Bypass check: change only what MSIF hands stage 2 and stage 2's outputs must change (stage 1's not)."""
    import engine.methods.mtcnn3d.network as net
    from engine.methods.mtcnn3d.train import MTCNN3DRecipe

    torch.manual_seed(0)
    pts = np.stack([_posed_points(fm, 10.0 * i, seed=i) for i in range(3)]).astype(np.float32)
    ts = _training_set(pts)
    model = MTCNN3DRecipe().build(ts).eval()
    for lin in (model.stage2.keypoint_head[-1], model.stage2.pose_head[-1], model.stage2.shape_fc):
        torch.nn.init.normal_(lin.weight, std=0.05)   # stage 2 starts at zero increments: give it some
    x = torch.rand(1, 3, 120, 120) * 2 - 1
    with torch.no_grad():
        a = model(x)
        real = net.msif
        monkeypatch.setattr(net, "msif", lambda *args, **kw: real(*args, **kw) * 0.5)
        b = model(x)
    assert torch.equal(a["keypoints1"], b["keypoints1"])
    for key in ("keypoints2", "shape2", "pose2"):
        assert (a[key] - b[key]).abs().max() > 1e-3, key


# ---- training and export ---------------------------------------------------------------------------------------
def test_tiny_overfit_onnx_parity_and_method_contract(fm, train_dir, tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort
    from torch.utils.data import default_collate

    import engine.paths
    from engine.geometry.mesh import vertex_normals
    from engine.methods.factory import create
    from engine.methods.mtcnn3d import OUTPUTS
    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    torch.set_num_threads(2)
    recipe = get_recipe("mtcnn3d")
    recipe.augment = None
    ts = load_training_set(limit=8)
    batch = default_collate([recipe.make_dataset(ts, 0)[i] for i in range(8)])
    model = recipe.build(ts)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses, parts = [], []
    for _ in range(30):
        loss, p = recipe.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        parts.append(p)
    assert losses[-1] < 0.5 * losses[0]
    assert parts[-1]["s2_align2d"] < parts[0]["s2_align2d"]        # stage 2 learns too, not only stage 1

    model.eval()
    path = export_onnx(recipe, model, tmp_path / "mtcnn3d.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "GridSample" in ops                                      # the patch extraction is in the graph
    x = batch["image"][:2]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert tuple(o.name for o in sess.get_outputs()) == OUTPUTS
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = recipe.export_module(model)(x)
    for g, w in zip(got, want):
        assert np.allclose(g, w.numpy(), rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(w.numpy()).max())))

    # the method on that model: AlignmentResult contract, stage-1 ablation, the paper's visibility output
    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / name)
    monkeypatch.setattr("engine.methods.onnx_method.weights_path", lambda name: tmp_path / name)
    crop = np.asarray(ts.images[0])
    res = create("mtcnn3d", threads=1).align(crop)
    assert res.landmarks.shape == (68, 3) and res.mesh.shape == (N_MESH, 3) and res.pose.shape == (3,)
    assert res.visible.shape == (68,) and res.visible.dtype == bool and res.method == "mtcnn3d"
    want_pts = recipe.export_module(model)(torch.from_numpy(np.asarray(crop).transpose(2, 0, 1)[None].copy())
                                           .float() / 127.5 - 1)
    assert np.allclose(res.landmarks, want_pts[0][0, N_MESH:].detach().numpy(), atol=1e-2)
    res1 = create("mtcnn3d", threads=1, stages=1).align(crop)
    assert np.allclose(res1.landmarks, want_pts[3][0, N_MESH:].detach().numpy(), atol=1e-2)
    assert not np.allclose(res1.landmarks, res.landmarks)
    # the paper's v_i = N_c . N_i: z of each landmark's anchor normal on the returned mesh, computed directly
    for r in (res, res1):
        want_v = vertex_normals(r.mesh, fm.triangles)[fm.lmk_anchor, 2]
        assert r.normal_visibility.shape == (68,)
        assert np.allclose(r.normal_visibility, want_v, atol=1e-4)
    batch_res = create("mtcnn3d", threads=1).align_batch([crop, np.asarray(ts.images[1])])
    assert np.allclose(batch_res[0].normal_visibility, res.normal_visibility, atol=1e-5)
    assert not np.allclose(batch_res[1].normal_visibility, res.normal_visibility)


def test_missing_weights_fail_clearly(tmp_path, monkeypatch):
    import engine.paths
    from engine.methods.base import MethodUnavailable, available_methods
    from engine.methods.factory import create

    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / name)
    assert "mtcnn3d" not in available_methods()
    with pytest.raises(MethodUnavailable, match="mtcnn3d"):
        create("mtcnn3d")
