"""ms per face of ``align_batch`` and of its ONNX call alone (the difference is the tail), at 1 and 16 faces per
call, one thread, of the engine it imports (its folder is printed first): run it on an old and a new tree
alternately to compare tails. From the repository root, with OLD a commit:
    mkdir -p ../old && git archive OLD engine | tar -x -C ../old && ln -s $PWD/weights $PWD/resources ../old/
    for t in ../old . ../old .; do PYTHONPATH=$t:. python -P -m research.tail_ab [METHODS]; done
(``-P`` keeps the current folder off the import path, so ``engine`` comes from the first PYTHONPATH entry.)
"""
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from pathlib import Path

import numpy as np

import engine

from engine.evaluation.bench import fixed_crops
from engine.methods.factory import create
from engine.runtime import crop_to_input

crops = fixed_crops()
res = {}
for name in (sys.argv[1] if len(sys.argv) > 1 else "baseline,3dstn,prnet,mtcnn3d").split(","):
    m = create(name, threads=1)
    for faces in (1, 16):
        frame = [crops[k % len(crops)] for k in range(faces)]
        for _ in range(20):
            m.align_batch(frame)
        whole, network = [], []
        for _ in range(400 if faces == 1 else 60):
            t0 = time.perf_counter()
            m.align_batch(frame)
            t1 = time.perf_counter()
            m.model(crop_to_input(np.stack(frame)))
            t2 = time.perf_counter()
            whole.append((t1 - t0) / faces)
            network.append((t2 - t1) / faces)
        a, n = float(np.median(whole)) * 1e3, float(np.median(network)) * 1e3
        res[f"{name}@{faces}"] = {"align_batch": round(a, 3), "network": round(n, 3), "tail": round(a - n, 3)}
print(Path(engine.__file__).resolve().parents[1], json.dumps(res))
