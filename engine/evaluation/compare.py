"""`main.py compare`: several methods on the same frames -> side-by-side grid video + markdown report with plots."""
from __future__ import annotations

import json
import time
from itertools import combinations
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.evaluation.nme import nme_per_image
from engine.export.atomic import atomic_write_text, check_writable
from engine.export.writers import VideoWriter
from engine.pipeline import FrameProcessor, FrameResult
from engine.render import draw_result, grid, label
from engine.sources import open_source


class CompareGrid(VideoWriter):
    def __init__(self, path: Path, fps: float, methods: list[str], triangles: np.ndarray) -> None:
        super().__init__(path, fps, triangles)
        self.methods = methods

    def add(self, frame: FrameResult) -> None:
        h, w = frame.image.shape[:2]
        scale = min(1.0, 640 / w)
        tiles = []
        for m in self.methods:
            img = frame.image.copy()
            for face in frame.faces:
                if m in face.results:
                    draw_result(img, face.results[m], face.box, face.face_id, wireframe=True,
                                triangles=self.triangles)
            img = cv2.resize(img, (int(w * scale), int(h * scale)))
            ms = frame.method_ms.get(m, 0.0) / max(1, len(frame.faces))
            # below the frame counter VideoWriter prints at the top left of the mosaic (it covered this name)
            label(img, f"{m}  {ms:.1f} ms/face", pos=(8, 56))
            tiles.append(img)
        mosaic = grid(tiles, cols=min(len(tiles), 2))
        super().add(FrameResult(frame.index, frame.timestamp, mosaic, [], name=frame.name))


def compare(source_spec: str, methods: list[str], out_dir: str | Path, force: bool = False,
            progress: Callable[[int, int | None], None] | None = None,
            cancelled: Callable[[], bool] | None = None, max_faces: int | None = None, flip: bool = False) -> dict:
    """Every method on every frame of ``source_spec``: grid video, plots, report.md and report.json (which say
    "partial" when ``cancelled`` stopped it early). ``max_faces``: the tracker's limit (None: its default);
    ``flip``: every method flip-averaged (engine/methods/flip.py)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.facemodel import load_face_model

    if len(methods) < 1:
        raise ValueError("give at least one method")
    out = Path(out_dir)
    report_path = out / "report.md"
    if report_path.exists() and not force:
        raise FileExistsError(f"{report_path} already exists; use --force to overwrite")
    source = open_source(source_spec)
    check_writable(out)
    proc = FrameProcessor(methods, max_faces=max_faces, flip=flip)
    tris = load_face_model().triangles
    video = CompareGrid(out / "compare.mp4", source.fps, list(proc.methods), tris)
    ms: dict[str, list[float]] = {m: [] for m in proc.methods}
    yaw: dict[str, list[tuple[int, float]]] = {m: [] for m in proc.methods}
    disagree: dict[tuple[str, str], list[float]] = {p: [] for p in combinations(proc.methods, 2)}
    n = 0
    stopped = False
    t0 = time.perf_counter()
    try:
        for frame in source.frames():
            if cancelled and cancelled():
                stopped = True
                break
            if source.kind == "images":
                proc.tracker.reset()
            res = proc.process(frame)
            video.add(res)
            n += 1
            for face in res.faces:
                for m, r in face.results.items():
                    yaw[m].append((frame.index, float(r.pose[0])))
                for a, b in disagree:
                    if a in face.results and b in face.results:
                        disagree[(a, b)].append(float(nme_per_image(face.results[a].landmarks,
                                                                    face.results[b].landmarks)))
            if res.faces:
                for m, v in res.method_ms.items():
                    ms[m].append(v / len(res.faces))
            if progress:
                progress(n, source.length)
    finally:
        video.close()
        proc.close()
        source.close()
    rows = {}
    for m in proc.methods:
        med = float(np.median(ms[m])) if ms[m] else float("nan")
        rows[m] = {"ms_per_face": med, "fps": 1000.0 / med if ms[m] else 0.0, "frames_with_face": len(ms[m])}
    # NME when the input is an AFLW2000-3D-style folder
    src = Path(source_spec)
    if src.is_dir() and (src / "images").is_dir() or (src.name == "images" and any(src.glob("*.mat"))):
        from engine.evaluation.protocol import evaluate

        root = src if (src / "images").is_dir() else src.parent
        for m in proc.methods:
            from engine.methods.factory import create

            meth = create(m, flip=flip)
            rows[m]["nme"] = {k: v for k, v in evaluate(meth, root).items() if not k.startswith("_")}["nme"]
            meth.close()
    pair_rows = {f"{a} vs {b}": float(np.mean(v)) if v else float("nan") for (a, b), v in disagree.items()}

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(rows)
    ax.bar(names, [rows[m]["ms_per_face"] for m in names], color="#4a7")
    ax.set_ylabel("ms / face")
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 3))
    for m in names:
        if yaw[m]:
            f, y = zip(*yaw[m])
            ax.plot(f, y, ".-", label=m)
    ax.set_xlabel("frame")
    ax.set_ylabel("yaw (deg)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "yaw.png", dpi=90)
    plt.close(fig)

    lines = [f"# Comparison on `{source_spec}`", "",
             f"{n} frames, methods: {', '.join(names)}; made with `python main.py compare {source_spec} "
             f"--methods {','.join(names)} --out {out_dir}{' --flip' if flip else ''}` in {time.perf_counter() - t0:.0f} s."
             + (f" **Partial: cancelled after {n} frames.**" if stopped else ""), "",
             "| method | ms/face (median) | FPS (1000 / ms) | frames with face |"
             + (" NME balanced |" if any("nme" in r for r in rows.values()) else ""),
             "|---|---|---|---|" + ("---|" if any("nme" in r for r in rows.values()) else "")]
    for m, r in rows.items():
        lines.append(f"| {m} | {r['ms_per_face']:.2f} | {r['fps']:.1f} | {r['frames_with_face']} |"
                     + (f" {r['nme']['balanced']:.2f} |" if "nme" in r else ""))
    lines += ["", "No jitter here: on a real clip the landmarks' frame-to-frame motion is mostly the head's. Stability "
              "is measured on clips with known motion: `python main.py stability` (README).", ""]
    if pair_rows:
        lines += ["| pair | disagreement (NME %, 68 points) |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in pair_rows.items()]
    lines += ["", "![speed](speed.png)", "", "![yaw per frame](yaw.png)", "",
              "Side-by-side video: `compare.mp4`.", ""]
    atomic_write_text(report_path, "\n".join(lines))
    result = {"frames": n, "partial": stopped, "methods": rows, "disagreement": pair_rows}
    atomic_write_text(out / "report.json", json.dumps(result, indent=1))
    return result
