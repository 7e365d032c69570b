"""Learning-rate schedule that survives ``--resume --epochs N``: linear warm-up, a constant phase, and a final
cosine anneal over the last ANNEAL_FRACTION of the run, whose start moves with N.

Extending a run that is still in its constant phase changes nothing but where the anneal starts: the resumed run
follows exactly the schedule a fresh N-epoch run would have. A run that had already entered (or finished) its
anneal is never warm-restarted by accident: it continues annealing from the learning rate it stopped at down to
the floor at the new end. Going back up to the base rate is a deliberate choice (``rewarm``: a linear ramp from the
stopped rate, recorded in the checkpoint and the model card).

The pre-issue-11 harness used warm-up + cosine over each run's own epochs, restarting the cosine on every resume
(``legacy_lr``); checkpoints trained that way stay resumable: their last rate is read from the optimizer, or
recomputed from the legacy formula for shipped weights, which carry no optimizer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ANNEAL_FRACTION = 0.3
MIN_FACTOR = 0.02
KIND = "warm-up + constant + cosine anneal (last 30%)"
LEGACY_KIND = "warm-up + cosine over the run (each --resume restarted the cosine)"


def default_warmup(total_steps: int) -> int:
    return min(300, total_steps // 10 + 1)


def legacy_lr(step: int, total: int, base: float, warmup: int) -> float:
    """The pre-issue-11 schedule (warm-up + cosine to 2% over ``total``), for checkpoints trained with it."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (MIN_FACTOR + (1 - MIN_FACTOR) * 0.5 * (1 + math.cos(math.pi * p)))


@dataclass(frozen=True)
class Schedule:
    base_lr: float
    total_steps: int
    warmup_steps: int
    anneal_start: int                 # first step of the final anneal
    resume_step: int = 0              # first step of this segment (0: a fresh run)
    resume_lr: float | None = None    # rate the resumed checkpoint stopped at, when this segment does not follow
    #                                   the fresh plan (it had entered its anneal, or rewarm)
    rewarm_steps: int = 0             # deliberate rewarm: linear ramp resume_lr -> base_lr over these steps

    @property
    def floor(self) -> float:
        return self.base_lr * MIN_FACTOR

    def lr(self, step: int) -> float:
        lo, base = self.floor, self.base_lr
        if self.resume_lr is not None and self.rewarm_steps == 0:
            # continue an anneal already under way: cosine from the stopped rate to the floor at the new end
            p = min(1.0, (step - self.resume_step + 1) / max(1, self.total_steps - self.resume_step))
            return lo + (max(self.resume_lr, lo) - lo) * 0.5 * (1 + math.cos(math.pi * max(p, 0.0)))
        if self.rewarm_steps and step < self.resume_step + self.rewarm_steps:
            f = (step - self.resume_step + 1) / self.rewarm_steps
            return (self.resume_lr or lo) + (base - (self.resume_lr or lo)) * f
        if step < self.warmup_steps and not self.rewarm_steps:
            return base * (step + 1) / self.warmup_steps
        if step < self.anneal_start:
            return base
        # steps anneal_start .. total - 1 take p = 1/A .. 1: the last step of the run is at the floor
        p = min(1.0, (step - self.anneal_start + 1) / max(1, self.total_steps - self.anneal_start))
        return lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * p))

    def record(self, steps_per_epoch: int) -> dict:
        """What the checkpoint and the model card keep about this segment."""
        d = asdict(self)
        d.update(kind=KIND, steps_per_epoch=steps_per_epoch,
                 anneal_from_epoch=self.anneal_start / steps_per_epoch + 1)
        return d


def plan(base_lr: float, steps_per_epoch: int, epochs: int, resume_step: int = 0, last_lr: float | None = None,
         warmup_steps: int | None = None, rewarm: bool = False) -> Schedule:
    """The schedule for a run to ``epochs`` epochs, resumed at ``resume_step`` (0: fresh) from a checkpoint whose
    last learning rate was ``last_lr`` (None: unknown, follow the fresh plan)."""
    total = steps_per_epoch * epochs
    anneal_start = total - max(1, round(ANNEAL_FRACTION * total))
    warmup = warmup_steps if warmup_steps is not None else default_warmup(total)
    fresh = Schedule(base_lr, total, warmup, anneal_start)
    if resume_step <= 0 or last_lr is None:
        return fresh
    if rewarm:
        return Schedule(base_lr, total, warmup, anneal_start, resume_step, last_lr,
                        rewarm_steps=max(1, min(warmup, anneal_start - resume_step)))
    if resume_step < warmup or fresh.lr(resume_step) <= last_lr * (1 + 1e-6):
        return fresh  # still warming up or in the constant phase: exactly the fresh N-epoch plan
    return Schedule(base_lr, total, warmup, anneal_start, resume_step, last_lr)


def describe(segments: list[dict]) -> str:
    """One line per training segment, for the model card."""
    out = []
    for s in segments:
        first, last = s["epochs"]
        if s.get("kind") == LEGACY_KIND or s.get("legacy"):
            out.append(f"epochs {first}-{last}: {LEGACY_KIND}")
            continue
        how = f"base lr {s['base_lr']:g}, anneal from epoch {s['anneal_from_epoch']:.1f} to {s['base_lr'] * MIN_FACTOR:g}"
        if s.get("resume_lr") is not None and not s.get("rewarm_steps"):
            how = (f"resumed inside its anneal: continued annealing from lr {s['resume_lr']:.3g} to "
                   f"{s['base_lr'] * MIN_FACTOR:g} (no restart)")
        elif s.get("rewarm_steps"):
            how = (f"deliberate rewarm (--rewarm) from lr {s['resume_lr']:.3g} to {s['base_lr']:g} over "
                   f"{s['rewarm_steps']} steps, then " + how)
        out.append(f"epochs {first}-{last}: {KIND}; {how}")
    return "; ".join(out)


@dataclass(frozen=True)
class Replay:
    """Another run's recorded schedule, step for step: an ablation arm trained on exactly the learning rates of
    the shipped run, including that run's resumes (segment k covers its first epoch up to segment k+1's first)."""
    segments: tuple[Schedule, ...]
    ends: tuple[int, ...]             # first step after each segment
    records: tuple[dict, ...]         # the replayed segment records, for the checkpoint and the model card

    @property
    def total_steps(self) -> int:
        return self.ends[-1]

    def lr(self, step: int) -> float:
        for sched, end in zip(self.segments, self.ends):
            if step < end:
                return sched.lr(step)
        return self.segments[-1].lr(step)


_SCHEDULE_FIELDS = ("base_lr", "total_steps", "warmup_steps", "anneal_start", "resume_step", "resume_lr",
                    "rewarm_steps")


def replay(segments: list[dict], steps_per_epoch: int) -> Replay:
    """The schedule of a run whose checkpoint recorded ``segments`` (harness: ``ckpt['schedule']['segments']``),
    replayed for a run with the same ``steps_per_epoch`` (same data and batch size). Raises ValueError for a
    schedule that cannot be replayed exactly (pre-issue-11 legacy segments, another batch or data size)."""
    if not segments:
        raise ValueError("no schedule segments recorded: nothing to replay")
    scheds, ends = [], []
    for k, seg in enumerate(segments):
        if seg.get("legacy") or seg.get("kind") == LEGACY_KIND:
            raise ValueError("a legacy (pre-issue-11) schedule segment cannot be replayed exactly")
        if seg.get("steps_per_epoch") != steps_per_epoch:
            raise ValueError(f"schedule recorded with {seg.get('steps_per_epoch')} steps per epoch, this run has "
                             f"{steps_per_epoch} (different data or batch size): it cannot be replayed")
        scheds.append(Schedule(**{f: seg[f] for f in _SCHEDULE_FIELDS}))
        last_epoch = segments[k + 1]["epochs"][0] - 1 if k + 1 < len(segments) else seg["epochs"][1]
        ends.append(last_epoch * steps_per_epoch)
    if any(b <= a for a, b in zip([0] + ends, ends)):
        raise ValueError(f"schedule segments overlap or are empty: {[s['epochs'] for s in segments]}")
    return Replay(tuple(scheds), tuple(ends), tuple(dict(s) for s in segments))
