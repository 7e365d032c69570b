"""PRNet and 3DSTN: their geometric layers against direct computations, ONNX parity, tiny overfit runs."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.facemodel import N_MESH, load_face_model  # noqa: E402


@pytest.fixture(scope="module")
def fm():
    return load_face_model()


# ---- PRNet: the UV position map -------------------------------------------------------------------------------
def test_position_map_is_barycentric_interpolation(fm):
    from engine.methods.prnet import layout

    lay = layout()
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 120, (N_MESH + 68, 3))
    pmap = lay.render(pts)
    # direct: pick covered texels, interpolate their triangle's corners by hand
    ys, xs = np.nonzero(lay.covered)
    for y, x in list(zip(ys, xs))[::400]:
        t = lay.triangles[lay.tri_id[y, x]]
        want = (pts[t] * lay.bary[y, x][:, None]).sum(0)
        assert np.allclose(pmap[y, x], want, atol=1e-6)
    assert np.allclose(lay.matrix() @ pts, pmap.reshape(-1, 3), atol=1e-4)


def test_position_map_reads_back_the_points(fm, train_dir):
    from engine.methods.prnet import layout
    from engine.training.targets import all_points

    lab = np.load(train_dir / "labels.npz")
    pts = all_points(fm, lab["teacher_params"][:20]).astype(np.float64)
    lay = layout()
    err = np.array([np.linalg.norm(lay.sample(lay.render(p))[:, :2] - p[:, :2], axis=1).mean() for p in pts])
    assert err.mean() < 0.5  # the 64x64 map's discretisation floor


def test_prnet_mask_ratio(fm):
    from engine.methods.prnet import layout

    w = layout().weights
    assert set(np.unique(w)) == {0.0, 3.0, 4.0, 16.0}
    assert (w == 16).sum() >= 68


def test_prnet_has_the_papers_layer_counts():
    from torch import nn

    from engine.methods.prnet.network import PRNet, ResBlock, UpConv

    m = PRNet()
    assert sum(isinstance(x, ResBlock) for x in m.modules()) == 10
    ups = [x for x in m.modules() if isinstance(x, UpConv)]
    assert len(ups) == 17 and all(u.conv.kernel_size == (4, 4) for u in ups)
    assert m(torch.zeros(1, 3, 120, 120)).shape == (1, 3, 64, 64)
    assert any(isinstance(x, nn.ReLU) for x in m.modules())


def test_prnet_fused_export_equals_the_trained_network():
    """The shipped graph folds BatchNorm and turns stride-1 transposed convolutions into plain ones: same map."""
    from engine.methods.prnet.network import PRNet, fused_for_export

    torch.manual_seed(0)
    m = PRNet()
    for mod in m.modules():  # non-trivial weights and running statistics everywhere
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
        elif isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(mod.weight, std=0.1)
            if mod.bias is not None:
                torch.nn.init.normal_(mod.bias, std=0.1)
    m.eval()
    x = torch.rand(2, 3, 120, 120) * 2 - 1
    with torch.no_grad():
        want, got = m(x), fused_for_export(m)(x)
    assert want.abs().max() > 1.0
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))


# ---- 3DSTN: camera projection, TPS, back-projection ----------------------------------------------------------
def test_torch_tps_matches_numpy():
    from engine.geometry.tps import tps_apply
    from engine.methods.stn3d.network import tps_warp

    rng = np.random.default_rng(1)
    pts, ctrl = rng.normal(size=(50, 3)), rng.normal(size=(8, 3))
    params = rng.normal(size=(2, 3, 12))
    got = tps_warp(torch.from_numpy(pts), torch.from_numpy(ctrl), torch.from_numpy(params)).numpy()
    for b in range(2):
        assert np.allclose(got[b], tps_apply(pts, ctrl, params[b]), atol=1e-8)


def test_torch_camera_matches_numpy_and_direct_projection():
    from engine.methods.stn3d.geometry import project
    from engine.methods.stn3d.network import camera_project

    rng = np.random.default_rng(2)
    cam = np.concatenate([rng.normal(size=11) * [30, 2, 1, 60, 1, -30, 2, 60, 0.01, 0.02, 0.01], [1.0]]).reshape(3, 4)
    pts = rng.normal(size=(40, 3))
    got = camera_project(torch.from_numpy(cam)[None], torch.from_numpy(pts)[None])[0].numpy()
    assert np.allclose(got, project(cam, pts))
    h = cam @ np.append(pts[0], 1.0)
    assert np.allclose(got[0, :2], h[:2] / h[2])  # projective division, by hand


def test_rewarp_puts_landmarks_on_the_refined_points(fm):
    from engine.methods.stn3d.geometry import generic_face, project, rewarp_to_landmarks

    g = generic_face(fm)
    cam = np.array([[40.0, 1.0, 2.0, 60.0], [0.5, -40.0, 1.0, 62.0], [0.002, 0.001, 0.003, 1.0]])
    before = project(cam, g)
    refined = before[N_MESH:, :2] + np.random.default_rng(3).normal(scale=2.0, size=(68, 2))
    after = project(cam, rewarp_to_landmarks(cam, g, refined))
    assert np.abs(after[N_MESH:, :2] - refined).max() < 0.01
    # the rest of the face follows: it moves about as much as the landmarks did (2 px noise), not far more
    assert np.median(np.linalg.norm(after[:N_MESH, :2] - before[:N_MESH, :2], axis=1)) < 3.0


def test_stn3d_teacher_camera_reproduces_teacher_points(fm, train_dir):
    from engine.methods.stn3d.geometry import generic_face, normalisation, project
    from engine.methods.stn3d.train import teacher_cameras

    lab = np.load(train_dir / "labels.npz")
    p = lab["teacher_params"][:5].astype(np.float64)
    cams = teacher_cameras(p, *normalisation(fm))
    for c, q in zip(cams, p):
        q = q.copy()
        q[12:] = 0
        got = project(np.append(c, 1.0).reshape(3, 4), generic_face(fm))
        assert np.abs(got[:, :2] - fm.points(q)[:, :2]).max() < 1e-6


# ---- both: tiny overfit, ONNX parity ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["prnet", "3dstn"])
def test_tiny_overfit_and_onnx_parity(name, train_dir, tmp_path):
    import onnxruntime as ort
    from torch.utils.data import default_collate

    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    torch.set_num_threads(2)
    recipe = get_recipe(name)
    recipe.augment = None
    ts = load_training_set(limit=8)
    batch = default_collate([recipe.make_dataset(ts, 0)[i] for i in range(8)])
    model = recipe.build(ts)
    batch = recipe.batch_targets(batch)  # targets built per batch (prnet's dense maps)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss, _ = recipe.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    path = export_onnx(recipe, model, tmp_path / f"{name}.onnx")
    x = batch["image"][:2]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = recipe.export_module(model)(x)
    want = want if isinstance(want, (tuple, list)) else (want,)
    for g, w in zip(got, want):
        assert np.allclose(g, w.numpy(), rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(w.numpy()).max())))
