"""The front end's cost per method: protocol against e2e NME, the gap, misses and CPU ms, as a Markdown table.

    python scripts/front_end_table.py     # reads docs/results/NAME_protocol.json and NAME_e2e.json

Both files are what `python main.py eval --method NAME --data DIR [--mode e2e] --json` prints.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "docs" / "results"


def main() -> int:
    print("| method | protocol | e2e | gap | e2e detected only | misses 0-30 / 30-60 / 60-90 | method found no face |"
          " duplicates / elsewhere | CPU ms per image: detect / re-crop / network |")
    print("|---|---|---|---|---|---|---|---|---|")
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
        print(f"| {name} | {pb:.2f} | {eb:.2f} | {eb - pb:+.2f} | {e['nme_detected']['balanced']:.2f} | "
              f"{m['0-30']} / {m['30-60']} / {m['60-90']} | {e['method_failures']} | {dup} / {other} | "
              f"{ms['detect']:.1f} / {ms['settle_crop']:.1f} / {ms['network']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
