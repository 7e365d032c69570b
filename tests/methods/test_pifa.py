"""PIFA (the visualization maths themselves: tests/geometry/test_visualization.py): a numerical gradient check of
the layer in M and p, gradients across blocks, the no-vis ablation, the parameter
conventions against the teacher, ONNX parity, a tiny overfit run and the method contract without weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.facemodel import N_MESH, load_face_model  # noqa: E402
from engine.geometry import visualization as nv  # noqa: E402


@pytest.fixture(scope="module")
def fm():
    return load_face_model()


def tiny_net(fm, use_vis=True, seed=0):
    from engine.methods.pifa.network import PIFA

    torch.manual_seed(seed)
    p0 = np.zeros(58)
    p0[0] = p0[5] = 80.0
    scale = np.full(58, 1.0)
    scale[:8] = 5.0
    filters = ((4, 4), (4, 4), (4, 4), (4, 4), (4, 4), (4, 4))
    return PIFA(fm, np.full(50, 1e5), p0, scale, filters=filters, use_vis=use_vis, hidden=16).eval()


def test_frontability_is_the_normal_facing_the_camera(fm):
    from engine.geometry.rotation import euler_to_matrix
    from engine.methods.pifa.network import mean_normals

    n0 = mean_normals(fm).astype(np.float64)
    frontal = np.concatenate([np.eye(3)[:2] * 50.0, np.zeros((2, 1))], axis=1)
    assert np.allclose(nv.frontability(frontal, n0), np.maximum(n0[:, 2], 0))
    turned = np.concatenate([euler_to_matrix(70, 0, 0)[:2] * 50.0, np.zeros((2, 1))], axis=1)
    g = nv.frontability(turned, n0)
    # at 70 degrees of yaw one cheek faces away (pruned) and the other the camera
    left, right = fm.mean[:N_MESH, 0] < np.percentile(fm.mean[:N_MESH, 0], 15), \
        fm.mean[:N_MESH, 0] > np.percentile(fm.mean[:N_MESH, 0], 85)
    assert (g[:N_MESH][left] == 0).mean() > 0.8 or (g[:N_MESH][right] == 0).mean() > 0.8


# ---- the layer inside the network -------------------------------------------------------------------------------
def test_visualization_layer_gradcheck_in_M_and_p(fm):
    from engine.methods.pifa.network import VisualizationConfig, VisualizationLayer

    layer = VisualizationLayer(fm, np.full(50, 3e4), VisualizationConfig(sigma=9.0)).double()
    rng = np.random.default_rng(1)
    from engine.geometry.rotation import euler_to_matrix

    m = np.concatenate([euler_to_matrix(20, 5, -3)[:2] * 70.0, [[1.3], [-2.1]]], axis=1)
    p = torch.from_numpy(np.concatenate([m.reshape(-1), rng.normal(scale=0.5, size=50)]))[None]
    p.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q: layer(q, 20), (p,), eps=1e-6, atol=1e-6, rtol=1e-4)
    jac = torch.autograd.functional.jacobian(lambda q: layer(q, 20).sum((1, 2, 3)), p)[0, 0]
    assert jac[:8].abs().max() > 1e-3 and jac[8:].abs().max() > 1e-3     # both M and p move the rendering


def test_output_contract_and_p0(fm):
    from engine.methods.pifa.network import ExportPIFA

    net = tiny_net(fm)
    x = torch.rand(3, 3, 120, 120) * 2 - 1
    with torch.no_grad():
        ps = net(x)
        params, points = ExportPIFA(net)(x)
    assert ps.shape == (3, 7, 58) and torch.equal(ps[:, 0], net.p0.expand(3, -1))
    assert params.shape == (3, 58) and points.shape == (3, 536, 3) and torch.equal(params, ps[:, -1])
    assert len({id(b) for b in net.blocks}) == 6 and not any(
        a.conv2[0].weight is b.conv2[0].weight for a, b in zip(net.blocks, net.blocks[1:]))


def test_block6_loss_reaches_block1_and_each_block_sees_its_rendering(fm):
    net = tiny_net(fm).train()
    x = torch.rand(2, 3, 120, 120) * 2 - 1
    ps = net(x)
    ps[:, 6].pow(2).sum().backward()
    assert net.blocks[0].conv1[0].weight.grad.abs().sum() > 0
    # the only way P^5 enters block 6's update is the visualization: its gradient must get through
    half = torch.nn.functional.avg_pool2d(x, 2)
    feats, p5 = None, net.p0[None].expand(2, -1)
    with torch.no_grad():
        for k in range(5):
            feats, p5 = net.step(k, x, half, p5, feats)
    p5 = p5.clone().requires_grad_(True)
    _, p6 = net.step(5, x, half, p5, feats)
    (g,) = torch.autograd.grad((p6 - p5).pow(2).sum(), p5)
    assert g.abs().sum() > 0


def test_visualization_bypass_and_no_vis_ablation(fm):
    x = torch.rand(1, 3, 120, 120) * 2 - 1
    half = torch.nn.functional.avg_pool2d(x, 2)
    for use_vis in (True, False):
        net = tiny_net(fm, use_vis=use_vis)
        updates = []
        net.blocks[1].register_forward_hook(lambda mod, inp, out: updates.append(out[1]))   # block 2's raw dP
        with torch.no_grad():
            feats, p = net.step(0, x, half, net.p0[None], None)
            moved = p.clone()
            moved[0, 0] *= 1.3                              # a different camera and shape, same image and features
            moved[0, 8] += 2.0
            net.step(1, x, half, p, feats)
            net.step(1, x, half, moved, feats)
            vis_a, vis_b = net.vis(p, 60), net.vis(moved, 60)
        assert not torch.allclose(vis_a, vis_b)
        if use_vis:   # the block's update depends on the rendering of P
            assert (updates[0] - updates[1]).abs().max() > 1e-2 * updates[0].abs().max()
        else:         # no-vis: nothing of P reaches the block
            assert torch.equal(updates[0], updates[1])
        extra = 1 if use_vis else 0
        assert net.blocks[0].conv1[0].in_channels == 3 + extra
        assert net.blocks[1].conv1[0].in_channels == 3 + 4 + extra


def test_no_vis_is_a_recipe_ablation():
    from engine.training.recipes import get_recipe

    assert get_recipe("pifa").use_vis and not get_recipe("pifa", "no-vis").use_vis


# ---- parameters against the teacher, training, export, the method -----------------------------------------------
def test_teacher_parameters_reproduce_the_teacher_points_and_jitter_is_refitted_exactly(fm, train_dir):
    from engine.methods.pifa.network import VisualizationLayer
    from engine.methods.pifa.train import fit_camera, initial_parameters, teacher_parameters
    from engine.training.augment import AugmentConfig, augment
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=16)
    coef_std = ts.params[:, 12:].astype(np.float64).std(0) + 1e-8
    target = teacher_parameters(ts.params, fm, coef_std)
    layer = VisualizationLayer(fm, coef_std).double()
    pts = layer.points(torch.from_numpy(target)).numpy()
    assert np.abs(pts[..., :2] - ts.points[..., :2]).max() < 1e-2
    p0 = initial_parameters(target)
    assert p0[8:].max() == 0 and p0[1] == p0[2] == p0[4] == p0[6] == 0 and p0[0] == p0[5] > 0
    # a box jitter (scale + shift) keeps a weak-perspective camera on the same shape: refitted exactly
    rng = np.random.default_rng(0)
    perm = np.arange(536)
    cfg = AugmentConfig(flip=0.0, rotate=0.0, scale=(0.9, 1.1), shift=0.06, occlude=0.0)
    _, (jit,) = augment(np.asarray(ts.images[0]), [ts.points[0]], [perm], rng, cfg)
    shape = layer.shape(torch.from_numpy(target[:1]))
    m = fit_camera(shape, torch.from_numpy(jit[None, :, :2].astype(np.float64)))
    refit = layer.points(torch.cat([m.reshape(1, 8), torch.from_numpy(target[:1, 8:])], 1)).numpy()
    assert np.abs(refit[0, :, :2] - jit[:, :2]).max() < 1e-2


def test_tiny_overfit_onnx_parity_and_method_contract(fm, train_dir, tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort
    from torch.utils.data import default_collate

    import engine.paths
    from engine.methods.base import MethodUnavailable, available_methods, registry
    from engine.methods.factory import create
    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    torch.set_num_threads(1)
    recipe = get_recipe("pifa")
    recipe.width = 0.25
    ts = load_training_set(limit=8)
    batch = default_collate([recipe.make_dataset(ts, 0)[i] for i in range(8)])
    model = recipe.build(ts)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, parts = [], []
    for _ in range(25):
        loss, p = recipe.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        parts.append(p)
    assert losses[-1] < 0.5 * losses[0]
    assert parts[-1]["lm6_px"] < parts[0]["lm6_px"] and parts[-1]["param1"] < parts[0]["param1"]

    model.eval()
    path = export_onnx(recipe, model, tmp_path / "pifa.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"ScatterElements", "If"} & ops == {"ScatterElements"}  # the rendering is in the graph, no If
    x = batch["image"][:2]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert tuple(o.name for o in sess.get_outputs()) == registry()["pifa"].outputs
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = recipe.export_module(model)(x)
    for g, w in zip(got, want):
        assert np.allclose(g, w.numpy(), rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(w.numpy()).max())))

    # without weights the method is listed but not offered; with them it aligns
    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / "none" / name)
    monkeypatch.setattr("engine.methods.onnx_method.weights_path", lambda name: tmp_path / "none" / name)
    assert "pifa" in registry() and "pifa" not in available_methods()
    with pytest.raises(MethodUnavailable, match="pifa"):
        create("pifa")
    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / name)
    monkeypatch.setattr("engine.methods.onnx_method.weights_path", lambda name: tmp_path / name)
    crop = np.asarray(ts.images[0])
    res = create("pifa", threads=1).align(crop)
    assert res.landmarks.shape == (68, 3) and res.mesh.shape == (N_MESH, 3) and res.pose.shape == (3,)
    assert res.visible.shape == (68,) and res.visible.dtype == bool and res.method == "pifa"
    with torch.no_grad():
        _, want_pts = recipe.export_module(model)(
            torch.from_numpy(crop.transpose(2, 0, 1)[None].copy()).float() / 127.5 - 1)
    assert np.allclose(res.landmarks, want_pts[0, N_MESH:].numpy(), atol=1e-2)
    crops = [np.asarray(ts.images[i]) for i in range(3)]
    batched = create("pifa", threads=1).align_batch(crops)       # one ONNX call, batched decode
    for crop, r in zip(crops, batched):
        one = create("pifa", threads=1).align(crop)
        assert np.allclose(r.landmarks, one.landmarks, atol=1e-3) and np.allclose(r.pose, one.pose, atol=1e-3)


def test_pose_from_camera_matches_the_rotation(fm):
    from engine.geometry.rotation import euler_to_matrix
    from engine.methods.pifa import pose_from_camera

    for angles in [(0, 0, 0), (40, -10, 15), (-70, 20, -5)]:
        m = np.concatenate([euler_to_matrix(*angles)[:2] * 75.0, [[2.0], [-1.0]]], axis=1)
        assert np.allclose(pose_from_camera(np.concatenate([m.reshape(-1), np.zeros(50)])), angles, atol=1e-6)


def test_validation_reports_every_block(dev_dir, train_dir, fm):
    from engine.training.harness import Validator
    from engine.training.model_card import stage_text
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    recipe = get_recipe("pifa")
    recipe.width = 0.25
    model = recipe.build(load_training_set(limit=16))
    val = Validator(limit=20)
    stages = val.stages(recipe, model)
    assert list(stages) == [f"block{k}" for k in range(7)]
    assert stages["block6"] == val(recipe, model)           # the last block is what validation scores
    assert stages["block0"] != stages["block6"]
    text = stage_text([{"epoch": 3, "val_nme_stages": stages}])
    assert text.count("| block") == 7 and "epoch 3" in text
    assert Validator.stages(val, get_recipe("baseline"), model) == {}   # single-stage recipes: nothing extra


def test_nose_mask_is_normalised_and_peaks_at_the_nose(fm):
    from engine.methods.pifa.network import NOSE_TIP, VisualizationLayer

    a = VisualizationLayer(fm, np.ones(50)).mask.numpy().astype(np.float64)
    assert abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-4
    assert a.argmax() == NOSE_TIP and (a[N_MESH:N_MESH + 17] < 0).all()    # the jaw contour is below the mean
