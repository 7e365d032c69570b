"""PIFA's Eq. 6 weighting (engine/methods/pifa/train.py: pifa_param_weights): the shipped per-entry-spread weights,
the landmark-sensitivity weights of the `eq6-landmark` ablation, and a smoke run of that ablation."""
import numpy as np
import pytest
import torch

from engine.facemodel import N_MESH, load_face_model
from engine.methods.pifa.network import N_CAMERA, N_P, VisualizationLayer
from engine.methods.pifa.train import initial_parameters, pifa_param_weights, teacher_parameters


@pytest.fixture(scope="module")
def stats(train_dir):
    fm = load_face_model()
    params = np.load(train_dir / "labels.npz")["teacher_params"][:2000].astype(np.float32)
    coef_std = params[:, 12:62].astype(np.float64).std(0) + 1e-8
    target = teacher_parameters(params, fm, coef_std)
    p0 = initial_parameters(target)
    dp_scale = np.ones(N_P)
    dp_scale[:N_CAMERA] = np.maximum((target[:, :N_CAMERA] - p0[:N_CAMERA]).std(0), 1e-3)
    return target, p0, dp_scale, VisualizationLayer(fm, coef_std).double()


def _camera_share(w, target, p0):
    per = ((target - p0) * w) ** 2
    return per[:, :N_CAMERA].sum(1).mean() / per.sum(1).mean()


def test_std_weighting_is_the_shipped_one(stats):
    target, p0, dp_scale, layer = stats
    w = pifa_param_weights(target, p0, dp_scale, layer, "std", translation_weight=2.0)
    want = 1.0 / dp_scale
    want[[3, 7]] *= 2.0
    assert np.allclose(w, want)
    with pytest.raises(ValueError):
        pifa_param_weights(target, p0, dp_scale, layer, "uniform")


def test_landmark_weights_are_the_landmarks_sensitivity(stats):
    """Each weight is the RMS landmark displacement per unit of its entry: checked against finite differences of
    the visualization layer's own projection."""
    target, p0, dp_scale, layer = stats
    sample = target[np.random.default_rng(1).choice(len(target), 64, replace=False)]
    base = layer.points(torch.from_numpy(sample)).numpy()[:, N_MESH:, :2]
    want = np.empty(N_P)
    for j in range(N_P):
        moved = sample.copy()
        moved[:, j] += 1e-3
        d = (layer.points(torch.from_numpy(moved)).numpy()[:, N_MESH:, :2] - base) / 1e-3
        want[j] = np.sqrt((d ** 2).sum(-1).mean())
    w = pifa_param_weights(sample, p0, dp_scale, layer, "landmark", sample=64)
    scale = w / want
    assert np.allclose(scale, scale[0], rtol=1e-4)   # the same up to the one normalising constant


def test_landmark_weighting_gives_the_camera_the_loss(stats):
    """Under the shipped weights the camera holds a few percent of Eq. 6 at P^0 although it is what the landmark
    error waits for; under the landmark weights it holds most of it, and P^0's loss is unchanged."""
    target, p0, dp_scale, layer = stats
    w_std = pifa_param_weights(target, p0, dp_scale, layer, "std")
    w_lm = pifa_param_weights(target, p0, dp_scale, layer, "landmark")
    assert _camera_share(w_std, target, p0) < 0.2
    assert _camera_share(w_lm, target, p0) > 0.8
    loss = lambda w: (((target - p0) * w) ** 2).sum(1).mean()  # noqa: E731
    assert loss(w_lm) == pytest.approx(loss(w_std), rel=0.05)   # normalised on a sample of the same targets


def test_eq6_landmark_ablation_smoke(train_dir):
    from torch.utils.data import default_collate

    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.manual_seed(0)
    torch.set_num_threads(1)
    recipe = get_recipe("pifa", "eq6-landmark")
    assert recipe.param_weighting == "landmark"
    recipe.width = 0.25
    ts = load_training_set(limit=8)
    batch = default_collate([recipe.make_dataset(ts, 0)[i] for i in range(8)])
    model = recipe.build(ts)
    shipped = get_recipe("pifa")
    shipped.build(ts)
    assert not torch.allclose(recipe.param_weight, shipped.param_weight)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss, parts = recipe.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_card_stage_table_has_the_papers_column():
    from engine.training.model_card import PAPER_STAGES, stage_text

    stages = {f"block{k}": {"0-30": 1.0, "30-60": 2.0, "60-90": 3.0, "balanced": 2.0} for k in range(7)}
    text = stage_text([{"epoch": 12, "val_nme_stages": stages}], "pifa")
    assert "paper (Table 3, AFLW)" in text and "| block2 | 1.00 | 2.00 | 3.00 | **2.00** | 9.26 |" in text
    assert text.count("| block") == 7
    assert "cprfa" not in PAPER_STAGES   # no paper column where none is declared
    assert "| stage | 0-30 | 30-60 | 60-90 | balanced |\n" in stage_text(
        [{"epoch": 1, "val_nme_stages": {"round1": stages["block0"]}}], "cprfa")
