"""Does pseudo-labeling pay? A seeded synthetic benchmark on this machine.

For each seed, the same generated data (labeled, unlabeled pool, held-out val):

  (a) baseline  labeled set only, trained from scratch
  (b) ssl_ray   the rounds driver, one row per variant:
                  naive      one round, fixed threshold 0.5
                  global     several rounds, the global threshold schedule
                  adaptive   several rounds, per-class thresholds from val precision
                  adaptive+consistency   the same, boxes kept only when a flipped view agrees
  (c) oracle    labeled set + the whole pool with its true labels

Fairness: every SSL variant starts from the same round-0 teacher (trained once on the
labeled set). (a) and (c) get at least as many optimizer steps as the largest SSL run (its
round 0 included) and stop early on the val set (Ultralytics' patience). Otherwise a "gain"
would only be extra training. Printed: held-out mAP50-95 of each, and the gap recovered,
(b - a) / (c - a).

    .venv/bin/python bench/ssl_gain.py --seeds 0 1 2            # the full protocol (hours on 2 cores)
    .venv/bin/python bench/ssl_gain.py --seeds 0 --pool 300 --variants naive global adaptive+consistency \
        --epochs-round0 150 --epochs 20 --rounds 2                   # about half an hour
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("YOLO_OFFLINE", "1")

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
VARIANTS = {
    "naive": ["rounds.max_rounds=1", "rounds.conf_schedule=[0.5]", "select.adaptive=global"],
    "global": ["select.adaptive=global"],
    "adaptive": ["select.adaptive=val_precision"],
    "adaptive+consistency": ["select.adaptive=val_precision", "label.consistency_views=[flip]",
                             "select.min_agreement=1.0"],
}


def steps(images: int, batch: int, epochs: int) -> int:
    return math.ceil(images / batch) * epochs


def run(cfg_overrides: list[str]):
    from ssl_ray.config import load_config
    from ssl_ray.driver import run_rounds

    return run_rounds(load_config(DEMO, cfg_overrides))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--labeled", type=int, default=40)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--epochs-round0", type=int, default=150, help="epochs of the labeled-only round 0 teacher")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per pseudo-label round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patience", type=int, default=30, help="early stopping of (a) and (c), epochs")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-gain-"))
    results: dict = {"args": vars(args), "seeds": {}}
    try:
        from ssl_ray.runtime import start_ray
        from ssl_ray.synth import SynthSpec, generate

        start_ray(num_cpus=8, log_to_driver=False)
        for seed in args.seeds:
            t0 = time.perf_counter()
            data = generate(work / f"data{seed}", SynthSpec(n_train=args.labeled, n_val=args.val, n_pool=args.pool,
                                                            imgsz=args.imgsz, clutter=2, seed=seed))
            common = [f"seed={seed}", f"model.imgsz={args.imgsz}", f"train.batch={args.batch}",
                      f"pool.sources=[{data.parent / 'images' / 'pool'}]",
                      "train.extra={amp: false, nbs: 16}"]  # one optimizer step per batch
            row: dict = {"ssl": {}, "steps": {}}
            # Round 0 once, shared: every SSL variant starts from the same labeled-only teacher
            # (rounds.round0=evaluate), trained for --epochs-round0.
            teacher = run([*common, f"labeled.data={data}", f"output.dir={work / f'{seed}-round0'}",
                           f"output.cache_dir={work / 'cache'}", f"train.epochs={args.epochs_round0}",
                           "rounds.max_rounds=0", f"train.patience={args.epochs_round0}"])
            weights = work / f"{seed}-round0" / "rounds" / "r000" / "weights" / "best.pt"
            row["round0"] = teacher.scores[0]
            round0_steps = steps(args.labeled, args.batch, args.epochs_round0)
            for variant in args.variants:
                state = run([*common, f"labeled.data={data}", f"output.dir={work / f'{seed}-{variant}'}",
                             f"output.cache_dir={work / 'cache'}", f"train.epochs={args.epochs}",
                             f"rounds.max_rounds={args.rounds}", f"train.patience={args.epochs}",
                             "rounds.patience=99", "rounds.round0=evaluate", f"model.weights={weights}",
                             *VARIANTS[variant]])
                row["ssl"][variant] = max(state.scores)
                row["steps"][variant] = round0_steps + sum(steps(r["train_images"], args.batch, args.epochs)
                                                           for r in state.rounds[1:])
                row.setdefault("rounds", {})[variant] = [
                    {"round": r["round"], "mAP50-95": r["held_out"]["mAP50-95"], "threshold": r["threshold"],
                     "class_thresholds": (r.get("label") or {}).get("class_thresholds"),
                     "pseudo": (r.get("label") or {}).get("pseudo"),
                     "pseudo_used": (r.get("label") or {}).get("pseudo_used")} for r in state.rounds]
            budget = max(row["steps"].values())
            for name, yaml_name, n in (("baseline", "data.yaml", args.labeled),
                                       ("oracle", "data_oracle.yaml", args.labeled + args.pool)):
                epochs = max(args.epochs, math.ceil(budget / math.ceil(n / args.batch)))
                state = run([*common, f"labeled.data={data.parent / yaml_name}", f"output.dir={work / f'{seed}-{name}'}",
                             f"output.cache_dir={work / 'cache'}", f"train.epochs={epochs}", "rounds.max_rounds=0",
                             f"train.patience={args.patience}"])
                row[name] = state.scores[0]
                row["steps"][name] = steps(n, args.batch, epochs)
            a, c = row["baseline"], row["oracle"]
            row["gap_recovered"] = {v: round((b - a) / (c - a), 3) if c > a else None for v, b in row["ssl"].items()}
            row["minutes"] = round((time.perf_counter() - t0) / 60, 1)
            results["seeds"][seed] = row
            print(json.dumps({seed: row}, indent=2), flush=True)
            if args.json:  # after every seed: a long run that is stopped keeps what it finished
                Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        summary = {}
        for variant in args.variants:
            gaps = [r["gap_recovered"][variant] for r in results["seeds"].values() if r["gap_recovered"][variant] is not None]
            summary[variant] = {"mean": round(statistics.mean(gaps), 3) if gaps else None,
                                "min": min(gaps, default=None), "max": max(gaps, default=None)}
        results["gap_recovered"] = summary
        print(json.dumps({"gap_recovered": summary}, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
