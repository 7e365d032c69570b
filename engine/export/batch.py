"""`main.py annotate-batch`: annotate many inputs, one output folder each, on every local core or on a Ray cluster.

The driver (the process that runs ``run_batch``) owns the manifest, ``OUT/manifest.jsonl``: one JSON line per
finished attempt (input, output, size, mtime, methods, formats, status, frames, faces, seconds, error). Re-running
the same command reads it back and skips every input whose last record is ``done`` with the same size, mtime,
methods and formats and whose folder is still there; failed inputs are retried. Workers never touch the manifest.

A worker annotates into a hidden ``OUT/.tmp-NAME-RANDOM`` folder and renames it to ``OUT/NAME`` once every file is
closed, so an output folder is always complete: a worker killed mid-input leaves only a hidden folder, which the
next driver removes, and the input is annotated again from the start (Ray retries it at once; the local pool
restarts its workers and resubmits).

Each worker runs one inference thread (ONNX Runtime intra-op 1, OpenMP/BLAS 1, OpenCV and its FFmpeg decoder 1):
the parallelism is across inputs, and threads inside a worker would only fight the other workers for the cores.
This module imports nothing heavy at the top: a pool worker must pin its threads before numpy and ONNX Runtime load.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

MANIFEST = "manifest.jsonl"
LOCK = ".batch.lock"
SHARED_MARK = ".facealign-batch"       # proves to a (remote) worker that it sees the driver's output folder
LIST_SUFFIXES = {".txt", ".lst", ".list"}
TMP_PREFIX, OLD_PREFIX = ".tmp-", ".old-"
MAX_RETRIES = 3                        # attempts after a worker died (Ray's max_retries; the pool's resubmits)
RAY_VERSION = "2.60.0"                 # keep equal to the pin of the `cluster` extra in pyproject.toml
RAY_INSTALL_HINT = (f"--ray needs Ray: pip install -e '.[cluster]' (or pip install 'ray=={RAY_VERSION}') "
                    "in this environment and on every node of the cluster")

# One thread per worker for everything that could start its own pool of threads.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "FACEALIGN_THREADS": "1", "OPENCV_FFMPEG_THREADS": "1"}


@dataclass(frozen=True)
class BatchJob:
    input: str          # absolute path (symlinks kept: two links to one video are two inputs)
    output: str         # folder name under the output root
    size: int | None    # bytes (a folder: its images together); None when the input does not exist
    mtime: float | None


@dataclass
class BatchReport:
    total: int = 0
    skipped: int = 0                   # finished by an earlier run, unchanged
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list)   # this run's manifest lines

    @property
    def ran(self) -> int:
        return self.done + self.failed


# ---------------------------------------------------------------- inputs and the manifest

def expand_inputs(specs: Iterable[str]) -> list[str]:
    """Videos, image folders and text files listing them (one path a line, '#' comments, relative paths taken
    from the list's folder) -> absolute paths, first occurrence kept."""
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        a = os.path.abspath(os.path.expanduser(p))
        if a not in seen:
            seen.add(a)
            out.append(a)

    for spec in specs:
        p = Path(os.path.expanduser(spec))
        if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(os.path.expanduser(line))
                    add(str(q if q.is_absolute() else p.parent / q))
        else:
            add(spec)
    return out


def fingerprint(path: str) -> tuple[int | None, float | None]:
    """(size, mtime) of a file, or of a folder's images together (newest mtime); (None, None) if missing."""
    p = Path(path)
    try:
        if p.is_dir():
            from engine.sources import IMAGE_EXTENSIONS

            stats = [f.stat() for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()]
            return sum(s.st_size for s in stats), max([p.stat().st_mtime] + [s.st_mtime for s in stats])
        st = p.stat()
        return st.st_size, st.st_mtime
    except OSError:
        return None, None


def output_names(inputs: list[str]) -> list[str]:
    """Folder name per input: its file or folder name without the extension; inputs sharing a name get a short
    hash of their path appended, so every input keeps the same folder from run to run."""
    stems = [Path(i).stem.lstrip(".") or "input" for i in inputs]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else f"{s}-{hashlib.sha1(i.encode()).hexdigest()[:8]}"
            for s, i in zip(stems, inputs)]


def read_manifest(out: str | Path) -> dict[str, dict]:
    """input -> its last record. A line cut short by a crash is ignored."""
    path = Path(out) / MANIFEST
    last: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "input" in rec:
                last[rec["input"]] = rec
    return last


def append_manifest(out: str | Path, record: dict) -> None:
    path = Path(out) / MANIFEST
    # a crash can leave a final line without its newline; start on a fresh line so the next record stays readable
    fresh = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if fresh else "") + json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def is_finished(job: BatchJob, last: dict | None, out: Path, methods: list[str], formats: list[str]) -> bool:
    return (last is not None and last.get("status") == "done" and job.size is not None
            and last.get("size") == job.size and last.get("mtime") == job.mtime
            and last.get("methods") == methods and last.get("formats") == formats
            and (out / job.output).is_dir())


def clean_leftovers(out: Path) -> int:
    """Remove hidden work folders of attempts that never finished (a killed worker, a crashed driver)."""
    n = 0
    for d in out.iterdir():
        if d.is_dir() and d.name.startswith((TMP_PREFIX, OLD_PREFIX)):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


# ---------------------------------------------------------------- the worker side

def pin_worker_threads() -> None:
    """Pool initializer (and first thing a Ray task does): one thread for every library that would start more.
    The environment variables only bite before numpy / ONNX Runtime / OpenCV load, which is why this module keeps
    its imports light; cv2.setNumThreads covers OpenCV's own pool either way."""
    os.environ.update(WORKER_ENV)
    import cv2

    cv2.setNumThreads(1)


def publish(tmp: Path, final: Path) -> None:
    """Put a finished work folder in place with renames only: ``final`` is always absent, the old complete
    folder, or the new complete one."""
    if final.exists():
        old = final.with_name(f"{OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


_LOADED: dict[str, Any] = {}   # per worker process: the models, loaded once and reused for every input


def loaded_models(methods: list[str]) -> tuple[list, Any]:
    """This worker's methods and face detector. Loading them (ONNX sessions, MediaPipe graphs) costs about as much
    as annotating a short clip, and they keep no state from one input to the next (the tracker is per input)."""
    if _LOADED.get("names") != methods:
        from engine.methods.factory import create

        for m in _LOADED.get("methods", []):
            m.close()
        _LOADED["methods"], _LOADED["names"] = [create(m) for m in methods], list(methods)
    if "detector" not in _LOADED:
        from engine.detect.face_detector import FaceDetector

        _LOADED["detector"] = FaceDetector()
    return _LOADED["methods"], _LOADED["detector"]


def annotate_one(input_path: str, out_root: str, output: str, methods: list[str], formats: list[str],
                 batch_id: str) -> dict[str, Any]:
    """Annotate one input into OUT/output, atomically. Bad input is a result (status failed, the message), not an
    exception, so a retry is only ever spent on a worker that died."""
    pin_worker_threads()
    t0 = time.perf_counter()
    root = Path(out_root)
    result: dict[str, Any] = {"status": "failed", "frames": 0, "faces": 0, "seconds": 0.0, "error": None,
                              "host": os.uname().nodename, "pid": os.getpid()}
    try:
        mark = root / SHARED_MARK
        if not mark.is_file() or mark.read_text().strip() != batch_id:
            raise FileNotFoundError(f"{out_root} on {result['host']} is not the driver's output folder: mount the "
                                    "shared folder at the same path on every node")
    except OSError as e:
        result["error"] = str(e)
        return result
    # the worker's pid in the name says who left a hidden folder behind (and lets the tests kill that worker)
    tmp = root / f"{TMP_PREFIX}{output}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        from engine.export.annotate import annotate

        models, detector = loaded_models(methods)
        summary = annotate(input_path, models, tmp, formats, detector=detector)
        if summary.frames == 0:
            raise ValueError(f"{input_path}: no readable frames ({summary.skipped} unreadable images skipped)")
        publish(tmp, root / output)
        result.update(status="done", frames=summary.frames, faces=summary.faces)
    except Exception as e:  # noqa: BLE001  (any bad input is recorded and the batch goes on)
        shutil.rmtree(tmp, ignore_errors=True)
        result["error"] = str(e) or type(e).__name__
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


# ---------------------------------------------------------------- executors

Outcome = tuple[BatchJob, dict[str, Any]]


def task_args(job: BatchJob, common: tuple) -> tuple:
    """``annotate_one``'s arguments; ``common`` is (output root, methods, formats, batch id)."""
    root, methods, formats, batch_id = common
    return job.input, root, job.output, methods, formats, batch_id


def _died(message: str) -> dict[str, Any]:
    return {"status": "failed", "frames": 0, "faces": 0, "seconds": 0.0, "error": message}


def run_pool(jobs: list[BatchJob], common: tuple, workers: int) -> Iterator[Outcome]:
    """A local process pool. A worker that dies breaks the whole pool (Python's design): the inputs without a
    result go to a fresh pool, each at most MAX_RETRIES more times."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: MediaPipe and ONNX Runtime are not fork-safe, and a spawned worker pins its threads
    # before it loads them
    ctx = mp.get_context("spawn")
    retries: dict[BatchJob, int] = {}
    pending = list(jobs)
    while pending:
        ex = ProcessPoolExecutor(max_workers=max(1, min(workers, len(pending))), mp_context=ctx,
                                 initializer=pin_worker_threads)
        try:
            futures = {ex.submit(annotate_one, *task_args(j, common)): j for j in pending}
            pending = []
            for fut in as_completed(futures):
                job = futures[fut]
                try:
                    yield job, fut.result()
                except BrokenProcessPool:
                    retries[job] = retries.get(job, 0) + 1
                    if retries[job] > MAX_RETRIES:
                        yield job, _died(f"a worker process died {retries[job]} times on this input")
                    else:
                        pending.append(job)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError(RAY_INSTALL_HINT) from None
    return ray


def run_ray(jobs: list[BatchJob], common: tuple, address: str, workers: int | None) -> Iterator[Outcome]:
    """One Ray task per input (1 CPU each), retried by Ray when its worker dies; results come back to this driver,
    which alone writes the manifest. ``address``: '' starts a local cluster of ``workers`` CPUs (all by default)
    for this command, or joins RAY_ADDRESS when set; 'auto' joins the cluster `ray start` runs on this machine;
    'HOST:6379' joins that cluster (with RAY_AUTH_MODE=token and its token, README)."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address or os.environ.get("RAY_ADDRESS"):
            kw["address"] = address or os.environ["RAY_ADDRESS"]
        else:
            # a private cluster for this command: Ray's own default would also join whatever
            # cluster its session file in the temp folder names, and hangs when that cluster is gone
            kw["address"] = "local"
            if workers:
                kw["num_cpus"] = workers
        ray.init(**kw)
        started = True
    try:
        task = ray.remote(annotate_one).options(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False,
                                                runtime_env={"env_vars": WORKER_ENV})
        refs = {task.remote(*task_args(j, common)): j for j in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                job = refs.pop(ref)
                try:
                    yield job, ray.get(ref)
                except ray.exceptions.RayError as e:   # the worker died on every retry, or the node was lost
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    yield job, _died(f"Ray task failed after {MAX_RETRIES} retries: {first}")
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------- the driver

def plan(specs: Iterable[str]) -> list[BatchJob]:
    inputs = expand_inputs(specs)
    return [BatchJob(i, name, *fingerprint(i)) for i, name in zip(inputs, output_names(inputs))]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_batch(specs: Iterable[str], out: str | Path, methods: list[str], formats: list[str],
              workers: int | None = None, ray_address: str | None = None, progress: bool = True,
              on_record: Callable[[dict], None] | None = None) -> BatchReport:
    """Annotate every input not finished by an earlier run. ``ray_address`` None: local process pool of
    ``workers`` (default: the core count); a string: Ray (see ``run_ray``)."""
    from engine.export.annotate import FORMATS
    from engine.export.atomic import check_writable

    t0 = time.perf_counter()
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if not methods:
        raise ValueError("no method given")
    from engine.methods.base import registry

    reg = registry()
    unknown = [m for m in methods if m not in reg]
    if unknown:
        raise KeyError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(sorted(reg))}")
    for m in methods:   # weights missing: say so once, not once per input
        reason = reg[m].unavailable_reason() if hasattr(reg[m], "unavailable_reason") else None
        if reason:
            raise ValueError(reason)
    if ray_address is not None:
        import_ray()  # fail before any work when Ray is missing
    jobs = plan(specs)
    if not jobs:
        raise ValueError("no inputs given")
    root = check_writable(Path(out).absolute())
    lock = open(root / LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise RuntimeError(f"another annotate-batch is writing to {root}") from None
    try:
        clean_leftovers(root)
        batch_id = uuid.uuid4().hex
        (root / SHARED_MARK).write_text(batch_id)
        last = read_manifest(root)
        todo = [j for j in jobs if not is_finished(j, last.get(j.input), root, methods, formats)]
        report = BatchReport(total=len(jobs), skipped=len(jobs) - len(todo))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), initial=report.skipped, unit="input", desc="annotate-batch",
                       dynamic_ncols=True, file=sys.stderr)
        common = (str(root), methods, formats, batch_id)
        try:
            if todo:
                outcomes = (run_pool(todo, common, workers or default_workers()) if ray_address is None
                            else run_ray(todo, common, ray_address, workers))
                for job, res in outcomes:
                    record = {"input": job.input, "output": job.output, "size": job.size, "mtime": job.mtime,
                              "methods": methods, "formats": formats, "status": res["status"],
                              "frames": res["frames"], "faces": res["faces"], "seconds": res["seconds"],
                              "error": res["error"], "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    append_manifest(root, record)
                    report.records.append(record)
                    if res["status"] == "done":
                        report.done += 1
                    else:
                        report.failed += 1
                    if on_record:
                        on_record(record)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(failed=report.failed, refresh=False)
        finally:
            if bar is not None:
                bar.close()
        clean_leftovers(root)   # attempts of workers that died before their retry succeeded
        report.seconds = time.perf_counter() - t0
        return report
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()

