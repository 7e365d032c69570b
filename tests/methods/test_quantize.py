"""INT8 variants (`main.py quantize`, `--quantized`): what the quantizer writes and how the factory loads it."""
import numpy as np
import pytest

from engine.methods.base import MethodUnavailable, quantized_name, registry
from engine.methods.factory import create


def _need_weights(name: str) -> None:
    if not registry()[name].available:
        pytest.skip(f"weights/{registry()[name].weights} missing")


def test_quantized_file_name():
    assert quantized_name("prnet.onnx") == "prnet.int8.onnx"
    with pytest.raises(ValueError):
        quantized_name("pifa.pt")


def test_quantize_writes_an_int8_model_close_to_the_float_one(train_dir, tmp_path):
    import onnx

    from engine.evaluation.bench import fixed_crops
    from engine.quantize import quantize
    from engine.runtime import OnnxModel

    _need_weights("baseline")
    path = quantize("baseline", out=tmp_path / "baseline.int8.onnx", n_calibration=8)
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert isinstance(graph.input[0].type.tensor_type.shape.dim[0].dim_param, str) and \
        graph.input[0].type.tensor_type.shape.dim[0].dim_param                      # batch axis still dynamic
    assert not list(tmp_path.glob("*.tmp.onnx"))                                    # nothing half-written left
    float_method, int8_method = create("baseline", threads=1), create("baseline", threads=1)
    int8_method.model = OnnxModel(path, threads=1)
    crops = fixed_crops(4)
    a, b = float_method.align_batch(crops), int8_method.align_batch(crops)
    err = np.mean([np.linalg.norm(x.landmarks[:, :2] - y.landmarks[:, :2], axis=1).mean() for x, y in zip(a, b)])
    assert 0 < err < 3.0   # quantized (not the same numbers), and still the same face (crop pixels)


def test_quantize_keeps_the_float_model_metadata(train_dir, tmp_path):
    import onnx

    from engine.quantize import quantize

    _need_weights("prnet")
    path = quantize("prnet", out=tmp_path / "prnet.int8.onnx", n_calibration=2)
    want = {p.key: p.value for p in onnx.load(str(registry()["prnet"].weights_path)).metadata_props}
    got = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert all(got.get(k) == v for k, v in want.items()) and "quantized" in got


def test_every_onnx_method_declares_its_int8_variant_in_its_own_package():
    from engine.methods.onnx_method import OnnxMethod
    from engine.methods.stn3d import INT8_KEEP_FLOAT

    for name, info in registry().items():
        assert (info.int8 is not None) == issubclass(info.factory, OnnxMethod), name
    assert registry()["3dstn"].int8.keep_float == INT8_KEEP_FLOAT == ("/net/head/Gemm",)
    assert registry()["baseline"].int8.keep_float == ()


def test_factory_refuses_a_missing_or_impossible_int8_model(monkeypatch):
    import engine.methods.factory

    _need_weights("baseline")
    monkeypatch.setattr(engine.methods.factory, "quantized_name", lambda w: "no-such-file.int8.onnx")
    with pytest.raises(MethodUnavailable, match="python main.py quantize baseline"):
        create("baseline", quantized=True)
    if registry()["mediapipe"].available:
        with pytest.raises(ValueError, match="no ONNX model"):
            create("mediapipe", quantized=True)


def test_factory_loads_the_int8_file_when_asked(monkeypatch, tmp_path):
    import shutil

    _need_weights("baseline")
    # stand the float file in for an INT8 one in a private weights folder: the factory must open that file
    shutil.copy(registry()["baseline"].weights_path, tmp_path / "baseline.int8.onnx")
    shutil.copy(registry()["baseline"].weights_path, tmp_path / "baseline.onnx")
    monkeypatch.setattr("engine.paths.WEIGHTS_DIR", tmp_path)
    m = create("baseline", quantized=True, threads=1)
    assert m.model.path == tmp_path / "baseline.int8.onnx" and m.quantized
    assert not create("baseline", threads=1).quantized


def test_every_shipped_int8_model_runs_through_the_factory():
    from engine.evaluation.bench import fixed_crops
    from engine.paths import WEIGHTS_DIR

    shipped = sorted(p.name[: -len(".int8.onnx")] for p in WEIGHTS_DIR.glob("*.int8.onnx"))
    if not shipped:
        pytest.skip("no weights/*.int8.onnx present")
    crops = fixed_crops(3)
    for name in shipped:
        m = create(name, quantized=True, threads=1)
        assert m.quantized and m.model.path.name == f"{name}.int8.onnx"
        assert isinstance(m.model.session.get_inputs()[0].shape[0], str)          # dynamic batch axis
        results = m.align_batch(crops)
        assert len(results) == 3 and all(np.isfinite(r.landmarks).all() and r.visible.any() for r in results)
