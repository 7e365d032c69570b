"""The training harness every method shares: seeded runs, progress, checkpoints, resume, per-epoch validation NME
on aflw2000_dev (protocol crops), ONNX export and the model card.

A method provides a ``Recipe`` (engine/training/recipe.py; its own in engine/methods/<name>/train.py);
``python main.py train NAME`` runs it. Recipes import the interface (recipe, losses, targets, augment, dataset),
never this runner.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from engine.evaluation.aflw2000 import load_protocol_crops, load_set
from engine.evaluation.nme import bucket_summary, nme_per_image
from engine.geometry.projection import crop_to_image
from engine.paths import PROJECT_ROOT, data_path, weights_path
from engine.training.dataset import image_to_tensor, use_batched_augmentation
from engine.training.batches import OVERLAPS, batches, make_loader, pick_device, prepare_model
from engine.training.cache import cached_uint8, files_fingerprint
from engine.training.recipe import Recipe
from engine.training.schedule import LEGACY_KIND, default_warmup, describe, legacy_lr, plan, replay
from engine.training.split import exclude_held_out
from engine.training.targets import CACHE_DIR, decode_blobs, load_training_set, pack_root

RUNS_DIR = PROJECT_ROOT / "runs"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def count_flops(model: nn.Module, size: int = 120, inputs: tuple[torch.Tensor, ...] | None = None) -> int:
    """Multiply-accumulates of convolutions, transposed convolutions and linear layers for one 120x120 crop
    (``inputs``: the graph's example inputs where it takes more than the image)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        kk = mod.kernel_size[0] * mod.kernel_size[1] if not isinstance(mod, nn.Linear) else 1
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * kk * (mod.in_channels // mod.groups)
        elif isinstance(mod, nn.ConvTranspose2d):
            total += inp[0].numel() * kk * (mod.out_channels // mod.groups)
        else:
            total += mod.in_features * mod.out_features * (out.numel() // mod.out_features)

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(*(inputs if inputs is not None else (torch.zeros(1, 3, size, size),)))
    model.train(was)
    for h in hs:
        h.remove()
    return int(total)


class Validator:
    """Protocol-mode NME on aflw2000_dev with the torch model (the shipped numbers come from `main.py eval`).

    The crops come from a validated uint8 cache (engine/training/cache.py), or from a pack's dev/ folder
    (``$FACEALIGN_PACK``) on a machine without ../shared/data."""

    def __init__(self, limit: int | None = None, pack: Path | None = None) -> None:
        pack = pack or pack_root()
        if pack is not None and (pack / "dev" / "labels.npz").exists():
            dev = pack / "dev"
            lab = np.load(dev / "labels.npz")
            n = len(lab["yaw"]) if limit is None else min(limit, len(lab["yaw"]))
            self.roi_box, self.pts68, self.yaw = lab["roi_box"][:n], lab["pts68"][:n], lab["yaw"][:n]
            files = [dev / "images.bin", dev / "offsets.npy", dev / "labels.npz"]
            fp = files_fingerprint(files, {"n": n, "source": "pack-dev"})

            def fill(out: np.ndarray) -> None:
                decode_blobs(np.fromfile(dev / "images.bin", np.uint8), np.load(dev / "offsets.npy"), out)
            path = CACHE_DIR / f"aflw2000_dev_pack_{n}.u8"
        else:
            root = data_path("aflw2000_dev")
            self.ds = load_set(root)
            n = len(self.ds) if limit is None else min(limit, len(self.ds))
            self.roi_box, self.pts68, self.yaw = self.ds.roi_box[:n], self.ds.pts68[:n, :, :2], self.ds.yaw[:n]
            files = [root / "labels.npz"] + [self.ds.image_path(i) for i in range(n)]
            fp = files_fingerprint(files, {"n": n, "size": 120, "source": "aflw2000_dev protocol crops"})
            ds = self.ds

            def fill(out: np.ndarray) -> None:
                sub = copy.copy(ds)
                sub.names = ds.names[:n]
                out[:] = load_protocol_crops(sub)
            path = CACHE_DIR / f"aflw2000_dev_crops_{n}.u8"
        self.crops = cached_uint8(path, fp, (n, 120, 120, 3), fill)
        self.n = n

    @staticmethod
    def available(pack: Path | None = None) -> bool:
        pack = pack or pack_root()
        return (data_path("aflw2000_dev") / "labels.npz").exists() or (
            pack is not None and (pack / "dev" / "labels.npz").exists())

    @torch.no_grad()
    def __call__(self, recipe: Recipe, model: nn.Module) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        preds = []
        for s in range(0, self.n, 100):
            x = torch.stack([image_to_tensor(c) for c in self.crops[s:s + 100]]).to(device)
            preds.append(recipe.landmarks(model, x).cpu().numpy())
        model.train()
        return self._score(np.concatenate(preds))

    def _score(self, lm: np.ndarray) -> dict[str, float]:
        img_pts = np.stack([crop_to_image(lm[i], self.roi_box[i]) for i in range(self.n)])
        nme = nme_per_image(img_pts, self.pts68[:, :, :2])
        return bucket_summary(nme, self.yaw)[0]

    @torch.no_grad()
    def stages(self, recipe: Recipe, model: nn.Module) -> dict[str, dict[str, float]]:
        """NME of each of the recipe's ``stage_landmarks`` (empty for a single-stage recipe)."""
        model.eval()
        device = next(model.parameters()).device
        preds: dict[str, list[np.ndarray]] = {}
        for s in range(0, self.n, 100):
            x = torch.stack([image_to_tensor(c) for c in self.crops[s:s + 100]]).to(device)
            stages = recipe.stage_landmarks(model, x)
            if not stages:
                break
            for k, v in stages.items():
                preds.setdefault(k, []).append(v.cpu().numpy())
        model.train()
        return {k: self._score(np.concatenate(v)) for k, v in preds.items()}


_lr_at = legacy_lr  # the pre-issue-11 schedule (kept for old callers)


def _resume_point(ckpt: dict, steps_per_epoch: int, base_lr: float) -> tuple[float, list[dict]]:
    """(last learning rate, schedule segments so far) of a checkpoint, including pre-issue-11 ones, which record
    no schedule: their rate is the optimizer's, or, for shipped weights (no optimizer), where the legacy cosine
    over their epochs ended."""
    done = len(ckpt["history"])
    sched = ckpt.get("schedule") or {}
    segments = [dict(seg) for seg in sched.get("segments", [])]
    if not segments and done:
        segments = [{"epochs": [1, done], "kind": LEGACY_KIND, "legacy": True}]
    if segments:
        segments[-1]["epochs"] = [segments[-1]["epochs"][0], done]  # it may have been interrupted before its end
    last = ckpt.get("last_lr")
    if last is None and ckpt.get("optimizer"):
        last = ckpt["optimizer"]["param_groups"][0]["lr"]
    if last is None:
        total = done * steps_per_epoch
        last = legacy_lr(total - 1, total, base_lr, default_warmup(total))
    return float(last), segments


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one training run goes (``train(recipe, config)``); every field's default is the recipe's own choice or
    the plain run. ``epochs`` / ``batch_size`` None: the recipe's. ``threads`` None: every core. ``limit`` /
    ``val_limit``: the first N training crops / aflw2000_dev images. ``out_dir`` None: runs/NAME/. ``export``: write
    the ONNX file and the card to weights/ at the end. The others: see ``train``."""
    epochs: int | None = None
    resume: bool = False
    seed: int = 0
    threads: int | None = None
    limit: int | None = None
    val_limit: int | None = None
    batch_size: int | None = None
    out_dir: Path | None = None
    export: bool = True
    log: Callable[[str], None] = print
    legacy: bool = False
    overlap: str | None = None
    channels_last: bool | None = None
    device: str | None = None
    rewarm: bool = False
    pack: Path | None = None
    schedule_from: list[dict] | None = None


def train(recipe: Recipe, config: TrainConfig | None = None, **options: Any) -> dict[str, Any]:
    """Train ``recipe`` as ``config`` says (``options``: TrainConfig fields, overriding it); returns the history.
    Checkpoints go to runs/NAME/, shipped files to weights/.

    ``legacy`` runs the pre-issue-11 data path (per-sample targets in the loop, no overlap, NCHW); otherwise
    batches are prepared by a prefetch thread (``overlap``: none / thread / worker) with the recipe's batched
    targets, and convolutions run channels_last (``channels_last`` overrides). ``device``: default CUDA when
    present. ``rewarm``: when resuming a run that had entered its anneal, go back up to the base rate on purpose
    (otherwise the anneal continues; see engine/training/schedule.py). ``pack``: train from a packed training set
    (scripts/pack_training_set.py) instead of ../shared/data. ``schedule_from``: another run's recorded schedule
    segments, replayed step for step (an ablation arm on exactly the shipped run's learning rates, resumes included;
    ``epochs`` defaults to that run's).
    """
    cfg = dataclasses.replace(config or TrainConfig(), **options)
    return _train(recipe, **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})


def _train(recipe: Recipe, epochs: int | None, resume: bool, seed: int, threads: int | None, limit: int | None,
           val_limit: int | None, batch_size: int | None, out_dir: Path | None, export: bool,
           log: Callable[[str], None], legacy: bool, overlap: str | None, channels_last: bool | None,
           device: str | None, rewarm: bool, pack: Path | None, schedule_from: list[dict] | None) -> dict[str, Any]:
    if schedule_from and not epochs:
        epochs = schedule_from[-1]["epochs"][1]
    epochs = epochs or recipe.epochs
    bs = batch_size or recipe.batch_size
    # engine/__init__ sets OMP_NUM_THREADS=1 for inference; training wants every core unless told otherwise
    torch.set_num_threads(threads or os.cpu_count() or 1)
    seed_everything(seed)
    dev = pick_device(device)
    recipe.legacy_data_path = legacy
    overlap = "none" if legacy else (overlap or "thread")
    if overlap not in OVERLAPS:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAPS)}, not {overlap!r}")
    use_cl = (not legacy) if channels_last is None else channels_last
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run_dir = out_dir or RUNS_DIR / recipe.name
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "last.pt"

    t_load = time.time()
    train_set = load_training_set(limit=limit, pack=pack, log=log)
    log(f"[{recipe.name}] {len(train_set)} training crops loaded in {time.time() - t_load:.0f}s; device {dev}, "
        f"{'legacy data path' if legacy else f'overlap {overlap}'}, {'channels_last' if use_cl else 'NCHW'}")
    validator = Validator(val_limit, pack=pack) if Validator.available(pack) else None
    model = recipe.build(train_set)
    ds = recipe.make_dataset(train_set, seed)
    use_batched_augmentation(ds, not legacy)  # whole batches in uint8 (the same draws and values)
    ds = exclude_held_out(ds, len(train_set))  # the visibility benchmark's split (engine/training/split.py)
    g = torch.Generator()
    g.manual_seed(seed)
    loader = make_loader(ds, bs, g, overlap, recipe.batch_targets if dev.type == "cpu" else None,
                         pin_memory=dev.type == "cuda")
    steps_per_epoch = len(loader)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    last_lr: float | None = None
    segments: list[dict] = []
    opt_state = None
    shipped = weights_path(f"{recipe.name}.pt")
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt_state = ck["optimizer"]
        history = ck["history"]
        start_epoch = ck["epoch"] + 1
        g.set_state(ck["generator"])
        last_lr, segments = _resume_point(ck, steps_per_epoch, recipe.lr)
        log(f"[{recipe.name}] resumed from epoch {start_epoch}")
    elif resume and out_dir is None and shipped.exists():
        # a fresh clone has no runs/: continue from weights/NAME.pt, either shipped weights (the optimizer restarts)
        # or a run's checkpoint handed over unfinished to the next session (optimizer and sampler state kept)
        ck = torch.load(shipped, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt_state = ck.get("optimizer")
        if ck.get("generator") is not None:
            g.set_state(ck["generator"])
        history = ck["history"]
        start_epoch = len(history)
        last_lr, segments = _resume_point(ck, steps_per_epoch, recipe.lr)
        log(f"[{recipe.name}] resumed from {shipped.name} after epoch {start_epoch} "
            f"({'its optimizer state' if opt_state is not None else 'fresh optimizer'})")
    elif resume:
        log(f"[{recipe.name}] nothing to resume in {run_dir} or {shipped}; starting fresh")
    model = prepare_model(model, dev, use_cl)
    recipe.move_to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    prev = segments[-1] if segments and not segments[-1].get("legacy") else None
    if schedule_from:
        sched = replay(schedule_from, steps_per_epoch)
        if sched.total_steps != epochs * steps_per_epoch:
            raise ValueError(f"the replayed schedule covers {sched.total_steps // steps_per_epoch} epochs, "
                             f"not {epochs}")
        segments = [dict(seg, replayed=True) for seg in sched.records]
        log(f"[{recipe.name}] schedule replayed from the shipped run: {describe(segments)}")
    else:
        sched = plan(recipe.lr, steps_per_epoch, epochs, resume_step=start_epoch * steps_per_epoch, last_lr=last_lr,
                     warmup_steps=prev["warmup_steps"] if prev else None, rewarm=rewarm)
    if start_epoch < epochs and not schedule_from:
        seg = {"epochs": [start_epoch + 1, epochs], **sched.record(steps_per_epoch)}
        if prev is not None and sched.resume_lr is None and prev["base_lr"] == recipe.lr:
            seg["epochs"][0] = prev["epochs"][0]  # the same smooth schedule, its anneal moved: one segment
            segments = segments[:-1]
        segments.append(seg)
        if start_epoch:
            log(f"[{recipe.name}] schedule: {describe(segments[-1:])}"
                + ("" if rewarm or sched.resume_lr is None else
                   f" (pass --rewarm to go back to lr {recipe.lr:g} on purpose)"))

    model.train()
    lr = last_lr if last_lr is not None else recipe.lr
    for epoch in range(start_epoch, epochs):
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        t0 = time.time()
        sums: dict[str, float] = {}
        for it, batch in enumerate(batches(loader, recipe.batch_targets, dev, overlap, use_cl)):
            step = epoch * steps_per_epoch + it
            lr = sched.lr(step)
            for grp in opt.param_groups:
                grp["lr"] = lr
            loss, parts = recipe.loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if (it + 1) % 20 == 0 or it + 1 == steps_per_epoch:
                el = time.time() - t0
                eta = el / (it + 1) * (steps_per_epoch - it - 1)
                msg = " ".join(f"{k}={v / (it + 1):.3f}" for k, v in sums.items())
                log(f"[{recipe.name}] epoch {epoch + 1}/{epochs} step {it + 1}/{steps_per_epoch} {msg} "
                    f"({(it + 1) * bs / el:.0f} img/s, epoch ETA {eta:.0f}s)")
        rec: dict[str, Any] = {"epoch": epoch + 1, "seconds": time.time() - t0,
                               **{k: v / steps_per_epoch for k, v in sums.items()}, "lr": lr}
        if validator is not None:
            rec["val_nme"] = validator(recipe, model)
            v = rec["val_nme"]
            log(f"[{recipe.name}] epoch {epoch + 1}: aflw2000_dev NME {v['0-30']:.2f} / {v['30-60']:.2f} / "
                f"{v['60-90']:.2f}, balanced {v['balanced']:.2f}")
            stages = validator.stages(recipe, model)
            if stages:
                rec["val_nme_stages"] = stages
                log(f"[{recipe.name}] epoch {epoch + 1}: balanced NME by stage: "
                    + ", ".join(f"{k} {b['balanced']:.2f}" for k, b in stages.items()))
        history.append(rec)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "history": history, "generator": g.get_state(), "seed": seed,
                    "schedule": {"segments": segments}, "last_lr": lr}, tmp)
        tmp.replace(ckpt_path)
        (run_dir / "history.json").write_text(json.dumps(history, indent=1))

    if export:
        data_path = ("legacy per-sample path (--legacy)" if legacy else
                     f"new path: decoded-crop cache, batch-wise uint8 augmentation, batched targets, overlap {overlap}")
        ship(recipe, model, history, seed=seed, epochs=epochs, log=log, schedule=segments, last_lr=lr,
             data_path=f"{data_path}, {'channels_last' if use_cl else 'NCHW'} (the last run segment's)")
    return {"history": history, "model": model, "schedule": segments}


def ship(recipe: Recipe, model: nn.Module, history: list[dict], seed: int, epochs: int,
         log: Callable[[str], None] = print, schedule: list[dict] | None = None, data_path: str | None = None,
         last_lr: float | None = None, command: str | None = None) -> None:
    """Final torch checkpoint + ONNX in weights/, then the training facts the model card reads (with the
    learning-rate schedule each range of epochs had). ``command``: what trained it (default: this process's)."""
    from engine.training.export import example_inputs, export_onnx

    # shipped files are plain CPU, NCHW tensors whatever the run used
    trained_on = str(next(model.parameters()).device)
    model = model.to("cpu", memory_format=torch.contiguous_format)
    recipe.move_to(torch.device("cpu"))
    pt = weights_path(f"{recipe.name}.pt")
    tmp = pt.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "history": history, "seed": seed, "epochs": epochs,
                "optimizer": None, "schedule": {"segments": schedule or []}, "last_lr": last_lr}, tmp)
    tmp.replace(pt)
    onnx_path = export_onnx(recipe, model, weights_path(f"{recipe.name}.onnx"))
    facts = {
        "name": recipe.name, "description": recipe.description, "notes": recipe.notes,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "macs": count_flops(recipe.export_module(model), inputs=tuple(example_inputs(recipe).values())),
        "epochs": epochs, "batch_size": recipe.batch_size, "lr": recipe.lr, "seed": seed,
        "augment": recipe.augment.__dict__,
        "command": command or (" ".join(["python"] + sys.argv) if sys.argv else ""),
        "train_seconds": float(sum(h["seconds"] for h in history)), "threads": torch.get_num_threads(),
        "history": history, "host": os.uname().nodename,
        "schedule": describe(schedule) if schedule else None, "device": trained_on, "data_path": data_path,
        # a fine-tune's starting checkpoint (CPRFA's CPR-H: the unfused model), which the card compares it to
        "init_from": getattr(recipe, "init_from", None),
    }
    weights_path(f"{recipe.name}.train.json").write_text(json.dumps(facts, indent=1, default=str))
    log(f"[{recipe.name}] shipped {pt.name} and {onnx_path.name}")


def ablation_path(name: str, ablation: str) -> Path:
    return PROJECT_ROOT / "docs" / "results" / f"{name}_ablation_{ablation}.json"


def write_ablation(recipe: Recipe, ablation: str, history: list[dict], seed: int, path: Path | None = None,
                   schedule: list[dict] | None = None, command: str | None = None,
                   threads: int | None = None) -> Path:
    """Per-epoch history of an ablation run, beside the shipped results; the model card compares it epoch by epoch.
    ``command`` and ``threads``: what trained it (default: this process)."""
    path = path or ablation_path(recipe.name, ablation)
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = {"name": recipe.name, "ablation": ablation, "overrides": recipe.ablations[ablation], "seed": seed,
             "description": recipe.description,  # the card pairs an arm only with a shipped run of the same recipe
             "command": command or " ".join(["python"] + sys.argv), "threads": threads or torch.get_num_threads(),
             "history": history,
             "schedule": describe(schedule) if schedule else None,
             "schedule_replayed": bool(schedule) and all(seg.get("replayed") for seg in schedule)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts, indent=1))
    tmp.replace(path)
    return path


# what keep_previous_weights copies of a shipped model: weights, INT8 variant, training facts, visibility model
_KEPT_FILES = ("{}.onnx", "{}.pt", "{}.train.json", "{}.int8.onnx", "visibility_{}.npz")


def keep_previous_weights(name: str, variant: str, log: Callable[[str], None] = print) -> list[str]:
    """Copy the shipped weights/NAME.* (``_KEPT_FILES``) to weights/VARIANT.*, byte for byte, and the pose study's
    entry for them (weights/pose_calibration.json, where it was fitted on these very weights) to VARIANT: a method
    variant declared on those files (e.g. ``cprfa-unfused``) then runs what NAME ran. Refuses to overwrite a
    VARIANT file that holds other bytes (a second promote must not replace the kept model with the new one)."""
    import filecmp
    import shutil

    from engine.methods.pose_output import CALIBRATION_FILE, file_sha256, read_calibrations

    for required in ("{}.onnx", "{}.pt"):
        if not weights_path(required.format(name)).exists():
            raise ValueError(f"{weights_path(required.format(name))} is missing: no shipped model to keep")
    pairs = [(weights_path(p.format(name)), weights_path(p.format(variant))) for p in _KEPT_FILES]
    pairs = [(a, b) for a, b in pairs if a.exists()]
    for a, b in pairs:
        if b.exists() and not filecmp.cmp(a, b, shallow=False):
            raise ValueError(f"{b} exists and is not {a.name}: move it away before keeping {name} as {variant}")
    for a, b in pairs:
        shutil.copyfile(a, b)
    calibrations = read_calibrations()
    entry = calibrations.get(name)
    if entry is not None and entry.get("weights_sha256") == file_sha256(weights_path(f"{name}.onnx")):
        calibrations[variant] = dict(entry)
        weights_path(CALIBRATION_FILE).write_text(json.dumps(calibrations, indent=1), encoding="utf-8")
    kept = [b.name for _, b in pairs]
    log(f"[{name}] the shipped model is kept as {variant}: {', '.join(kept)}")
    return kept


def promote(recipe: Recipe, ablation: str, previous_as: str | None = None, log: Callable[[str], None] = print,
            run_dir: Path | None = None, limit: int | None = None, previous_weights_as: str | None = None) -> None:
    """Ship a finished ablation arm as the method's weights, without retraining: the arm won, and its overrides have
    become the recipe's defaults (``recipe`` must already equal the arm's recipe, or this refuses). The run that was
    shipped until now is kept as the ablation ``previous_as`` (a key of the recipe whose overrides give back what it
    trained on), so the model card goes on comparing the two epoch by epoch; the arm's own ablation file goes.
    ``previous_weights_as``: also keep the shipped weights themselves as weights/VARIANT.* (keep_previous_weights),
    for a method variant that goes on running them; an arm that started from the shipped checkpoint
    (``init_from`` = weights/NAME.pt) is then read as having started from weights/VARIANT.pt, the same bytes, which
    the recipe's default must name. ``limit``: training crops for the recipe's build (tests; a recipe whose build
    fits nothing needs none)."""
    arm_path = ablation_path(recipe.name, ablation)
    if not arm_path.exists():
        raise ValueError(f"{arm_path} does not exist: the arm {ablation!r} has not finished")
    arm = json.loads(arm_path.read_text())
    renamed = {}
    if previous_weights_as is not None:
        renamed = {f"weights/{recipe.name}.pt": f"weights/{previous_weights_as}.pt"}
    for key, value in arm["overrides"].items():
        value = renamed.get(value, value) if isinstance(value, str) else value
        if getattr(recipe, key) != value:
            raise ValueError(f"{recipe.name}'s recipe has {key} = {getattr(recipe, key)!r}; make the arm's "
                             f"{key} = {value!r} the default before promoting it")
    if arm.get("description") != recipe.description:
        raise ValueError(f"the arm {ablation!r} was trained on another recipe description than today's")
    if previous_as is not None and previous_as not in recipe.ablations:
        raise ValueError(f"{recipe.name} has no ablation {previous_as!r} to keep the shipped run as")
    ckpt_path = (run_dir or RUNS_DIR / f"{recipe.name}-{ablation}") / "last.pt"
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if [h["epoch"] for h in ck["history"]] != [h["epoch"] for h in arm["history"]]:
        raise ValueError(f"{ckpt_path} is not the checkpoint that wrote {arm_path.name}")
    segments = (ck.get("schedule") or {}).get("segments") or []
    epochs = len(ck["history"])

    old_pt, old_facts = weights_path(f"{recipe.name}.pt"), weights_path(f"{recipe.name}.train.json")
    if previous_as is not None and old_pt.exists() and old_facts.exists():
        old = torch.load(old_pt, map_location="cpu", weights_only=False)
        facts = json.loads(old_facts.read_text())
        kept = write_ablation(recipe, previous_as, old["history"], int(facts.get("seed", 0)),
                              schedule=(old.get("schedule") or {}).get("segments"), command=facts.get("command"),
                              threads=facts.get("threads"))
        log(f"[{recipe.name}] the run shipped until now is kept as ablation {previous_as!r}: {kept}")
    if previous_weights_as is not None:   # before build: the recipe may start from the kept copy (init_from)
        keep_previous_weights(recipe.name, previous_weights_as, log=log)

    torch.set_num_threads(int(arm.get("threads") or torch.get_num_threads()))  # the card's facts say what trained
    model = recipe.build(load_training_set(limit=limit, log=log))
    model.load_state_dict(ck["model"])
    model.eval()
    ship(recipe, model, ck["history"], seed=int(ck.get("seed", arm.get("seed", 0))), epochs=epochs, log=log,
         schedule=segments, last_lr=ck.get("last_lr"),
         data_path="the promoted ablation arm's run (its command says how it ran)",
         command=f"{arm['command']} (then shipped by: {' '.join(['python'] + sys.argv)})")
    arm_path.unlink()
