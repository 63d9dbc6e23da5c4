"""Re-score finished runs outside training: does each round's recorded held-out mAP50-95
match what its kept weights score in a standalone Ultralytics val on the same set?

The figures in docs/benchmarks.md are the `held_out` of each round's metrics.json, taken
from the trainer's own validation of the best epoch. This script loads every round's
weights/best.pt, validates it on --data's val split at the run's imgsz, and prints both
with the difference. A folder with Ray checkpoints but no metrics.json is a run that did
not finish (killed or still training): its checkpoints are not the run's result, and it is
listed as such instead of scored.

    .venv/bin/python bench/rescore.py --data /tmp/gain/data2/data.yaml /tmp/gain/2-oracle-e128 \
        /tmp/gain/2-baseline_continued-e1334-p1334

Exits 1 when any round differs by more than --tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml


def absolute_data_yaml(data: Path, folder: Path) -> Path:
    """A copy of an Ultralytics data yaml whose `path` is absolute. A relative `path` (the
    synthetic sets write `path: .`) means the yaml's own folder; Ultralytics would read it
    against the current directory instead."""
    spec = yaml.safe_load(data.read_text())
    root = Path(spec.get("path") or ".")
    spec["path"] = str(root if root.is_absolute() else (data.parent / root).resolve())
    out = folder / data.name
    out.write_text(yaml.safe_dump(spec))
    return out


def rounds_of(run: Path) -> list[dict]:
    """Each round of a run folder: its number, recorded mAP50-95 and weights (None when the
    round kept none, e.g. a round 0 that only evaluated a given teacher)."""
    rows = []
    for m in sorted((run / "rounds").glob("r*/metrics.json")):
        weights = m.parent / "weights" / "best.pt"
        rows.append({"round": m.parent.name, "recorded": json.loads(m.read_text())["held_out"]["mAP50-95"],
                     "weights": weights if weights.exists() else None})
    return rows


def imgsz_of(run: Path) -> int:
    return int(yaml.safe_load((run / "config.yaml").read_text())["model"]["imgsz"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (output.dir of a driver run)")
    ap.add_argument("--data", type=Path, required=True, help="Ultralytics data yaml whose val split is the held-out set")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tolerance", type=float, default=0.002)
    args = ap.parse_args()

    os.environ.setdefault("YOLO_VERBOSE", "False")  # the table only, not Ultralytics' progress bars
    from ultralytics import YOLO

    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        data = absolute_data_yaml(args.data, Path(tmp))
        print("| run | round | recorded mAP50-95 | standalone | difference |\n|---|---|---|---|---|")
        for run in args.runs:
            rows = rounds_of(run)
            if not rows:
                ray = list(run.glob("rounds/*/ray"))
                print(f"| {run.name} | | not finished: {'Ray checkpoints only' if ray else 'nothing'}, not scored | | |")
                continue
            for r in rows:
                if r["weights"] is None:
                    print(f"| {run.name} | {r['round']} | {r['recorded']:.4f} | no weights kept | |")
                    continue
                box = YOLO(str(r["weights"])).val(data=str(data), imgsz=imgsz_of(run), batch=args.batch, device="cpu",
                                                  split="val", plots=False, verbose=False).box
                diff = box.map - r["recorded"]
                worst = max(worst, abs(diff))
                print(f"| {run.name} | {r['round']} | {r['recorded']:.4f} | {box.map:.4f} | {diff:+.4f} |", flush=True)
    print(f"largest difference {worst:.4f} (tolerance {args.tolerance})")
    return int(worst > args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
