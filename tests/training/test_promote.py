"""Promoting a finished ablation arm ships its checkpoint as the method's weights without retraining, keeps the run
shipped until then as an ablation history, and refuses when the recipe's defaults are not the arm's."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture()
def sandbox(train_dir, tmp_path, monkeypatch):
    """weights/ and docs/results/ redirected to tmp_path; a tiny shipped PRNet run (mask) and a finished no-mask arm."""
    from engine.training import harness
    from engine.training.recipes import get_recipe

    weights, results = tmp_path / "weights", tmp_path / "results"
    weights.mkdir()
    results.mkdir()
    monkeypatch.setattr(harness, "weights_path", lambda name: weights / name)
    monkeypatch.setattr(harness, "ablation_path", lambda name, abl: results / f"{name}_ablation_{abl}.json")
    quiet = dict(epochs=1, limit=8, val_limit=10, batch_size=8, threads=2, log=lambda s: None)
    harness.train(get_recipe("prnet"), out_dir=tmp_path / "shipped", export=False, **quiet)
    shipped_run = torch.load(tmp_path / "shipped" / "last.pt", weights_only=False)
    recipe = get_recipe("prnet")
    harness.ship(recipe, recipe.build(harness.load_training_set(limit=8)), shipped_run["history"], seed=0, epochs=1,
                 log=lambda s: None, command="python main.py train prnet (shipped)")
    arm_recipe = get_recipe("prnet", "no-mask")
    arm = harness.train(arm_recipe, out_dir=tmp_path / "arm", export=False, seed=1, **quiet)
    harness.write_ablation(arm_recipe, "no-mask", arm["history"], 1, schedule=arm["schedule"],
                           command="python main.py train prnet --ablation no-mask")
    return harness, weights, results, tmp_path / "arm", arm


def test_promote_ships_the_arm_and_keeps_the_old_run(sandbox):
    import onnxruntime as ort

    harness, weights, results, arm_dir, arm = sandbox
    from engine.training.recipes import get_recipe

    recipe = get_recipe("prnet", "no-mask")          # the arm's overrides made the defaults
    recipe.ablations = {**recipe.ablations, "mask": {"use_mask": True}}  # what the old default becomes
    before = json.loads((weights / "prnet.train.json").read_text())
    harness.promote(recipe, "no-mask", previous_as="mask", log=lambda s: None, run_dir=arm_dir, limit=8)

    facts = json.loads((weights / "prnet.train.json").read_text())
    assert facts["history"] == arm["history"] and facts["seed"] == 1
    assert facts["command"].startswith("python main.py train prnet --ablation no-mask")
    kept = json.loads((results / "prnet_ablation_mask.json").read_text())
    assert kept["history"] == before["history"] and kept["command"] == "python main.py train prnet (shipped)"
    assert kept["overrides"] == {"use_mask": True}
    assert not (results / "prnet_ablation_no-mask.json").exists()     # the arm is the shipped run now

    # the ONNX is the arm's network, not the old one
    model = recipe.build(harness.load_training_set(limit=8))
    model.load_state_dict(torch.load(arm_dir / "last.pt", weights_only=False)["model"])
    model.eval()
    x = torch.rand(1, 3, 120, 120) * 2 - 1
    sess = ort.InferenceSession(str(weights / "prnet.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = recipe.export_module(model)(x)
    want = (want[0] if isinstance(want, (tuple, list)) else want).numpy()
    assert np.allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_promote_refuses_when_the_recipe_is_not_the_arms(sandbox):
    harness, weights, _, arm_dir, _ = sandbox
    from engine.training.recipes import get_recipe

    before = (weights / "prnet.onnx").read_bytes()
    with pytest.raises(ValueError, match="use_mask"):
        harness.promote(get_recipe("prnet"), "no-mask", log=lambda s: None, run_dir=arm_dir, limit=8)
    assert (weights / "prnet.onnx").read_bytes() == before
