"""Re-score finished runs outside training: does each round's recorded held-out mAP50-95
match what its kept weights score in a standalone Ultralytics val on the same set?

The figures in docs/benchmarks.md are the `held_out` of each round's metrics.json, taken
from the trainer's own validation of the best epoch. This script loads every round's
weights/best.pt, validates it on --data's val split at the run's imgsz, and prints both
with the difference. A round folder without metrics.json did not finish (killed or still
training): whatever checkpoints Ray holds there are not the run's result, so it is listed
as not finished instead of scored.

    .venv/bin/python bench/rescore.py --data /tmp/gain/data2/data.yaml /tmp/gain/2-oracle-e128 \
        /tmp/gain/2-baseline_continued-e1334-p1334

Exits 1 when any round differs by more than --tolerance, or when none could be scored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from ssl_ray.config import StorageConfig
from ssl_ray.dataset import load_data_yaml
from ssl_ray.storage import Store


def absolute_data_yaml(data: Path, folder: Path) -> Path:
    """A copy of an Ultralytics data yaml whose `path` is absolute, resolved as ssl_ray reads
    `labeled.data` (a relative `path`, like the synthetic sets' `path: .`, is the yaml's own
    folder); Ultralytics would read it against the current directory instead."""
    spec = load_data_yaml(str(data.resolve()), lambda uri: Store(uri, StorageConfig()))
    out = folder / data.name
    out.write_text(yaml.safe_dump({**spec.meta, "path": spec.root.path()}))
    return out


def rounds_of(run: Path) -> list[dict]:
    """Each round folder of a run: its name, recorded mAP50-95 (None while the round has no
    metrics.json: not finished, whatever checkpoints Ray holds for it) and weights (None when
    the round kept none, e.g. a round 0 that only evaluated a given teacher)."""
    rows = []
    for folder in sorted(p for p in (run / "rounds").glob("r*") if p.is_dir()):
        metrics, weights = folder / "metrics.json", folder / "weights" / "best.pt"
        rows.append({"round": folder.name,
                     "recorded": json.loads(metrics.read_text())["held_out"]["mAP50-95"] if metrics.exists() else None,
                     "weights": weights if weights.exists() else None})
    return rows


def imgsz_of(run: Path) -> int:
    return int(yaml.safe_load((run / "config.yaml").read_text())["model"]["imgsz"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (output.dir of a driver run)")
    ap.add_argument("--data", type=Path, required=True, help="Ultralytics data yaml whose val split is the held-out set")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="Ultralytics device for the val, e.g. 0 for the first GPU")
    ap.add_argument("--tolerance", type=float, default=0.002)
    args = ap.parse_args()

    os.environ.setdefault("YOLO_VERBOSE", "False")  # the table only, not Ultralytics' progress bars
    from ultralytics import YOLO

    worst, scored = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        data = absolute_data_yaml(args.data, Path(tmp))
        print("| run | round | recorded mAP50-95 | standalone | difference |\n|---|---|---|---|---|")
        for run in args.runs:
            if not (run / "config.yaml").exists():
                print(f"| {run} | | not a run folder (no config.yaml), not scored | | |")
                continue
            imgsz = imgsz_of(run)
            for r in rounds_of(run) or [{"round": "", "recorded": None, "weights": None}]:
                if r["recorded"] is None:
                    print(f"| {run.name} | {r['round']} | not finished, not scored | | |")
                elif r["weights"] is None:
                    print(f"| {run.name} | {r['round']} | {r['recorded']:.4f} | no weights kept | |")
                else:
                    box = YOLO(str(r["weights"])).val(data=str(data), imgsz=imgsz, batch=args.batch,
                                                      device=args.device, split="val", plots=False, verbose=False).box
                    diff = box.map - r["recorded"]
                    worst, scored = max(worst, abs(diff)), scored + 1
                    print(f"| {run.name} | {r['round']} | {r['recorded']:.4f} | {box.map:.4f} | {diff:+.4f} |", flush=True)
    if not scored:
        print("no finished round with weights: nothing scored")
        return 1
    print(f"{scored} rounds scored; largest difference {worst:.4f} (tolerance {args.tolerance})")
    return int(worst > args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
