"""`cprfa`: CPRFA (Wu et al., "Convolutional Point-set Representation: a convolutional bridge between a densely
annotated image and 3D face alignment"): DAFI -> CPR matrices -> recurrent shape and pose updates, then a
consistency-aware pose round.

Inference is one ONNX graph (numpy only here): HS-U-Net -> DAFI and face mask -> in-graph retrieval of the C
selected vertices -> round 1 (five conv + GRU regressors, alpha, rx&ry, rz, s, t, three recurrent steps) -> round 2
(pose regressors with beta from sampled reprojection errors) -> the face model's 536 points. ``rounds=1`` returns
round 1's estimate (the paper's ablation "CPR one round"). The torch side: hsunet.py, network.py, geometry.py,
model.py, corruption.py, dafi_targets.py, train_dafi.py (recipe ``cprfa-dafi``), train.py (recipe ``cprfa``).

CPR-H, the paper's CPRFA result (its Table 2): the graph also takes another method's 68 landmarks (``landmarks``,
(B, 68, 2) pixels of the 120-px crop; mtcnn3d stands in for FAN3D) and every regressor of both rounds reads a second
CPR built from them. ``cprfa`` runs mtcnn3d's ONNX on the crop first when its graph has that input, and its timings
count both networks (stage ``landmark detector``, then ``network``). The unfused model is the variant
``cprfa-unfused`` (weights/cprfa-unfused.*, kept by the promotion that shipped CPR-H: docs/training.md).

The unfused model, until CPR-H's promotion shipped as ``cprfa`` itself: weights/cprfa.onnx/.pt/.md come from the
recipe's
warp-corruption run (``python main.py train cprfa --ablation warp-corruption --schedule-from weights/cprfa.pt``,
the first run's 12-epoch schedule replayed, 109 min on 2 threads), shipped with ``python main.py train cprfa
--promote warp-corruption --previous-as code-corruption`` once the warp model became the recipe's default; on the
stage-1 U-Net of ``python main.py train cprfa-dafi --epochs 16``, retrieval threshold 0.02 chosen on the training
reference split (engine/methods/cprfa/vertex_selection.py). aflw2000_dev protocol 3.67 / 4.75 / 6.56, balanced 4.99
(must <= 5.5), e2e 5.62 (``python main.py card cprfa``); 14.6 ms per face on one thread (``python main.py bench
--methods cprfa``; target <= 30). The paper's ablation (balanced, torch): DAFI 7.86, DAFI + PnP 6.12, one round 4.86,
both rounds 4.99. The first run, on the code-noise corruption (far harsher than the U-Net at the selected vertices:
``python -m research.cprfa_corruption_check``), ended at 6.61 and is kept as the ablation ``code-corruption``.

Open: the consistency-aware round does not help on these inputs (+0.13). CPR-H fine-tuned 3 epochs from the
unfused weights (``--ablation cpr-h-finetune``) reached balanced 4.13 (torch); the 8-epoch arm
``cpr-h-finetune-long`` is the recipe's default and ships with ``--promote`` (docs/training.md). The warm-started
fused graph (fused columns zero) run as the whole chain gives back the unfused 4.99 exactly
(``python -m research.cprfa_warm_chain``).

Measured costs (this project's 2-core VM):
- whole method, one thread: 14.6 ms per face (bench above); 15.1 ms in the card run (the code-noise model, the same
  graph: 14.8 in bench, 15.5 and 14.1 in two card runs).
- HS-U-Net training: about 5.2 min per epoch on 2 threads (18,126 crops, reference split held out).
- CPR rounds training: 33-36 images/s on 2 threads while other work ran beside it, about 8-9 min per epoch plus
  about 1 min of validation (aflw2000_dev through the whole graph and the stage rows).
"""
from __future__ import annotations

import time

import numpy as np

from engine.facemodel import N_MESH
from engine.geometry.cpr import pose_euler_degrees
from engine.methods.base import LANDMARK_STAGE, DecodeResult, Int8Variant, MethodInfo, MethodUnavailable, registry
from engine.methods.onnx_method import OnnxMethod
from engine.runtime import OnnxModel

OUTPUTS = ("points", "params", "points_round1", "params_round1", "found")
N_ALPHA = 50
LANDMARKS_INPUT = "landmarks"          # the CPR-H graph's second input: (B, 68, 2) crop pixels of the 120-px crop
FUSION_METADATA = "cpr_h_landmarks"    # ONNX metadata: the method whose landmarks the graph was trained to fuse
FUSION_DEFAULT = "mtcnn3d"             # FAN3D's stand-in (the recipe's notes say why)


def pose_degrees(params: np.ndarray) -> np.ndarray:
    """(B, 56) CPRFA parameters (alpha, then pose) -> (B, 3) yaw, pitch, roll in degrees."""
    return pose_euler_degrees(np.asarray(params, np.float64)[:, N_ALPHA:])


class CPRFAMethod(OnnxMethod):
    """CPRFA. A graph with a ``landmarks`` input is CPR-H: another method's ONNX (mtcnn3d, named in the graph's
    metadata) runs on the crop first and its 68 points go in beside the image, in the crop's pixels as in training
    (train.other_method_landmarks); that network's time is the ``landmark detector`` stage of the result's timings,
    so the reported ms per face is the whole chain's. A graph without that input is the unfused CPRFA."""
    allows_fusion = True

    def __init__(self, rounds: int = 2, threads: int | None = None, providers: list[str] | None = None,
                 weights_file: str | None = None) -> None:
        if rounds not in (1, 2):
            raise ValueError(f"cprfa has rounds 1 and 2, not {rounds!r}")
        super().__init__(threads=threads, providers=providers, weights_file=weights_file)
        self.rounds = rounds
        self.landmark_method: str | None = None
        self.landmark_model: OnnxModel | None = None
        if LANDMARKS_INPUT in self.model.input_names:
            if not self.allows_fusion:
                raise ValueError(f"{self.model.path} is a CPR-H graph (it reads {LANDMARKS_INPUT!r}); method "
                                 f"{self.name!r} is the unfused CPRFA")
            meta = self.model.session.get_modelmeta().custom_metadata_map
            self.landmark_method = meta.get(FUSION_METADATA, FUSION_DEFAULT)
            source = registry()[self.landmark_method]
            if not source.available:
                raise MethodUnavailable(f"method {self.name!r} fuses {self.landmark_method}'s landmarks (CPR-H) and "
                                        f"{source.unavailable_reason()}")
            # the other method's float graph, whatever this one is: the fused stems learned its points
            self.landmark_model = OnnxModel(source.weights_path, threads=threads, providers=providers)

    @property
    def fused(self) -> bool:
        return self.landmark_model is not None

    def extra_inputs(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        if self.landmark_model is None:
            return {}, {}
        t0 = time.perf_counter()
        points = self.landmark_model.session.run(["points"], {self.landmark_model.input_name: x})[0]
        landmarks = np.ascontiguousarray(points[:, N_MESH:, :2], dtype=np.float32)
        return {LANDMARKS_INPUT: landmarks}, {LANDMARK_STAGE: (time.perf_counter() - t0) * 1e3}

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        suffix = "" if self.rounds == 2 else "_round1"
        points = outputs[f"points{suffix}"].astype(np.float64)
        pose = pose_degrees(outputs[f"params{suffix}"])
        return [DecodeResult(p, q) for p, q in zip(points, pose)]

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        return self.decode_batch(outputs)[0]


class CPRFAUnfusedMethod(CPRFAMethod):
    """The unfused CPRFA (no other method's landmarks): the ablation row beside CPR-H."""
    allows_fusion = False


# pose_source: chosen on aflw_train by `python main.py pose-study` (docs/head-pose.md)
METHOD = MethodInfo("cprfa", "CPRFA (CPR-H): mtcnn3d's 68 landmarks fused with the DAFI's convolutional point-set "
                    "representation -> recurrent shape and pose updates, consistency-aware round", CPRFAMethod,
                    weights="cprfa.onnx", recipe="engine.methods.cprfa.train", outputs=OUTPUTS,
                    obtain="python main.py train cprfa-dafi && python main.py train cprfa",
                    int8=Int8Variant(), pose_source="landmarks")
VARIANTS = (
    MethodInfo("cprfa-unfused", "CPRFA without CPR-H fusion: densely annotated image -> convolutional point-set "
               "representation -> recurrent shape and pose updates, consistency-aware round (the ablation row)",
               CPRFAUnfusedMethod, weights="cprfa-unfused.onnx", outputs=OUTPUTS,
               obtain="python main.py train cprfa --promote cpr-h-finetune-long --previous-as unfused "
                      "--previous-weights-as cprfa-unfused (keeps the unfused weights/cprfa.* it replaces)",
               int8=Int8Variant(), pose_source="landmarks"),
)
