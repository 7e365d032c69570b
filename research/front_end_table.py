"""The front end's cost per method: protocol against e2e NME, the gap, misses and CPU ms, as a Markdown table.

    python -m research.front_end_table [--before REV]   # docs/results/NAME_protocol.json and NAME_e2e.json

Both files are what `python main.py eval --method NAME --data DIR [--mode e2e] --json` prints. ``--before REV``
adds the e2e balanced NME of the NAME_e2e.json committed at git revision REV (an earlier front end). "crops
aligned": the crop ensemble's size the e2e run used (1 for a file from before the ensemble).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "docs" / "results"


def committed(rev: str, path: Path) -> dict | None:
    rel = path.relative_to(ROOT.parents[1]).as_posix()
    p = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=None, help="git revision whose NAME_e2e.json is the 'before' column")
    args = ap.parse_args()
    before_head = f" e2e at {args.before} |" if args.before else ""
    print(f"| method | protocol |{before_head} e2e | gap | e2e detected only | misses 0-30 / 30-60 / 60-90 |"
          " method found no face |"
          " duplicates / elsewhere | crops aligned | CPU ms per image: detect / re-crop / network |")
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.before else ""))
    for e2e_file in sorted(ROOT.glob("*_e2e.json")):
        name = e2e_file.name[:-len("_e2e.json")]
        prot_file = ROOT / f"{name}_protocol.json"
        if not prot_file.exists():
            continue
        p, e = json.loads(prot_file.read_text()), json.loads(e2e_file.read_text())
        if "misses_by_bucket" not in e:  # an e2e file from before the front end's accounting
            continue
        pb, eb = p["nme"]["balanced"], e["nme"]["balanced"]
        m, ms = e["misses_by_bucket"], e["cpu_ms_per_image"]
        dup, other = sum(e["duplicates_by_bucket"].values()), sum(e["elsewhere_by_bucket"].values())
        old = committed(args.before, e2e_file) if args.before else None
        before = (f" {old['nme']['balanced']:.2f} |" if old else " - |") if args.before else ""
        print(f"| {name} | {pb:.2f} |{before} {eb:.2f} | {eb - pb:+.2f} | {e['nme_detected']['balanced']:.2f} | "
              f"{m['0-30']} / {m['30-60']} / {m['60-90']} | {e['method_failures']} | {dup} / {other} | "
              f"{e.get('crop_ensemble', 1)} | "
              f"{ms['detect']:.1f} / {ms['settle_crop']:.1f} / {ms['network']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
