"""Does the CPR rounds' training corruption look like the HS-U-Net's real error where it matters, at the selected
vertices? On the reference split (held out from the U-Net), retrieve the 128 selected vertices
(weights/cprfa_vertices.npz) from three DAFIs of each crop: the ground truth, the U-Net's prediction
(runs/cprfa/reference_predictions.npz, from ``python -m engine.methods.cprfa.train_dafi --predict-reference``) and
the ground truth corrupted by engine/methods/cprfa/corruption.py with the error model fitted to those predictions
(the code-noise model, the recipe's ablation code-corruption; with --warp, the warp model calibrated as the
recipe's default does, on the first 256 crops). Reports, for each: the found rate, the found rate of vertices the
ground truth finds and of those it does not (stray detections), and the pixel distance of each found vertex from
where the ground truth finds it (median, mean, 90th percentile). Training-split data only; about 2 minutes on one core.
    python -m research.cprfa_corruption_check [--predictions runs/cprfa/reference_predictions.npz] [--seed 0] [--warp]
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from engine.methods.cprfa.corruption import corrupt, measure_errors
from engine.methods.cprfa.dafi_targets import cached_dafis, dafi_tensor
from engine.methods.cprfa.geometry import Retrieval
from engine.methods.cprfa.train import calibrate_to_predictions, retrieve_in_chunks
from engine.methods.cprfa.vertex_selection import load_vertex_selection
from engine.training.targets import load_training_set


def summary(obs: torch.Tensor, found: torch.Tensor, obs_gt: torch.Tensor, found_gt: torch.Tensor) -> dict:
    both = found & found_gt
    err = (obs - obs_gt).norm(dim=-1)[both]
    return {"found": float(found.float().mean()), "found_where_gt_finds": float(found[found_gt].float().mean()),
            "found_where_gt_does_not": float(found[~found_gt].float().mean()),
            "error_px": {"median": float(err.median()), "mean": float(err.mean()), "p90": float(err.quantile(0.9))}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--predictions", default="runs/cprfa/reference_predictions.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warp", action="store_true", help="the calibrated warp model instead of the code-noise model")
    args = ap.parse_args()
    torch.set_num_threads(1)
    z = np.load(args.predictions)
    rows = z["rows"]
    train = load_training_set()
    gt, gt_mask = dafi_tensor(np.asarray(cached_dafis(train.params)[rows]))
    pred_mask = torch.from_numpy(z["mask"])
    pred = torch.from_numpy(z["dafi"].astype(np.float32)).permute(0, 3, 1, 2) * pred_mask[:, None]
    model = measure_errors(pred, pred_mask.float(), gt, gt_mask)
    sel = load_vertex_selection()
    retrieval = Retrieval(sel.codes, sel.threshold)
    obs_gt, found_gt = retrieve_in_chunks(retrieval, gt, gt_mask)
    if args.warp:
        model = calibrate_to_predictions(model, pred, pred_mask, gt, gt_mask, retrieval)
    g = torch.Generator()
    g.manual_seed(args.seed)
    synthetic, synthetic_mask = corrupt(gt, gt_mask, model, g)
    report = {"crops": int(len(rows)), "threshold": float(sel.threshold), "error_model": model.as_dict(),
              "ground_truth": {"found": float(found_gt.float().mean())},
              "predicted": summary(*retrieve_in_chunks(retrieval, pred, pred_mask), obs_gt, found_gt),
              "synthetic": summary(*retrieve_in_chunks(retrieval, synthetic, synthetic_mask), obs_gt, found_gt)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
