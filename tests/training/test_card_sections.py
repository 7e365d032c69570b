"""The model card's written sections: research results (docs/results) and declared, untrained ablations, rewritten
in place by ``python main.py card NAME --text-only`` without re-measuring."""
from __future__ import annotations

import json

import pytest

import engine.training.model_card as mc


def _spread(mean: float, sd: float = 0.0) -> dict:
    return {"mean": mean, "sd": sd, "min": mean - sd, "max": mean + sd, "p5": mean - sd, "p95": mean + sd}


def _nme(balanced: float) -> dict:
    return {"0-30": balanced - 1, "30-60": balanced, "60-90": balanced + 1, "balanced": balanced,
            "overall": balanced}


def _capu(round1: float, round2: float) -> dict:
    split = {"n": 10,
             "sample": {"found": _spread(106.0, 9.0), "sampled": _spread(10.6, 1.0), "fg_pixels": _spread(5000.0),
                        "dafi_vertices": _spread(3000.0)},
             "beta": [{"step": s, "group": g, **_spread(0.3, 0.02)} for s in (1, 2, 3)
                      for g in ("rxry", "rz", "s", "t")],
             "beta_kappa_all": [{"step": s, "group": g, **_spread(0.31, 0.01)} for s in (1, 2, 3)
                                for g in ("rxry", "rz", "s", "t")],
             "profile_gap_10pct_vs_all_found": _spread(0.014), "profile_gap_10pct_vs_dafi": _spread(0.018),
             "nme": {"round1": _nme(round1), "round2": _nme(round2), "round2_const_beta": _nme(round2),
                     "round2_beta1": _nme(5.5), "round2_kappa_all": _nme(round2), "round2_dafi": _nme(round2)},
             "round2_better_fraction": 0.3}
    split["beta_dafi"] = split["beta_kappa_all"]
    return {"kappa": 0.1, "threshold": 0.02, "C": 128, "codebook_vertices": 38365, "held_out": split, "dev": split}


def test_capu_section_carries_the_numbers_and_the_sign_of_round_2():
    text = mc.cprfa_capu_text(_capu(4.50, 4.62))
    assert "| vertices the round samples (kappa = 10% of the found, rounded up) | 10.6 ± 1.0 (9.6-11.6) |" in text
    assert "Round 2 hurts" in text and "+0.12 balanced" in text
    assert "| round 2, beta = 1 (the regressors' updates unscaled) | 4.50 / 5.50 / 6.50 / **5.50** |" in text
    assert "a learned step size" in text          # a constant beta per update scores the same
    assert "the sample size is not what decides" in text
    assert "Round 2 helps" in mc.cprfa_capu_text(_capu(4.62, 4.50))


def test_capu_section_says_where_round_2_fails_from_the_training_inputs_arm():
    res = _capu(4.50, 4.62)
    res["held_out_training_inputs"] = {"ground-truth DAFI": {"nme": {"round1": _nme(1.0), "round2": _nme(0.9)}},
                                       "ground-truth DAFI, warp-corrupted": {"nme": {"round1": _nme(2.8),
                                                                                     "round2": _nme(2.7)}}}
    history = [{"epoch": 12, "lm68_round1_px": 1.75, "lm68_px": 1.66}]
    text = mc.cprfa_capu_text(res, history)
    assert "from 1.75 to 1.66 px (epoch 12" in text and "carries over to unseen faces" in text
    assert "| ground-truth DAFI, warp-corrupted | 1.80 / 2.80 / 3.80 / **2.80** |" in text and "| -0.10 |" in text
    res["held_out_training_inputs"]["ground-truth DAFI, warp-corrupted"]["nme"]["round2"] = _nme(2.9)
    assert "fails on unseen faces even with the inputs it was trained on" in mc.cprfa_capu_text(res, history)
    assert "Why it hurts" not in mc.cprfa_capu_text(_capu(4.62, 4.50), history)


def test_declared_ablations_name_only_the_untrained_arms(tmp_path):
    (tmp_path / "pifa_ablation_no-vis.json").write_text("{}")
    text = mc.declared_ablations_text("pifa", tmp_path)
    assert "`eq6-landmark`" in text and "no-vis" not in text
    (tmp_path / "pifa_ablation_eq6-landmark.json").write_text("{}")
    assert mc.declared_ablations_text("pifa", tmp_path) == ""


def test_sections_are_inserted_before_visibility_then_replaced_and_removed():
    card = "# Card\n\nbody\n\n## Visibility against AFLW's human flags\nv\n\n## Speed\nfast\n"
    once = mc._replace_section(card, "## X", "## X\nfirst\n")
    assert once.index("## X") < once.index("## Visibility") and once.count("## X") == 1
    twice = mc._replace_section(once, "## X", "## X\nsecond\n")
    assert "second" in twice and "first" not in twice and twice.count("## X") == 1 and "fast" in twice
    assert mc._replace_section(twice, "## X", "") == card


def test_text_only_refresh_keeps_the_measured_lines(tmp_path, monkeypatch):
    """A card written before the sections existed gets the paper's column and the research sections; its
    measured accuracy and speed lines are untouched, and a second refresh changes nothing."""
    stages = {f"block{k}": {"0-30": 1.0, "30-60": 2.0, "60-90": 3.0, "balanced": 2.0} for k in range(7)}
    facts = {"description": "not the recipe's", "history": [{"epoch": 1, "val_nme_stages": stages}]}
    monkeypatch.setattr(mc, "weights_path", lambda name: tmp_path / name)
    (tmp_path / "pifa.train.json").write_text(json.dumps(facts))
    old_table = "\n".join(f"| block{k} | 1.00 | 2.00 | 3.00 | **2.00** |" for k in range(7))
    card = ("# Model card: `pifa`\n\n## Architecture\nold notes\n\n- Parameters: 1\n\n## Accuracy\n"
            "| protocol | 3.34 | 4.48 | 5.64 | **4.48** | 3.93 | 0 |\n\n"
            "NME after each stage (epoch 1, torch, protocol):\n\n| stage | 0-30 | 30-60 | 60-90 | balanced |\n"
            f"|---|---|---|---|---|\n{old_table}\n\n\nPose MAE: 4°.\n\n## Speed\nmedian 5.85 ms\n")
    (tmp_path / "pifa.md").write_text(card)
    results = tmp_path / "results"
    results.mkdir()
    blocks = {"epochs": 12, "dev_n": 1000, "train_n": 1000, "paper_table3": {"block1": 25.8},
              "dev_stages": stages,
              "train_blocks": [{"block": k, "camera share std (shipped)": 0.047, "camera share landmark (proposed)":
                                0.991, "nme_teacher_camera_block_shape": 1.2, "nme_train": 15.0,
                                "coef_rms_in_stds": 1.87, "camera_rms_in_spreads": 1.04,
                                **({"camera_move_rms_in_spreads": 0.2} if k else {})} for k in range(7)]}
    (results / "pifa_blocks.json").write_text(json.dumps(blocks))
    assert mc.refresh_card_text("pifa", results) and not mc.refresh_card_text("absent", results)
    text = (tmp_path / "pifa.md").read_text()
    assert "old notes" in text                       # the weights' recipe differs: its notes are not swapped in
    assert "| block2 | 1.00 | 2.00 | 3.00 | **2.00** | 9.26 |" in text and text.count("| block2 |") == 2
    assert "## PIFA's blocks against the paper's Table 3" in text and "4.7%" in text
    assert "`eq6-landmark`" in text and "**not trained**" in text
    assert "| protocol | 3.34 | 4.48 | 5.64 | **4.48** | 3.93 | 0 |" in text and "median 5.85 ms" in text
    assert text.index("## PIFA's blocks") < text.index("## Speed")
    mc.refresh_card_text("pifa", results)
    assert (tmp_path / "pifa.md").read_text() == text


@pytest.mark.parametrize("name", ["cprfa"])
def test_cprfa_notes_describe_the_stem_and_the_routing_the_code_has(name):
    """The card's architecture text says what network.py and geometry.py build (issue 30: it said three 3x3
    stride-2 convolutions while the code's first is 4x4 stride 4)."""
    from engine.methods.cprfa import geometry, network
    from engine.training.recipes import get_recipe

    notes = get_recipe(name).notes
    first = network.stem(3, 64)[0][0]
    assert (first.kernel_size, first.stride) == ((4, 4), (4, 4)) and "4x4 stride-4 convolution" in notes
    assert "three 3x3 stride-2" not in notes
    assert set(geometry.FEEDS["alpha"]) == set(geometry.KERNEL_CHANNELS) and "alpha every kernel" in notes
    assert "in_plane" in geometry.FEEDS["rxry"] and "rx, ry the out-of-plane cosines and the in-plane sines" in notes
    assert f"kappa = {network.BETA_KAPPA:.0%}" in notes
