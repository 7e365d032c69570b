"""ms per face of ``align_batch`` and of its ONNX call alone (the difference is the tail), at 1 and 16 faces per
call, one thread, for the project tree given: run it on an old and a new tree alternately to compare tails.
    git archive OLD engine | tar -x -C /tmp/old && ln -s $PWD/weights $PWD/resources /tmp/old/
    bash /tmp/quiet.sh bash -c 'for t in /tmp/old . /tmp/old .; do python scripts/tail_ab.py $t; done'
"""
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else ".")

import numpy as np  # noqa: E402

from engine.evaluation.bench import fixed_crops  # noqa: E402
from engine.methods.factory import create  # noqa: E402
from engine.runtime import crop_to_input  # noqa: E402

crops = fixed_crops()
res = {}
for name in (sys.argv[2] if len(sys.argv) > 2 else "baseline,3dstn,prnet,mtcnn3d").split(","):
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
print(sys.argv[1] if len(sys.argv) > 1 else ".", json.dumps(res))
