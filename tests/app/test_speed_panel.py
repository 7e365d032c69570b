"""The speed panel's conditions line: what the in-app ms per face were measured under, against the bench's."""
import os

from app import bridge
from app.views import conditions


def test_one_method_names_the_bench_setting_and_the_load():
    text = conditions(1)
    assert "1 thread per session (bench: 1t, median)" in text and "mean of 30 frames" in text
    assert len(text.splitlines()) == 2 and max(len(line) for line in text.splitlines()) < 75
    assert f"on {os.cpu_count()} cores" in text and "at a time" not in text


def test_compare_mode_says_methods_run_side_by_side(monkeypatch):
    monkeypatch.setattr(bridge, "method_workers", lambda: 2)
    text = conditions(7)
    assert "2 methods at a time" in text
    if (os.cpu_count() or 1) <= 2:  # two method threads fill the cores: every ms includes waiting for one
        assert "ms include waiting" in text


def test_without_the_policy_it_says_onnx_runtime_defaults(monkeypatch):
    monkeypatch.setattr(bridge, "APP_THREAD_POLICY", None)
    monkeypatch.setattr(bridge, "method_workers", lambda: 1)
    assert "ONNX Runtime's default threads" in conditions(3) and "at a time" not in conditions(3)
