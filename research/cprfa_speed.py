"""CPRFA's run-time cost before it is trained: export the whole graph (HS-U-Net, in-graph retrieval, both CPR
rounds) with the current code and whatever U-Net weights exist (an untrained one if none: the cost does not depend
on the weights), then time it on one ONNX Runtime thread: the graph alone, the U-Net alone, and the method's
``align`` (graph + decode + visibility) the way ``main.py bench`` does (8 fixed training crops, median of 100 after
10 warm-up runs). Nothing is written to weights/.

    OMP_NUM_THREADS=1 python -m research.cprfa_speed      # on the shared 2-core VM, with the training job paused
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np



def timed(fn, inputs: list, warmup: int = 10, runs: int = 100) -> float:
    for k in range(warmup):
        fn(inputs[k % len(inputs)])
    t = []
    for k in range(runs):
        t0 = time.perf_counter()
        fn(inputs[k % len(inputs)])
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t))


def main() -> None:
    import onnxruntime as ort
    import torch

    import engine.methods.onnx_method as onnx_method
    import engine.paths
    from engine.methods.factory import create
    from engine.methods.cprfa.train_dafi import DafiExport
    from engine.training.export import export_onnx
    from engine.training.recipes import get_recipe
    from engine.training.targets import load_training_set

    torch.set_num_threads(1)
    ts = load_training_set(limit=64)
    recipe = get_recipe("cprfa")
    recipe.allow_untrained_dafi = True      # a timing export only, written to a temporary folder
    model = recipe.build(ts).eval()
    out = Path(tempfile.mkdtemp(prefix="cprfa_speed_"))
    export_onnx(recipe, model, out / "cprfa.onnx")
    x = [np.asarray(ts.images[i])[None].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1 for i in range(8)]
    torch.onnx.export(DafiExport(model.unet), (torch.from_numpy(x[0]),), str(out / "unet.onnx"),
                      input_names=["image"], output_names=["dafi", "mask"], opset_version=18, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    graph = ort.InferenceSession(str(out / "cprfa.onnx"), so, providers=["CPUExecutionProvider"])
    unet = ort.InferenceSession(str(out / "unet.onnx"), so, providers=["CPUExecutionProvider"])
    engine.paths.weights_path = lambda name: out / name
    onnx_method.weights_path = lambda name: out / name
    method = create("cprfa", threads=1)
    crops = [np.asarray(ts.images[i]) for i in range(8)]
    print(f"U-Net widths {model.unet.widths}, C = {len(model.retrieval.codes)}, "
          f"{'trained' if recipe.dafi_trained else 'untrained'} U-Net")
    print(f"graph alone: {timed(lambda a: graph.run(None, {'image': a}), x):.2f} ms/face (one thread)")
    print(f"U-Net alone: {timed(lambda a: unet.run(None, {'image': a}), x):.2f} ms/face")
    print(f"align (graph + decode + visibility): {timed(method.align, crops):.2f} ms/face")


if __name__ == "__main__":
    main()
