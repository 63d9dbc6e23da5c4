"""The label stage's speed against its inference batch (`label.batch_size`) on this machine.

One pool of --n images, the stage run at each batch size in turn on a fresh local cluster,
the order reversed every other repetition so that each size sees the machine's drift alike.
Per run: end-to-end and steady-state images/s (as `bench/label_throughput.py` defines them).

    .venv/bin/python bench/stage_batch.py --n 4000 --batches 16 32 64 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import label_throughput as lt  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    stage_args = lt.cpu_stage_args(args.imgsz)
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-stage-batch-"))
    try:
        weights = lt.untrained_teacher(work)
        pool = lt.make_pool(work / "pool", args.n, args.imgsz)
        runs = []
        for rep in range(args.repeat):
            for bs in args.batches if rep % 2 == 0 else reversed(args.batches):
                _, rate, _, summary = lt.bench_stage(weights, pool, stage_args, bs, work, f"r{rep}-b{bs}")
                runs.append({"rep": rep, "batch": bs, "end_to_end_img_s": round(rate, 1),
                             "steady_img_s": round(summary["inference_items_per_s"], 1)})
                print(json.dumps(runs[-1]), flush=True)
        figures = {"n": args.n, "imgsz": args.imgsz, "runs": runs,
                   "median_steady_img_s": {bs: statistics.median(r["steady_img_s"] for r in runs if r["batch"] == bs)
                                           for bs in args.batches},
                   "median_end_to_end_img_s": {bs: statistics.median(r["end_to_end_img_s"] for r in runs
                                                                     if r["batch"] == bs) for bs in args.batches}}
        lt.emit(figures, args.json, hide=("runs",))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
