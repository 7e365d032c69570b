"""Model cards: weights/NAME.md, written from the training facts (weights/NAME.train.json) and fresh measurements
of the shipped ONNX model (``python main.py card NAME``)."""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

from engine.evaluation.bench import ms_per_face
from engine.export.atomic import atomic_write_text
from engine.paths import PROJECT_ROOT, data_path, weights_path

LICENCE = ("Trained on AFLW crops (research use only) with teacher labels from a 3DDFA_V2 MobileNet-0.5 model (MIT) "
           "fitted with a Basel Face Model 2009-derived 3DMM (research use only): the weights inherit research-use-only "
           "terms.")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _row(r: dict) -> str:
    b = r["nme"]
    return (f"| {r['mode']} | {b['0-30']:.2f} | {b['30-60']:.2f} | {b['60-90']:.2f} | **{b['balanced']:.2f}** | "
            f"{b['overall']:.2f} | {r['failures']} |")


# what models trained before the resumable schedule (issue 11) had; their training facts record no schedule
LEGACY_SCHEDULE = ("warm-up + cosine over each run's own epochs, restarted (warm) by every `--resume --epochs N` "
                   "(the pre-issue-11 harness)")

# extra protocol-mode evaluations of a method's own variants, for the paper's ablations
ABLATIONS = {"3dstn": [("before refinement (projected landmarks of the TPS-warped face)", {"refine": False})],
             "mtcnn3d": [("stage 1 only (no MSIF refinement)", {"stages": 1})]}


def _pose_cells(pm: dict) -> str:
    return " | ".join("–" if pm.get(k) is None else f"{pm[k]:.2f}" for k in ("yaw", "pitch", "roll"))


def pose_line(pm: dict, source: str) -> str:
    """The card's pose sentence: protocol-crop MAE under the FSA-Net/SynergyNet protocol (docs/head-pose.md)."""
    return (f"Pose MAE (protocol crops, FSA-Net/SynergyNet protocol, {pm['n']} images with every |angle| <= 99°; "
            f"rotation from: {source}): yaw {pm['yaw']:.2f}°, pitch {pm['pitch']:.2f}°, roll {pm['roll']:.2f}°, "
            f"mean {pm['mean']:.2f}°.")


def reported_pose_source(name: str, source: str) -> str:
    """The declared source, with "+correction" where the training split chose the fitted correction for it."""
    from engine.methods.pose_output import read_calibrations

    chosen = read_calibrations().get(name, {}).get("chosen_on_train")
    return chosen if chosen == f"{source}+correction" else source


def ablation_text(name: str, main: dict, ablations: list, main_pose: dict | None = None) -> str:
    """``ablations``: (label, NME buckets, pose MAE) per variant, evaluated like the shipped method."""
    if not ablations:
        return ""
    rows = [f"| {name} as shipped | {main['0-30']:.2f} | {main['30-60']:.2f} | {main['60-90']:.2f} | "
            f"**{main['balanced']:.2f}** | {_pose_cells(main_pose or {})} |"]
    rows += [f"| {label} | {b['0-30']:.2f} | {b['30-60']:.2f} | {b['60-90']:.2f} | **{b['balanced']:.2f}** | "
             f"{_pose_cells(pm)} |" for label, b, pm in ablations]
    return ("Ablation (protocol mode, same weights; NME % per |yaw| bucket, pose MAE in degrees):\n\n"
            "| variant | 0-30 | 30-60 | 60-90 | balanced | yaw | pitch | roll |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def _ablation_schedule(ab: dict) -> str:
    if ab.get("schedule_replayed"):
        return "the shipped run's learning-rate schedule replayed step for step (`--schedule-from`)"
    return f"schedule: {ab['schedule']}" if ab.get("schedule") else "schedule: not recorded"


def _ablation_summary(arm_name: str, shipped: dict[int, dict], arm: list[dict], last: int = 5) -> str:
    """Both arms at their last common epoch, and averaged over the last ``last`` common epochs (the epoch-to-epoch
    swing of one arm is the yardstick a difference has to beat)."""
    common = [h["epoch"] for h in arm if h["epoch"] in shipped]
    if not common:
        return ""
    final, tail = common[-1], common[-last:]
    arm_by_epoch = {h["epoch"]: h["val_nme"]["balanced"] for h in arm}
    a, b = shipped[final]["balanced"], arm_by_epoch[final]
    ma = statistics.fmean(shipped[e]["balanced"] for e in tail)
    mb = statistics.fmean(arm_by_epoch[e] for e in tail)
    return (f"\nBalanced after epoch {final}: shipped **{a:.2f}**, {arm_name} **{b:.2f}** ({b - a:+.2f}); mean over "
            f"epochs {tail[0]}-{tail[-1]}: {ma:.2f} against {mb:.2f} ({mb - ma:+.2f}).\n")


def _buckets(v: dict) -> str:
    return f"{v['0-30']:.2f} / {v['30-60']:.2f} / {v['60-90']:.2f} / **{v['balanced']:.2f}**"


def _fine_tune_text(ab: dict, shipped: dict[int, dict], arm: list[dict]) -> str:
    """An arm that started from a trained checkpoint (``init_from``): each of its epochs against its starting point,
    the shipped run's final epoch (not the shipped run's own early epochs, which it never was)."""
    final = max(shipped)
    rows = [f"| start: shipped epoch {final} | {_buckets(shipped[final])} |"]
    rows += [f"| {h['epoch']} | {_buckets(h['val_nme'])} |" for h in arm]
    a, b = shipped[final]["balanced"], arm[-1]["val_nme"]["balanced"]
    return (f"""Trained ablation `{ab['ablation']}` ({json.dumps(ab['overrides'])}): `{ab['command']}`, seed
{ab['seed']}, {ab['threads']} threads; fine-tuned from `{ab['overrides']['init_from']}` for {len(arm)} epochs;
{_ablation_schedule(ab)}; aflw2000_dev protocol NME (torch) 0-30 / 30-60 / 60-90 / balanced after each epoch:

| epoch | {ab['ablation']} |
|---|---|
""" + "\n".join(rows) + f"\n\nBalanced: shipped **{a:.2f}**, {ab['ablation']} after {len(arm)} epochs **{b:.2f}** "
            f"({b - a:+.2f}).\n")


def trained_ablation_text(name: str, history: list[dict], description: str | None = None) -> str:
    """Ablations that need their own training run (`main.py train NAME --ablation KEY`): per-epoch validation
    NME of both arms on the same schedule, seed and data. ``description``: the shipped run's recipe description;
    an arm trained on another recipe (say, before the recipe changed) is named as such, not compared."""
    out = []
    for path in sorted((PROJECT_ROOT / "docs" / "results").glob(f"{name}_ablation_*.json")):
        ab = json.loads(path.read_text())
        arm = [h for h in ab["history"] if "val_nme" in h]
        if not arm:
            continue
        if description is not None and ab.get("description") != description:
            out.append(f"Trained ablation `{ab['ablation']}`: the arm in `docs/results/{path.name}` "
                       f"(`{ab['command']}`) was trained on another recipe than the shipped model, so it is not "
                       f"compared here; it has to be re-run on this recipe.\n")
            continue
        shipped = {h["epoch"]: h["val_nme"] for h in history if "val_nme" in h}
        if ab["overrides"].get("init_from") and shipped:
            out.append(_fine_tune_text(ab, shipped, arm))
            continue
        rows = []
        for h in arm:
            a, b = shipped.get(h["epoch"]), h["val_nme"]
            rows.append(f"| {h['epoch']} | {_buckets(a) if a else '–'} | {_buckets(b)} |")
        out.append(f"""Trained ablation `{ab['ablation']}` ({json.dumps(ab['overrides'])}): `{ab['command']}`, seed
{ab['seed']}, {ab['threads']} threads; {_ablation_schedule(ab)}; aflw2000_dev protocol NME (torch) 0-30 / 30-60 /
60-90 / balanced after each epoch, beside the shipped run's same epochs:

| epoch | shipped | {ab['ablation']} |
|---|---|---|
""" + "\n".join(rows) + "\n" + _ablation_summary(ab["ablation"], shipped, arm))
    return "\n".join(out)


# what each method's validation stages are (the rows of stage_text)
STAGE_LEGENDS = {
    "pifa": "block0 = the initial fit",
    "cprfa": ("the paper's ablation: dafi = the DAFI's own 68 points (each landmark's code searched in the predicted "
              "DAFI), dafi_pnp = DAFI + PnP (the mean shape's pose fitted to the retrieved vertices), round1 = CPR one "
              "round, round2 = CPR + the consistency-aware round (the method)"),
}


# the paper's NME after the same stages, where it reports them: (column heading, stage -> NME)
PAPER_STAGES = {
    "pifa": ("paper (Table 3, AFLW)",
             {"block1": 25.8, "block2": 9.26, "block3": 6.77}),
}


def stage_text(history: list[dict], name: str = "pifa") -> str:
    """A cascade's NME after each stage (PIFA's blocks: the paper's Table 3; CPRFA's ablation), from the last
    validated epoch, beside the paper's numbers where it reports them (PAPER_STAGES)."""
    last = next((h for h in reversed(history) if h.get("val_nme_stages")), None)
    if last is None:
        return ""
    heading, paper = PAPER_STAGES.get(name, ("", {}))
    rows = "\n".join(f"| {k} | {b['0-30']:.2f} | {b['30-60']:.2f} | {b['60-90']:.2f} | **{b['balanced']:.2f}** |"
                     + (f" {paper.get(k, '')} |" if paper else "")
                     for k, b in last["val_nme_stages"].items())
    legend = STAGE_LEGENDS.get(name, "")
    head = "| stage | 0-30 | 30-60 | 60-90 | balanced |" + (f" {heading} |" if paper else "")
    rule = "|---|---|---|---|---|" + ("---|" if paper else "")
    return (f"NME after each stage (epoch {last['epoch']}, torch, protocol{'; ' + legend if legend else ''}):\n\n"
            f"{head}\n{rule}\n{rows}\n")


VISIBILITY_RESULTS = PROJECT_ROOT / "docs" / "results" / "visibility.json"
VISIBILITY_HEADING = "## Visibility against AFLW's human flags"


def visibility_text(name: str) -> str:
    """The card's visibility section from the last ``python main.py visibility --save`` (docs/results/visibility.json),
    or "" when it has no row for ``name``."""
    if not VISIBILITY_RESULTS.exists():
        return ""
    res = json.loads(VISIBILITY_RESULTS.read_text())
    if name not in res:
        return ""
    rows = [(name + " (shipped)", res[name])] + [(k, v) for k, v in res.items() if k.startswith(name + " ")]
    buckets = list(res[name]["by_yaw"])
    lines = [f"| visibility | agreement | precision | recall | F1 (hidden) | "
             + " | ".join(f"agree {b}°" for b in buckets) + " |", "|" + "---|" * (5 + len(buckets)),
             "| constant all-visible | " + f"{res[name]['constant_agreement']:.3f} | – | 0 | 0 | "
             + " | ".join(f"{res[name]['by_yaw'][b]['constant_agreement']:.3f}" for b in buckets) + " |"]
    for label, r in rows:
        prec = "–" if r["precision"] is None else f"{r['precision']:.3f}"
        lines.append(f"| {label} | {r['agreement']:.3f} | {prec} | {r['recall']:.3f} | {r['f1']:.3f} | "
                     + " | ".join(f"{r['by_yaw'][b]['agreement']:.3f}" for b in buckets) + " |")
    return (f"""{VISIBILITY_HEADING}
`python main.py visibility --methods {name} --save`: the 14 AFLW points with a 68-point twin on aflw_train's 954-crop
held-out split (engine/training/split.py); "hidden" is the positive class; the shipped visibility is
weights/visibility_{name}.npz (docs/visibility.md).

""" + "\n".join(lines) + "\n")


def update_card_visibility(name: str) -> bool:
    """Replace (or add, before the speed section) the visibility section of weights/NAME.md; False without a card."""
    card = weights_path(f"{name}.md")
    text = visibility_text(name)
    if not card.exists() or not text:
        return False
    old = card.read_text()
    if VISIBILITY_HEADING in old:
        start = old.index(VISIBILITY_HEADING)
        end = old.find("\n## ", start + len(VISIBILITY_HEADING))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    elif "\n## Speed" in old:
        at = old.index("\n## Speed") + 1
        new = old[:at] + text + "\n" + old[at:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write_text(card, new)
    return True


E2E_SENTENCE = ("e2e mode runs the app's front end (BlazeFace + YuNet, the detection matching the annotated face, one "
                "landmark\nre-crop, a 5-crop ensemble; docs/front-end.md); a detection failure scores the mean shape's "
                "NME.")
# what earlier cards said e2e runs, replaced by E2E_SENTENCE
_OLD_E2E_SENTENCES = ("e2e mode crops with the app's BlazeFace detector and crop policy; a detection failure scores the "
                      "mean shape's NME.",
                      "e2e mode runs the app's front end (BlazeFace + YuNet, the detection matching the annotated "
                      "face, one landmark\nre-crop; docs/front-end.md); a detection failure scores the mean shape's "
                      "NME.")


def update_card_e2e(name: str, results_dir: Path | None = None) -> bool:
    """Replace the e2e row of weights/NAME.md's accuracy table (and the sentence saying what e2e runs) with
    docs/results/NAME_e2e.json, the object `main.py eval --mode e2e --json` wrote, without re-measuring the rest;
    False without a card, a row or the JSON."""
    card = weights_path(f"{name}.md")
    js = (results_dir or PROJECT_ROOT / "docs" / "results") / f"{name}_e2e.json"
    if not card.exists() or not js.exists():
        return False
    lines = card.read_text().split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("| e2e |")), None)
    if at is None:
        return False
    lines[at] = _row(json.loads(js.read_text()))
    text = "\n".join(lines)
    for old in _OLD_E2E_SENTENCES:
        text = text.replace(old, E2E_SENTENCE)
    atomic_write_text(card, text)
    return True


def write_card(name: str, e2e: bool = True) -> str:
    from engine.evaluation.protocol import evaluate
    from engine.methods.base import registry
    from engine.methods.factory import create

    facts = json.loads(weights_path(f"{name}.train.json").read_text())
    try:  # the recipe's current description of itself (the training facts keep the one it was trained with)
        from engine.training.recipes import get_recipe

        recipe = get_recipe(name)
        # only while it is still the recipe the weights came from (prnet's dense recipe awaits its first run)
        if recipe.description == facts.get("description"):
            facts["notes"] = recipe.notes
    except (KeyError, ImportError):
        pass
    dev = data_path("aflw2000_dev")
    results = []
    for mode in (["protocol", "e2e"] if e2e else ["protocol"]):
        m = create(name)
        r = evaluate(m, dev, mode=mode)
        m.close()
        results.append({k: v for k, v in r.items() if not k.startswith("_")})
        out_json = PROJECT_ROOT / "docs" / "results" / f"{name}_{mode}.json"
        if out_json.parent.is_dir():  # the same object `main.py eval --json` prints, for the README's tables
            out_json.write_text(json.dumps(results[-1]))
    ablations = []
    for label, kwargs in ABLATIONS.get(name, []):
        m = create(name, **kwargs)
        r = evaluate(m, dev, mode="protocol")
        m.close()
        ablations.append((label, r["nme"], r["pose_mae"]))
    speed = ms_per_face(name, threads=1)
    hist = facts["history"]
    # each recipe's main training error, in pixels
    train_px = ("points_px", "landmark_texel_px", "lm6_px", "landmark_px")
    curve = "\n".join(f"| {h['epoch']} | {next((h[k] for k in train_px if k in h), float('nan')):.2f} | "
                      f"{h['val_nme']['balanced']:.2f} | {h['seconds']:.0f} |" for h in hist if "val_nme" in h)
    onnx = weights_path(f"{name}.onnx")
    pm = results[0]["pose_mae"]
    text = f"""# Model card: `{name}`

{facts['description']}

## Architecture
{facts['notes']}

- Parameters: {facts['parameters']:,}; multiply-accumulates per 120x120 crop: {facts['macs'] / 1e6:.1f} M
- Files: `weights/{name}.onnx` (sha256 {sha256(onnx)}…), final torch checkpoint `weights/{name}.pt`
  (`python main.py train {name} --epochs N --resume` continues from it, with a fresh optimizer, when
  `runs/{name}/last.pt` is absent, at the learning rate it stopped at; `--rewarm` goes back to the base rate).

## Data and training
- Training set: ../shared/data/aflw_train (19,080 AFLW crops), teacher 3DMM labels + AFLW human 21 points.
- Validation: ../shared/data/aflw2000_dev (1,000 AFLW2000-3D images), never trained on.
- Command: `{facts['command']}`; seed {facts['seed']}; {facts['epochs']} epochs, batch {facts['batch_size']},
  AdamW lr {facts['lr']}; {facts['train_seconds'] / 60:.0f} minutes on {facts['threads']} CPU
  threads ({facts['host']}{', trained on ' + facts['device'] if facts.get('device', 'cpu') != 'cpu' else ''}).
- Learning-rate schedule: {facts.get('schedule') or LEGACY_SCHEDULE}.
- Training data path: {facts.get('data_path') or 'not recorded (trained before issue 11; the per-sample path)'}.
- Augmentation: {json.dumps(facts['augment'])}

| epoch | train points error (px) | aflw2000_dev balanced NME (torch, protocol) | seconds |
|---|---|---|---|
{curve}

## Accuracy on aflw2000_dev (`python main.py eval --method {name} --data ../shared/data/aflw2000_dev --mode MODE`)
68-point NME (%), normalised by sqrt(w·h) of the ground-truth box, per |yaw| bucket.

| mode | 0-30 | 30-60 | 60-90 | balanced | overall | failures |
|---|---|---|---|---|---|---|
{chr(10).join(_row(r) for r in results)}

{stage_text(hist, name)}
{ablation_text(name, results[0]["nme"], ablations, results[0]["pose_mae"])}
{trained_ablation_text(name, hist, facts.get("description"))}
{pose_line(pm, reported_pose_source(name, registry()[name].pose_source))}
{E2E_SENTENCE}

{visibility_text(name)}
## Speed
`method.align` on one 120x120 crop, 1 ONNX Runtime thread, CPU ({facts['host']}, `python main.py card {name}`):
median {speed['median']:.2f} ms (min {speed['min']:.2f}, max {speed['max']:.2f}), network + decode + visibility.

## Licence
{LICENCE}
"""
    out = weights_path(f"{name}.md")
    out.write_text(text)
    return str(out)
