"""`cprfa`: CPRFA (Wu et al., "Convolutional Point-set Representation: a convolutional bridge between a densely
annotated image and 3D face alignment"): DAFI -> CPR matrices -> recurrent shape and pose updates, then a
consistency-aware pose round.

Inference is one ONNX graph (numpy only here): HS-U-Net -> DAFI and face mask -> in-graph retrieval of the C
selected vertices -> round 1 (five conv + GRU regressors, alpha, rx&ry, rz, s, t, three recurrent steps) -> round 2
(pose regressors with beta from sampled reprojection errors) -> the face model's 536 points. ``rounds=1`` returns
round 1's estimate (the paper's ablation "CPR one round"). The torch side: hsunet.py, network.py, geometry.py,
model.py, corruption.py, dafi_targets.py, train_dafi.py (recipe ``cprfa-dafi``), train.py (recipe ``cprfa``).

Status: stage 1 trained, the CPR rounds NOT trained. weights/cprfa-dafi.pt/.onnx hold the HS-U-Net after
``python main.py train cprfa-dafi --epochs 16`` (the DAFI's own 68-point NME on aflw2000_dev, balanced 7.86 after epoch
16; held-out code L1 0.021, mask IoU 0.915 on the reference split). weights/cprfa.onnx does not exist, so the
method is listed as unavailable; no untrained weights are shipped (the cprfa recipe refuses to export without a
trained HS-U-Net). Step 2 is measured but not decided: on the U-Net's held-out predictions the 128 selected vertices
are found 0.67 of the time at threshold 0.01 (error 2.27 px, false 0.034) and 0.91 at 0.02 (2.31 px, false 0.107).

Measured costs (this project's 2-core VM; untrained networks, whose cost does not depend on the weights):
- whole method, ``align`` on one thread (ONNX graph with U-Net, retrieval and both rounds, + decode + visibility),
  C = 128, U-Net widths (16, 32, 64, 96): 16.4-18.4 ms per face in two quiet runs (median of 100 on 8 crops;
  ``bash /tmp/quiet.sh python scripts/cprfa_speed.py``: graph alone 17.3 ms, U-Net alone 5.7 ms in the later run).
  Target <= 30 ms. (With the narrower U-Net (16, 24, 48, 64): 14.9 ms.)
- HS-U-Net training: 56.9 images/s on 2 threads, batch 32 (``bash /tmp/quiet.sh python main.py train cprfa-dafi
  --benchmark --steps 5 --rounds 1 --limit 512 --threads 2``, "new" path total; 56-58 in an A/B against the
  narrower U-Net's 75-78): 18,126 training crops (reference split held out) = about 5.4 min per epoch, plus
  validation.
- CPR rounds training: 64.4 images/s on 2 threads, batch 32, C = 128 (bash /tmp/quiet.sh python main.py train
  cprfa --benchmark --steps 5 --rounds 1 --limit 256 --threads 2): 19,080 crops = about 5 min per epoch, plus
  validation (aflw2000_dev through the whole graph and the ablation arms).

Training plan for the next session (in this order; each resumable with --resume):
  1. ``python main.py train cprfa-dafi --epochs 20`` (about 2 h on 2 cores). The first run renders the 19,080
     ground-truth DAFIs into a 1.1 GB validated cache in runs/cache (about 3-4 min on one core; parallel on the
     device machine). Ships
     weights/cprfa-dafi.pt (the cprfa recipe loads it) and weights/cprfa-dafi.onnx (the U-Net alone; not a
     method). Its per-epoch validation is the DAFI's own 68-point NME (an ablation row).
  2. ``python -m engine.methods.cprfa.train_dafi --predict-reference runs/cprfa/reference_predictions.npz``: the
     U-Net's held-out predictions and its error model; then decide the retrieval threshold and re-measure p2 with
     ``python -m engine.geometry.dafi_selection --predicted runs/cprfa/reference_predictions.npz`` (engineer A
     measured that iid code noise of 0.01-0.02 loses half or more detections at the paper's 0.01).
  3. ``python main.py train cprfa --epochs 12`` (about 1-1.5 h). Ships weights/cprfa.onnx: the method becomes
     available. Then ``python main.py card cprfa``.
  4. Ablations beside it: ``python main.py train cprfa --ablation cpr-h --epochs 12`` (CPR-H with mtcnn3d's
     landmarks), ``--ablation one-round``, ``--ablation mean-t``. The DAFI, DAFI + PnP, round-1 and round-2 rows are
     validated every epoch of the main run (history ``val_nme_stages``).
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
                    recipe="engine.methods.cprfa.train", outputs=OUTPUTS,
                    obtain="python main.py train cprfa-dafi && python main.py train cprfa")
