"""train()'s options as one object: TrainConfig carries every option the runner takes, and keyword options still
override it (the form main.py and the tests use)."""
import dataclasses
import inspect

import pytest


def test_the_config_names_every_option_of_the_runner():
    from engine.training.harness import TrainConfig, _train

    runner = [p for p in inspect.signature(_train).parameters if p != "recipe"]
    assert [f.name for f in dataclasses.fields(TrainConfig)] == runner


def test_keyword_options_override_the_config(monkeypatch):
    import engine.training.harness as harness

    seen = {}
    monkeypatch.setattr(harness, "_train", lambda recipe, **kw: seen.update(kw) or {"recipe": recipe})
    out = harness.train("r", harness.TrainConfig(epochs=3, seed=7), seed=1, limit=16)
    assert out == {"recipe": "r"}
    assert (seen["epochs"], seen["seed"], seen["limit"], seen["export"]) == (3, 1, 16, True)
    with pytest.raises(TypeError):
        harness.train("r", no_such_option=1)
