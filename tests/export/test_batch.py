"""annotate-batch: the process pool and a 2-CPU local Ray cluster write the files single-input annotate writes; a
worker killed mid-input changes nothing in the result; a finished batch re-run does no work; bad input is recorded.

Clips are cut here from the shared test video (a few dozen frames, 480x270) and annotated with the cheap baseline
method, so the Ray part stays well under two minutes on 2 cores."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from engine.export import batch
from engine.paths import PROJECT_ROOT, data_root

METHODS = ["baseline"]
FORMATS = ["csv", "json"]
N_CLIPS, CLIP_FRAMES = 4, 16


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    src = data_root() / "video" / "obama.mp4"
    if not src.exists():
        pytest.skip(f"{src} missing: set FACEALIGN_DATA to ../shared/data")
    d = tmp_path_factory.mktemp("clips")
    cap = cv2.VideoCapture(str(src))
    frames = []
    while len(frames) < 40:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(f, (480, 270)))
    cap.release()
    assert len(frames) == 40, f"{src}: only {len(frames)} frames decoded"
    out = []
    for k in range(N_CLIPS):   # overlapping windows: different clips, every one with a face throughout
        p = d / f"clip{k}.mp4"
        w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 25, (480, 270))
        for f in frames[k * 8:k * 8 + CLIP_FRAMES]:
            w.write(f)
        w.release()
        out.append(p)
    return out


@pytest.fixture(scope="module")
def broken(clips) -> Path:
    p = clips[0].parent / "broken.mp4"
    p.write_bytes(b"this is not a video\n" * 10)
    return p


def comparable(folder: Path) -> tuple[bytes, dict]:
    """An output folder's CSV bytes and its JSON without the per-face timings (wall-clock, never equal)."""
    doc = json.loads((folder / "annotations.json").read_text())
    for fr in doc["frames"]:
        for face in fr["faces"]:
            face.pop("timings_ms")
    return (folder / "annotations.csv").read_bytes(), doc


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> dict[str, tuple[bytes, dict]]:
    """Single-input annotate, one inference thread like a batch worker (ONNX sums in a different order with more)."""
    from engine.export.annotate import annotate

    root = tmp_path_factory.mktemp("single")
    before = os.environ.get("FACEALIGN_THREADS")
    os.environ["FACEALIGN_THREADS"] = "1"
    try:
        out = {}
        for c in clips:
            s = annotate(str(c), METHODS, root / c.stem, FORMATS)
            assert s.frames == CLIP_FRAMES and s.faces >= CLIP_FRAMES - 2
            out[c.stem] = comparable(root / c.stem)
    finally:
        if before is None:
            os.environ.pop("FACEALIGN_THREADS")
        else:
            os.environ["FACEALIGN_THREADS"] = before
    return out


@pytest.fixture(scope="module")
def pool_run(clips, broken, tmp_path_factory) -> tuple[Path, batch.BatchReport]:
    out = tmp_path_factory.mktemp("pool")
    report = batch.run_batch([str(c) for c in clips] + [str(broken)], out, METHODS, FORMATS, workers=2,
                             progress=False)
    return out, report


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines()]


def hidden_leftovers(out: Path) -> list[str]:
    return [p.name for p in out.rglob(".*") if p.name not in (batch.MANIFEST, batch.LOCK, batch.SHARED_MARK)]


def check_complete(out: Path, clips: list[Path], reference: dict) -> None:
    """Every clip annotated exactly once (one 'done' line), its folder equal to single-input annotate's, and
    nothing hidden or half-written left anywhere."""
    done = [r["input"] for r in manifest_lines(out) if r["status"] == "done"]
    assert sorted(done) == sorted(str(c) for c in clips)
    for c in clips:
        assert sorted(p.name for p in (out / c.stem).iterdir()) == ["annotations.csv", "annotations.json"]
        got_csv, got_json = comparable(out / c.stem)
        ref_csv, ref_json = reference[c.stem]
        assert got_csv == ref_csv, f"{c.stem}: CSV differs from single-input annotate"
        assert got_json == ref_json, f"{c.stem}: JSON differs from single-input annotate"
    assert hidden_leftovers(out) == []


class WorkerKiller(threading.Thread):
    """Waits until some worker is halfway through an input (its hidden work folder exists: the pid is in the
    name) and SIGKILLs that worker process."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out = out
        self.killed: list[tuple[int, str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.time() + 120
        while not self.stop.is_set() and time.time() < deadline:
            for d in self.out.glob(batch.TMP_PREFIX + "*"):
                pid = int(d.name.rsplit("-", 2)[1])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.killed.append((pid, d.name))
                return
            time.sleep(0.005)


def test_pool_matches_single_annotate_and_records_bad_input(pool_run, clips, broken, reference):
    out, report = pool_run
    assert (report.total, report.done, report.failed, report.skipped) == (N_CLIPS + 1, N_CLIPS, 1, 0)
    check_complete(out, clips, reference)
    bad = [r for r in manifest_lines(out) if r["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["input"] == str(broken)
    assert "not a readable video" in bad[0]["error"] and not (out / "broken").exists()
    rec = next(r for r in manifest_lines(out) if r["input"] == str(clips[0]))
    st = clips[0].stat()
    assert (rec["size"], rec["mtime"], rec["frames"]) == (st.st_size, st.st_mtime, CLIP_FRAMES)
    assert rec["faces"] >= CLIP_FRAMES - 2 and rec["seconds"] > 0 and rec["error"] is None


def test_rerun_skips_finished_and_retries_failed(pool_run, clips, broken, reference):
    out, _ = pool_run
    csv_times = {c.stem: (out / c.stem / "annotations.csv").stat().st_mtime_ns for c in clips}
    n_lines = len(manifest_lines(out))
    report = batch.run_batch([str(c) for c in clips] + [str(broken)], out, METHODS, FORMATS, workers=2,
                             progress=False)
    assert (report.skipped, report.done, report.failed) == (N_CLIPS, 0, 1)   # only the failed input ran again
    assert [r["input"] for r in report.records] == [str(broken)]
    assert len(manifest_lines(out)) == n_lines + 1
    assert {c.stem: (out / c.stem / "annotations.csv").stat().st_mtime_ns for c in clips} == csv_times
    check_complete(out, clips, reference)


def test_cli_second_run_with_everything_done_does_no_work(pool_run, clips, tmp_path):
    out, _ = pool_run
    listing = tmp_path / "inputs.txt"   # a text file listing the inputs, one relative path per line
    listing.write_text("# the clips\n" + "\n".join(os.path.relpath(c, tmp_path) for c in clips) + "\n")
    before = (out / batch.MANIFEST).read_bytes()
    r = subprocess.run([sys.executable, "main.py", "annotate-batch", str(listing), "--out", str(out),
                        "--methods", ",".join(METHODS), "--formats", ",".join(FORMATS)],
                       cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{N_CLIPS} inputs: 0 annotated, {N_CLIPS} already done, 0 failed" in r.stdout
    assert (out / batch.MANIFEST).read_bytes() == before


def test_pool_survives_a_killed_worker(clips, reference, tmp_path):
    killer = WorkerKiller(tmp_path)
    killer.start()
    report = batch.run_batch([str(c) for c in clips], tmp_path, METHODS, FORMATS, workers=2, progress=False)
    killer.stop.set()
    killer.join()
    assert killer.killed, "no worker was caught mid-input: the test proved nothing"
    assert (report.done, report.failed) == (N_CLIPS, 0)
    check_complete(tmp_path, clips, reference)


def test_finished_means_same_file_same_options(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x" * 10)
    (tmp_path / "a").mkdir()
    job = batch.plan([str(clip)])[0]
    rec = {"status": "done", "size": job.size, "mtime": job.mtime, "methods": METHODS, "formats": FORMATS}
    assert batch.is_finished(job, rec, tmp_path, METHODS, FORMATS)
    assert not batch.is_finished(job, {**rec, "status": "failed"}, tmp_path, METHODS, FORMATS)
    assert not batch.is_finished(job, rec, tmp_path, ["3dstn"], FORMATS)
    assert not batch.is_finished(job, rec, tmp_path, METHODS, ["csv"])
    os.utime(clip, (job.mtime + 5, job.mtime + 5))     # touched or replaced: annotate it again
    assert not batch.is_finished(batch.plan([str(clip)])[0], rec, tmp_path, METHODS, FORMATS)
    (tmp_path / "a").rmdir()                            # output folder deleted by the user
    assert not batch.is_finished(job, rec, tmp_path, METHODS, FORMATS)


def test_output_names_stay_distinct(tmp_path):
    names = batch.output_names(["/x/clip.mp4", "/y/clip.mp4", "/x/other.mp4", "/z/frames"])
    assert names[2:] == ["other", "frames"] and len(set(names)) == 4 and names[0].startswith("clip-")
    assert batch.output_names(["/x/clip.mp4", "/y/clip.mp4"]) == names[:2]   # the same folders every run


def test_manifest_ignores_a_line_cut_short(tmp_path):
    batch.append_manifest(tmp_path, {"input": "/a", "status": "done"})
    with open(tmp_path / batch.MANIFEST, "a") as f:
        f.write('{"input": "/b", "sta')                 # the driver died mid-write
    batch.append_manifest(tmp_path, {"input": "/c", "status": "failed"})
    assert batch.read_manifest(tmp_path) == {"/a": {"input": "/a", "status": "done"},
                                             "/c": {"input": "/c", "status": "failed"}}


def test_ray_missing_says_how_to_install(tmp_path, clips):
    code = ("import sys; sys.modules['ray'] = None; import main; "
            f"sys.exit(main.main(['annotate-batch', {str(clips[0])!r}, '--out', {str(tmp_path)!r}, '--ray']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "pip install -e '.[cluster]'" in r.stderr and f"ray=={batch.RAY_VERSION}" in r.stderr
    assert not (tmp_path / batch.MANIFEST).exists()


# ---------------------------------------------------------------- Ray: a local cluster with 2 CPUs

@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_matches_pool_and_single_annotate(ray_cluster, pool_run, clips, broken, reference, tmp_path):
    report = batch.run_batch([str(c) for c in clips] + [str(broken)], tmp_path, METHODS, FORMATS, ray_address="",
                             progress=False)
    assert (report.done, report.failed) == (N_CLIPS, 1)
    check_complete(tmp_path, clips, reference)
    pool_out, _ = pool_run
    for c in clips:
        assert comparable(tmp_path / c.stem) == comparable(pool_out / c.stem)
    bad = [r for r in manifest_lines(tmp_path) if r["status"] == "failed"]
    assert [r["input"] for r in bad] == [str(broken)] and "not a readable video" in bad[0]["error"]


def test_ray_retries_a_killed_worker(ray_cluster, clips, reference, tmp_path):
    killer = WorkerKiller(tmp_path)
    killer.start()
    report = batch.run_batch([str(c) for c in clips], tmp_path, METHODS, FORMATS, ray_address="", progress=False)
    killer.stop.set()
    killer.join()
    assert killer.killed, "no Ray worker was caught mid-input: the test proved nothing"
    assert (report.done, report.failed) == (N_CLIPS, 0)
    check_complete(tmp_path, clips, reference)
