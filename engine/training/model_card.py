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
# (``method``: another declared method's weights, e.g. the unfused row beside CPRFA's CPR-H; skipped when absent)
ABLATIONS = {"3dstn": [("before refinement (projected landmarks of the TPS-warped face)", {"refine": False})],
             "mtcnn3d": [("stage 1 only (no MSIF refinement)", {"stages": 1})],
             "cprfa": [("CPR-H round 1 only (no consistency-aware round)", {"rounds": 1}),
                       ("unfused (cprfa-unfused: no CPR-H fusion)", {"method": "cprfa-unfused"}),
                       ("unfused, round 1 only", {"method": "cprfa-unfused", "rounds": 1})]}


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


def fine_tune_start(init_from: str | None) -> tuple[str, dict] | None:
    """(label, validation NME of its final epoch) of the checkpoint a fine-tune started from, read from that
    checkpoint's training facts (weights/X.pt -> weights/X.train.json); None without them."""
    if not init_from:
        return None
    stem = Path(init_from).name.removesuffix(".pt")
    facts = weights_path(f"{stem}.train.json")
    if not facts.exists():
        return None
    hist = [h for h in json.loads(facts.read_text())["history"] if "val_nme" in h]
    return (f"{stem} epoch {hist[-1]['epoch']}", hist[-1]["val_nme"]) if hist else None


def _fine_tune_text(ab: dict, shipped: dict[int, dict], arm: list[dict],
                    start: tuple[str, dict] | None = None) -> str:
    """An arm that started from a trained checkpoint (``init_from``): each of its epochs against its starting point,
    ``start`` (label, NME) where the shipped run is itself a fine-tune from the same checkpoint, else the shipped
    run's final epoch (not the shipped run's own early epochs, which it never was)."""
    final = max(shipped)
    label, began = start or (f"shipped epoch {final}", shipped[final])
    rows = [f"| start: {label} | {_buckets(began)} |"]
    rows += [f"| {h['epoch']} | {_buckets(h['val_nme'])} |" for h in arm]
    a, b = began["balanced"], arm[-1]["val_nme"]["balanced"]
    return (f"""Trained ablation `{ab['ablation']}` ({json.dumps(ab['overrides'])}): `{ab['command']}`, seed
{ab['seed']}, {ab['threads']} threads; fine-tuned from `{ab['overrides']['init_from']}` for {len(arm)} epochs;
{_ablation_schedule(ab)}; aflw2000_dev protocol NME (torch) 0-30 / 30-60 / 60-90 / balanced after each epoch:

| epoch | {ab['ablation']} |
|---|---|
""" + "\n".join(rows) + f"\n\nBalanced: {start[0] if start else 'shipped'} **{a:.2f}**, {ab['ablation']} after "
            f"{len(arm)} epochs **{b:.2f}** ({b - a:+.2f})"
            + (f"; the shipped run after its epoch {final}: **{shipped[final]['balanced']:.2f}**" if start else "")
            + ".\n")


def trained_ablation_text(name: str, history: list[dict], description: str | None = None,
                          init_from: str | None = None) -> str:
    """Ablations that need their own training run (`main.py train NAME --ablation KEY`): per-epoch validation
    NME of both arms on the same schedule, seed and data. ``description``: the shipped run's recipe description;
    an arm trained on another recipe (say, before the recipe changed) is named as such, not compared.
    ``init_from``: the checkpoint the shipped run was fine-tuned from, if it was (CPRFA's CPR-H from the unfused
    model): the fine-tune arms started there too, so that checkpoint's final epoch is their starting row."""
    out = []
    start = fine_tune_start(init_from)
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
            out.append(_fine_tune_text(ab, shipped, arm, start))
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


RESULTS_DIR = PROJECT_ROOT / "docs" / "results"


def _section(heading: str, body: str) -> str:
    return f"{heading}\n{body.rstrip()}\n" if body else ""


def declared_ablations_text(name: str, results_dir: Path | None = None) -> str:
    """The recipe's ablations (`main.py train NAME --ablation KEY`) with no trained arm in docs/results: named on
    the card, so a declared variant is never taken for a measured one."""
    try:
        from engine.training.recipes import get_recipe

        declared = get_recipe(name).ablations
    except (KeyError, ImportError):
        return ""
    results_dir = results_dir or RESULTS_DIR
    untrained = [k for k in declared if not (results_dir / f"{name}_ablation_{k}.json").exists()]
    if not untrained:
        return ""
    return (f"Declared in the recipe (`python main.py train {name} --ablation KEY`), with no trained arm in "
            "docs/results, so no number on this card comes from them:\n\n"
            + "\n".join(f"- `{k}`: {json.dumps(declared[k])}" for k in untrained) + "\n")


def _spread_cell(v: dict, digits: int = 1) -> str:
    return f"{v['mean']:.{digits}f} ± {v['sd']:.{digits}f} ({v['min']:.{digits}f}-{v['max']:.{digits}f})"


def pifa_blocks_text(res: dict) -> str:
    """PIFA's blocks against the paper's Table 3 and why blocks 1-2 barely move, from
    ``python -m research.pifa_blocks --json docs/results/pifa_blocks.json``."""
    dev, rows = res["dev_stages"], res["train_blocks"]
    paper = res.get("paper_table3", {})
    by = {r["block"]: r for r in rows}
    lines = ["| after | aflw2000_dev balanced (here) | paper's Table 3 (AFLW) | camera's share of Eq. 6 (training "
             "crops) | camera moved by the block (spreads) | training crops: NME | with the teacher's camera |",
             "|---|---|---|---|---|---|---|"]
    for k, (stage, b) in enumerate(dev.items()):
        r = by.get(k, {})
        moved = r.get("camera_move_rms_in_spreads")
        lines.append(f"| {stage} | **{b['balanced']:.2f}** | {paper.get(stage, '')} | "
                     f"{r.get('camera share std (shipped)', float('nan')):.3f} | "
                     f"{'' if moved is None else f'{moved:.2f}'} | {r.get('nme_train', float('nan')):.2f} | "
                     f"{r.get('nme_teacher_camera_block_shape', float('nan')):.2f} |")
    b0, b2, b3 = (dev[f"block{k}"]["balanced"] for k in (0, 2, 3))
    early = [by[k]["nme_teacher_camera_block_shape"] for k in range(4) if k in by]
    own = [by[k]["nme_train"] for k in range(4) if k in by]
    share = [by[k]["camera share std (shipped)"] for k in (0, 1, 2)]
    share_lm = by[0]["camera share landmark (proposed)"]
    moved = [by[k]["camera_move_rms_in_spreads"] for k in (1, 2)]
    paper_text = ""
    if "block1" in paper and "block2" in paper:
        paper_text = (f"In the paper's table block 2 takes the NME from {paper['block1']} to {paper['block2']}; ")
    return f"""`OMP_NUM_THREADS=1 python -m research.pifa_blocks --train 1000 --json docs/results/pifa_blocks.json`
(weights/pifa.pt, {res['epochs']} epochs, torch; aflw2000_dev protocol crops, {res['dev_n']} images; the loss
columns on the first {res['train_n']} aflw_train crops, un-augmented, against the teacher's fit). The paper's
column is the three numbers issue 30 quotes from PIFA's Table 3, placed on blocks 1-3 (which rows of the paper's
table they are was not checked against the paper); no other value of that table is quoted in this repository, so
the other rows are left empty, and the datasets differ (AFLW there, AFLW2000-3D here).

""" + "\n".join(lines) + f"""

{paper_text}here blocks 1-2 move the balanced NME only from {b0:.2f} to {b2:.2f}, and block 3 does the work
({b3:.2f}). On the training crops the error left after blocks 0-3 is the camera's: their own NME there is
{min(own):.2f}-{max(own):.2f}, and with the teacher's camera their shapes would score
{min(early):.2f}-{max(early):.2f}. Eq. 6 is the mean over 58 entries, each in units of its training spread, and
50 of them are shape coefficients, which start {by[0]['coef_rms_in_stds']:.2f} stds off (RMS) against the camera's
{by[0]['camera_rms_in_spreads']:.2f} spreads: the camera carries {share[0]:.1%} of Eq. 6 at the start and
{share[1]:.1%} and {share[2]:.1%} after blocks 1 and 2, which spend themselves on the coefficients and move the
camera by {moved[0]:.2f} and {moved[1]:.2f} of its spread. Weighting each entry by how far a unit of it moves the 68
landmarks (`pifa_param_weights(..., "landmark")`, docs/flip.md) gives the camera {share_lm:.1%} of the loss at the
start. That reweighted retrain is declared as the ablation `eq6-landmark`
(`python main.py train pifa --ablation eq6-landmark --schedule-from weights/pifa.pt --threads 2`) and **not trained**:
the shipped weights, and the balanced {dev[list(dev)[-1]]['balanced']:.2f} above, come from the Eq. 6 weighting by
spreads.
"""


CAPU_ARMS = (("round1", "round 1 (no consistency-aware round)"),
             ("round2", "round 2 as shipped (beta from the errors over 10% of the found selected vertices)"),
             ("round2_const_beta", "round 2, beta = each update's held-out mean, the same for every face"),
             ("round2_beta1", "round 2, beta = 1 (the regressors' updates unscaled)"),
             ("round2_kappa_all", "round 2, errors over every found selected vertex (kappa = 1)"),
             ("round2_dafi", "round 2, errors over every DAFI-detected vertex (the paper's sample)"))


def _signed(x: float, digits: int = 3) -> str:
    """``x`` with its sign, without a "-0.000" for a change that rounds to nothing."""
    return f"{x:+.{digits}f}" if round(x, digits) != 0 else f"{0:.{digits}f}"


def cprfa_capu_text(res: dict, history: list[dict] | None = None) -> str:
    """CPRFA's consistency-aware round measured on the shipped model, from
    ``python -m research.cprfa_capu --json docs/results/cprfa_capu.json``; ``history``: the shipped run's
    training facts (round 1 against round 2 on the training inputs, where it logged both)."""
    ho, dev = res["held_out"], res["dev"]
    sample_rows = (("found", f"selected vertices found (of C = {res['C']})", 0),
                   ("sampled", f"vertices the round samples (kappa = {res['kappa']:.0%} of the found, rounded up)", 1),
                   ("fg_pixels", "DAFI foreground pixels", 0),
                   ("dafi_vertices", f"distinct BFM vertices those pixels retrieve (of {res['codebook_vertices']:,}; "
                                     f"threshold {res['threshold']}): the paper's sample", 0))
    sample = "\n".join(f"| {label} | {_spread_cell(ho['sample'][k], d)} | {_spread_cell(dev['sample'][k], d)} |"
                       for k, label, d in sample_rows)
    beta = "\n".join(f"| {a['step']} | {a['group']} | {a['mean']:.3f} | {a['sd']:.3f} | {a['min']:.3f}-{a['max']:.3f} "
                     f"| {a['p5']:.3f}-{a['p95']:.3f} | {d['mean']:.3f} / {d['sd']:.3f} | {k['mean']:.3f} / "
                     f"{k['sd']:.3f} | {f['mean']:.3f} / {f['sd']:.3f} |"
                     for a, d, k, f in zip(ho["beta"], dev["beta"], ho["beta_kappa_all"], ho["beta_dafi"]))
    nme = "\n".join(f"| {label} | {_buckets(ho['nme'][k])} | {_buckets(dev['nme'][k])} |" for k, label in CAPU_ARMS)

    def change(split: dict, arm: str, base: str = "round1") -> float:
        return split["nme"][arm]["balanced"] - split["nme"][base]["balanced"]

    d_ho, d_dev = change(ho, "round2"), change(dev, "round2")
    sds = [a["sd"] for a in ho["beta"]]
    means = [a["mean"] for a in ho["beta"]]
    verdict = "hurts" if d_ho > 0 else "helps"
    const_ho, const_dev = change(ho, "round2_const_beta", "round2"), change(dev, "round2_const_beta", "round2")
    kappa_ho, dafi_ho = change(ho, "round2_kappa_all", "round2"), change(ho, "round2_dafi", "round2")
    negligible = 0.02      # balanced NME: below the epoch-to-epoch swing of the shipped run (card's training table)
    if max(abs(const_ho), abs(const_dev)) < negligible:
        response = ("It acts as a learned step size per parameter, not as the consistency check the paper "
                    "describes.")
    else:
        response = "So beta's response to the face is worth that much."
    why = ""
    last = next((h for h in reversed(history or []) if "lm68_round1_px" in h and "lm68_px" in h), None)
    inputs = res.get("held_out_training_inputs", {})
    if d_ho > 0 and (last is not None or inputs):
        why = "\n- Why it hurts:"
        if last is not None:
            why += (f" on its training inputs (ground-truth DAFIs under the warp corruption model) round 2 lowered the "
                    f"68-landmark error from {last['lm68_round1_px']:.2f} to {last['lm68_px']:.2f} px (epoch "
                    f"{last['epoch']}, the shipped run's training log).")
        if inputs:
            why += (" The held-out crops (faces no CPRFA network trained on) fed with each kind of input "
                    "(`--inputs`; the warp model calibrated on these crops' U-Net DAFIs, as the recipe's build "
                    "calibrates it):")
            warp = inputs.get("ground-truth DAFI, warp-corrupted")
            conclusion = ""
            if warp is not None:
                d_warp = warp["nme"]["round2"]["balanced"] - warp["nme"]["round1"]["balanced"]
                if d_warp < 0:
                    conclusion = (" So round 2 carries over to unseen faces but not to the U-Net's real DAFI errors: "
                                  "the corruption model matches the U-Net's retrieval statistics (found fraction, "
                                  "offset) but not whatever round 2's corrections rely on.")
                    if max(abs(const_ho), abs(const_dev)) < negligible:
                        conclusion += (" A beta that barely varies per face cannot hold them back where they do "
                                       "not fit.")
                else:
                    conclusion = " So round 2 fails on unseen faces even with the inputs it was trained on."
            table = [("the U-Net's DAFI (the method)", ho["nme"])] + [(k, v["nme"]) for k, v in inputs.items()]
            why += ("\n\n  | input (held-out crops) | round 1 | round 2 | balanced change |\n  |---|---|---|---|\n"
                    + "\n".join(f"  | {k} | {_buckets(v['round1'])} | {_buckets(v['round2'])} | "
                                 f"{_signed(v['round2']['balanced'] - v['round1']['balanced'], 2)} |"
                                 for k, v in table) + "\n\n ")
            why += conclusion
    sample_verdict = ""
    if max(abs(kappa_ho), abs(dafi_ho)) < negligible:
        sample_verdict = (" With this beta network, the sample size is not what decides whether round 2 helps; a "
                          "beta network trained on the paper's sample is not trained here.")
    return f"""`OMP_NUM_THREADS=2 python -m research.cprfa_capu --json docs/results/cprfa_capu.json` (weights/cprfa.pt,
torch, no training). held-out: aflw_train's held-out split (engine/training/split.py, {ho['n']} crops; no network of
CPRFA trained on them, though the vertex selection and the corruption model's calibration were measured on them),
NME against the teacher's 68 points, buckets by AFLW's |yaw| (>= 60 in the last); dev: aflw2000_dev protocol crops
({dev['n']}), as in the stage table above. The variants of round 2 change only what the trained beta network is fed,
or replace it; none is retrained.

Sample size per face, mean ± sd (min-max):

| | held-out | aflw2000_dev |
|---|---|---|
{sample}

beta per update of round 2, across faces (held-out; then mean / sd on dev, and on held-out with the errors over
every found selected vertex and over every DAFI-detected vertex):

| step | group | mean | sd | min-max | 5-95% | dev | all found | DAFI-detected |
|---|---|---|---|---|---|---|---|---|
{beta}

NME (%) 0-30 / 30-60 / 60-90 / balanced:

| variant | held-out | aflw2000_dev |
|---|---|---|
{nme}

- Round 2 {verdict} on the held-out split ({d_ho:+.2f} balanced; {d_dev:+.2f} on aflw2000_dev) and lowers the NME of
  {ho['round2_better_fraction']:.0%} of the held-out faces ({dev['round2_better_fraction']:.0%} on dev). With
  beta = 1 the change from round 1 would be {change(ho, 'round2_beta1'):+.2f} on held-out: the learned betas (means
  {min(means):.2f}-{max(means):.2f}) shrink the regressors' updates.
- beta per face: its sd across faces is {min(sds):.3f}-{max(sds):.3f} per update, and holding each
  update's beta at its held-out mean changes the balanced NME by {_signed(const_ho)} (held-out) and
  {_signed(const_dev)} (dev). {response}
- The sample: {ho['sample']['sampled']['mean']:.1f} vertices per face (minimum {ho['sample']['sampled']['min']:.0f})
  against {ho['sample']['dafi_vertices']['mean']:,.0f} distinct vertices the DAFI detects. Feeding the trained beta
  network the errors over every found selected vertex or over every DAFI-detected vertex moves the profile it reads
  (errors / their mean) by {ho['profile_gap_10pct_vs_all_found']['mean']:.3f} and
  {ho['profile_gap_10pct_vs_dafi']['mean']:.3f} on average, and the balanced NME by {_signed(kappa_ho)} and
  {_signed(dafi_ho)} (held-out).{sample_verdict}{why}
"""


def research_sections(name: str, results_dir: Path | None = None, history: list[dict] | None = None
                      ) -> list[tuple[str, str]]:
    """(heading, body) of the card's sections written from research results (docs/results; ``history``: the
    shipped run's training facts, where a section compares with them) and the recipe's declared, untrained
    ablations; a section whose result file is absent is left out."""
    results_dir = results_dir or RESULTS_DIR
    sources = {"pifa": (PIFA_HEADING, "pifa_blocks.json", lambda r: pifa_blocks_text(r)),
               "cprfa": (CAPU_HEADING, "cprfa_capu.json", lambda r: cprfa_capu_text(r, history))}
    out = []
    if name in sources:
        heading, file, text = sources[name]
        if (results_dir / file).exists():
            out.append((heading, text(json.loads((results_dir / file).read_text()))))
    declared = declared_ablations_text(name, results_dir)
    if declared:
        out.append((DECLARED_HEADING, declared))
    return out


DECLARED_HEADING = "## Ablations declared, not trained"
PIFA_HEADING = "## PIFA's blocks against the paper's Table 3"
CAPU_HEADING = "## Consistency-aware round (CAPU)"
RESEARCH_HEADINGS = (PIFA_HEADING, CAPU_HEADING, DECLARED_HEADING)


def _replace_section(card: str, heading: str, text: str) -> str:
    """``card`` with the section under ``heading`` replaced by ``text`` (or, if absent, ``text`` put before the
    visibility or speed section, or at the end); an empty ``text`` removes the section."""
    if heading + "\n" in card:
        start = card.index(heading + "\n")
        end = card.find("\n## ", start + len(heading))
        rest = card[end + 1:] if end >= 0 else ""
        return card[:start] + (text + "\n" + rest if text and rest else text or rest)
    if not text:
        return card
    for anchor in ("\n" + VISIBILITY_HEADING, "\n## Speed"):
        if anchor in card:
            at = card.index(anchor) + 1
            return card[:at] + text + "\n" + card[at:]
    return card.rstrip("\n") + "\n\n" + text


def refresh_card_text(name: str, results_dir: Path | None = None) -> bool:
    """Rewrite weights/NAME.md's written parts from their inputs without re-measuring the model: the architecture
    notes (the recipe's, while it is the recipe the weights came from), the stage table (training facts, with the
    paper's column), and the research sections (docs/results). The measured lines (accuracy, pose, speed) stay
    as the last `python main.py card NAME` wrote them. False without a card."""
    card = weights_path(f"{name}.md")
    if not card.exists():
        return False
    text = card.read_text()
    facts = json.loads(weights_path(f"{name}.train.json").read_text())
    try:
        from engine.training.recipes import get_recipe

        recipe = get_recipe(name)
        if recipe.description == facts.get("description") and "## Architecture\n" in text:
            start = text.index("## Architecture\n") + len("## Architecture\n")
            end = text.index("\n- Parameters:", start)
            text = text[:start] + recipe.notes + "\n" + text[end:]
    except (KeyError, ImportError):
        pass
    stages = stage_text(facts["history"], name)
    if stages and "NME after each stage" in text:
        start = text.index("NME after each stage")
        end = text.find("\n\n", text.index("\n|", start))
        text = text[:start] + stages.rstrip("\n") + (text[end:] if end >= 0 else "\n")
    for heading in RESEARCH_HEADINGS:          # out first, then back in research_sections' order
        text = _replace_section(text, heading, "")
    for heading, body in research_sections(name, results_dir, facts.get("history")):
        text = _replace_section(text, heading, _section(heading, body))
    atomic_write_text(card, text)
    return True


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
        new = old[:start] + text + (old[end:] if end >= 0 else "")   # keeps the blank line before the next heading
    elif "\n## Speed" in old:
        at = old.index("\n## Speed") + 1
        new = old[:at] + text + "\n" + old[at:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    atomic_write_text(card, new)
    return True


E2E_SENTENCE = ("e2e mode runs the app's front end (BlazeFace + YuNet, a YuNet retry on the padded image when nothing "
                "is found, the detection\nmatching the annotated face, one landmark re-crop; docs/front-end.md); a "
                "detection failure scores the mean shape's NME.")
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


def _start_line(init_from: str | None) -> str:
    """The card's sentence on a fine-tuned run's starting point (empty for a run from scratch)."""
    if not init_from:
        return ""
    start = fine_tune_start(init_from)
    began = f" (its {start[0]}: balanced {start[1]['balanced']:.2f})" if start else ""
    return f"Fine-tuned from `{init_from}`{began}.\n\n"


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
        kwargs = dict(kwargs)
        target = kwargs.pop("method", name)
        if not registry()[target].available:
            continue
        m = create(target, **kwargs)
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
    start_line = _start_line(facts.get("init_from"))
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

{start_line}| epoch | train points error (px) | aflw2000_dev balanced NME (torch, protocol) | seconds |
|---|---|---|---|
{curve}

## Accuracy on aflw2000_dev (`python main.py eval --method {name} --data ../shared/data/aflw2000_dev --mode MODE`)
68-point NME (%), normalised by sqrt(w·h) of the ground-truth box, per |yaw| bucket.

| mode | 0-30 | 30-60 | 60-90 | balanced | overall | failures |
|---|---|---|---|---|---|---|
{chr(10).join(_row(r) for r in results)}

{stage_text(hist, name)}
{ablation_text(name, results[0]["nme"], ablations, results[0]["pose_mae"])}
{trained_ablation_text(name, hist, facts.get("description"), facts.get("init_from"))}
{pose_line(pm, reported_pose_source(name, registry()[name].pose_source))}
{E2E_SENTENCE}

{"".join(_section(h, b) + chr(10) for h, b in research_sections(name, history=hist))}{visibility_text(name)}
## Speed
`method.align` on one 120x120 crop, 1 ONNX Runtime thread, CPU ({facts['host']}, `python main.py card {name}`):
median {speed['median']:.2f} ms (min {speed['min']:.2f}, max {speed['max']:.2f}), network + decode + visibility.

## Licence
{LICENCE}
"""
    out = weights_path(f"{name}.md")
    out.write_text(text)
    return str(out)
