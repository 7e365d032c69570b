"""PRNet's dense UV layout: ground-truth maps of the full BFM face, their read-out, mirror symmetry, the batched
torch targets, the loss mask, a tiny overfit run and the export/decode of a dense-layout file."""
import numpy as np
import pytest

SIZE = 64


@pytest.fixture(scope="module")
def dense(train_dir):
    from engine.methods.prnet.dense import dense_basis, dense_layout, load_bfm, readout_fit_params

    fit_rows, _ = readout_fit_params()
    labels = np.load(train_dir / "labels.npz")
    held_out = np.setdiff1d(np.arange(len(labels["names"])), fit_rows)
    return dense_layout(SIZE), dense_basis(SIZE), load_bfm(), labels, held_out


def _known_label(labels, held_out, max_yaw=30.0):
    """A near-frontal label the read-out was not fitted on."""
    yaw = np.abs(labels["teacher_pose"][held_out, 0])
    return int(held_out[np.argmax(yaw < max_yaw)])


def test_dense_map_of_a_known_label_covers_the_face_and_reads_its_landmarks(dense):
    from scipy.spatial import Delaunay

    from engine.geometry.mesh import rasterize
    from engine.geometry.uv_dense import render_maps

    lay, basis, bfm, labels, held_out = dense
    i = _known_label(labels, held_out)
    pmap = render_maps(lay, basis, labels["teacher_params"][i])
    lm68 = labels["teacher_lm68"][i].astype(np.float64)
    # texels cover the face region: the map's grid mesh, drawn into the crop, covers the 68 landmarks' hull
    # (98.1% measured on this label at 64x64)
    ys, xs = np.mgrid[0:120, 0:120]
    inside = (Delaunay(lm68[:, :2]).find_simplex(np.stack([xs.ravel(), ys.ravel()], 1)) >= 0).reshape(120, 120)
    drawn = rasterize(pmap[lay.valid], lay.grid_faces(), 120, 120)[0] >= 0
    assert inside.sum() > 1000 and (drawn & inside).sum() >= 0.97 * inside.sum(), (drawn & inside).sum() / inside.sum()
    assert (pmap[~lay.valid] == 0).all()
    # the 68 points read from the map at their own UVs are the label's
    read = lay.read(pmap)[-68:]
    err = np.linalg.norm(read - lm68, axis=1)
    assert err.max() < 0.1, f"read-out error {err.max():.3f} px"


def test_readout_error_on_ground_truth_maps_is_below_a_tenth_of_a_pixel(dense):
    from engine.geometry.uv_dense import bfm_vertices, render_maps

    lay, basis, bfm, labels, held_out = dense
    rows = held_out[np.random.default_rng(1).permutation(len(held_out))[:100]]
    params = labels["teacher_params"][rows].astype(np.float64)
    read = lay.read(render_maps(lay, basis, params))
    from engine.facemodel import load_face_model

    pts = np.concatenate([load_face_model().bfm_index, bfm["keypoints"][::3] // 3])
    truth = np.stack([bfm_vertices(bfm, p, pts) for p in params])
    err = np.linalg.norm(read[..., :2] - truth[..., :2], axis=-1)
    assert err.mean() < 0.05 and np.percentile(err, 99) < 0.1, (err.mean(), np.percentile(err, 99), err.max())


def _mirrored_vertices(bfm, vertices):
    """The vertices of the mirror-image face (x -> 119 - x about the crop centre), relabelled by the UV mirror."""
    from engine.geometry.uv_dense import uv_mirror_permutation

    perm, gap = uv_mirror_permutation(bfm["uv"])
    assert gap < 0.01  # the BFM's UVs are mirror-symmetric
    out = vertices[perm].copy()
    out[:, 0] = 119.0 - out[:, 0]
    return out


def test_map_of_a_flipped_image_is_the_flipped_map(dense):
    from engine.geometry.uv_dense import bfm_vertices, map_from_vertices

    lay, basis, bfm, labels, held_out = dense
    i = _known_label(labels, held_out)
    v = bfm_vertices(bfm, labels["teacher_params"][i])
    pmap = map_from_vertices(lay, v)
    flipped_face = map_from_vertices(lay, _mirrored_vertices(bfm, v))
    flipped_map = pmap[:, ::-1].copy()
    flipped_map[..., 0] = np.where(lay.valid, 119.0 - flipped_map[..., 0], 0.0)
    assert (lay.valid == lay.valid[:, ::-1]).all()
    err = np.linalg.norm(flipped_face - flipped_map, axis=-1)[lay.valid]
    assert np.median(err) < 0.05 and err.max() < 0.5, (np.median(err), err.max())


def test_torch_targets_equal_the_direct_numpy_rasterisation(dense):
    import torch

    from engine.geometry.uv_dense import bfm_vertices, map_from_vertices
    from engine.methods.prnet.dense import DenseTargets
    from engine.training.augment import AugmentConfig, geometric_matrix, warp_points

    lay, basis, bfm, labels, held_out = dense
    rows = held_out[:4]
    params = labels["teacher_params"][rows].astype(np.float64)
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(rotate=45.0, scale=(0.9, 1.2), shift=0.1)
    flips = np.array([False, True, False, True])
    affines = np.stack([geometric_matrix(rng, cfg, f) for f in flips])
    got = DenseTargets(lay, basis)(torch.from_numpy(params).float(), torch.from_numpy(affines).float(),
                                   torch.from_numpy(flips)).numpy().transpose(0, 2, 3, 1) * 120.0
    for k in range(len(rows)):
        v = warp_points(bfm_vertices(bfm, params[k]), affines[k]).astype(np.float64)
        if flips[k]:  # the mirror is in the affine; mirrored labels are also relabelled left <-> right
            from engine.geometry.uv_dense import uv_mirror_permutation

            v = v[uv_mirror_permutation(bfm["uv"])[0]]
        want = map_from_vertices(lay, v)
        want[..., 2] -= want[lay.valid][:, 2].mean()
        want[~lay.valid] = 0.0
        err = np.abs(got[k] - want)[lay.valid]
        # unflipped: the same numbers by two routes (float32); flipped: up to the triangulation's asymmetry
        tol = 0.5 if flips[k] else 0.01
        assert np.median(err) < (0.05 if flips[k] else 0.002) and err.max() < tol, (k, np.median(err), err.max())


def test_loss_mask_is_the_papers_16_4_3_0_and_the_ablation_weights_every_texel_alike(dense, train_dir):
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    lay = dense[0]
    assert set(np.unique(lay.loss_weight)) == {0.0, 3.0, 4.0, 16.0}
    assert (lay.loss_weight[~lay.valid] == 0).all() and (lay.loss_weight[lay.valid] > 0).all()
    assert (lay.loss_weight == 16).sum() <= 4 * 68
    ts = load_training_set(limit=4)
    shipped, ablated = get_recipe("prnet"), get_recipe("prnet", "no-mask")
    shipped.build(ts)
    ablated.build(ts)
    w = ablated.weight.numpy()
    assert len(np.unique(w[lay.valid])) == 1 and (w[~lay.valid] == 0).all()
    assert len(np.unique(shipped.weight.numpy())) == 4


def _tiny_recipe():
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=8)
    recipe = get_recipe("prnet")
    model = recipe.build(ts)
    return recipe, model, ts


def test_tiny_overfit_on_the_dense_layout_lowers_the_loss(train_dir):
    import torch
    from torch.utils.data import DataLoader

    from engine.training.dataset import AlignmentDataset

    torch.manual_seed(0)
    recipe, model, ts = _tiny_recipe()
    batch = next(iter(DataLoader(AlignmentDataset(ts, None), batch_size=8)))
    batch = recipe.batch_targets(batch)
    assert batch["position_map"].shape == (8, 3, SIZE, SIZE)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(40):
        loss, parts = recipe.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses
    assert set(parts) >= {"map_px2", "landmark_px", "human_px"}


def test_dense_export_declares_its_layout_and_decodes(train_dir, tmp_path, monkeypatch):
    import torch

    from engine.methods.factory import create
    from engine.methods.prnet.dense import valid_mask_from_metadata
    from engine.training.export import export_onnx

    torch.manual_seed(0)
    recipe, model, ts = _tiny_recipe()
    torch.nn.init.normal_(model.decoder[-1].conv.weight, std=1e-3)  # an untrained but not constant map
    model.eval()
    export_onnx(recipe, model, tmp_path / "prnet.onnx")
    monkeypatch.setattr("engine.methods.onnx_method.weights_path", lambda name: tmp_path / name)
    m = create("prnet")
    assert m.uv_layout == "bfm-noneck"
    meta = m.model.session.get_modelmeta().custom_metadata_map
    valid = valid_mask_from_metadata(meta)
    crop = np.asarray(ts.images[0])
    res = m.align(crop)
    assert res.dense.shape == (int(valid.sum()), 3) and res.dense_faces.max() < len(res.dense)
    both = m.align_batch([crop, crop[:, ::-1].copy()])  # the pipeline's batched path decodes the same layout
    assert np.abs(both[0].landmarks - res.landmarks).max() < 1e-3 and both[1].dense.shape == res.dense.shape
    # the graph's read-out points equal the torch recipe's read-out of the torch map
    x = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[None] / 127.5 - 1.0
    with torch.no_grad():
        want = recipe.landmarks(model, x)[0].numpy()
    assert np.abs(res.landmarks[:, :2] - want).max() < 1e-2
    # and they are read from the map: moving the map's texels moves them
    from engine.methods.prnet.network import read_points

    with torch.no_grad():
        pm = model(x)
        idx, w = recipe.readout_index, recipe.readout_weight
        shifted = read_points(pm + 0.01 * torch.tensor([1.0, 0.0, 0.0])[None, :, None, None], idx, w)
        assert torch.allclose(shifted - read_points(pm, idx, w), torch.tensor([0.01, 0.0, 0.0]), atol=1e-5)


def test_shipped_prnet_decodes_with_its_dense_surface():
    from engine.methods.base import registry
    from engine.methods.factory import create

    if not registry()["prnet"].available:
        pytest.skip("weights/prnet.onnx missing")
    m = create("prnet")
    crop = np.full((120, 120, 3), 128, np.uint8)
    res = m.align(crop)
    assert res.landmarks.shape == (68, 3) and res.dense is not None and res.dense_faces is not None
    assert res.dense_faces.max() < len(res.dense)
    assert m.uv_layout == "bfm-noneck" and len(res.dense) > 2 * 536   # the shipped map is the dense BFM layout


def test_obj_export_writes_prnets_dense_mesh(tmp_path):
    from engine.export.writers import PerFrameFiles
    from engine.facemodel import load_face_model
    from engine.methods.base import registry
    from engine.methods.factory import create
    from engine.pipeline import FaceResult, FrameResult

    if not registry()["prnet"].available:
        pytest.skip("weights/prnet.onnx missing")
    res = create("prnet").align(np.full((120, 120, 3), 128, np.uint8))
    files = PerFrameFiles(tmp_path, "obj", load_face_model().triangles)
    files.add(FrameResult(0, 0.0, np.zeros((120, 120, 3), np.uint8), [FaceResult(0, np.zeros(4), {"prnet": res})]))
    text = (tmp_path / "obj" / "prnet" / "000000_0.obj").read_text()
    assert text.count("v ") == len(res.dense) and text.count("f ") == len(res.dense_faces)


def test_torch_readout_equals_the_numpy_readout_in_value_and_gradient(dense):
    import torch

    from engine.methods.prnet.network import read_points

    lay = dense[0]
    rng = np.random.default_rng(0)
    pmap = rng.normal(size=(2, SIZE, SIZE, 3))
    idx, w = torch.from_numpy(lay.readout_index), torch.from_numpy(lay.readout_weight).double()
    got = read_points(torch.from_numpy(pmap).permute(0, 3, 1, 2), idx, w).numpy()
    assert np.abs(got - lay.read(pmap)).max() < 1e-6
    x = torch.from_numpy(pmap[:1, :16, :16].copy()).permute(0, 3, 1, 2).requires_grad_()
    small = (idx % SIZE < 16) & (idx // SIZE < 16)   # points whose support lies in the 16x16 corner
    rows = small.all(1)
    assert rows.any()
    i16 = (idx[rows] // SIZE) * 16 + idx[rows] % SIZE
    assert torch.autograd.gradcheck(lambda m: read_points(m, i16, w[rows]), (x,))


def test_batched_targets_agree_with_the_augmented_labels(train_dir):
    """Through the real data path (augmentation, flips, the batch_targets hook): the 68 points read from each
    target map are the sample's augmented label points. On mirrored crops the BFM's mouth-corner keypoints (48,
    54, 60, 64) are not exact UV mirror twins, so those four are held to a looser bound."""
    import torch
    from torch.utils.data import default_collate

    from engine.methods.prnet.network import read_points
    from engine.training.dataset import AlignmentDataset
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=32)
    recipe = get_recipe("prnet")
    recipe.build(ts)
    ds = AlignmentDataset(ts, recipe.augment, seed=0)
    batch = recipe.batch_targets(default_collate([ds[i] for i in range(32)]))
    lm = read_points(batch["position_map"], recipe.readout_index[-68:], recipe.readout_weight[-68:]) * 120.0
    err = (lm[..., :2] - batch["points"][:, -68:, :2]).norm(dim=-1)
    flipped = batch["flipped"].bool()
    assert flipped.any() and (~flipped).any()
    corners = torch.zeros(68, dtype=torch.bool)
    corners[[48, 54, 60, 64]] = True
    assert err[~flipped].max() < 0.3
    assert err[flipped][:, ~corners].max() < 0.35 and err[flipped][:, corners].max() < 1.0
