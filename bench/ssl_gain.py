"""Does pseudo-labeling pay? A seeded synthetic benchmark on this machine.

For each seed, the same generated data (labeled, unlabeled pool, held-out val):

  (a) baseline  labeled set only: from scratch (up to --max-epochs, early stopping on the
                val set), then the same model trained further on the labeled set alone for as
                many steps as the largest SSL run spent after round 0; the better of the two
  (b) ssl_ray   the rounds driver, warm-started from (a)'s from-scratch weights, one row per
                variant:
                  naive      one round, fixed threshold 0.5, every confident box kept
                  global     several rounds, the global threshold schedule
                  adaptive   several rounds, per-class thresholds from val precision
                  adaptive+consistency   the same, boxes kept only when a flipped view agrees
                  global+review   (not by default) global, and images with unkept boxes
                             above the low threshold go to review instead of training
  (c) oracle    labeled set + the whole pool with its true labels, from scratch, with at least
                the largest SSL run's optimizer steps, early stopping on the val set

Fairness: (a) and (c) get at least as many optimizer steps as the largest SSL run, round 0
included, so a "gain" is not extra training; each run's epochs, best epoch and whether early
stopping ended it are reported. Printed: held-out mAP50-95 of each, the gap recovered
(b - a) / (c - a), and per round the quality of the pseudo-labels trained on, against the
pool's true labels (box precision and recall, IoU 0.5).

    .venv/bin/python bench/ssl_gain.py --work /tmp/gain   # one seed: ~90 min on 2 cores
    .venv/bin/python bench/ssl_gain.py --seeds 0 1 2      # the spread over seeds

On 2 cores, seed 0 took 23 min for (a), 36 for the four variants and 25 for (c) and the
control. With --work, a re-run reuses every finished run (the driver resumes), so another
variant or seed costs only its own runs.
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
    "global+review": ["select.adaptive=global", "select.ambiguous_images=review"],
}
DEFAULT_VARIANTS = ["naive", "global", "adaptive", "adaptive+consistency"]


def steps(images: int, batch: int, epochs: int) -> int:
    return math.ceil(images / batch) * epochs


def run(cfg_overrides: list[str]):
    from ssl_ray.config import load_config
    from ssl_ray.driver import run_rounds

    return run_rounds(load_config(DEMO, cfg_overrides))


def pool_truth(data: Path) -> dict[str, list[dict]]:
    """image_id -> true boxes of every pool image (its YOLO label file)."""
    from ssl_ray.schema import box, image_id_of_bytes

    truth = {}
    for image in sorted((data.parent / "images" / "pool").iterdir()):
        lines = (data.parent / "labels" / "pool" / f"{image.stem}.txt").read_text().split()
        values = [float(v) for v in lines]
        truth[image_id_of_bytes(image.read_bytes())] = [box(int(values[i]), *values[i + 1:i + 5])
                                                        for i in range(0, len(values), 5)]
    return truth


def pseudo_quality(merged: Path, truth: dict[str, list[dict]], n_classes: int) -> dict:
    """Box precision and recall (IoU 0.5, same class) of the pool rows a round trained on."""
    import pyarrow.parquet as pq

    from ssl_ray.thresholds import match_detections

    rows = [r for r in pq.read_table(merged, columns=["image_id", "source", "boxes"]).to_pylist()
            if r["source"] in ("pseudo", "negative")]
    scored, n_truth = match_detections({r["image_id"]: r["boxes"] for r in rows},
                                       {r["image_id"]: truth[r["image_id"]] for r in rows}, n_classes)
    tp = sum(ok for per_class in scored for _, ok in per_class)
    boxes = sum(len(per_class) for per_class in scored)
    return {"images": len(rows), "boxes": boxes, "precision": round(tp / boxes, 3) if boxes else None,
            "recall": round(tp / sum(n_truth), 3) if sum(n_truth) else None}


def converged(held_out: dict, max_epochs: int) -> dict:
    """How far a labeled-only run went: epochs run, its best epoch, and whether early stopping
    (not the cap) ended it."""
    return {"epochs_run": held_out["epoch"], "best_epoch": held_out["best_epoch"],
            "stopped_early": held_out["epoch"] < max_epochs}


def one_seed(args, seed: int, work: Path) -> dict:
    from ssl_ray.synth import SynthSpec, generate

    data = generate(work / f"data{seed}", SynthSpec(n_train=args.labeled, n_val=args.val, n_pool=args.pool,
                                                    imgsz=args.imgsz, clutter=2, seed=seed))
    truth = pool_truth(data)
    common = [f"seed={seed}", f"model.imgsz={args.imgsz}", f"train.batch={args.batch}",
              f"pool.sources=[{data.parent / 'images' / 'pool'}]", f"output.cache_dir={work / 'cache'}",
              "train.extra={amp: false, nbs: 16}"]  # one optimizer step per batch
    row: dict = {"ssl": {}, "steps": {}, "rounds": {}, "training": {}}

    def labeled_only(name: str, yaml_name: str, images: int, max_epochs: int, *extra: str) -> float:
        """Round 0 alone: train on one labeled set up to max_epochs, early stopping on val."""
        out = work / f"{seed}-{name}-e{max_epochs}"  # runs with other settings do not collide in one --work
        state = run([*common, f"labeled.data={data.parent / yaml_name}", f"output.dir={out}",
                     f"train.epochs={max_epochs}", "rounds.max_rounds=0", f"train.patience={args.patience}", *extra])
        held_out = state.rounds[0]["held_out"]
        row["training"][name] = converged(held_out, max_epochs)
        row["steps"][name] = steps(images, args.batch, held_out["epoch"])
        return state.scores[0]

    # (a) from scratch; its best weights are every SSL variant's round-0 teacher.
    scratch = labeled_only("baseline", "data.yaml", args.labeled, args.max_epochs)
    teacher = work / f"{seed}-baseline-e{args.max_epochs}" / "rounds" / "r000" / "weights" / "best.pt"
    for variant in args.variants:
        out = work / f"{seed}-{variant}-r{args.rounds}e{args.epochs}"
        state = run([*common, f"labeled.data={data}", f"output.dir={out}", f"train.epochs={args.epochs}",
                     f"rounds.max_rounds={args.rounds}", f"train.patience={args.epochs}", "rounds.patience=99",
                     "rounds.round0=evaluate", f"model.weights={teacher}", *VARIANTS[variant]])
        row["ssl"][variant] = max(state.scores)
        row["steps"][variant] = row["steps"]["baseline"] + sum(
            steps(r["train_images"], args.batch, args.epochs) for r in state.rounds[1:])
        row["rounds"][variant] = [
            {"round": r["round"], "mAP50-95": round(r["held_out"]["mAP50-95"], 4), "threshold": r["threshold"],
             "class_thresholds": (r.get("label") or {}).get("class_thresholds"),
             "pseudo": (r.get("label") or {}).get("pseudo"), "pseudo_used": (r.get("label") or {}).get("pseudo_used"),
             "trained_on": pseudo_quality(out / "rounds" / f"r{r['round']:03d}" / "merged.parquet", truth,
                                          len(state.names)) if r["round"] else None}
            for r in state.rounds]
    ssl_budget = max(row["steps"][v] for v in args.variants)
    # (a) continued: the same teacher trained on the labeled set alone for as many more steps
    # as the largest SSL run spent after round 0 (early stopping on). The baseline is the
    # better of the two, so it has had at least the SSL run's steps: a gain is not extra training.
    batches = math.ceil(args.labeled / args.batch)
    continued = labeled_only("baseline_continued", "data.yaml", args.labeled,
                             math.ceil((ssl_budget - row["steps"]["baseline"]) / batches), f"model.weights={teacher}")
    row["baseline_scratch"], row["baseline_continued"] = scratch, continued
    row["baseline"] = max(scratch, continued)
    # (c) from scratch with at least the largest SSL run's steps, early stopping on.
    oracle_images = args.labeled + args.pool
    oracle_epochs = max(args.epochs, math.ceil(ssl_budget / math.ceil(oracle_images / args.batch)))
    row["oracle"] = labeled_only("oracle", "data_oracle.yaml", oracle_images, oracle_epochs)
    a, c = row["baseline"], row["oracle"]
    row["gap_recovered"] = {v: round((b - a) / (c - a), 3) if c > a else None for v, b in row["ssl"].items()}
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--labeled", type=int, default=40)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--max-epochs", type=int, default=600, help="cap of the from-scratch baseline (a)")
    ap.add_argument("--patience", type=int, default=50, help="early stopping of (a) and (c), epochs")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per pseudo-label round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json")
    ap.add_argument("--work", help="keep every run here (default: a temporary directory, removed); a re-run "
                                   "with the same arguments resumes: finished runs are not trained again")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ssl_ray-gain-"))
    results: dict = {"args": vars(args), "seeds": {}}
    try:
        from ssl_ray.runtime import start_ray

        start_ray(num_cpus=8, log_to_driver=False)
        for seed in args.seeds:
            t0 = time.perf_counter()
            row = one_seed(args, seed, work)
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
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
