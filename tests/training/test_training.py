"""Training harness smoke run, ONNX parity, and the baseline's output contract."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_train(train_dir, tmp_path_factory):
    from engine.training.harness import train
    from engine.training.recipes import get_recipe

    recipe = get_recipe("baseline")
    recipe.augment = None  # overfit: the loss must fall on a fixed handful of crops
    recipe.lr = 1e-3
    out = tmp_path_factory.mktemp("run")
    res = train(recipe, epochs=50, limit=16, val_limit=10, batch_size=16, threads=2, out_dir=out, export=False,
                log=lambda s: None)
    return recipe, res, out


def test_tiny_overfit_loss_falls(tiny_train):
    _, res, out = tiny_train
    h = res["history"]
    assert h[-1]["points_px"] < 0.5 * h[0]["points_px"]
    assert "val_nme" in h[0] and np.isfinite(h[0]["val_nme"]["balanced"])
    assert (out / "last.pt").exists() and (out / "history.json").exists()


def test_resume_continues_from_checkpoint(tiny_train, train_dir):
    from engine.training.harness import train

    recipe, res, out = tiny_train
    more = train(recipe, epochs=51, limit=16, val_limit=10, batch_size=16, threads=2, out_dir=out, export=False,
                 resume=True, log=lambda s: None)
    assert len(more["history"]) == 51 and more["history"][:50] == res["history"]


def test_onnx_matches_torch(tiny_train, tmp_path):
    import onnxruntime as ort

    from engine.training.export import export_onnx

    recipe, res, _ = tiny_train
    model = res["model"].eval()
    path = export_onnx(recipe, model, tmp_path / "m.onnx")
    x = torch.rand(3, 3, 120, 120) * 2 - 1
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_torch_face_model_matches_numpy(train_dir):
    from engine.facemodel import load_face_model
    from engine.training.torch_facemodel import FaceModelLayer

    lab = np.load(train_dir / "labels.npz")
    p = lab["teacher_params"][:4]
    fm = load_face_model()
    got = FaceModelLayer()(torch.from_numpy(p)).numpy()
    want = np.stack([fm.points(q) for q in p])
    assert np.abs(got - want).max() < 0.05


def test_flops_counter_counts_a_known_conv():
    from torch import nn

    from engine.training.harness import count_flops

    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 120 * 120, 10))
    assert count_flops(m) == 8 * 120 * 120 * 27 + 8 * 120 * 120 * 10


def test_ablation_variants_override_only_their_fields():
    from engine.training.recipes import get_recipe

    shipped, ablated = get_recipe("prnet"), get_recipe("prnet", "no-mask")
    assert shipped.use_mask and not ablated.use_mask
    assert ablated.augment == shipped.augment and ablated.lr == shipped.lr and ablated.epochs == shipped.epochs
    with pytest.raises(KeyError, match="no-mask"):
        get_recipe("prnet", "no-such-ablation")


def test_no_mask_weights_every_face_texel_alike(train_dir):
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    ts = load_training_set(limit=4)
    w_mask = get_recipe("prnet")
    w_mask.build(ts)
    w_none = get_recipe("prnet", "no-mask")
    w_none.build(ts)
    from engine.methods.prnet.dense import dense_layout

    covered, w = dense_layout(w_mask.map_size).valid, w_none.weight.numpy()
    assert len(np.unique(w[covered])) == 1 and w[covered][0] > 0 and (w[~covered] == 0).all()
    assert len(np.unique(w_mask.weight.numpy())) == 4  # 0 : 3 : 4 : 16
    assert (w_mask.readout_weight == w_none.readout_weight).all()  # the same read-out with or without the mask


def test_ablation_run_trains_beside_the_shipped_weights(train_dir, tmp_path):
    import json

    from engine.paths import weights_path
    from engine.training.harness import train, write_ablation
    from engine.training.recipes import get_recipe

    shipped = weights_path("prnet.onnx")
    before = shipped.stat().st_mtime if shipped.exists() else None
    recipe = get_recipe("prnet", "no-mask")
    res = train(recipe, epochs=1, limit=8, val_limit=10, batch_size=8, threads=2, out_dir=tmp_path / "run",
                export=False, log=lambda s: None)
    out = write_ablation(recipe, "no-mask", res["history"], 0, path=tmp_path / "abl.json")
    facts = json.loads(out.read_text())
    assert facts["overrides"] == {"use_mask": False} and len(facts["history"]) == 1
    assert "val_nme" in facts["history"][0]
    assert (shipped.stat().st_mtime if shipped.exists() else None) == before  # nothing shipped
