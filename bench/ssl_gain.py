"""Does pseudo-labeling pay, the way users start: from pretrained weights, against training as
long on the labels alone.

Per seed, from one init (a detector pretrained on a synthetic *source* domain disjoint from
the target: other shapes, colours and backgrounds; or `--init` any checkpoint), three runs
with the same optimizer-step budget:

  control   labeled set only: round 0, then one segment per SSL round with (at least) that
            round's steps, the labels alone (the product's `rounds.control: 1`)
  ssl       the product's default recipe through `run_rounds`: round 0, then the rounds
  oracle    the labeled set + the pool with its true labels, from the same init, one schedule
            with at least the SSL run's total steps

Printed per seed and as mean ± spread: held-out mAP50 and mAP50-95 of each, the gap recovered
(ssl − control) / (oracle − control) in both, and per round the pseudo-labels' precision,
recall and mean box IoU against the pool's true labels. `--check-control` also trains, once
(the first seed), a control with twice the budget (`rounds.control: 2`): if it gains less than
the run-to-run noise, the control has converged and the comparison is fair. `--variant NAME
KEY=VALUE...` (repeatable) screens a change: per seed, one more SSL run with those settings,
side by side with the others, scored against the seed's control and oracle (fair when it
trains as many steps as the SSL run; the table says its settings); a variant that changes the
rounds or the epochs per round trains a control of its own on its schedule and is scored
against that;
with `--branch` each variant starts from the SSL run's round 0 instead of training its own.

    .venv/bin/python -m bench.ssl_gain --seeds 0 1 2 --jobs 2 --work /tmp/gain --json out.json
    .venv/bin/python -m bench.ssl_gain --init my_pretrained.pt --data my/data.yaml --pool my/pool_images

The source checkpoint is built once and cached by the hash of its settings under
`~/.cache/ssl_ray/bench/` (`--build-init` only builds it); the copy bundled in `ssl_ray/assets/`
(which the demo and the smoke job start from) is used while its recorded key still matches.
Runs go side by side, `--jobs` at a time, each in its own process and local Ray cluster; with
`--work`, a re-run reuses finished runs (the driver resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import environment
from ssl_ray.synth import TASK

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
CACHE = Path("~/.cache/ssl_ray/bench").expanduser()
ASSET = Path(__file__).parents[1] / "ssl_ray" / "assets" / "source-yolo26n.pt"  # a build of source_init, shipped
RAY_DID_NOT_START = 75  # --one's exit status when its local Ray cluster timed out starting: run again
SLOTS = threading.Semaphore(2)  # runs in flight at once: --jobs


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Everything a figure depends on besides the seed (its hash names the cached init)."""

    imgsz: int = 128
    batch: int = 16
    labeled: int = 40
    pool: int = 400
    val: int = 256
    round0_epochs: int = 150  # a teacher that finds objects: 30 left round 0 at 0.22 mAP50-95 (docs/research)
    # The default (online) mode: one round of 39 epochs. An online epoch is one pass over the pool, an offline
    # one over the pseudo-labeled pool plus its labeled share (~1.6x the steps), so 39 online epochs (975 steps)
    # are the optimizer steps of the offline recipe's 3 rounds of 8
    # (--variant offline train.ssl=offline rounds.max_rounds=3 train.epochs=8).
    rounds: int = 1
    round_epochs: int = 39
    source_images: int = 2000
    source_epochs: int = 30
    source_seed: int = 1000

    def target(self, seed: int):
        from ssl_ray.synth import SynthSpec

        return SynthSpec(n_train=self.labeled, n_val=self.val, n_pool=self.pool, imgsz=self.imgsz, seed=seed, **TASK)

    def source(self):
        from ssl_ray.synth import SynthSpec

        return SynthSpec(
            n_train=self.source_images,
            n_val=64,
            n_pool=0,
            imgsz=self.imgsz,
            seed=self.source_seed,
            domain="source",
            **TASK,
        )


def common(p: Protocol, seed: int, work: Path) -> list[str]:
    """Overrides every run shares: the CPU profile at the protocol's size, one optimizer step
    per batch, early stopping off (every run spends its whole budget; its best epoch is kept)."""
    return [
        f"seed={seed}",
        f"model.imgsz={p.imgsz}",
        f"train.batch={p.batch}",
        f"output.cache_dir={work / 'cache'}",
        f"train.extra={{amp: false, nbs: {p.batch}}}",
        "train.patience=1000",
        "rounds.patience=99",
    ]


def iterations(images: int, batch: int, epochs: int) -> int:
    return math.ceil(images / batch) * epochs


# ----------------------------------------------------------------------------- child runs


def execute(overrides: list[str], log: Path) -> Path:
    """One run of the rounds driver in its own process (its own local Ray cluster), at most
    --jobs at a time; its run directory. A finished run is read back."""
    out = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("output.dir=")))
    with SLOTS:
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] start  {out.name}", flush=True)
        for attempt in range(1, 4):  # a loaded machine can start Ray too slowly for Ray's own 30 s wait
            with log.open("a") as f:
                code = subprocess.run(
                    [sys.executable, "-m", "bench.ssl_gain", "--one", json.dumps(overrides)],
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    cwd=Path(__file__).parents[1],
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
    return out


def branched(overrides: list[str], log: Path, ssl_out: Path, ssl_run) -> Path:
    """`execute` a variant from the SSL run's round 0: once that round is done, its weights
    are the variant's round 0 (`rounds.round0: evaluate` scores them and trains nothing), so
    the variant and the SSL run differ only from round 1 on, and round 0's own run-to-run
    noise (±0.01 mAP50-95) drops out of their difference."""
    round0 = ssl_out / "rounds" / "r000"
    while not (round0 / "metrics.json").exists():  # written after weights/best.pt, when round 0 is done
        if ssl_run.done():
            raise RuntimeError(f"{ssl_out.name} ended without a round 0 to branch from: {ssl_run.exception()}")
        time.sleep(10)
    return execute([*overrides, f"model.weights={round0 / 'weights' / 'best.pt'}", "rounds.round0=evaluate"], log)


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


def report(out: Path) -> dict:
    return json.loads((out / "report" / "report.json").read_text())


# ---------------------------------------------------------------------------- the init


def source_init(p: Protocol, jobs: int) -> Path:
    """The source-pretrained checkpoint, built once per protocol and package set: YOLO26n from
    `yolo26n.yaml` trained on the source domain with the product's own training stage."""
    env = environment()
    source = {k: getattr(p, k) for k in ("imgsz", "batch", "source_images", "source_epochs", "source_seed")}
    key = json.dumps({"source": source, "task": TASK, "packages": env["packages"]}, sort_keys=True)
    folder = CACHE / f"source-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}"
    weights = folder / "run" / "rounds" / "r000" / "weights" / "best.pt"
    if weights.exists():
        return weights
    bundled = json.loads((ASSET.with_suffix(".json")).read_text())
    if bundled["cache_key"] == folder.name:  # the copy shipped in ssl_ray/assets is this very build
        return ASSET
    from ssl_ray.synth import generate

    data = generate(folder / "data", p.source())
    cpus = max(1, jobs)
    t0 = time.perf_counter()
    execute(
        [
            *common(p, p.source_seed, folder),
            f"labeled.data={data}",
            f"output.dir={folder / 'run'}",
            "model.weights=yolo26n.yaml",
            f"train.epochs={p.source_epochs}",
            "rounds.max_rounds=0",
            f"train.cpus_per_worker={cpus}",
        ],
        folder / "build.log",
    )
    (folder / "built.json").write_text(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - t0),
                "key": json.loads(key),
                "held_out": report(folder / "run")["rounds"][0]["held_out"],
            },
            indent=2,
        )
        + "\n"
    )
    return weights


# ------------------------------------------------------------------- pseudo-label quality


def pool_truth(data: Path) -> dict[str, list[dict]]:
    """image_id -> true boxes of every pool image (its YOLO label file)."""
    from ssl_ray.core.schema import box, image_id_of_bytes

    truth = {}
    for image in sorted((data.parent / "images" / "pool").iterdir()):
        label = data.parent / "labels" / "pool" / f"{image.stem}.txt"
        values = [float(v) for v in label.read_text().split()] if label.exists() else []
        truth[image_id_of_bytes(image.read_bytes())] = [
            box(int(values[i]), *values[i + 1 : i + 5]) for i in range(0, len(values), 5)
        ]
    return truth


def pseudo_quality(merged: Path, truth: dict[str, list[dict]]) -> dict:
    """Of the pool rows a round trained on: box precision and recall (same class, IoU >= 0.5,
    greedy by score) against the truth, and the mean IoU of the matched boxes."""
    import numpy as np
    import pyarrow.parquet as pq

    from ssl_ray.core.geometry import iou, xyxy_of, xyxy_of_boxes

    rows = [
        r
        for r in pq.read_table(merged, columns=["image_id", "source", "boxes"]).to_pylist()
        if r["source"] in ("pseudo", "negative")
    ]
    tp = boxes = n_truth = 0
    ious = []
    for r in rows:
        gts = truth.get(r["image_id"], [])
        n_truth += len(gts)
        taken = np.zeros(len(gts), bool)
        gt_xyxy = xyxy_of_boxes(gts)
        for b in sorted(r["boxes"], key=lambda b: -b["score"]):
            boxes += 1
            if not len(gts):
                continue
            overlap = iou(xyxy_of(b), gt_xyxy)
            overlap[taken | np.array([g["cls"] != b["cls"] for g in gts])] = -1
            j = int(np.argmax(overlap))
            if overlap[j] >= 0.5:
                taken[j], tp = True, tp + 1
                ious.append(float(overlap[j]))
    return {
        "images": len(rows),
        "boxes": boxes,
        "precision": round(tp / boxes, 3) if boxes else None,
        "recall": round(tp / n_truth, 3) if n_truth else None,
        "mean_iou": round(float(np.mean(ious)), 3) if ious else None,
    }


# ------------------------------------------------------------------------------ one seed


def oracle_run(
    p: Protocol, seed: int, work: Path, data: Path, pool: Path, init: Path, epochs: int, also: list[str]
) -> list[str]:
    """The oracle's overrides: round 0 alone on the labeled set plus the pool with its true
    labels, for `epochs`. The SSL run's own settings (`--also`) apply too, so both train alike
    (and a rerun of a --work finds the oracle it made); the oracle's data, init, epochs and
    single round come after them and win."""
    return [
        *common(p, seed, work),
        *also,
        f"labeled.data={data.parent / 'data_oracle.yaml'}",
        f"pool.sources=[{pool}]",
        f"model.weights={init}",
        f"train.epochs={epochs}",
        "rounds.max_rounds=0",
        f"output.dir={work / f'{seed}-oracle'}",
    ]


SCHEDULE = ("rounds.max_rounds=", "train.epochs=")  # settings that change when the learning rate restarts


def reschedules(overrides: list[str]) -> bool:
    """A variant with other rounds or epochs per round gets a control of its own: training on
    the labels alone gains from the same schedule (fewer restarts, longer mosaic), so the
    seed's control, segmented like the SSL run's rounds, would flatter it."""
    return any(o.startswith(SCHEDULE) for o in overrides)


def best_alone(run_report: dict) -> dict:
    """The labels alone at their best: round 0 or a control segment (the product's
    `rounds.control`), whichever scores higher on the held-out set."""
    rounds, control = run_report["rounds"], run_report["control"]
    return max([rounds[0]["held_out"], *(c["held_out"] for c in control)], key=lambda h: h["mAP50-95"])


def gap(ssl: float, control: float, oracle: float) -> float | None:
    return round((ssl - control) / (oracle - control), 3) if oracle > control else None


def one_seed(
    p: Protocol,
    seed: int,
    init: Path,
    work: Path,
    data: Path | None,
    pool: Path | None,
    threads: ThreadPoolExecutor,
    double_control: bool,
    also: list[str] = (),
    variants: dict[str, list[str]] | None = None,
    branch: bool = False,
) -> dict:
    """Every run of one seed: the SSL run (with its control), then the oracle at its budget;
    the variants beside them (with `branch`, from the SSL run's round 0)."""
    from ssl_ray.synth import generate

    t0 = time.perf_counter()
    if data is None:
        data = generate(work / f"data{seed}", p.target(seed))
        pool = data.parent / "images" / "pool"
    base = [
        *common(p, seed, work),
        f"labeled.data={data}",
        f"pool.sources=[{pool}]",
        f"model.weights={init}",
        f"train.epochs={p.round_epochs}",
        f"train.round0_epochs={p.round0_epochs}",
        f"rounds.max_rounds={p.rounds}",
        *also,
    ]
    ssl_out = work / f"{seed}-ssl"
    runs = [
        threads.submit(execute, [*base, f"output.dir={ssl_out}", "rounds.control=1"], work / "logs" / f"{seed}-ssl.log")
    ]
    if double_control:
        runs.append(
            threads.submit(
                execute,
                [*base, f"output.dir={work / f'{seed}-ssl-control2'}", "rounds.control=2"],
                work / "logs" / f"{seed}-ssl-control2.log",
            )
        )
    screened = {
        name: threads.submit(
            branched if branch else execute,
            [
                *base,
                *overrides,
                f"output.dir={work / f'{seed}-{name}'}",
                f"rounds.control={int(reschedules(overrides))}",
            ],
            work / "logs" / f"{seed}-{name}.log",
            *([ssl_out, runs[0]] if branch else []),
        )
        for name, overrides in (variants or {}).items()
    }
    ssl_report = report(runs[0].result())
    rounds, control = ssl_report["rounds"], ssl_report["control"]
    r0 = rounds[0]
    n_labeled = r0["labeled_images"]
    budget = iterations(n_labeled, p.batch, r0["held_out"]["epoch"]) + sum(c["round_iterations"] for c in control)
    oracle_images = n_labeled + len(list(pool.iterdir()))
    oracle_epochs = math.ceil(budget / math.ceil(oracle_images / p.batch))
    oracle_out = execute(
        oracle_run(p, seed, work, data, pool, init, oracle_epochs, also), work / "logs" / f"{seed}-oracle.log"
    )
    oracle = report(oracle_out)["rounds"][0]["held_out"]
    best = rounds[ssl_report["best_round"]]["held_out"]
    labels_alone = best_alone(ssl_report)
    truth = pool_truth(data) if (data.parent / "labels" / "pool").exists() else None
    row = {
        "control": {k: labels_alone[k] for k in ("mAP50", "mAP50-95")},
        "ssl": {k: best[k] for k in ("mAP50", "mAP50-95")},
        "oracle": {k: oracle[k] for k in ("mAP50", "mAP50-95")},
        "steps": {
            "ssl": budget,
            "control": iterations(n_labeled, p.batch, r0["held_out"]["epoch"]) + sum(c["iterations"] for c in control),
            "oracle": iterations(oracle_images, p.batch, oracle_epochs),
        },
        "round0": {k: r0["held_out"][k] for k in ("mAP50", "mAP50-95")},
        "rounds": [
            {
                "round": r["round"],
                "mAP50-95": round(r["held_out"]["mAP50-95"], 4),
                "mAP50": round(r["held_out"]["mAP50"], 4),
                "control_mAP50-95": (ssl_report["over_control"].get(str(r["round"])) or {}).get("control_mAP50-95"),
                "pseudo_used": (r.get("label") or {}).get("pseudo_used"),
                "class_thresholds": (r.get("label") or {}).get("class_thresholds"),
                "trained_on": pseudo_quality(ssl_out / "rounds" / f"r{r['round']:03d}" / "merged.parquet", truth)
                if r["round"] and truth
                else None,
            }
            for r in rounds
        ],
    }
    for metric in ("mAP50-95", "mAP50"):
        row[f"gap_recovered_{metric}"] = gap(row["ssl"][metric], row["control"][metric], row["oracle"][metric])
    if double_control:
        twice = report(runs[1].result())
        alone2 = max(
            [twice["rounds"][0]["held_out"], *(c["held_out"] for c in twice["control"])], key=lambda h: h["mAP50-95"]
        )
        row["control_x2"] = {k: alone2[k] for k in ("mAP50", "mAP50-95")}
    row["variants"] = {}
    for name, future in screened.items():
        screen = report(future.result())
        held_out = screen["rounds"][screen["best_round"]]["held_out"]
        alone = best_alone(screen) if reschedules(variants[name]) else row["control"]
        row["variants"][name] = {
            "settings": variants[name],
            **{k: held_out[k] for k in ("mAP50", "mAP50-95")},
            "control": {k: alone[k] for k in ("mAP50", "mAP50-95")},
            **{f"gap_recovered_{m}": gap(held_out[m], alone[m], row["oracle"][m]) for m in ("mAP50-95", "mAP50")},
            "rounds_mAP50-95": [round(r["held_out"]["mAP50-95"], 4) for r in screen["rounds"]],
        }
    row["seconds_per_step"] = step_seconds(work / "cache" / "train", ssl_out, control)
    row["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    return row


def step_seconds(cache: Path, ssl_out: Path, control: list[dict]) -> dict:
    """Training seconds per optimizer step of the SSL run's rounds (>= 1) and of their control
    segments, from their own results.csv (cumulative seconds, validation included), in the
    same run of the benchmark: the cost of a round's step against a supervised one. The
    folders are the SSL run's (keyed by its output folder, as `stages.train.work_dir` keys
    them: `stages.train.run_key`), never the variants' or another seed's that share the cache."""
    import csv

    from ssl_ray.io.storage import Store
    from ssl_ray.stages.train import run_key

    run = run_key(Store(str(ssl_out)))

    def seconds(name: str) -> float | None:
        found = cache / f"{name}-{run}" / "run" / "results.csv"
        if not found.exists():
            return None
        with open(found) as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["time"]) if rows else None

    def per_step(pairs):
        values = [t / n for t, n in pairs if t and n]
        return round(statistics.median(values), 4) if values else None

    ssl = per_step((seconds(f"r{c['round']:03d}"), c["round_iterations"]) for c in control)
    alone = per_step((seconds(f"c{c['round']:03d}"), c["iterations"]) for c in control)
    return {"ssl_round": ssl, "control": alone, "ratio": round(ssl / alone, 2) if ssl and alone else None}


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None}
    return {
        "mean": round(statistics.mean(values), 3),
        "min": min(values),
        "max": max(values),
        "stdev": round(statistics.stdev(values), 3) if len(values) > 1 else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ssl_gain")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (a training run uses one core)")
    ap.add_argument("--work", help="working folder; a re-run with the same arguments reuses finished runs")
    ap.add_argument("--init", help="start every run from this checkpoint instead of the source-pretrained one")
    ap.add_argument("--data", help="a labeled data.yaml to run the protocol on instead of the generated task")
    ap.add_argument("--pool", help="with --data: the unlabeled pool folder (its labels/ beside it: the oracle)")
    ap.add_argument("--check-control", action="store_true", help="also a control with twice the budget (1st seed)")
    ap.add_argument("--build-init", action="store_true", help="only build (or find) the source-pretrained init")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--protocol", nargs="*", default=[], metavar="FIELD=VALUE", help="change the protocol (Protocol)")
    ap.add_argument("--also", nargs="*", default=[], metavar="KEY=VALUE", help="product settings of the SSL run")
    ap.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME KEY=VALUE",
        help="screen a change: an SSL run with these settings per seed, scored against the seed's control and oracle",
    )
    ap.add_argument(
        "--branch",
        action="store_true",
        help="variants start from the SSL run's round 0 (for variants of rounds 1.. only): paired on one round 0",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one config (a list of overrides), JSON
    args = ap.parse_args()
    if args.one:
        return run_one(json.loads(args.one))
    if args.data and not args.pool:
        ap.error("--data needs --pool")
    variants = {v[0]: v[1:] for v in args.variant}
    if any("=" in name or not overrides for name, overrides in variants.items()):
        ap.error("--variant takes a name, then one or more KEY=VALUE settings")
    round0_keys = ("model.", "labeled.", "seed", "train.round0_epochs", "rounds.round0")
    if args.branch and any(o.startswith(round0_keys) for overrides in variants.values() for o in overrides):
        ap.error(f"--branch: a variant changes round 0 ({', '.join(round0_keys)}); run it without --branch")
    global SLOTS
    SLOTS = threading.Semaphore(args.jobs)
    p = dataclasses.replace(Protocol(), **{k: int(v) for k, v in (a.split("=", 1) for a in args.protocol)})
    t0 = time.perf_counter()
    init = Path(args.init) if args.init else source_init(p, args.jobs)
    built = time.perf_counter() - t0
    print(f"init: {init} ({built / 60:.1f} min)", flush=True)
    if args.build_init:
        return 0
    work = Path(args.work or f"/tmp/ssl_ray-gain-{time.strftime('%Y%m%d-%H%M%S')}")
    results: dict = {
        "protocol": dataclasses.asdict(p),
        "task": TASK,
        "init": str(init),
        "also": args.also,
        "variants": variants,
        "branch": args.branch,
        "environment": environment(),
        "seeds": {},
    }
    with ThreadPoolExecutor(max_workers=16) as threads:  # waiting only: the work is in child processes
        futures = {
            seed: threads.submit(
                one_seed,
                p,
                seed,
                init,
                work,
                args.data and Path(args.data),
                args.pool and Path(args.pool),
                threads,
                args.check_control and i == 0,
                args.also,
                variants,
                args.branch,
            )
            for i, seed in enumerate(args.seeds)
        }
        for seed, future in futures.items():
            results["seeds"][seed] = future.result()
            print(json.dumps({seed: results["seeds"][seed]}, indent=2), flush=True)
            if args.json:  # after every seed: a long run that is stopped keeps what it finished
                Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    rows = results["seeds"].values()
    results["summary"] = {
        f"{run}_{m}": spread([r[run][m] for r in rows])
        for run in ("control", "ssl", "oracle")
        for m in ("mAP50", "mAP50-95")
    }
    for metric in ("mAP50-95", "mAP50"):
        results["summary"][f"gap_recovered_{metric}"] = spread([r[f"gap_recovered_{metric}"] for r in rows])
    for name in variants:
        for metric in ("mAP50-95", "mAP50"):
            values = [r["variants"][name][f"gap_recovered_{metric}"] for r in rows]
            results["summary"][f"{name}_gap_recovered_{metric}"] = spread(values)
    results["minutes_per_seed"] = [r["minutes"] for r in rows]
    print(json.dumps({"summary": results["summary"]}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
