"""`cprfa`: CPRFA (Wu et al., "Convolutional Point-set Representation: a convolutional bridge between a densely
annotated image and 3D face alignment"): DAFI -> CPR matrices -> recurrent shape and pose updates, then a
consistency-aware pose round.

Inference is one ONNX graph (numpy only here): HS-U-Net -> DAFI and face mask -> in-graph retrieval of the C
selected vertices -> round 1 (five conv + GRU regressors, alpha, rx&ry, rz, s, t, three recurrent steps) -> round 2
(pose regressors with beta from sampled reprojection errors) -> the face model's 536 points. ``rounds=1`` returns
round 1's estimate (the paper's ablation "CPR one round"). The torch side: hsunet.py, network.py, geometry.py,
model.py, corruption.py, dafi_targets.py, train_dafi.py (recipe ``cprfa-dafi``), train.py (recipe ``cprfa``).

Status: implemented, NOT trained. weights/cprfa.onnx does not exist, so the method is listed as unavailable.

Training plan (2 CPU cores; measured costs; the next session runs these, preferably on the device machine):
  1. HS-U-Net: ``python main.py train cprfa-dafi --epochs 20`` (first run renders the 19,080 ground-truth DAFIs into
     a 1.1 GB validated cache in runs/cache, about 6 min of one core). Measured training throughput 74 images/s on
     2 threads (``bash /tmp/quiet.sh python main.py train engine.methods.cprfa.train_dafi --benchmark --steps 5
     --rounds 1 --limit 512 --threads 2``, new path, batch 32): 18,126 training crops (the reference split held out)
     = about 4.1 min per epoch + validation (the DAFI's own 68-point NME on aflw2000_dev), so 20 epochs about
     1.5 h. Ships weights/cprfa-dafi.pt (the cprfa recipe loads it) and an ONNX of the U-Net alone.
  2. CPR rounds: ``python main.py train cprfa --epochs N`` (the U-Net frozen; CPR inputs are ground-truth DAFIs
     corrupted as the U-Net errs on the held-out reference split, measured when the recipe is built). See train.py
     for its measured per-epoch cost.
  3. Ablations: ``python main.py train cprfa --ablation one-round``, ``--ablation cpr-h`` (fusion with mtcnn3d's 68
     landmarks), ``--ablation mean-t``; then ``python main.py card cprfa``.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.cpr import pose_euler_degrees
from engine.methods.base import DecodeResult, MethodInfo
from engine.methods.onnx_method import OnnxMethod

OUTPUTS = ("points", "params", "points_round1", "params_round1", "found")
N_ALPHA = 50


def pose_degrees(params: np.ndarray) -> np.ndarray:
    """(B, 56) CPRFA parameters (alpha, then pose) -> (B, 3) yaw, pitch, roll in degrees."""
    return pose_euler_degrees(np.asarray(params, np.float64)[:, N_ALPHA:])


class CPRFAMethod(OnnxMethod):
    def __init__(self, rounds: int = 2, **kw) -> None:
        if rounds not in (1, 2):
            raise ValueError(f"cprfa has rounds 1 and 2, not {rounds!r}")
        super().__init__(**kw)
        self.rounds = rounds

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        suffix = "" if self.rounds == 2 else "_round1"
        points = outputs[f"points{suffix}"].astype(np.float64)
        pose = pose_degrees(outputs[f"params{suffix}"])
        return [DecodeResult(p, q) for p, q in zip(points, pose)]

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        return self.decode_batch(outputs)[0]


METHOD = MethodInfo("cprfa", "CPRFA: densely annotated image -> convolutional point-set representation -> recurrent "
                    "shape and pose updates, consistency-aware round", CPRFAMethod, weights="cprfa.onnx",
                    recipe="engine.methods.cprfa.train", outputs=OUTPUTS)
