#!/usr/bin/env python3
"""CPRFA's consistency-aware round (CAPU), measured on the shipped torch checkpoint (weights/cprfa.pt); no training.

On aflw_train's held-out split (engine/training/split.py: every 20th crop, 954; no network of CPRFA trained on it,
though the vertex selection and the corruption model's calibration were measured on it; NME against the teacher's
68 points, by AFLW's |yaw|) and on aflw2000_dev (protocol crops, NME against the annotations, as the card's stage
table):

1. The sample the beta network's reprojection errors are measured over, per face: the selected vertices the DAFI
   finds (of C = 128), the kappa = 10% of them the round samples, the DAFI's foreground pixels, and the distinct
   BFM (no-neck) vertices those pixels retrieve at the selection's threshold (the set the paper's CAPU samples).
2. beta per update of round 2 (3 steps x rx&ry, rz, s, t): mean, sd, min, max and 5-95% across faces.
3. NME after round 1 and after round 2, and round 2 with (a) beta held at each update's held-out mean (a constant
   per update: is beta's response to the error profile worth anything?), (b) beta = 1 (the regressors' updates
   unscaled), (c) the errors measured over every found selected vertex (kappa = 1), (d) the errors measured over
   every DAFI-detected vertex (the paper's sample; each observed at the mean centre of its pixels, as the in-graph
   retrieval places the selected ones) - (c) and (d) without retraining the beta network; and how far the 10%
   profile (errors / their mean, what the beta network reads) lies from the (c) and (d) profiles.
4. ``--inputs`` (added to an existing --json file): round 1 against round 2 on the same held-out crops fed with
   the training inputs instead of the U-Net's DAFI: the ground-truth DAFI, clean and under the warp corruption
   model calibrated as ``build`` calibrates it (engine/methods/cprfa/train.py). Does round 2 fail on unseen faces,
   or only on the U-Net's real DAFIs?

    OMP_NUM_THREADS=2 nice -n 10 python -m research.cprfa_capu --json docs/results/cprfa_capu.json
    OMP_NUM_THREADS=2 nice -n 10 python -m research.cprfa_capu --inputs --json docs/results/cprfa_capu.json
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import engine  # noqa: F401  (pins BLAS threads before numpy loads)

import numpy as np
import torch
from torch import nn

from engine.facemodel import N_MESH, load_face_model
from engine.methods.cprfa import network
from engine.methods.cprfa.model import CPRFA
from engine.methods.cprfa.network import BETA_KAPPA, N_ALPHA, ROUND2_ORDER, STEPS
from engine.methods.cprfa.unet_stage import load_unet
from engine.methods.cprfa.vertex_selection import load_vertex_selection
from engine.paths import data_path, weights_path

BATCH = 50


def load_shipped() -> CPRFA:
    """weights/cprfa.pt in the recipe's shipped configuration (two rounds, translation network, no fusion)."""
    unet, trained = load_unet()
    if not trained:
        raise FileNotFoundError("weights/cprfa-dafi.pt is missing or unfinished: the shipped CPRFA needs it")
    sel = load_vertex_selection()
    fm = load_face_model()
    basis = np.concatenate([fm.w_shape, fm.w_exp], axis=2)
    model = CPRFA(unet, sel, fm.mean, basis, torch.ones(56), rounds=2, translation="network", fusion=False)
    ck = torch.load(weights_path("cprfa.pt"), map_location="cpu", weights_only=False)
    model.load_state_dict(ck["model"])          # strict: step_scale and every regressor come from the checkpoint
    return model.eval()


class ConstantBeta(nn.Module):
    """Stands in for one group's BetaNet: returns ``values[k]`` on the k-th call of a round-2 pass (k = step)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values, self.calls = values, 0

    def forward(self, errors: torch.Tensor) -> torch.Tensor:
        v = self.values[self.calls % len(self.values)]
        self.calls += 1
        return errors.new_full((errors.shape[0], 1), v)


@contextmanager
def betas_replaced(model: CPRFA, replacement: dict[str, nn.Module]):
    old = model.round2.betas
    model.round2.betas = nn.ModuleDict(replacement)
    try:
        yield
    finally:
        model.round2.betas = old


@contextmanager
def kappa(value: float):
    """Round 2's sampled fraction of the found vertices (network.BETA_KAPPA, read at every update)."""
    old = network.BETA_KAPPA
    network.BETA_KAPPA = value
    try:
        yield
    finally:
        network.BETA_KAPPA = old


@contextmanager
def errors_replaced(model: CPRFA, fn):
    """Round 2's reprojection errors computed by ``fn(original, params, update, obs, found, m, kappa)``."""
    geo = model.geometry
    original = geo.reprojection_errors
    geo.reprojection_errors = lambda *a: fn(original, *a)
    try:
        yield
    finally:
        del geo.reprojection_errors      # back to the class's method


def profile(errors: torch.Tensor) -> torch.Tensor:
    """What BetaNet reads of the errors' shape: the errors divided by their mean."""
    return errors / errors.mean(1, keepdim=True).clamp_min(1e-3)


class DenseSample:
    """The paper's sample for one batch: every BFM (no-neck) vertex some foreground pixel of the predicted DAFI
    retrieves (nearest code within the selection's threshold), observed at the mean centre of its pixels, as the
    in-graph retrieval places the 128 selected ones; their model points under the round-1 shape (round 2 keeps
    alpha)."""

    def __init__(self, model: CPRFA, dafi: np.ndarray, mask: np.ndarray, alpha: torch.Tensor, codebook, tree,
                 threshold: float) -> None:
        from engine.geometry.dafi import pixel_centres

        xy_all = pixel_centres(*mask.shape[1:])
        faces, self.counts = [], []
        for d, m in zip(dafi, mask):
            codes = d.transpose(1, 2, 0)[m].astype(np.float64)
            xy = xy_all[m.ravel()]
            if len(codes):
                dist, idx = tree.query(codes, distance_upper_bound=threshold)
                hit = dist < threshold               # a miss comes back as inf
            else:
                idx, hit = np.zeros(0, np.int64), np.zeros(0, bool)
            v, inv = np.unique(idx[hit], return_inverse=True)
            n = np.bincount(inv, minlength=len(v)).astype(np.float64)
            o = np.stack([np.bincount(inv, weights=xy[hit, k], minlength=len(v)) for k in range(2)], 1)
            faces.append((v, o / np.maximum(n, 1)[:, None]))
            self.counts.append(len(v))
        b, vmax = len(faces), max(1, max(self.counts))
        self.obs, self.weight, self.points = torch.zeros(b, vmax, 2), torch.zeros(b, vmax), torch.zeros(b, vmax, 3)
        for i, (v, o) in enumerate(faces):
            if len(v):
                shape = codebook.mean[v] + np.einsum("vkc,c->vk", codebook.basis[v], alpha[i].numpy())
                self.obs[i, :len(v)] = torch.from_numpy(o).float()
                self.weight[i, :len(v)] = 1.0
                self.points[i, :len(v)] = torch.from_numpy(shape).float()
        self.centre, self.scale = model.geometry.centre, model.geometry.scale

    def errors(self, params: torch.Tensor, update: torch.Tensor, m: int) -> torch.Tensor:
        """(B, 2M) mean reprojection errors over the dense sample at params + t update, t = 1/M .. 2 (the sample
        points of torch_cpr.sample_reprojection_errors)."""
        from engine.geometry.torch_cpr import project

        pose, direction = params[:, N_ALPHA:], update[:, N_ALPHA:]
        b = pose.shape[0]
        steps = torch.arange(1, 2 * m + 1, dtype=pose.dtype) / m
        poses = (pose[:, None] + steps[None, :, None] * direction[:, None]).reshape(b * 2 * m, 6)
        pts = self.points[:, None].expand(b, 2 * m, *self.points.shape[1:]).reshape(b * 2 * m, -1, 3)
        proj = project(poses, pts, self.centre, self.scale)[..., :2].reshape(b, 2 * m, -1, 2)
        err = (proj - self.obs[:, None]).norm(dim=-1)
        return (err * self.weight[:, None]).sum(-1) / self.weight.sum(-1, keepdim=True).clamp(min=1.0)


@torch.no_grad()
def run_split(model: CPRFA, images: np.ndarray, codebook, tree, threshold: float) -> dict[str, np.ndarray]:
    """Every measurement on one split's (N, 120, 120, 3) uint8 BGR crops; landmarks in crop pixels."""
    from engine.training.dataset import images_to_tensor

    out: dict[str, list] = {}

    def add(key: str, value) -> None:
        out.setdefault(key, []).append(np.asarray(value))

    r2 = model.round2
    for s in range(0, len(images), BATCH):
        x = images_to_tensor(np.array(images[s:s + BATCH])).contiguous()
        dafi, fg, obs, found = model.observe(x)
        f = (found > 0.5).float()
        mask = (fg > 0.5).numpy()
        p1, _, _ = model.round1(model.init[None].expand(x.shape[0], -1), obs, found)
        dense = DenseSample(model, dafi.numpy(), mask, p1[:, :N_ALPHA], codebook, tree, threshold)
        add("found", f.sum(1)), add("sampled", torch.ceil(BETA_KAPPA * f.sum(1))), add("fg_pixels", mask.sum((1, 2)))
        add("dafi_vertices", dense.counts)
        add("obs", obs), add("found_flags", found), add("params1", p1)

        def lm(p: torch.Tensor) -> np.ndarray:
            return model.points(p)[:, N_MESH:, :2].numpy()

        add("round1", lm(p1))
        gaps: dict[str, list] = {"all_found": [], "dafi": []}

        def recorded(original, params, update, obs_, found_, m, kap):
            e = original(params, update, obs_, found_, m, kap)
            pe = profile(e)
            gaps["all_found"].append((pe - profile(original(params, update, obs_, found_, m, 1.0))).abs().mean(1))
            gaps["dafi"].append((pe - profile(dense.errors(params, update, m))).abs().mean(1))
            return e

        with errors_replaced(model, recorded):
            p2, _, betas = r2(p1, obs, found)
        add("round2", lm(p2)), add("betas", torch.cat(betas, 1))     # (B, 12): step-major, ROUND2_ORDER within
        add("profile_gap", torch.stack(gaps["all_found"], 1)), add("profile_gap_dafi", torch.stack(gaps["dafi"], 1))
        with betas_replaced(model, {g: ConstantBeta([1.0] * STEPS) for g in ROUND2_ORDER}):
            add("round2_beta1", lm(r2(p1, obs, found)[0]))
        with kappa(1.0):
            p2k, _, bk = r2(p1, obs, found)
        add("round2_kappa_all", lm(p2k)), add("betas_kappa_all", torch.cat(bk, 1))
        with errors_replaced(model, lambda original, params, update, o, f_, m, k: dense.errors(params, update, m)):
            p2d, _, bd = r2(p1, obs, found)
        add("round2_dafi", lm(p2d)), add("betas_dafi", torch.cat(bd, 1))
        print(f"  {min(s + BATCH, len(images))}/{len(images)}", file=sys.stderr, flush=True)
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def round2_constant_beta(model: CPRFA, split: dict[str, np.ndarray], const: dict[str, list[float]]) -> np.ndarray:
    """Round 2 again from the split's round-1 estimates, beta held at ``const`` (per group, per step)."""
    out = []
    with betas_replaced(model, {g: ConstantBeta(v) for g, v in const.items()}):
        for s in range(0, len(split["params1"]), BATCH):
            obs, found, p1 = (torch.from_numpy(split[k][s:s + BATCH]) for k in ("obs", "found_flags", "params1"))
            out.append(model.points(model.round2(p1, obs, found)[0])[:, N_MESH:, :2].numpy())
    return np.concatenate(out)


def spread(v: np.ndarray) -> dict[str, float]:
    v = np.asarray(v, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95))}


def beta_table(betas: np.ndarray) -> list[dict]:
    return [{"step": k // len(ROUND2_ORDER) + 1, "group": ROUND2_ORDER[k % len(ROUND2_ORDER)], **spread(betas[:, k])}
            for k in range(betas.shape[1])]


def constant_betas(betas: np.ndarray) -> dict[str, list[float]]:
    """Each update's mean beta, as ConstantBeta values per group (one per step)."""
    means = betas.mean(0)
    return {g: [float(means[s * len(ROUND2_ORDER) + i]) for s in range(STEPS)] for i, g in enumerate(ROUND2_ORDER)}


@torch.no_grad()
def training_inputs(model: CPRFA, images: np.ndarray, params: np.ndarray, rows: np.ndarray
                    ) -> dict[str, dict[str, np.ndarray]]:
    """Round 1 and round 2 landmarks (crop px) of the held-out crops fed with ground-truth DAFIs, clean and
    corrupted by the warp model calibrated on these crops' U-Net predictions (as ``build`` calibrates it)."""
    from engine.methods.cprfa.corruption import batch_generator, corrupt, measure_errors
    from engine.methods.cprfa.dafi_targets import dafi_tensor, render_rows
    from engine.methods.cprfa.train import calibrate_to_predictions, retrieve_in_chunks
    from engine.training.dataset import images_to_tensor

    gt_u8 = np.zeros((len(rows), 120, 120, 4), np.uint8)
    render_rows(params, gt_u8)
    preds, fgs = [], []
    for s in range(0, len(images), BATCH):
        d, f = model.unet.dafi(images_to_tensor(np.array(images[s:s + BATCH])).contiguous())
        preds.append(d), fgs.append(f)
    pred, fg = torch.cat(preds), torch.cat(fgs)
    gt, gt_mask = dafi_tensor(gt_u8)
    error_model = calibrate_to_predictions(measure_errors(pred, fg, gt, gt_mask), pred, fg > 0.5, gt, gt_mask,
                                           model.retrieval)
    print(f"warp model calibrated on {len(rows)} held-out crops: {error_model.as_dict()}", file=sys.stderr)
    out: dict[str, dict[str, list]] = {"ground-truth DAFI": {}, "ground-truth DAFI, warp-corrupted": {}}
    for s in range(0, len(rows), BATCH):
        g, m = gt[s:s + BATCH], gt_mask[s:s + BATCH]
        cg, cm = corrupt(g, m, error_model, batch_generator(torch.from_numpy(rows[s:s + BATCH]), None))
        for name, (dafi, mask) in (("ground-truth DAFI", (g, m)), ("ground-truth DAFI, warp-corrupted", (cg, cm))):
            obs, found = retrieve_in_chunks(model.retrieval, dafi, mask)
            found = found.float()
            p1, _, _ = model.round1(model.init[None].expand(len(dafi), -1), obs, found)
            p2, _, _ = model.round2(p1, obs, found)
            for arm, p in (("round1", p1), ("round2", p2)):
                out[name].setdefault(arm, []).append(model.points(p)[:, N_MESH:, :2].numpy())
    return {name: {arm: np.concatenate(v) for arm, v in arms.items()} for name, arms in out.items()}


ARMS = ("round1", "round2", "round2_const_beta", "round2_beta1", "round2_kappa_all", "round2_dafi")


def main() -> int:
    import cv2
    from scipy.spatial import cKDTree

    from engine.evaluation.nme import bucket_summary, nme_per_image
    from engine.geometry.projection import crop_to_image
    from engine.methods.cprfa.dafi_targets import load_codebook
    from engine.training.harness import Validator
    from engine.training.split import held_out_rows
    from engine.training.targets import all_points

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--held-out-limit", type=int, help="first N crops of the held-out split (default: all 954)")
    p.add_argument("--dev-limit", type=int, help="first N aflw2000_dev images (default: all 1,000)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--inputs", action="store_true", help="only item 4, added to the --json file's numbers")
    args = p.parse_args()

    model = load_shipped()
    sel = load_vertex_selection()
    codebook = load_codebook()
    tree = cKDTree(codebook.codes.astype(np.float64))
    fm = load_face_model()
    lab = np.load(data_path("aflw_train", "labels.npz"))
    rows = held_out_rows(len(lab["names"]))[:args.held_out_limit]
    root = data_path("aflw_train", "images")
    held_images = np.stack([cv2.imread(str(root / lab["names"][r])) for r in rows])
    held_gt = all_points(fm, lab["teacher_params"][rows])[:, N_MESH:, :2]   # the training targets' 68 points
    held_yaw = lab["aflw_yaw"][rows]

    def score_held(lm: np.ndarray) -> tuple[dict, np.ndarray]:
        nme = nme_per_image(lm, held_gt)
        return bucket_summary(nme, held_yaw)[0], nme

    if args.inputs:
        result = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
        arms = training_inputs(model, held_images, lab["teacher_params"][rows], rows)
        result["held_out_training_inputs"] = {
            name: {"nme": {a: score_held(lm)[0] for a, lm in v.items()},
                   "round2_better_fraction": float((score_held(v["round2"])[1] < score_held(v["round1"])[1]).mean())}
            for name, v in arms.items()}
        print(json.dumps(result["held_out_training_inputs"], indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        return 0

    print(f"held-out split: {len(rows)} crops", file=sys.stderr)
    held = run_split(model, held_images, codebook, tree, sel.threshold)
    val = Validator(limit=args.dev_limit)
    print(f"aflw2000_dev: {val.n} images", file=sys.stderr)
    dev = run_split(model, np.asarray(val.crops), codebook, tree, sel.threshold)
    const = constant_betas(held["betas"])     # chosen on the held-out split, applied to both
    for split in (held, dev):
        split["round2_const_beta"] = round2_constant_beta(model, split, const)

    def score_dev(lm: np.ndarray) -> tuple[dict, np.ndarray]:
        img = np.stack([crop_to_image(lm[i], val.roi_box[i]) for i in range(val.n)])
        nme = nme_per_image(img, val.pts68[:, :, :2])
        return bucket_summary(nme, val.yaw)[0], nme

    result: dict = {"checkpoint": "weights/cprfa.pt", "kappa": BETA_KAPPA, "threshold": sel.threshold,
                    "C": int(sel.codes.shape[0]), "codebook_vertices": int(len(codebook.codes))}
    for name, split, score in (("held_out", held, score_held), ("dev", dev, score_dev)):
        nmes = {a: score(split[a]) for a in ARMS}
        r1, r2 = nmes["round1"][1], nmes["round2"][1]
        result[name] = {
            "n": int(len(split["found"])),
            "sample": {k: spread(split[k]) for k in ("found", "sampled", "fg_pixels", "dafi_vertices")},
            "beta": beta_table(split["betas"]),
            "beta_all_updates": spread(split["betas"]),
            "beta_kappa_all": beta_table(split["betas_kappa_all"]),
            "beta_dafi": beta_table(split["betas_dafi"]),
            "profile_gap_10pct_vs_all_found": spread(split["profile_gap"]),
            "profile_gap_10pct_vs_dafi": spread(split["profile_gap_dafi"]),
            "nme": {a: v[0] for a, v in nmes.items()},
            "round2_better_fraction": float((r2 < r1).mean()),
        }
    result["constant_betas_from_held_out"] = const
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
