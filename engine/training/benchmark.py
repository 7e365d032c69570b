"""`python main.py train NAME --benchmark`: images/s of a recipe's data path alone, its compute alone
(forward + backward + optimizer step on one prepared batch) and the two together (the real training loop), for
today's path ("old": per-sample targets in the loop, NCHW, no overlap; `--legacy` trains with it) and the new one
("new": batched targets, channels_last, a prefetch thread; "new_worker": the same with one DataLoader worker process
instead of the thread), side by side in one run on the real training data.

Each measurement times ``steps`` batches after ``warmup`` untimed ones (thread start, worker fork, oneDNN kernel
selection); the three quantities are measured in turn for every path, so slow drifts of a shared machine hit all
paths alike, and the table reports the median of ``rounds`` such rounds. "data" is the cost of preparing batches,
timed batch by batch where each path prepares them (the training thread for "old"; a thread with single-threaded
kernels, as the prefetch thread and the worker run, for the new ones); "total" is each path's own loop, overlap
included.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from engine.training.batches import batches, make_loader, pick_device, prepare_model, single_threaded_kernels
from engine.training.dataset import use_batched_augmentation
from engine.training.harness import seed_everything
from engine.training.targets import load_training_set

WHAT = ("data", "compute", "total")
PATHS = {  # name -> (legacy data path, overlap, channels_last)
    "old": (True, "none", False),
    "new": (False, "thread", True),
    "new_worker": (False, "worker", True),
    "new_serial": (False, "none", True),   # the new path with no overlap: batches prepared between steps
}


class _Arm:
    """One path's recipe, model, optimizer and loader, built the same way the harness builds them."""

    def __init__(self, name: str, make_recipe: Callable[[], Any], train_set, batch_size: int, seed: int,
                 device: torch.device) -> None:
        self.legacy, self.overlap, self.channels_last = PATHS[name]
        self.recipe = make_recipe()
        self.recipe.legacy_data_path = self.legacy
        self.device = device
        seed_everything(seed)
        self.model = prepare_model(self.recipe.build(train_set), device, self.channels_last)
        self.recipe.move_to(device)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.recipe.lr, weight_decay=self.recipe.weight_decay)
        self.dataset = self.recipe.make_dataset(train_set, seed)
        use_batched_augmentation(self.dataset, not self.legacy)
        self.batch_size = batch_size
        self.seed = seed

    def stream(self, overlap: str | None = None):
        overlap = overlap or self.overlap
        g = torch.Generator()
        g.manual_seed(self.seed)
        loader = make_loader(self.dataset, self.batch_size, g, overlap,
                             self.recipe.batch_targets if self.device.type == "cpu" else None,
                             pin_memory=self.device.type == "cuda")
        return batches(loader, self.recipe.batch_targets, self.device, overlap, self.channels_last)

    def step(self, batch: dict) -> None:
        loss, _ = self.recipe.loss(self.model, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.opt.step()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_data(self, steps: int, warmup: int) -> float:
        """The cost of preparing batches, timed batch by batch (a prefetch queue would hide its first ones): in the
        training thread for the old path, in a thread with single-threaded kernels (as the prefetch thread and the
        worker run them) for the new ones."""
        def measure() -> float:
            it = self.stream("none")
            for _ in range(warmup):
                next(it)
            t = time.perf_counter()
            for _ in range(steps):
                next(it)
            self._sync()
            dt = time.perf_counter() - t
            it.close()
            return steps * self.batch_size / dt

        if self.overlap == "none":
            return measure()
        out: list = []

        def run() -> None:
            single_threaded_kernels()
            try:
                out.append(measure())
            except BaseException as e:  # noqa: BLE001 (re-raised below)
                out.append(e)

        main_threads = torch.get_num_threads()
        th = threading.Thread(target=run)
        th.start()
        th.join()
        torch.set_num_threads(main_threads)
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def time_compute(self, steps: int, warmup: int) -> float:
        it = self.stream()
        batch = next(it)
        it.close()
        for _ in range(warmup):
            self.step(batch)
        self._sync()
        t = time.perf_counter()
        for _ in range(steps):
            self.step(batch)
        self._sync()
        return steps * self.batch_size / (time.perf_counter() - t)

    def time_total(self, steps: int, warmup: int) -> float:
        it = self.stream()
        for _ in range(warmup):
            self.step(next(it))
        self._sync()
        t = time.perf_counter()
        for _ in range(steps):
            self.step(next(it))
        self._sync()
        dt = time.perf_counter() - t
        it.close()
        return steps * self.batch_size / dt


def benchmark(name: str, steps: int = 20, warmup: int = 3, threads: int | None = None, limit: int | None = None,
              batch_size: int | None = None, seed: int = 0, paths: tuple[str, ...] = ("old", "new", "new_worker"),
              device: str | None = None, rounds: int = 3, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Images/s per path, the median of ``rounds`` rounds: {"recipe", ..., "old": {"data", "compute", "total"},
    "new": {...}, ..., "samples": every round's values}."""
    from engine.training.recipes import get_recipe

    torch.set_num_threads(threads or os.cpu_count() or 1)
    dev = pick_device(device)
    train_set = load_training_set(limit=limit, log=log)
    probe = get_recipe(name)
    bs = batch_size or probe.batch_size
    n_batches = len(train_set) // bs
    if n_batches < steps + warmup:
        raise ValueError(f"{len(train_set)} crops give {n_batches} batches of {bs}; --steps {steps} needs "
                         f"{steps + warmup} (warm-up included)")
    arms = {p: _Arm(p, lambda: get_recipe(name), train_set, bs, seed, dev) for p in paths}
    out: dict[str, Any] = {"recipe": name, "batch_size": bs, "threads": torch.get_num_threads(), "steps": steps,
                           "warmup": warmup, "crops": len(train_set), "device": str(dev)}
    samples: dict[str, dict[str, list[float]]] = {p: {w: [] for w in WHAT} for p in paths}
    for r in range(rounds):
        for what in WHAT:
            for p, arm in arms.items():
                rate = getattr(arm, f"time_{what}")(steps, warmup)
                samples[p][what].append(round(rate, 1))
                log(f"[{name}] round {r + 1}/{rounds} {p:<10} {what:<8} {rate:7.1f} images/s")
    for p in paths:
        out[p] = {w: float(np.median(v)) for w, v in samples[p].items()}
    out["rounds"] = rounds
    out["samples"] = samples
    if "old" in out and "new" in out:
        out["speedup_total"] = round(out["new"]["total"] / out["old"]["total"], 2)
    return out


def format_table(res: dict[str, Any]) -> str:
    paths = [p for p in PATHS if p in res]
    rows = [f"{res['recipe']}: batch {res['batch_size']}, {res['threads']} threads, {res['device']}, "
            f"median of {res['rounds']} rounds of {res['steps']} timed steps after {res['warmup']} warm-up; images/s",
            f"{'path':<11} {'data':>8} {'compute':>8} {'total':>8}"]
    rows += [f"{p:<11} {res[p]['data']:8.1f} {res[p]['compute']:8.1f} {res[p]['total']:8.1f}" for p in paths]
    if "speedup_total" in res:
        rows.append(f"total, new / old: {res['speedup_total']:.2f}x")
    return "\n".join(rows)
