"""Which part of the pseudo-labels holds the SSL rounds back? Diagnostics for one seed of
`bench/ssl_gain.py`, in its --work folder (its data and its round-0 teacher are reused).

  snap   the SSL variant's rounds, every kept pseudo-box snapped to the true box it covers
         (same class, IoU >= 0.5): the same selection and the same misses, tight boxes
  full   the same rounds, every selected image given exactly its true boxes (a selected
         negative too): tight and complete, only the selection of images left
  exact  the round-0 teacher trained on the labeled set plus the whole pool's true labels,
         one schedule, for the SSL run's optimizer steps after round 0 (--exact-epochs)

Each is scored like the benchmark's runs (held-out mAP50-95 per round). Set side by side
with ssl_gain.py's baseline, SSL run and oracle, they split the gap: boxes, completeness,
and what is left to the budget and the warm start.

    .venv/bin/python bench/ssl_ceiling.py --work /tmp/gain --seed 0 --modes snap full exact --exact-epochs 94

The truth enters only through the merge step of each round (`ssl_ray.driver._merge`,
replaced in the child process): labeling, selection and training run as in the product.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from provenance import environment  # noqa: E402
from ssl_gain import DEMO, VARIANTS, pool_truth, pseudo_quality  # noqa: E402


def merge_with_truth(mode: str, truth_file: str):
    """A replacement for the driver's merge step: the round's selection, its boxes replaced
    from the truth as `mode` says, then merged as usual."""

    def impl(out, stage):
        import numpy as np

        from ssl_ray import driver, rounds
        from ssl_ray.consistency import iou
        from ssl_ray.thresholds import xyxy

        truth = json.loads(Path(truth_file).read_text())

        def fix(row):
            if row["source"] not in ("pseudo", "negative"):
                return row
            true = truth[row["image_id"]]
            if mode == "full":
                return {**row, "source": "pseudo", "boxes": [{**t, "score": 1.0, "agree": 1.0} for t in true]}
            boxes = []
            for b in row["boxes"]:  # mode == "snap"
                same = [t for t in true if t["cls"] == b["cls"]]
                overlap = iou(xyxy(b), np.stack([xyxy(t) for t in same])) if same else np.zeros(0)
                if len(overlap) and overlap.max() >= 0.5:
                    b = {**b, **{k: same[int(overlap.argmax())][k] for k in ("x", "y", "w", "h")}}
                boxes.append(b)
            return {**row, "boxes": boxes}

        merge = rounds.merge
        rounds.merge = lambda labeled, selected: merge(labeled, [fix(r) for r in selected])
        try:
            return driver._merge_impl(out, stage)
        finally:
            rounds.merge = merge

    return impl


def run_child(spec: dict) -> int:
    """--one: the rounds driver with the merge step replaced (mode snap/full) or as it is."""
    from ssl_ray import driver
    from ssl_ray.config import load_config
    from ssl_ray.runtime import LazyRemote, start_ray

    if spec["mode"] in ("snap", "full"):
        driver._merge = LazyRemote(merge_with_truth(spec["mode"], spec["truth"]), num_cpus=1)
    start_ray(num_cpus=8, log_to_driver=False)
    driver.run_rounds(load_config(DEMO, spec["overrides"]))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, help="bench/ssl_gain.py's --work, with the seed's round 0 (required)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=["snap", "full", "exact"], choices=["snap", "full", "exact"])
    ap.add_argument("--variant", default="adaptive+consistency+oversample", choices=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20, help="epochs per round, as ssl_gain.py --epochs")
    ap.add_argument("--exact-epochs", type=int, help="epochs of the exact run: the SSL run's steps after round 0 "
                                                     "over the batches of one epoch of labeled set + pool")
    ap.add_argument("--max-epochs", type=int, default=600, help="ssl_gain.py --max-epochs (names round 0's folder)")
    ap.add_argument("--imgsz", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return run_child(json.loads(args.one))
    if not args.work:
        raise SystemExit("--work is required: bench/ssl_gain.py's --work folder")
    if "exact" in args.modes and not args.exact_epochs:
        raise SystemExit("--exact-epochs is needed for the exact mode")
    data = args.work / f"data{args.seed}" / "data.yaml"
    teacher = args.work / f"{args.seed}-baseline-e{args.max_epochs}" / "rounds" / "r000" / "weights" / "best.pt"
    if not teacher.exists() or not data.exists():
        raise SystemExit(f"no round 0 for seed {args.seed} in {args.work}: run bench/ssl_gain.py there first")
    truth = pool_truth(data)
    truth_file = args.work / f"truth{args.seed}.json"
    truth_file.write_text(json.dumps(truth))
    n_classes = len(yaml.safe_load(data.read_text())["names"])
    common = [f"seed={args.seed}", f"model.imgsz={args.imgsz}", f"train.batch={args.batch}",
              f"pool.sources=[{data.parent / 'images' / 'pool'}]", "train.extra={amp: false, nbs: 16}",
              f"model.weights={teacher}"]
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "environment": environment(),
                     "runs": {}}
    for mode in args.modes:
        if mode == "exact":
            out = args.work / f"{args.seed}-exact-e{args.exact_epochs}"
            overrides = [*common, f"labeled.data={data.parent / 'data_oracle.yaml'}", f"train.epochs={args.exact_epochs}",
                         "rounds.max_rounds=0", f"train.patience={args.exact_epochs}"]
        else:
            out = args.work / f"{args.seed}-{mode}-{args.variant}-r{args.rounds}e{args.epochs}"
            overrides = [*common, f"labeled.data={data}", f"train.epochs={args.epochs}",
                         f"rounds.max_rounds={args.rounds}", f"train.patience={args.epochs}", "rounds.patience=99",
                         "rounds.round0=evaluate", *VARIANTS[args.variant]]
        overrides += [f"output.dir={out}", f"output.cache_dir={args.work / f'cache-{mode}'}"]
        log = args.work / "logs" / f"{out.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with log.open("a") as f:
            spec = {"mode": mode, "truth": str(truth_file), "overrides": overrides}
            if subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], stdout=f,
                              stderr=subprocess.STDOUT).returncode:
                raise SystemExit(f"{out.name} failed; its log: {log}")
        metrics = [json.loads(m.read_text()) for m in sorted((out / "rounds").glob("r*/metrics.json"))]
        results["runs"][mode] = {
            "minutes": round((time.perf_counter() - t0) / 60, 1),
            "mAP50-95": [round(m["held_out"]["mAP50-95"], 4) for m in metrics],
            "mAP50": [round(m["held_out"]["mAP50"], 4) for m in metrics],
            "trained_on": [pseudo_quality(out / "rounds" / f"r{m['round']:03d}" / "merged.parquet", truth, n_classes)
                           for m in metrics if m["round"]],
            # the exact run's labeled set is the labeled images plus the pool
            "steps_after_round0": (math.ceil(metrics[0]["labeled_images"] / args.batch) * args.exact_epochs
                                   if mode == "exact" else None)}
        print(json.dumps({mode: results["runs"][mode]}), flush=True)
    text = json.dumps(results, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
