"""An ablation arm replays the shipped run's learning-rate schedule step for step, resumes included."""
from __future__ import annotations

import pytest

from engine.training.schedule import LEGACY_KIND, plan, replay

SPE = 7     # steps per epoch
BASE = 2e-3


def _segment(sched, first: int, last: int) -> dict:
    return {"epochs": [first, last], **sched.record(SPE)}


def _run_like_pifa() -> tuple[list[dict], list[float]]:
    """8-epoch plan stopped after epoch 6 (inside its anneal), resumed to 16 (continues annealing), stopped after
    epoch 9, resumed to 12: the segments the harness records, and the rates the run actually used."""
    s1 = plan(BASE, SPE, 8)
    lrs = [s1.lr(k) for k in range(6 * SPE)]
    s2 = plan(BASE, SPE, 16, resume_step=6 * SPE, last_lr=lrs[-1])
    assert s2.resume_lr is not None  # it had entered its anneal: no restart
    lrs += [s2.lr(k) for k in range(6 * SPE, 9 * SPE)]
    s3 = plan(BASE, SPE, 12, resume_step=9 * SPE, last_lr=lrs[-1])
    lrs += [s3.lr(k) for k in range(9 * SPE, 12 * SPE)]
    return [_segment(s1, 1, 8), _segment(s2, 7, 16), _segment(s3, 10, 12)], lrs


def test_replay_reproduces_every_rate_of_a_resumed_run():
    segments, lrs = _run_like_pifa()
    r = replay(segments, SPE)
    assert r.total_steps == 12 * SPE
    assert [r.lr(k) for k in range(12 * SPE)] == lrs
    # the replay is not just the last segment's plan or a fresh 12-epoch plan
    fresh = plan(BASE, SPE, 12)
    assert any(abs(fresh.lr(k) - lrs[k]) > 1e-6 for k in range(12 * SPE))


def test_replay_of_a_single_fresh_plan_is_that_plan():
    s = plan(BASE, SPE, 5)
    r = replay([_segment(s, 1, 5)], SPE)
    assert [r.lr(k) for k in range(5 * SPE)] == [s.lr(k) for k in range(5 * SPE)]


def test_replay_refuses_what_it_cannot_reproduce():
    segments, _ = _run_like_pifa()
    with pytest.raises(ValueError, match="steps per epoch"):
        replay(segments, SPE + 1)
    with pytest.raises(ValueError, match="legacy"):
        replay([{"epochs": [1, 3], "kind": LEGACY_KIND, "legacy": True}], SPE)
    with pytest.raises(ValueError, match="nothing to replay"):
        replay([], SPE)


def test_model_card_compares_only_ablation_arms_of_the_shipped_recipe(tmp_path, monkeypatch):
    import json

    from engine.training import model_card

    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    val = {"0-30": 3.0, "30-60": 4.0, "60-90": 5.0, "balanced": 4.0}
    shipped = [{"epoch": 1, "val_nme": val}]
    arm = {"ablation": "no-x", "overrides": {"x": False}, "seed": 0,
           "command": "python main.py train m --ablation no-x", "threads": 2,
           "history": [{"epoch": 1, "val_nme": dict(val, balanced=4.5)}], "schedule": "s",
           "description": "recipe A"}
    (results / "m_ablation_no-x.json").write_text(json.dumps(arm))
    monkeypatch.setattr(model_card, "PROJECT_ROOT", tmp_path)
    same = model_card.trained_ablation_text("m", shipped, "recipe A")
    assert "**4.50**" in same and "**4.00**" in same
    assert "shipped **4.00**, no-x **4.50** (+0.50)" in same and "4.00 against 4.50 (+0.50)" in same
    other = model_card.trained_ablation_text("m", shipped, "recipe B")
    assert "**4.50**" not in other and "another recipe" in other


def test_model_card_compares_a_fine_tuned_arm_with_its_starting_point(tmp_path, monkeypatch):
    """An arm trained from the shipped weights (init_from) is compared with the shipped run's final epoch, where it
    started, not with the shipped run's own epochs 1, 2, ..."""
    import json

    from engine.training import model_card

    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)

    def val(b):
        return {"0-30": 3.0, "30-60": 4.0, "60-90": 5.0, "balanced": b}

    shipped = [{"epoch": e, "val_nme": val(b)} for e, b in ((1, 9.0), (2, 7.0), (3, 5.0))]
    arm = {"ablation": "fused", "overrides": {"fusion": True, "init_from": "weights/m.pt"}, "seed": 0,
           "command": "python main.py train m --ablation fused", "threads": 2, "schedule": "s",
           "history": [{"epoch": 1, "val_nme": val(4.5)}, {"epoch": 2, "val_nme": val(4.25)}],
           "description": "recipe A"}
    (results / "m_ablation_fused.json").write_text(json.dumps(arm))
    monkeypatch.setattr(model_card, "PROJECT_ROOT", tmp_path)
    text = model_card.trained_ablation_text("m", shipped, "recipe A")
    assert "start: shipped epoch 3" in text and "fine-tuned from `weights/m.pt` for 2 epochs" in text
    assert "shipped **5.00**, fused after 2 epochs **4.25** (-0.75)" in text
    assert "**9.00**" not in text


def test_a_fine_tuned_shipped_run_compares_its_arms_with_the_checkpoint_they_all_started_from(tmp_path, monkeypatch):
    """CPRFA's CPR-H ships fine-tuned from the unfused model (weights/cprfa-unfused.pt): its fine-tune arms started
    there too, so their starting row is that checkpoint's final epoch, not the shipped (fused) run's."""
    import json

    from engine.training import model_card

    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    monkeypatch.setattr(model_card, "weights_path", lambda name: tmp_path / name)

    def val(b):
        return {"0-30": 3.0, "30-60": 4.0, "60-90": 5.0, "balanced": b}

    (tmp_path / "m-unfused.train.json").write_text(json.dumps({"history": [{"epoch": 12, "val_nme": val(4.99)}]}))
    shipped = [{"epoch": e, "val_nme": val(b)} for e, b in ((1, 4.3), (2, 4.1))]
    arm = {"ablation": "fused-short", "overrides": {"fusion": True, "init_from": "weights/m.pt"}, "seed": 0,
           "command": "python main.py train m --ablation fused-short", "threads": 2, "schedule": "s",
           "history": [{"epoch": 1, "val_nme": val(4.28)}], "description": "recipe A"}
    (results / "m_ablation_fused-short.json").write_text(json.dumps(arm))
    monkeypatch.setattr(model_card, "PROJECT_ROOT", tmp_path)
    text = model_card.trained_ablation_text("m", shipped, "recipe A", init_from="weights/m-unfused.pt")
    assert "start: m-unfused epoch 12" in text and "m-unfused epoch 12 **4.99**, fused-short after 1 epochs" in text
    assert "the shipped run after its epoch 2: **4.10**" in text
    assert model_card._start_line("weights/m-unfused.pt") == (
        "Fine-tuned from `weights/m-unfused.pt` (its m-unfused epoch 12: balanced 4.99).\n\n")
    assert model_card._start_line(None) == ""
