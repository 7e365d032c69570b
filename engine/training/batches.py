"""The training data path: a DataLoader over the recipe's dataset, each batch moved to the device, given its
batched targets (Recipe.batch_targets) and its image in the model's memory format, optionally prepared while the
previous step computes.

Overlap modes: ``none`` (the batch is prepared in the training loop: today's path), ``thread`` (a prefetch thread
prepares the next batches while the main thread computes; numpy, OpenCV and torch release the GIL in their
kernels) and ``worker`` (one DataLoader worker process augments and builds the targets). ``thread`` is the default:
on this project's 2-core machine it measured faster than the worker (docs/training.md, `main.py train NAME --benchmark`).
"""
from __future__ import annotations

import queue
import sys
import threading
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from engine.training.dataset import collate

OVERLAPS = ("none", "thread", "worker")
PREFETCH_DEPTH = 3
SWITCH_INTERVAL_S = 0.0005


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` (e.g. "cpu", "cuda:0"), else CUDA when present, else the CPU."""
    if requested:
        dev = torch.device(requested)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} asked for, but torch sees no CUDA device")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool) -> torch.nn.Module:
    """The model on ``device``, its 4-D weights in channels_last when asked (same values, NHWC strides: the
    oneDNN/cuDNN convolutions run faster on it)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _worker_init(_: int) -> None:
    # the worker shares the 2 cores with the training loop: one thread each for torch and OpenCV
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class _TargetsCollate:
    """collate (default_collate, or the dataset's own batch), then the recipe's batched targets (in a worker
    process, on CPU tensors)."""

    def __init__(self, batch_targets: Callable[[dict], dict]) -> None:
        self.batch_targets = batch_targets

    def __call__(self, samples: list) -> dict:
        return self.batch_targets(collate(samples))


def make_loader(dataset: Dataset, batch_size: int, generator: torch.Generator, overlap: str,
                batch_targets: Callable[[dict], dict] | None = None, pin_memory: bool = False) -> DataLoader:
    """The shuffled loader (same order for every overlap mode, from ``generator``). With ``worker`` and
    ``batch_targets``, the worker also builds the targets (the device is the CPU then)."""
    if overlap not in OVERLAPS:
        raise ValueError(f"overlap must be one of {', '.join(OVERLAPS)}, not {overlap!r}")
    kw: dict[str, Any] = {"collate_fn": collate}  # a batched dataset (AlignmentDataset.batched) collates itself
    if overlap == "worker":
        kw.update(num_workers=1, prefetch_factor=PREFETCH_DEPTH, worker_init_fn=_worker_init,
                  persistent_workers=False)
        if batch_targets is not None:
            kw["collate_fn"] = _TargetsCollate(batch_targets)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                      generator=generator, pin_memory=pin_memory, **kw)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def single_threaded_kernels() -> None:
    """Run this thread's torch and OpenCV kernels on one thread each. On a busy 2-core machine a 2-thread OpenMP
    region waits at its barrier for a core that the training step holds: measured under load, one crop's
    uint8 -> float conversion (three small torch ops) took 24 ms at 2 threads and 0.047 ms at 1."""
    import cv2

    torch.set_num_threads(1)  # this thread's OpenMP setting (and the default of threads started later)
    cv2.setNumThreads(1)


def prefetch(items: Iterable, prepare: Callable[[Any], Any], depth: int = PREFETCH_DEPTH,
             init: Callable[[], None] | None = None) -> Iterator:
    """``prepare(item)`` for each item, computed up to ``depth`` items ahead in a background thread (which first
    calls ``init``); exceptions are re-raised in the consumer; leaving the loop early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    main_threads = torch.get_num_threads()

    def run() -> None:
        try:
            if init is not None:
                init()
            for item in items:
                if stop.is_set():
                    return
                q.put(prepare(item))
        except BaseException as e:  # noqa: BLE001 (handed to the consumer)
            q.put(_Failure(e))
            return
        q.put(_END)

    th = threading.Thread(target=run, name="batch-prefetch", daemon=True)
    # The training loop runs hundreds of short torch ops per step and needs the GIL back between them; with the
    # default 5 ms switch interval it waits on the prefetcher's Python. 0.5 ms: baseline on 2 threads 346 vs 243
    # images/s end to end (medians of 3 rounds of `python main.py train baseline --benchmark --threads 2` with each
    # interval, compute alone 477, the background training job paused).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    th.start()
    try:
        while True:
            got = q.get()
            if got is _END:
                return
            if isinstance(got, _Failure):
                raise got.exc
            yield got
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        th.join()
        sys.setswitchinterval(interval)
        torch.set_num_threads(main_threads)  # the process-wide default the thread's init changed


def batches(loader: DataLoader, batch_targets: Callable[[dict], dict], device: torch.device, overlap: str,
            channels_last: bool) -> Iterator[dict]:
    """One epoch of ready batches: on ``device``, targets built, image in the model's memory format."""
    targets_in_worker = overlap == "worker" and isinstance(loader.collate_fn, _TargetsCollate)

    def prepare(batch: dict) -> dict:
        batch = to_device(batch, device)
        if not targets_in_worker:
            batch = batch_targets(batch)
        # a batch-wise augmented image already has channels_last strides (AlignmentDataset.batch): a no-op then
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        batch["image"] = batch["image"].contiguous(memory_format=fmt)
        return batch

    if overlap == "thread":
        yield from prefetch(loader, prepare, init=single_threaded_kernels)
    else:
        for batch in loader:
            yield prepare(batch)
