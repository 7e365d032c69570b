"""The visibility benchmark, the held-out split, the human-point map and the methods' fitted visibility models."""
import numpy as np
import pytest
import torch

from engine.facemodel import load_face_model


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n
        self.epochs = []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i

    def set_epoch(self, e):
        self.epochs.append(e)


def test_every_recipe_dataset_leaves_out_the_held_out_split():
    from engine.training.split import TrainingRows, exclude_held_out, held_out_rows, training_rows

    ds = exclude_held_out(_Rows(45), 45)
    assert isinstance(ds, TrainingRows) and len(ds) == 42
    items = {ds[i] for i in range(len(ds))} | set(ds.__getitems__([0, 1, 2]))
    assert not items & set(held_out_rows(45).tolist()) and items == set(training_rows(45).tolist())
    ds.set_epoch(3)
    assert ds.base.epochs == [3]
    listed = _Rows(45)
    listed.rows = training_rows(45)
    assert exclude_held_out(listed, 45) is listed        # CPRFA's datasets list their rows already
    listed.rows = np.arange(45)
    with pytest.raises(ValueError, match="held-out"):
        exclude_held_out(listed, 45)


def test_human_points_map_to_mirror_twins():
    """A flipped sample's human point must be compared with the mirror of the unflipped one's twin."""
    from engine.training.dataset import HUMAN21_FLIP, HUMAN21_TO_68

    flip68 = load_face_model().lmk_flip
    for h, lm in HUMAN21_TO_68.items():
        assert HUMAN21_TO_68[int(HUMAN21_FLIP[h])] == flip68[lm], (h, lm)
    assert HUMAN21_TO_68[17] == 48 and HUMAN21_TO_68[19] == 54   # AFLW's lip corners are the outer corners


def test_scores_count_hidden_as_the_positive_class():
    from engine.evaluation.visibility_bench import _scores

    human = np.array([[True, True, False, False]])
    pred = np.array([[True, False, False, True]])   # one false red, one found, one missed
    s = _scores(pred, human, facing=np.array([[True, False, True, True]]))
    assert s.n_points == 4 and s.agreement == 0.5 and s.precision == 0.5 and s.recall == 0.5 and s.f1 == 0.5
    assert s.constant_agreement == 0.5 and s.facing_share == 0.5


def test_logistic_fit_recovers_known_coefficients():
    from engine.evaluation.visibility_fit import logistic_fit

    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(20000), rng.normal(size=(20000, 2))])
    w = np.array([0.5, 2.0, -1.0])
    y = (rng.random(20000) < 1 / (1 + np.exp(-x @ w))).astype(float)
    assert np.allclose(logistic_fit(x, y, l2=0.0), w, atol=0.1)


def test_without_a_model_the_geometric_test_is_unchanged():
    from engine.visibility import landmark_visibility, landmark_visibility_batch, visibility_terms
    from engine.visibility_model import load_visibility_model

    fm = load_face_model()
    pts = fm.mean * np.array([1.0, -1.0, 1.0]) * 0.6 + 60.0
    assert load_visibility_model("no-such-method") is None
    geo = visibility_terms(fm, pts[None]).geometric[0]
    assert np.array_equal(landmark_visibility_batch(fm, pts[None])[0], geo)
    assert np.array_equal(landmark_visibility(fm, pts), geo) and geo[17:].all()


@pytest.fixture(scope="module")
def held_out(train_dir):
    from engine.training.split import held_out_rows

    lab = np.load(train_dir / "labels.npz")
    rows = held_out_rows(len(lab["names"]))
    return rows, lab["aflw_yaw"][rows], ~np.isnan(lab["pts21"][rows][:, :, 0])


def test_benchmark_on_a_few_labelled_crops(held_out):
    from engine.evaluation.visibility_bench import benchmark, table, twins

    rows, _, flags = held_out
    res = benchmark(["mtcnn3d"], limit=12, log=lambda s: None)
    h21, _ = twins()
    s = res["mtcnn3d"]
    assert s.n_points == 12 * 14
    assert s.constant_agreement == pytest.approx(flags[:12][:, h21].mean())
    assert sum(b.n_points for b in s.by_yaw.values()) == s.n_points
    assert sum(g.n_points for g in s.by_group.values()) == s.n_points
    assert {"mtcnn3d shared normals + z-buffer", "mtcnn3d paper (Eq. 9, N_c.N_i > 0)"} <= set(res)
    assert "| mtcnn3d |" in table(res)


def _first(held_out, want) -> int:
    rows, yaw, flags = held_out
    return int(next(r for r, y, f in zip(rows, yaw, flags) if want(y, f)))


def test_a_frontal_face_has_no_hidden_inner_points(held_out):
    """The first held-out face within 10 degrees of frontal whose annotator saw all 21 points."""
    from engine.evaluation.visibility_bench import load_labelled
    from engine.methods.factory import create

    row = _first(held_out, lambda y, f: abs(y) < 10 and f.all())
    r = create("mtcnn3d").align(load_labelled(np.array([row])).images[0])
    assert r.visible[17:].all(), np.nonzero(~r.visible[17:])[0] + 17


def test_a_70_degree_face_hides_its_far_eye_corner(held_out):
    """The first held-out face at 65-75 degrees of yaw with its far outer eye corner flagged hidden (AFLW's positive
    yaw turns the image-left half away) and its near one visible: every method agrees with the annotator."""
    from engine.evaluation.visibility_bench import load_labelled
    from engine.methods.base import available_methods
    from engine.methods.factory import create

    row = _first(held_out, lambda y, f: 65 <= abs(y) <= 75 and not f[6 if y > 0 else 11] and f[11 if y > 0 else 6])
    crops = load_labelled(np.array([row]))
    far, near = (36, 45) if crops.yaw[0] > 0 else (45, 36)
    for name in available_methods():
        r = create(name).align_batch([crops.images[0]])[0]
        if r is None:   # MediaPipe finds no face in some profiles
            continue
        assert not r.visible[far] and r.visible[near], name


def test_the_card_section_is_added_then_replaced(tmp_path, monkeypatch):
    import json

    import engine.training.model_card as mc
    from engine.evaluation.visibility_bench import _scores, save_results

    results = tmp_path / "visibility.json"
    s = _scores(np.array([[True, False]]), np.array([[True, True]]))
    s.by_yaw = {"0-30": _scores(np.array([[True]]), np.array([[True]]))}
    save_results({"m": s, "m shared normals + z-buffer": s, "other": s}, results)
    monkeypatch.setattr(mc, "VISIBILITY_RESULTS", results)
    monkeypatch.setattr(mc, "weights_path", lambda name: tmp_path / name)
    (tmp_path / "m.md").write_text("# Model card\n\n## Speed\nfast\n")
    assert mc.update_card_visibility("m") and not mc.update_card_visibility("absent")
    first = (tmp_path / "m.md").read_text()
    assert first.index(mc.VISIBILITY_HEADING) < first.index("## Speed") and "| m (shipped) | 0.500 |" in first
    assert "| m shared normals + z-buffer |" in first and "| other" not in first
    data = json.loads(results.read_text())
    data["m"]["agreement"] = 0.75
    results.write_text(json.dumps(data))
    mc.update_card_visibility("m")
    second = (tmp_path / "m.md").read_text()
    assert second.count(mc.VISIBILITY_HEADING) == 1 and "| m (shipped) | 0.750 |" in second and "fast" in second
    # replacing keeps the layout the first insertion made: a blank line before the next heading
    assert second == first.replace("| m (shipped) | 0.500 |", "| m (shipped) | 0.750 |")


def test_patch_cnn_in_numpy_and_onnx_matches_torch():
    """The visibility model's patch CNN runs without torch at inference (ONNX Runtime; numpy as the reference); both
    compute what the torch module it was trained as computes (random weights, random patches)."""
    import torch.nn.functional as F

    from engine.visibility_patches import N_KINDS, PATCH, SITE_KIND, patch_logits

    rng = np.random.default_rng(0)
    shapes = {"conv1.weight": (8, 3, 3, 3), "conv1.bias": (8,), "conv2.weight": (16, 8, 3, 3), "conv2.bias": (16,),
              "hidden.weight": (32, 16 * (PATCH // 4) ** 2), "hidden.bias": (32,), "out.weight": (N_KINDS, 32),
              "out.bias": (N_KINDS,)}
    net = {k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in shapes.items()}
    patches = rng.normal(size=(2, len(SITE_KIND), 3, PATCH, PATCH)).astype(np.float32)
    t = {k: torch.from_numpy(v) for k, v in net.items()}
    x = torch.from_numpy(patches.reshape(-1, 3, PATCH, PATCH))
    x = F.max_pool2d(F.relu(F.conv2d(x, t["conv1.weight"], t["conv1.bias"], padding=1)), 2)
    x = F.max_pool2d(F.relu(F.conv2d(x, t["conv2.weight"], t["conv2.bias"], padding=1)), 2)
    y = F.linear(F.relu(F.linear(x.flatten(1), t["hidden.weight"], t["hidden.bias"])), t["out.weight"], t["out.bias"])
    want = y.numpy()[np.arange(y.shape[0]), np.tile(SITE_KIND, 2)].reshape(2, -1)
    assert np.allclose(patch_logits(net, patches), want, atol=1e-4)
    # and the ONNX export the app runs
    from engine.evaluation.visibility_fit import export_patch_net
    from engine.visibility_patches import PatchNetRunner

    assert np.allclose(PatchNetRunner(export_patch_net(net)).logits(patches), want, atol=1e-4)


def test_site_patches_are_mirror_images_across_the_face():
    """A crop flipped left-right, with its landmarks flipped and renumbered, gives each site the patch its mirror
    site had: the two sides of a face share one CNN output and read "towards the ear" the same way (midline
    sites see their own patch flipped)."""
    from engine.facemodel import LMK68_FLIP
    from engine.visibility_patches import MIRROR_OF, SITE_POINTS, site_patches

    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (1, 120, 120, 3), dtype=np.uint8)
    fm = load_face_model()
    lm = (fm.mean[468:] * np.array([1.0, -1.0, 1.0]) * 0.6 + 60.0)[None, :, :2]
    flipped_lm = lm[:, LMK68_FLIP].copy()
    flipped_lm[..., 0] = 119.0 - flipped_lm[..., 0]
    a = site_patches(crop, lm)[0]
    b = site_patches(crop[:, :, ::-1], flipped_lm)[0]
    for k, p in enumerate(SITE_POINTS):
        if p in MIRROR_OF:
            assert np.allclose(b[SITE_POINTS.index(MIRROR_OF[p])], a[k], atol=1e-5), p
        else:   # a midline site is not mirrored: its patch is flipped with the crop
            assert np.allclose(b[k], a[k][:, :, ::-1], atol=1e-5), p


@pytest.mark.parametrize("name", ["mtcnn3d", "prnet"])
def test_the_shipped_model_reads_the_image(held_out, name):
    """The inference path: the shipped model's decision on a face changes with its crop (the patch CNN: a crop of
    one flat grey leaves it only the geometry), and recomputing the visibility from a method's outputs
    (``shipped_visibility``, what ``main.py visibility --reuse-outputs`` scores) gives what its tail gave."""
    from engine.evaluation.visibility_bench import load_labelled, run_method, shipped_visibility
    from engine.visibility import visibility_terms
    from engine.visibility_model import load_visibility_model

    rows, _, _ = held_out
    model = load_visibility_model(name)
    assert model is not None
    crops = load_labelled(rows[:8]).images
    out = run_method(name, crops)
    assert out.found.all()
    assert np.array_equal(shipped_visibility(name, out, crops), out.visible)
    pts = out.points.astype(np.float64)
    terms = visibility_terms(load_face_model(), pts, normal_z=out.normal_visibility)
    p_real = model.probability(terms, crops, pts)
    p_flat = model.probability(terms, np.full_like(crops, 128), pts)
    assert np.array_equal(p_real > 0.5, out.visible)
    assert np.abs(p_real - p_flat)[:, 17:].max() > 0.05
