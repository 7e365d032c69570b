"""The method registry: packages discovered from their one declaration, missing weights, the typed decode result
and the 'no face' exception."""
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

import engine.methods
from engine.methods import base
from engine.methods.base import DecodeResult, MethodInfo, MethodUnavailable, NoFaceError, registry
from engine.methods.factory import create

BUILT_IN = {"baseline": "baseline", "prnet": "prnet", "3dstn": "stn3d", "mediapipe": "mediapipe_ref"}  # name: package


@pytest.fixture
def extra_package(tmp_path, monkeypatch):
    """Write a method package into a folder searched as part of engine.methods; a fresh registry sees it."""
    monkeypatch.setattr(engine.methods, "__path__", list(engine.methods.__path__) + [str(tmp_path)])
    monkeypatch.setattr(base, "_REGISTRY", {})

    def write(folder: str, source: str) -> None:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text(textwrap.dedent(source))

    yield write
    import sys

    for name in [m for m in sys.modules if m.startswith("engine.methods.") and m.split(".")[2].startswith("tmp_")]:
        del sys.modules[name]


def test_built_in_methods_are_discovered_with_their_declarations():
    reg = registry()
    assert set(BUILT_IN) <= set(reg)
    for name, package in BUILT_IN.items():
        info = reg[name]
        assert info.name == name and info.factory.__module__ == f"engine.methods.{package}"
        assert info.factory.info is info  # the class reads its name and weights from the declaration
        # the recipe sits in the method's own package; MediaPipe has none (its network is MediaPipe's)
        assert info.recipe is None if name == "mediapipe" else info.recipe.startswith(f"engine.methods.{package}.")
        assert bool(info.outputs) == (info.recipe is not None)


def test_recipes_come_from_the_declarations():
    pytest.importorskip("torch")
    from engine.training.recipes import get_recipe, trainable

    assert trainable() == {n: i.recipe for n, i in registry().items() if i.recipe}
    assert "mediapipe" not in trainable()
    for name in ("baseline", "prnet", "3dstn"):
        r = get_recipe(name)
        # the exported graph has every output the method's decode needs (a recipe may export more)
        assert r.name == name and set(registry()[name].outputs) <= set(r.output_names)
    with pytest.raises(KeyError, match="no training recipe"):
        get_recipe("mediapipe")


def test_a_new_package_is_one_folder_and_missing_weights_are_not_offered(extra_package):
    extra_package("tmp_fake", '''
        from engine.methods.base import MethodInfo
        from engine.methods.onnx_method import OnnxMethod

        class FakeMethod(OnnxMethod):
            pass

        METHOD = MethodInfo("fake", "a method without weights", FakeMethod, weights="no_such_weights.onnx")
    ''')
    extra_package("tmp_helpers", '"""a subpackage without METHOD is not a method"""\n')
    reg = registry()
    assert "fake" in reg and set(BUILT_IN) <= set(reg) and len(reg) == len(set(reg))
    assert not reg["fake"].available
    assert "fake" not in base.available_methods()
    with pytest.raises(MethodUnavailable, match="no_such_weights.onnx is missing"):
        create("fake")


def test_two_packages_with_one_name_are_refused(extra_package):
    extra_package("tmp_twin", '''
        from engine.methods.base import MethodInfo
        from engine.methods.baseline import BaselineMethod

        class Twin(BaselineMethod):
            pass

        METHOD = MethodInfo("baseline", "a second baseline", Twin, weights="baseline.onnx")
    ''')
    with pytest.raises(ValueError, match="declared twice"):
        registry()


def test_an_onnx_file_without_the_declared_outputs_is_refused():
    from engine.methods.baseline import BaselineMethod

    class Renamed(BaselineMethod):
        pass

    MethodInfo("renamed", "baseline weights, wrong output names", Renamed, weights="baseline.onnx",
               outputs=("not_an_output",))
    if not Renamed.info.available:
        pytest.skip("weights/baseline.onnx missing")
    with pytest.raises(ValueError, match="not_an_output"):
        Renamed()


@pytest.mark.parametrize("name", ["baseline", "prnet", "3dstn"])
def test_decode_returns_a_typed_result(name):
    from engine.runtime import crop_to_input

    if not registry()[name].available:
        pytest.skip(f"weights/{registry()[name].weights} missing")
    m = create(name)
    crop = np.full((120, 120, 3), 128, np.uint8)
    dec = m.decode(m.model(crop_to_input(crop)))
    assert isinstance(dec, DecodeResult)
    assert dec.points.shape == (536, 3) and dec.pose.shape == (3,)
    assert (dec.dense is not None) == (name == "prnet") and (dec.shape is not None) == (name == "3dstn")


class _Stub(base.Method):
    """A method that fails the way it is told to."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def align(self, crop_bgr):
        raise self.error


MethodInfo("stub", "test stub", _Stub, weights="none")


class _OneFaceTracker:
    detector = None

    def boxes_for(self, image):
        return [SimpleNamespace(face_id=0, box=np.array([10.0, 10.0, 110.0, 110.0]))]

    def update(self, track, landmarks):
        self.last = landmarks


def test_no_face_skips_the_face_and_other_errors_propagate():
    from engine.pipeline import FrameProcessor
    from engine.sources import Frame

    frame = Frame(index=0, timestamp=0.0, image=np.zeros((120, 120, 3), np.uint8))
    proc = FrameProcessor([_Stub(NoFaceError("nothing there"))], tracker=_OneFaceTracker())
    assert proc.process(frame).faces == []
    proc = FrameProcessor([_Stub(RuntimeError("a real bug"))], tracker=_OneFaceTracker())
    with pytest.raises(RuntimeError, match="a real bug"):
        proc.process(frame)
