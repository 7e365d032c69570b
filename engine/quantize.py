"""INT8 variants of the shipped ONNX models (`python main.py quantize NAME`), an offline step; the app, eval and
bench load one with ``--quantized`` (``create(name, quantized=True)``).

Static quantization with ONNX Runtime's tooling: weights int8 per output channel, activations uint8 with ranges
calibrated on crops from the training set (``aflw_train``; never the validation set the NME is measured on), QDQ
format. Only the learned layers (Conv, ConvTranspose, Gemm) are quantized: the geometry some graphs carry (3DSTN's
camera and TPS, MT-CNN 3D's patch extraction and normals, PRNet's point read-out) stays float, since it is the same
maths as the numpy tail and an 8-bit error there would move every point.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.methods.base import quantized_name, registry
from engine.paths import data_path, weights_path
from engine.runtime import crop_to_input

QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm")


def calibration_crops(n: int = 200, root: Path | None = None) -> np.ndarray:
    """(n, 120, 120, 3) uint8 BGR training crops spread evenly over aflw_train (every len/n-th image)."""
    root = Path(root) if root is not None else data_path("aflw_train")
    labels = root / "labels.npz"
    if not labels.exists():
        raise FileNotFoundError(f"calibration needs the training crops: {labels} is missing")
    names = np.load(labels)["names"]
    picks = np.linspace(0, len(names) - 1, n).round().astype(int)
    crops = []
    for i in picks:
        img = cv2.imread(str(root / "images" / str(names[i])))
        if img is None or img.shape != (120, 120, 3):
            raise ValueError(f"{root / 'images' / str(names[i])}: not a 120x120 colour crop")
        crops.append(img)
    return np.stack(crops)


def quantize(name: str, out: Path | None = None, n_calibration: int = 200, calibrate: str = "percentile",
             keep_float: list[str] | None = None) -> Path:
    """Write the INT8 variant of method ``name``'s ONNX model next to it; returns its path. ``keep_float``: names
    of graph nodes left in float (a regression head whose 8-bit error costs too much accuracy); default the method's
    declared ``MethodInfo.int8.keep_float``. Percentile calibration (the 99.999th percentile of each activation, not
    its extreme) cost less accuracy than min/max for every method on aflw2000_dev (docs/performance.md, per-face
    cost)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    info = registry()[name]
    if info.int8 is None:
        raise ValueError(f"method {name!r} declares no INT8 variant (MethodInfo.int8): nothing to quantize")
    keep_float = list(info.int8.keep_float) if keep_float is None else keep_float
    src = info.weights_path
    if not src.exists():
        raise FileNotFoundError(f"{src} is missing: nothing to quantize")
    dst = Path(out) if out is not None else weights_path(quantized_name(info.weights))
    crops = calibration_crops(n_calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            import onnx

            inputs = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
            if len(inputs) == 1:
                self.batches = iter([{inputs[0]: crop_to_input(c)} for c in crops])
                return
            # a graph that also reads another network's output (CPRFA's CPR-H: mtcnn3d's landmarks): the method
            # makes its inputs from each crop as at run time
            from engine.methods.factory import create

            method = create(name, threads=1)
            self.batches = iter([method.network_inputs(crop_to_input(c))[0] for c in crops])
            method.close()

        def get_next(self):
            return next(self.batches, None)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    tmp = dst.with_suffix(".tmp.onnx")
    try:
        quantize_static(str(src), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=methods[calibrate],
                        nodes_to_exclude=list(keep_float or []))
        _copy_metadata(src, tmp, keep_float or [])
        tmp.replace(dst)   # nothing half-written under the final name
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".data").unlink(missing_ok=True)
    return dst


def _copy_metadata(src: Path, dst: Path, keep_float: list[str]) -> None:
    """The float model's metadata (PRNet's UV layout and mask) on the INT8 file, which the decode reads."""
    import onnx

    a, b = onnx.load(str(src)), onnx.load(str(dst))
    have = {p.key for p in b.metadata_props}
    for p in a.metadata_props:
        if p.key not in have:
            b.metadata_props.add(key=p.key, value=p.value)
    b.metadata_props.add(key="quantized", value="int8 static QDQ, per-channel weights, " + ",".join(QUANTIZED_OPS)
                         + ("; kept float: " + ",".join(keep_float) if keep_float else ""))
    onnx.save(b, str(dst))
