"""CPRFA (engineer B's side: HS-U-Net, DAFI targets, corruption, regressors, recipe, export, method). The geometry
(DAFI rendering, retrieval, CPR kernels, pose) is tested in tests/test_cprfa_geometry*.py."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engine.facemodel import N_MESH  # noqa: E402


# ---- HS-U-Net -----------------------------------------------------------------------------------------------------
def test_hsunet_heads_at_three_scales_and_decoded_ranges():
    from engine.methods.cprfa.hsunet import HSUNet, SCALES

    net = HSUNet((4, 6, 8, 8)).eval()
    x = torch.randn(2, 3, 120, 120)
    heads = net(x)
    assert [tuple(h.shape) for h in heads] == [(2, 4, s, s) for s in SCALES]
    dafi, fg = net.dafi(x)
    assert dafi.shape == (2, 3, 120, 120) and fg.shape == (2, 120, 120)
    assert float(dafi.min()) >= 0 and float(dafi.max()) <= 1 and float(fg.min()) >= 0 and float(fg.max()) <= 1
    assert torch.equal(net(x, all_scales=False)[0], heads[-1])


def test_coarse_targets_are_foreground_averages():
    from engine.methods.cprfa.hsunet import scale_targets

    g = torch.Generator().manual_seed(0)
    dafi = torch.rand(1, 3, 120, 120, generator=g)
    mask = torch.rand(1, 120, 120, generator=g) > 0.4
    d30, m30 = scale_targets(dafi, mask, 30)
    # direct: block (2, 5) of 4 x 4 pixels
    blk_m = mask[0, 8:12, 20:24].float()
    blk_d = dafi[0, :, 8:12, 20:24]
    assert abs(float(m30[0, 2, 5]) - float(blk_m.mean())) < 1e-6
    want = (blk_d * blk_m).sum((1, 2)) / blk_m.sum()
    assert torch.allclose(d30[0, :, 2, 5], want, atol=1e-6)


def test_hierarchical_loss_ignores_background_codes_and_falls_in_a_tiny_overfit():
    from engine.methods.cprfa.hsunet import HSUNet, hierarchical_loss

    torch.manual_seed(0)
    dafi = torch.rand(2, 3, 120, 120)
    mask = torch.zeros(2, 120, 120, dtype=torch.bool)
    mask[:, 30:90, 30:90] = True
    net = HSUNet((4, 6, 8, 8))
    heads = net(torch.randn(2, 3, 120, 120))
    base, _ = hierarchical_loss(heads, dafi, mask)
    other = dafi.clone()
    other[:, :, :20] = 0.0          # background rows only: no change
    again, _ = hierarchical_loss(heads, other, mask)
    assert torch.allclose(base, again)
    x = torch.randn(2, 3, 120, 120)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = hierarchical_loss(net(x), dafi * 0 + 0.3, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# ---- DAFI targets ---------------------------------------------------------------------------------------------------
def test_warped_cache_equals_the_render_of_the_warped_mesh(train_dir):
    from engine.geometry.dafi import dafi_from_vertices
    from engine.methods.cprfa.dafi_targets import cached_dafis, dafi_tensor, load_codebook, warp_dafi
    from engine.training.augment import AugmentConfig, geometric_matrix, warp_points
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=4)
    u8 = cached_dafis(ts.params)
    cb = load_codebook()
    rng = np.random.default_rng(3)
    cfg = AugmentConfig(flip=0.0, rotate=30.0, scale=(0.9, 1.1), shift=0.06)
    affine = np.stack([geometric_matrix(rng, cfg, False) for _ in range(4)]).astype(np.float32)
    dafi, mask = warp_dafi(*dafi_tensor(np.asarray(u8)), torch.from_numpy(affine))
    for i in range(4):
        want, want_mask = dafi_from_vertices(cb, warp_points(cb.vertices(ts.params[i].astype(np.float64)),
                                                             affine[i].astype(np.float64)).astype(np.float64))
        got_mask = mask[i].numpy()
        both = got_mask & want_mask
        assert (got_mask != want_mask).mean() < 0.015            # boundary pixels only
        err = np.abs(dafi[i].numpy().transpose(1, 2, 0)[both] - want[both])
        assert err.mean() < 0.002 and np.percentile(err, 99) < 0.012


def test_dafi_recipe_trains_on_warped_targets_without_the_reference_split_and_exports(train_dir, tmp_path):
    import onnxruntime as ort
    from torch.utils.data import default_collate

    from engine.methods.cprfa.dafi_targets import reference_rows
    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    recipe = get_recipe("cprfa-dafi")
    recipe.widths = (4, 6, 8, 8)
    ts = load_training_set(limit=24)
    model = recipe.build(ts)
    ds = recipe.make_dataset(ts, 0)
    rows = {int(ds[i]["index"]) for i in range(len(ds))}
    assert len(ds) == 24 - len(reference_rows(24)) and not rows & set(reference_rows(24).tolist())
    batch = recipe.batch_targets(default_collate([ds[i] for i in range(4)]))
    assert batch["dafi"].shape == (4, 3, 120, 120) and batch["dafi_mask"].shape == (4, 120, 120)
    loss, parts = recipe.loss(model, batch)
    assert torch.isfinite(loss) and {"l1_30", "l1_60", "l1_120", "ce_120"} <= set(parts)
    model.eval()
    path = export_onnx(recipe, model, tmp_path / "cprfa-dafi.onnx")
    x = batch["image"][:2].contiguous()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = recipe.export_module(model)(x)
    assert all(np.allclose(g, w.numpy(), atol=1e-4) for g, w in zip(got, want))
    assert recipe.landmarks(model, x).shape == (2, 68, 2)


def test_a_render_worker_writes_its_rows_of_the_cache_file(train_dir, tmp_path):
    from engine.methods.cprfa.dafi_targets import _render_chunk, render_rows
    from engine.training.targets import load_training_set

    params = load_training_set(limit=4).params
    path = tmp_path / "cache.u8"
    with open(path, "wb") as f:
        f.truncate(100 + 4 * 120 * 120 * 4)
    _render_chunk(str(path), 100, (4, 120, 120, 4), 2, params[2:4])    # what a worker process runs
    got = np.memmap(path, np.uint8, "r", offset=100, shape=(4, 120, 120, 4))
    want = np.zeros((2, 120, 120, 4), np.uint8)
    render_rows(params[2:4], want)
    assert np.array_equal(got[2:], want) and not got[:2].any() and want[..., 3].any()


def test_reference_split_is_held_out_of_the_unet_training():
    from engine.methods.cprfa.dafi_targets import reference_rows, training_rows

    ref, tr = reference_rows(19080), training_rows(19080)
    assert len(ref) == 954 and len(np.intersect1d(ref, tr)) == 0 and len(ref) + len(tr) == 19080


def test_dafi_landmarks_pick_the_nearest_foreground_code():
    from engine.methods.cprfa.train_dafi import dafi_landmarks

    g = torch.Generator().manual_seed(1)
    dafi = torch.rand(2, 3, 10, 12, generator=g)
    fg = (torch.rand(2, 10, 12, generator=g) > 0.3).float()
    codes = torch.rand(5, 3, generator=g)
    got = dafi_landmarks(dafi, fg, codes)
    for b in range(2):
        for k in range(5):
            best, where = 1e9, None
            for y in range(10):
                for x in range(12):
                    d = float(((dafi[b, :, y, x] - codes[k]) ** 2).sum())
                    if fg[b, y, x] > 0.5 and d < best:
                        best, where = d, (x, y)
            assert tuple(got[b, k].tolist()) == where


# ---- corruption matched to the U-Net ------------------------------------------------------------------------------
def test_corruption_reproduces_the_error_model_it_was_given():
    from engine.methods.cprfa.corruption import DafiErrorModel, corrupt, measure_errors

    mask = torch.zeros(16, 120, 120, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(120), torch.arange(120), indexing="ij")
    mask[:] = ((xx - 60) ** 2 + (yy - 58) ** 2) < 40 ** 2
    dafi = torch.stack([xx / 120.0, yy / 120.0, 0.5 + 0 * xx], 0)[None].expand(16, -1, -1, -1).float() * mask[:, None]
    model = DafiErrorModel((0.02, 0.01, 0.015), (0.005, 0.004, 0.006), 1.0, 1.0, 0.0, 0.0, 0)
    noisy, noisy_mask = corrupt(dafi, mask, model, torch.Generator().manual_seed(0))
    got = measure_errors(noisy, noisy_mask.float(), dafi, mask)
    assert np.allclose(got.smooth_std, model.smooth_std, rtol=0.35)
    assert np.allclose(got.pixel_std, model.pixel_std, rtol=0.35)
    assert abs(got.shift_mean - model.shift_mean) < 0.5
    # no corruption at all measures as none
    clean = measure_errors(dafi, mask.float(), dafi, mask)
    assert clean.code_l1 == 0 and clean.mask_iou == 1.0 and clean.shift_mean == 0


def _synthetic_faces(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(n, 120, 120, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(120), torch.arange(120), indexing="ij")
    mask[:] = ((xx - 60) ** 2 + (yy - 58) ** 2) < 40 ** 2
    dafi = torch.stack([xx / 120.0, yy / 120.0, 0.5 + 0 * xx], 0)[None].expand(n, -1, -1, -1).float() * mask[:, None]
    return dafi.contiguous(), mask


def test_warp_faces_moves_codes_along_the_surface():
    from engine.methods.cprfa.corruption import warp_faces

    dafi, mask = _synthetic_faces(2)
    same, same_mask = warp_faces(dafi, mask, torch.zeros(2, 2, 120, 120))
    assert torch.equal(same_mask, mask) and torch.allclose(same, dafi, atol=1e-6)
    shift = torch.zeros(2, 2, 120, 120)
    shift[:, 0] = 2.0                                  # sample 2 px to the right: the face moves 2 px left
    moved, moved_mask = warp_faces(dafi, mask, shift)
    inner = moved_mask & torch.roll(moved_mask, -2, 2) & torch.roll(moved_mask, 2, 2)
    assert torch.allclose(moved[:, 0][inner], (dafi[:, 0] + 2 / 120.0)[inner], atol=1e-5)
    assert torch.allclose(moved[:, 1][inner], dafi[:, 1][inner], atol=1e-6)   # a move along x leaves y alone
    assert moved_mask[:, 58, 19].all() and not moved_mask[:, 58, 98].any()   # the disc (21..99 on row 58) moved left


def test_warp_model_is_calibrated_to_the_retrieval_it_must_reproduce():
    """calibrate_warp recovers the warp size and code-noise scale that produced a target (found rate, error)."""
    from dataclasses import replace

    from engine.methods.cprfa.corruption import (DafiErrorModel, calibrate_warp, corrupt, corrupt_warp,
                                                 retrieval_statistics)
    from engine.methods.cprfa.geometry import Retrieval

    dafi, mask = _synthetic_faces(16)
    yy, xx = np.meshgrid(np.arange(35, 85, 10), np.arange(35, 85, 10), indexing="ij")
    codes = np.stack([xx.ravel() / 120.0, yy.ravel() / 120.0, np.full(xx.size, 0.5)], 1).astype(np.float32)
    retrieval = Retrieval(codes, 0.02)

    def retrieve(d, m):
        obs, found = retrieval(d, m)
        return obs, found > 0.5

    base = DafiErrorModel((0.05, 0.05, 0.05), (0.0,) * 3, 0.0, 0.0, 0.0, 0.0, 16, face_spread=0.3)
    truth = replace(base, warp_px=2.0, code_scale=0.3)
    d, m = corrupt_warp(dafi, mask, truth, torch.Generator().manual_seed(5))
    obs_gt, found_gt = retrieve(dafi, mask)
    target = retrieval_statistics(*reversed(retrieve(d, m)), found_gt, obs_gt)
    assert 0.2 < target[0] < 0.95 and 1.0 < target[1] < 4.0          # neither trivial nor hopeless
    got = calibrate_warp(base, dafi, mask, target, retrieve)
    assert abs(got.warp_px - 2.0) <= 0.5 and abs(got.code_scale - 0.3) <= 0.1
    with pytest.raises(ValueError, match="nothing to calibrate"):           # a U-Net that finds no vertex
        calibrate_warp(base, dafi, mask, (0.0, float("inf")), retrieve)
    # corrupt() dispatches on the model: the warp model when warp_px > 0, the code-noise model otherwise
    def seeded():
        return torch.Generator().manual_seed(1)

    warped = corrupt_warp(dafi, mask, got, seeded())[0]
    assert torch.equal(corrupt(dafi, mask, got, seeded())[0], warped)
    assert not torch.equal(corrupt(dafi, mask, base, seeded())[0], warped)


# ---- regressors and rounds (on a small synthetic geometry) -------------------------------------------------------
class _RecordingGeometry:
    """Stands in for VertexGeometry: CPR matrices depend on params and observations; records every call."""

    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.calls: list[tuple[str, torch.Tensor]] = []

    def matrix_size(self) -> int:
        return self.n

    def channels(self, group: str) -> int:
        return 2

    def observe(self, obs, found):
        return obs, found

    def cpr(self, group, params, observed):
        obs, found = observed
        self.calls.append((group, params.detach().clone()))
        b = params.shape[0]
        base = (obs[:, :self.n, 0, None] * found[:, :self.n, None]) / 100.0 - params[:, :1, None] * 0.1
        return torch.stack([base.expand(b, self.n, self.n), base.transpose(1, 2).expand(b, self.n, self.n)], 1)

    def translation_update(self, params, obs, found):
        return params.new_zeros(params.shape[0], 2)

    def reprojection_errors(self, params, update, obs, found, m, kappa):
        t = torch.arange(1, 2 * m + 1, dtype=params.dtype) / m
        return (obs.mean((1, 2))[:, None] - (params[:, None, 50:] + t[None, :, None] * update[:, None, 50:]).sum(-1)
                ).abs() + 0.1


def _round(consistency=False, order=None):
    from engine.methods.cprfa.network import ROUND1_ORDER, ROUND2_ORDER, CPRRound

    torch.manual_seed(0)
    geo = _RecordingGeometry()
    order = order or (ROUND2_ORDER if consistency else ROUND1_ORDER)
    rnd = CPRRound(geo, order, torch.ones(56), consistency=consistency)
    for r in rnd.regressors.values():          # non-zero updates (the shipped init starts at zero)
        torch.nn.init.normal_(r.out.weight, std=0.1)
    return rnd, geo


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(2, 8, 2, generator=g) * 100
    found = torch.ones(2, 8)
    params = torch.zeros(2, 56)
    params[:, 53] = 1.0
    return params, obs, found


def test_round1_runs_five_separate_regressors_in_order_three_steps_rebuilding_g():
    rnd, geo = _round()
    params, obs, found = _inputs()
    out, trail, betas = rnd(params, obs, found)
    assert list(rnd.regressors) == ["alpha", "rxry", "rz", "s", "t"]
    assert len({id(r) for r in rnd.regressors.values()}) == 5 and not betas
    groups = [g for g, _ in geo.calls]
    assert groups == ["alpha", "rxry", "rz", "s", "t"] * 3 and len(trail) == 15
    # G rebuilt after every update: each call sees the estimate the previous update produced
    for k in range(1, len(geo.calls)):
        assert torch.allclose(geo.calls[k][1], trail[k - 1])
    # each regressor moves only its own parameters
    from engine.methods.cprfa.network import GROUPS

    for k, g in enumerate(groups):
        before = params if k == 0 else trail[k - 1]
        moved = (trail[k] - before).abs().sum(0) > 0
        assert set(torch.nonzero(moved).flatten().tolist()) <= set(GROUPS[g])


def test_hidden_state_is_carried_across_the_recurrent_steps(monkeypatch):
    rnd, _ = _round()
    params, obs, found = _inputs()
    seen = {g: [] for g in rnd.regressors}
    for g, reg in rnd.regressors.items():
        orig = reg.cell.forward

        def spy(x, h, _g=g, _orig=orig):
            out = _orig(x, h)
            seen[_g].append((h.detach().clone(), out.detach().clone()))
            return out

        monkeypatch.setattr(reg.cell, "forward", spy)
    rnd(params, obs, found)
    for g, hs in seen.items():
        assert len(hs) == 3
        assert float(hs[0][0].abs().max()) == 0.0                      # step 1 starts from zero
        for k in (1, 2):                                               # steps 2, 3 continue the previous state
            assert torch.equal(hs[k][0], hs[k - 1][1]) and float(hs[k][0].abs().max()) > 0


def test_output_depends_on_the_cpr_input():
    """The defining component cannot be bypassed: other CPR matrices, other estimate."""
    rnd, geo = _round()
    params, obs, found = _inputs()
    a, _, _ = rnd(params, obs, found)
    b, _, _ = rnd(params, obs * 1.5, found)
    assert (a - b).abs().max() > 1e-4
    orig = geo.cpr
    geo.cpr = lambda *args: orig(*args) * 0.0
    c, _, _ = rnd(params, obs, found)
    assert (a - c).abs().max() > 1e-4


def test_round2_beta_in_range_with_gradient_through_the_reprojection_errors():
    rnd, geo = _round(consistency=True)
    assert "alpha" not in rnd.regressors                             # alpha frozen in round 2
    params, obs, found = _inputs()
    for b in rnd.betas.values():
        torch.nn.init.normal_(b.net[-1].weight, std=1.0)
    out, trail, betas = rnd(params, obs, found)
    assert len(betas) == 12 and all(float(b.min()) >= 0 and float(b.max()) <= 2 for b in betas)
    assert torch.equal(out[:, :50], params[:, :50])
    out[:, 50:].pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rnd.betas.parameters())
    # the direction's regressor also gets gradient through the errors: with beta's input detached it changes
    g_full = rnd.regressors["rz"].out.weight.grad.clone()
    rnd.zero_grad()
    orig = geo.reprojection_errors
    geo.reprojection_errors = lambda *a: orig(*a).detach()
    out2, _, _ = rnd(params, obs, found)
    out2[:, 50:].pow(2).sum().backward()
    assert not torch.allclose(g_full, rnd.regressors["rz"].out.weight.grad)


# ---- the recipe, export and method -------------------------------------------------------------------------------
def test_stage_recipe_resolves_and_ablations_declared():
    from engine.training.recipes import get_recipe

    assert get_recipe("cprfa-dafi").name == "cprfa-dafi"
    r = get_recipe("cprfa")
    assert set(r.ablations) >= {"one-round", "cpr-h", "mean-t", "unfused", "cpr-h-finetune-long"}
    assert r.fusion and get_recipe("cprfa", "one-round").rounds == 1
    # the unfused arms stay what they trained on before CPR-H became the default
    assert all(not get_recipe("cprfa", k).fusion and get_recipe("cprfa", k).init_from is None
               for k in ("unfused", "one-round", "mean-t", "code-corruption"))


def test_tiny_overfit_onnx_parity_method_contract(train_dir, tmp_path, monkeypatch):
    import onnxruntime as ort
    from torch.utils.data import default_collate

    import engine.paths
    from engine.methods.factory import create
    from engine.methods.cprfa import OUTPUTS
    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    # one thread: this test's many small ops under a busy 2-core machine's contention ran 5-8x slower on two
    torch.set_num_threads(1)
    from engine.methods.cprfa.hsunet import HSUNet

    # a smoke run on an untrained U-Net, whatever weights/cprfa-dafi.pt holds: its export must be refused
    monkeypatch.setattr("engine.methods.cprfa.train.load_unet", lambda *a, **k: (HSUNet(), False))
    # an untrained U-Net finds no vertex, so the default warp model has nothing to be calibrated to (its build says
    # so: test_default_build_calibrates_the_warp_model...); the code-noise model fits any U-Net
    recipe = get_recipe("cprfa", "code-corruption")
    ts = load_training_set(limit=8)
    model = recipe.build(ts)
    ds = recipe.make_dataset(ts, 0)
    batch = recipe.batch_targets(default_collate([ds[i] for i in range(8)]))
    c = len(model.retrieval.codes)                                      # the committed selection's C
    assert batch["obs"].shape == (8, c, 2) and batch["found"].shape == (8, c)
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(6):
        loss, parts = recipe.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0]
    assert all(p.grad is None for p in model.unet.parameters())        # the U-Net is frozen

    model.eval()
    with pytest.raises(RuntimeError, match="untrained HS-U-Net"):
        recipe.export_module(model)
    recipe.allow_untrained_dafi = True
    path = export_onnx(recipe, model, tmp_path / "cprfa.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    assert tuple(o.name for o in sess.get_outputs()) == OUTPUTS
    x = batch["image"][:2].contiguous()
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = recipe.export_module(model)(x)
    for g, w in zip(got, want):
        assert np.allclose(g, w.numpy(), rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(w.numpy()).max())))
    with torch.no_grad():     # the ablation arms validated each epoch
        stages = recipe.stage_landmarks(model, x)
    assert set(stages) == {"dafi", "dafi_pnp", "round1", "round2"}
    assert all(tuple(v.shape) == (2, 68, 2) for v in stages.values())
    assert np.allclose(stages["round2"].numpy(), want[0][:, N_MESH:, :2].numpy(), atol=1e-4)

    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / name)
    monkeypatch.setattr("engine.methods.onnx_method.weights_path", lambda name: tmp_path / name)
    crop = np.asarray(ts.images[0])
    method = create("cprfa", threads=1)
    res = method.align(crop)
    assert res.landmarks.shape == (68, 3) and res.mesh.shape == (N_MESH, 3) and res.pose.shape == (3,)
    assert res.visible.shape == (68,) and res.visible.dtype == bool and res.method == "cprfa"
    assert np.allclose(res.landmarks[:, :2], want[0][0, N_MESH:, :2].numpy(), atol=1e-2)
    method.rounds = 1                                                  # the "CPR one round" ablation's output
    res1 = method.align(crop)
    assert np.allclose(res1.landmarks[:, :2], want[2][0, N_MESH:, :2].numpy(), atol=1e-2)


def test_pose_decode_follows_the_pose_frame_convention():
    from engine.geometry.cpr import pose_to_params
    from engine.methods.cprfa.vertex_selection import load_vertex_selection
    from engine.geometry.rotation import camera_to_euler
    from engine.methods.cprfa import pose_degrees

    frame = load_vertex_selection().frame
    rng = np.random.default_rng(0)
    for _ in range(5):
        pose = np.concatenate([rng.uniform(-0.8, 0.8, 3), [rng.uniform(0.8, 1.2)], rng.uniform(-0.05, 0.05, 2)])
        want = camera_to_euler(pose_to_params(frame, pose, np.zeros(50))[:12])
        got = pose_degrees(np.concatenate([np.zeros(50), pose])[None])[0]
        assert np.abs(got - want).max() < 1e-6


def test_cpr_inputs_in_training_are_corrupted_gt_dafis_with_the_measured_error(train_dir):
    """The CPR networks never train on clean DAFIs: batch_targets retrieves from the warped ground truth corrupted
    by the recipe's error model (measured on the U-Net's held-out predictions in build)."""
    from dataclasses import replace

    from torch.utils.data import default_collate

    from engine.methods.cprfa.dafi_targets import dafi_tensor, warp_dafi
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    recipe = get_recipe("cprfa", "unfused")
    ts = load_training_set(limit=8)
    recipe.build(ts)
    assert recipe.error_model.images == 1                                # reference row 0 of 8
    ds = recipe.make_dataset(ts, 0)
    samples = [ds[i] for i in range(4)]
    measured = recipe.error_model
    assert recipe.corruption == "warp" and measured.warp_px > 0           # the default: the calibrated warp model
    warped = recipe.batch_targets(default_collate(samples))
    # warp_px 0 selects the code-noise model; with every size zero it is the identity
    recipe.error_model = replace(measured, warp_px=0.0, smooth_std=(0.0,) * 3, pixel_std=(0.0,) * 3,
                                 shift_mean=0.0, shift_std=0.0)
    clean = recipe.batch_targets(default_collate(samples))
    dafi, mask = warp_dafi(*dafi_tensor(np.asarray(recipe.dafi_u8[:4])), clean["affine"])
    want_obs, want_found = recipe.retrieval(dafi, mask)
    assert torch.equal(clean["found"], want_found) and torch.allclose(clean["obs"], want_obs)
    assert not (torch.equal(warped["found"], clean["found"]) and torch.allclose(warped["obs"], clean["obs"]))
    recipe.error_model = replace(measured, warp_px=0.0, smooth_std=(0.01,) * 3, pixel_std=(0.005,) * 3)
    noisy = recipe.batch_targets(default_collate(samples))
    assert not torch.equal(noisy["found"], clean["found"])
    again = recipe.batch_targets(default_collate(samples))               # the same batch corrupts the same way
    assert torch.equal(again["found"], noisy["found"]) and torch.equal(again["obs"], noisy["obs"])
    # the warp model's calibration in build: a U-Net that predicts the ground truth exactly gets the mildest warp
    from engine.methods.cprfa.train import measure_unet_errors, reference_rows

    rows = reference_rows(len(ts))

    class PerfectUNet:
        def eval(self):
            return self

        def dafi(self, x):
            d, m = dafi_tensor(np.asarray(recipe.dafi_u8[rows[:len(x)]]))
            return d, m.float()

    perfect = measure_unet_errors(PerfectUNet(), ts, recipe.dafi_u8, rows, retrieval=recipe.retrieval)
    assert perfect.code_l1 == 0 and perfect.warp_px == 1.0 and perfect.code_scale == 0.1


def test_cpr_h_fuses_the_other_methods_landmarks(train_dir):
    from torch.utils.data import default_collate

    from engine.paths import weights_path
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    if not weights_path("mtcnn3d.onnx").exists():
        pytest.skip("CPR-H fuses mtcnn3d's landmarks: weights/mtcnn3d.onnx missing")
    torch.manual_seed(0)
    recipe = get_recipe("cprfa", "cpr-h")
    ts = load_training_set(limit=8)
    model = recipe.build(ts)
    ds = recipe.make_dataset(ts, 0)
    batch = recipe.batch_targets(default_collate([ds[i] for i in range(4)]))
    # the cached mtcnn3d landmarks moved with each crop's affine lie near the label's (a trained method's points)
    err = (batch["landmarks_h"] - batch["points"][:, N_MESH:, :2]).norm(dim=-1).median()
    assert batch["landmarks_h"].shape == (4, 68, 2) and float(err) < 5.0
    for r in list(model.round1.regressors.values()) + list(model.round2.regressors.values()):
        torch.nn.init.normal_(r.out.weight, std=0.1)
        assert r.fusion_stem is not None
    loss, _ = recipe.loss(model, batch)
    assert torch.isfinite(loss)
    lm = batch["landmarks_h"]
    found = lm.new_ones(lm.shape[:2])
    with torch.no_grad():
        a = model.regress(batch["obs"], batch["found"], lm, found)["params"]
        b = model.regress(batch["obs"], batch["found"], lm + 3.0, found)["params"]
    assert (a - b).abs().max() > 1e-4


def test_cpr_h_warm_started_from_cprfa_computes_what_cprfa_computed_then_learns(train_dir):
    """cpr-h-finetune: every trained tensor copied, the fused projections widened with zero columns, so the fused
    model's first output equals the source's whatever the other method's landmarks; one step later they matter."""
    from torch.utils.data import default_collate

    from engine.methods.cprfa.train import warm_start
    from engine.paths import weights_path
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    if not weights_path("mtcnn3d.onnx").exists():
        pytest.skip("CPR-H fuses mtcnn3d's landmarks: weights/mtcnn3d.onnx missing")
    torch.manual_seed(0)
    ts = load_training_set(limit=8)
    plain = get_recipe("cprfa", "unfused")
    source = plain.build(ts)
    for r in list(source.round1.regressors.values()) + list(source.round2.regressors.values()):
        torch.nn.init.normal_(r.out.weight, std=0.1)                  # a source whose updates are not zero
    fused_recipe = get_recipe("cprfa", "cpr-h")
    fused = fused_recipe.build(ts)
    assert "fusion stems new" in warm_start(fused, source.state_dict())
    batch = fused_recipe.batch_targets(default_collate([fused_recipe.make_dataset(ts, 0)[i] for i in range(4)]))
    lm = batch["landmarks_h"]
    ones = lm.new_ones(lm.shape[:2])
    with torch.no_grad():
        want = source.regress(batch["obs"], batch["found"])["params"]
        got = fused.regress(batch["obs"], batch["found"], lm, ones)["params"]
        moved = fused.regress(batch["obs"], batch["found"], lm + 3.0, ones)["params"]
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(moved, want, atol=1e-5)
    opt = torch.optim.SGD([p for p in fused.parameters() if p.requires_grad], lr=1e-2)
    loss, _ = fused_recipe.loss(fused, batch)
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        a = fused.regress(batch["obs"], batch["found"], lm, ones)["params"]
        b = fused.regress(batch["obs"], batch["found"], lm + 3.0, ones)["params"]
    assert (a - b).abs().max() > 1e-6                                 # the fused evidence is used after training
    with pytest.raises(ValueError, match="does not fit"):
        warm_start(fused, {k: v.reshape(-1)[:1] for k, v in source.state_dict().items()})


def test_missing_weights_fail_clearly(tmp_path, monkeypatch):
    import engine.paths
    from engine.methods.base import MethodUnavailable, available_methods
    from engine.methods.factory import create

    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / name)
    assert "cprfa" not in available_methods()
    with pytest.raises(MethodUnavailable, match="cprfa"):
        create("cprfa")


def test_an_unfinished_unet_checkpoint_does_not_count_as_trained(tmp_path, monkeypatch):
    """A hand-over checkpoint (optimizer state kept for --resume) must not feed the CPR rounds; a shipped one does."""
    import engine.paths
    from engine.methods.cprfa.hsunet import HSUNet
    from engine.methods.cprfa.unet_stage import DAFI_WEIGHTS, load_unet

    monkeypatch.setattr(engine.paths, "weights_path", lambda name: tmp_path / name)
    assert load_unet()[1] is False  # missing
    net = HSUNet()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    opt = torch.optim.AdamW(net.parameters())
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "history": [{}]}, tmp_path / DAFI_WEIGHTS)
    loaded, trained = load_unet()
    assert trained is False
    assert not torch.equal(next(loaded.parameters()), next(net.parameters()))
    torch.save({"model": net.state_dict(), "optimizer": None, "history": [{}]}, tmp_path / DAFI_WEIGHTS)
    loaded, trained = load_unet()
    assert trained is True
    assert torch.equal(next(loaded.parameters()), next(net.parameters()))
