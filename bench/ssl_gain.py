"""Does pseudo-labeling pay? A seeded synthetic benchmark on this machine.

For each seed, the same generated data (labeled, unlabeled pool, held-out val):

  (a) baseline  labeled set only: from scratch (up to --max-epochs, early stopping on the
                val set), then the same model trained further on the labeled set alone for
                all the steps the largest SSL run spent after round 0 (no early stopping: the
                LR restart's dip outlasts the patience); the better of the two
  (b) ssl_ray   the rounds driver, warm-started from (a)'s from-scratch weights, one row per
                variant:
                  naive      one round, fixed threshold 0.5, every confident box kept
                  global     several rounds, the global threshold schedule
                  adaptive   several rounds, per-class thresholds from val precision
                  adaptive+consistency   the same, boxes kept only when a flipped view agrees
                  adaptive+consistency+oversample   the same, the labeled images
                             oversampled to ~40 % of every epoch (train.labeled_fraction)
                  global+review   (not by default) global, and images with unkept boxes
                             above the low threshold go to review instead of training
  (c) oracle    labeled set + the whole pool with its true labels, from scratch, up to
                --max-epochs with early stopping on the val set (to convergence)

Fairness: (a) gets at least as many optimizer steps as the largest SSL run, round 0
included, so a "gain" is not extra training; (c) trains until early stopping ends it, and
its steps over the SSL run's are reported. Each labeled-only run's epochs, best epoch and
whether early stopping ended it are reported. Printed: held-out mAP50-95 of each, the gap
recovered (b - a) / (c - a), the same in mAP50, and per round the quality of the
pseudo-labels trained on, against the pool's true labels (box precision and recall, IoU 0.5).

Runs that do not wait on each other (the oracle, the variants, other seeds) run side by
side, --jobs at a time, each in its own process and local Ray cluster: a training run here
uses one core, so --jobs 2 keeps both cores busy. Each run's log is in <work>/logs/.

    .venv/bin/python bench/ssl_gain.py --work /tmp/gain   # one seed, every variant
    .venv/bin/python bench/ssl_gain.py --seeds 0 1 --variants adaptive+consistency --work /tmp/gain

With --work, a re-run reuses every finished run (the driver resumes), so another variant
or seed costs only its own runs. Run times are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("YOLO_OFFLINE", "1")

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
VARIANTS = {
    "naive": ["rounds.max_rounds=1", "rounds.conf_schedule=[0.5]", "select.adaptive=global"],
    "global": ["select.adaptive=global"],
    "adaptive": ["select.adaptive=val_precision"],
    "adaptive+consistency": [
        "select.adaptive=val_precision",
        "label.consistency_views=[flip]",
        "select.min_agreement=1.0",
    ],
}
# the labeled images, the only exact boxes, as ~40 % of every epoch (docs/benchmarks.md)
VARIANTS["adaptive+consistency+oversample"] = [*VARIANTS["adaptive+consistency"], "train.labeled_fraction=0.4"]
DEFAULT_VARIANTS = ["naive", "global", "adaptive", "adaptive+consistency", "adaptive+consistency+oversample"]
SLOTS = threading.Semaphore(2)  # runs in flight at once: --jobs
RAY_DID_NOT_START = 75  # --one's exit status when its local Ray cluster timed out starting: run again


def steps(images: int, batch: int, epochs: int) -> int:
    return math.ceil(images / batch) * epochs


def execute(overrides: list[str], log: Path) -> list[dict]:
    """One run of the rounds driver in its own process (its own local Ray cluster), at most
    --jobs at a time; the metrics.json of each round it ran. A finished run is read back."""
    out = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("output.dir=")))
    with SLOTS:
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] start  {out.name}", flush=True)
        for attempt in range(1, 4):  # a loaded machine can start Ray too slowly for Ray's own 30 s wait
            with log.open("a") as f:
                code = subprocess.run(
                    [sys.executable, __file__, "--one", json.dumps(overrides)], stdout=f, stderr=subprocess.STDOUT
                ).returncode
            if code != RAY_DID_NOT_START or attempt == 3:
                break
            print(f"[{time.strftime('%H:%M:%S')}] retry  {out.name}: Ray did not start in time", flush=True)
            time.sleep(15 * attempt)
        if code:
            raise RuntimeError(f"{out.name} failed (exit {code}); its log: {log}")
        print(
            f"[{time.strftime('%H:%M:%S')}] done   {out.name} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True
        )
    return [json.loads(m.read_text()) for m in sorted((out / "rounds").glob("r*/metrics.json"))]


def run_one(overrides: list[str]) -> int:
    """--one: the child side of `execute`."""
    from ssl_ray.adapters.runtime import start_ray
    from ssl_ray.config import load_config
    from ssl_ray.driver import run_rounds

    try:
        start_ray(num_cpus=8, log_to_driver=False)
    except Exception as e:  # Ray raises a bare Exception when its raylet registers late
        if "timed out during startup" not in str(e):
            raise
        print(f"Ray did not start: {e}", flush=True)
        return RAY_DID_NOT_START
    run_rounds(load_config(DEMO, overrides))
    return 0


def pool_truth(data: Path) -> dict[str, list[dict]]:
    """image_id -> true boxes of every pool image (its YOLO label file)."""
    from ssl_ray.core.schema import box, image_id_of_bytes

    truth = {}
    for image in sorted((data.parent / "images" / "pool").iterdir()):
        lines = (data.parent / "labels" / "pool" / f"{image.stem}.txt").read_text().split()
        values = [float(v) for v in lines]
        truth[image_id_of_bytes(image.read_bytes())] = [
            box(int(values[i]), *values[i + 1 : i + 5]) for i in range(0, len(values), 5)
        ]
    return truth


def pseudo_quality(merged: Path, truth: dict[str, list[dict]], n_classes: int) -> dict:
    """Box precision and recall (IoU 0.5, same class) of the pool rows a round trained on."""
    import pyarrow.parquet as pq

    from ssl_ray.core.thresholds import match_detections

    table = pq.read_table(merged)
    rows = [
        r for r in table.select(["image_id", "source", "boxes"]).to_pylist() if r["source"] in ("pseudo", "negative")
    ]
    scored, n_truth = match_detections(
        {r["image_id"]: r["boxes"] for r in rows}, {r["image_id"]: truth[r["image_id"]] for r in rows}, n_classes
    )
    tp = sum(ok for per_class in scored for _, ok in per_class)
    boxes = sum(len(per_class) for per_class in scored)
    return {
        "images": len(rows),
        "boxes": boxes,
        "precision": round(tp / boxes, 3) if boxes else None,
        "recall": round(tp / sum(n_truth), 3) if sum(n_truth) else None,
    }


def converged(held_out: dict, max_epochs: int) -> dict:
    """How far a labeled-only run went: epochs run, its best epoch, and whether early stopping
    (not the cap) ended it."""
    return {
        "epochs_run": held_out["epoch"],
        "best_epoch": held_out["best_epoch"],
        "stopped_early": held_out["epoch"] < max_epochs,
    }


def one_seed(args, seed: int, work: Path, threads: ThreadPoolExecutor) -> dict:
    """Every run of one seed; runs that do not wait on each other run side by side."""
    from ssl_ray.synth import SynthSpec, generate

    data = generate(
        work / f"data{seed}",
        SynthSpec(n_train=args.labeled, n_val=args.val, n_pool=args.pool, imgsz=args.imgsz, clutter=2, seed=seed),
    )
    truth, n_classes = pool_truth(data), len(yaml.safe_load(data.read_text())["names"])
    common = [
        f"seed={seed}",
        f"model.imgsz={args.imgsz}",
        f"train.batch={args.batch}",
        f"pool.sources=[{data.parent / 'images' / 'pool'}]",
        f"output.cache_dir={work / 'cache'}",
        "train.extra={amp: false, nbs: 16}",
    ]  # one optimizer step per batch
    row: dict = {"ssl": {}, "steps": {}, "rounds": {}, "training": {}, "mAP50": {}}

    def labeled_only(
        name: str, yaml_name: str, images: int, max_epochs: int, *extra: str, patience: int | None = None
    ) -> float:
        """Round 0 alone: train on one labeled set up to max_epochs, early stopping on val
        after `patience` epochs without improvement (default --patience)."""
        patience = patience or args.patience
        # runs with other settings do not collide in one --work
        out = work / f"{seed}-{name}-e{max_epochs}{f'-p{patience}' if patience != args.patience else ''}"
        (r0,) = execute(
            [
                *common,
                f"labeled.data={data.parent / yaml_name}",
                f"output.dir={out}",
                f"train.epochs={max_epochs}",
                "rounds.max_rounds=0",
                f"train.patience={patience}",
                *extra,
            ],
            work / "logs" / f"{out.name}.log",
        )
        row["training"][name] = converged(r0["held_out"], max_epochs)
        row["steps"][name] = steps(images, args.batch, r0["held_out"]["epoch"])
        row["mAP50"][name] = r0["held_out"]["mAP50"]
        return r0["held_out"]["mAP50-95"]

    def ssl(variant: str) -> None:
        tag = f"-{hashlib.blake2b(' '.join(args.set).encode(), digest_size=4).hexdigest()}" if args.set else ""
        out = work / f"{seed}-{variant}-r{args.rounds}e{args.epochs}{tag}"
        rounds = execute(
            [
                *common,
                f"labeled.data={data}",
                f"output.dir={out}",
                f"train.epochs={args.epochs}",
                f"rounds.max_rounds={args.rounds}",
                f"train.patience={args.epochs}",
                "rounds.patience=99",
                "rounds.round0=evaluate",
                f"model.weights={teacher}",
                *VARIANTS[variant],
                *args.set,
            ],
            work / "logs" / f"{out.name}.log",
        )
        best = max(rounds, key=lambda r: r["held_out"]["mAP50-95"])
        row["ssl"][variant], row["mAP50"][variant] = best["held_out"]["mAP50-95"], best["held_out"]["mAP50"]
        # An epoch is the merged set plus the extra copies of the labeled images (train.labeled_fraction)
        row["steps"][variant] = row["steps"]["baseline"] + sum(
            steps(r["train_images"] + args.labeled * (r.get("labeled_copies", 1) - 1), args.batch, args.epochs)
            for r in rounds[1:]
        )
        row["rounds"][variant] = [
            {
                "round": r["round"],
                "mAP50-95": round(r["held_out"]["mAP50-95"], 4),
                "threshold": r["threshold"],
                "class_thresholds": (r.get("label") or {}).get("class_thresholds"),
                "pseudo": (r.get("label") or {}).get("pseudo"),
                "pseudo_used": (r.get("label") or {}).get("pseudo_used"),
                "trained_on": pseudo_quality(out / "rounds" / f"r{r['round']:03d}" / "merged.parquet", truth, n_classes)
                if r["round"]
                else None,
            }
            for r in rounds
        ]

    # (a) from scratch; its best weights are every SSL variant's round-0 teacher. (c) from
    # scratch to early stopping waits on nothing: it runs beside (a), asked for second.
    baseline = threads.submit(labeled_only, "baseline", "data.yaml", args.labeled, args.max_epochs)
    time.sleep(1)
    # Ultralytics' optimizer 'auto' is AdamW at lr0 0.002 * 5 / (4 + classes) up to 10,000
    # iterations (every other run here) and MuSGD past them (the oracle, with a large cap): the
    # oracle is then given that AdamW explicitly, so every run trains with the same optimizer.
    oracle_images, oracle_epochs = args.labeled + args.pool, args.oracle_max_epochs or args.max_epochs
    adamw = [
        "train.extra.optimizer=AdamW",
        f"train.extra.lr0={round(0.002 * 5 / (4 + n_classes), 6)}",
        "train.extra.momentum=0.9",
        "train.extra.warmup_bias_lr=0.0",
    ]
    oracle = threads.submit(
        labeled_only,
        "oracle",
        "data_oracle.yaml",
        oracle_images,
        oracle_epochs,
        *adamw * (steps(oracle_images, args.batch, oracle_epochs) > 10_000),
    )
    scratch = baseline.result()
    teacher = work / f"{seed}-baseline-e{args.max_epochs}" / "rounds" / "r000" / "weights" / "best.pt"

    # (a) continued: the same teacher trained on the labeled set alone for all the steps the
    # largest SSL run spent after round 0, its best epoch kept. No early stopping: restarting
    # the LR schedule first drops it for more than --patience epochs, and patience would end it
    # there. The baseline is the better of the two, so it has had at least the SSL run's
    # steps: a gain is not extra training. With --control-epochs it runs beside the SSL runs
    # (a budget fixed up front, checked below against what they spent).
    def control(epochs):
        return labeled_only(
            "baseline_continued",
            "data.yaml",
            args.labeled,  # noqa: E731
            epochs,
            f"model.weights={teacher}",
            patience=epochs,
        )

    early = threads.submit(control, args.control_epochs) if args.control_epochs else None
    for done in [threads.submit(ssl, v) for v in args.variants]:
        done.result()
    ssl_budget = max(row["steps"][v] for v in args.variants)
    batches = math.ceil(args.labeled / args.batch)
    extra_epochs = math.ceil((ssl_budget - row["steps"]["baseline"]) / batches)
    if early and args.control_epochs < extra_epochs:
        raise SystemExit(
            f"--control-epochs {args.control_epochs} is short of the SSL runs' {extra_epochs} epochs "
            f"of labeled-set steps: the comparison would not be fair"
        )
    continued = early.result() if early else control(extra_epochs)
    row["baseline_scratch"], row["baseline_continued"] = scratch, continued
    row["baseline"] = max(scratch, continued)
    row["oracle"] = oracle.result()
    if not row["training"]["oracle"]["stopped_early"]:
        print(
            f"seed {seed}: the oracle hit its cap ({oracle_epochs} epochs) before early stopping: (c) is a "
            f"lower bound, so the gap recovered is an upper bound",
            flush=True,
        )
    # The oracle trains until early stopping (or --max-epochs): when it stops with fewer steps
    # than the SSL run, it had converged; both facts are in the row.
    row["oracle_steps_over_ssl"] = round(row["steps"]["oracle"] / ssl_budget, 2)
    a, c = row["baseline"], row["oracle"]
    row["gap_recovered"] = {v: round((b - a) / (c - a), 3) if c > a else None for v, b in row["ssl"].items()}
    # The same gap in mAP50 (each run's figure at its best mAP50-95): what the pseudo-labels
    # find, without how tightly they box it.
    m = row["mAP50"]
    a50, c50 = m["baseline_continued" if continued >= scratch else "baseline"], m["oracle"]
    row["gap_recovered_mAP50"] = {v: round((m[v] - a50) / (c50 - a50), 3) if c50 > a50 else None for v in row["ssl"]}
    return row


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--labeled", type=int, default=40)
    ap.add_argument("--pool", type=int, default=600)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--max-epochs", type=int, default=600, help="cap of the from-scratch runs, (a) and (c)")
    ap.add_argument(
        "--oracle-max-epochs",
        type=int,
        help="cap of (c) alone (default --max-epochs); a smaller one makes (c) a lower bound, and says so",
    )
    ap.add_argument("--patience", type=int, default=50, help="early stopping of (a) and (c), epochs")
    ap.add_argument("--epochs", type=int, default=20, help="epochs per pseudo-label round")
    ap.add_argument(
        "--control-epochs",
        type=int,
        help="run the control (baseline continued) for this many epochs beside the SSL runs, instead "
        "of after them for exactly their budget; refused if short of that budget",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every SSL variant, e.g. 'train.finetune_extra={lr0: 0.0005}' "
        "(its runs are kept apart by a hash of them)",
    )
    ap.add_argument("--json")
    ap.add_argument(
        "--work",
        help="keep every run here (default: a temporary directory, removed); a re-run "
        "with the same arguments resumes: finished runs are not trained again",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs side by side, each in its own process and Ray cluster (a training run uses one core)",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config (a list of overrides), JSON
    args = ap.parse_args()
    if args.one:
        return run_one(json.loads(args.one))
    global SLOTS
    SLOTS = threading.Semaphore(args.jobs)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ssl_ray-gain-"))
    from bench.common import environment

    results: dict = {"args": vars(args), "environment": environment(), "seeds": {}}
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=64) as threads:  # waiting only: the work is in child processes
            rows = {seed: threads.submit(one_seed, args, seed, work, threads) for seed in args.seeds}
            for seed, row in rows.items():
                results["seeds"][seed] = row.result()
                print(json.dumps({seed: results["seeds"][seed]}, indent=2), flush=True)
                if args.json:  # after every seed: a long run that is stopped keeps what it finished
                    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        results["minutes"] = round((time.perf_counter() - t0) / 60, 1)
        summary = {}
        for variant in args.variants:
            gaps = [
                r["gap_recovered"][variant]
                for r in results["seeds"].values()
                if r["gap_recovered"][variant] is not None
            ]
            summary[variant] = {
                "mean": round(statistics.mean(gaps), 3) if gaps else None,
                "min": min(gaps, default=None),
                "max": max(gaps, default=None),
            }
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
