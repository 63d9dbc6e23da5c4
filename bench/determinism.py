"""Does training reproduce? Round 0 of bench/ssl_gain.py's baseline, trained several times side by side.

Every run trains the same seed on the same generated data with the same config for --epochs
epochs (early stopping after --patience without improvement, as ssl_gain's round 0; --epochs
600 is the whole of it), each in its own process and local Ray cluster:

  same-a, same-b   this checkout, twice: is one environment deterministic?
  isa-avx2         this checkout with torch's and oneDNN's CPU kernels pinned to AVX2
                   (ATEN_CPU_CAPABILITY=avx2, DNNL_MAX_CPU_ISA=AVX2): does the instruction set
                   (another machine) change the model?
  commit-REV       (--commits) that commit's code, from `git archive`: does a code change?

Printed per run: the first epoch whose losses or val metrics differ from same-a's (none when
every row of Ultralytics' results.csv is equal, time aside), a digest of the best weights, and
the run's wall time (runs side by side on a loaded machine: a rough comparison only).

    .venv/bin/python bench/determinism.py --epochs 10 --commits d44da3b --json docs/results/determinism.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).parents[1]
RAY_DID_NOT_START = 75
LAST_EPOCH_KEYS = ("train/box_loss", "train/cls_loss", "metrics/mAP50-95(B)")
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"}
# The child, in the code tree it runs from: only API that d44da3b (2026-11-26) already had
# (synth.generate, load_config, run_rounds, start_ray), so commits that old run it too.
CHILD = """
import sys
from pathlib import Path
from ssl_ray.synth import SynthSpec, generate
from ssl_ray.config import load_config
from ssl_ray.driver import run_rounds
from ssl_ray.runtime import start_ray
work, seed, epochs, patience = Path(sys.argv[1]), *map(int, sys.argv[2:5])
data = generate(work / "data", SynthSpec(n_train=40, n_val=64, n_pool=600, imgsz=96, clutter=2, seed=seed))
try:
    start_ray(num_cpus=8, log_to_driver=False)
except Exception as e:  # Ray raises a bare Exception when its raylet registers late (a loaded machine)
    if "timed out during startup" not in str(e):
        raise
    sys.exit(75)
run_rounds(load_config(Path("ssl_ray/configs/demo.yaml"), [
    f"seed={seed}", "model.imgsz=96", "train.batch=16", f"pool.sources=[{data.parent / 'images' / 'pool'}]",
    f"output.cache_dir={work / 'cache'}", "train.extra={amp: false, nbs: 16}", f"labeled.data={data}",
    f"output.dir={work / 'out'}", f"train.epochs={epochs}", "rounds.max_rounds=0", f"train.patience={patience}"]))
"""


def train(name: str, tree: Path, env: dict[str, str], work: Path, seed: int, epochs: int, patience: int) -> dict:
    """One run of CHILD from `tree` under `env`; its results.csv rows and weights digest."""
    out = work / name
    t0 = time.perf_counter()
    for attempt in range(1, 4):  # Ray's own 30 s start-up wait can pass on a loaded machine: start again
        with (work / f"{name}.log").open("a") as log:
            code = subprocess.run([sys.executable, "-c", CHILD, str(out), *map(str, (seed, epochs, patience))],
                                  cwd=tree, env={**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(tree), **env},
                                  stdout=log, stderr=subprocess.STDOUT).returncode
        if code != RAY_DID_NOT_START:
            break
        time.sleep(15 * attempt)
    if code:
        raise RuntimeError(f"{name} failed (exit {code}); its log: {work / f'{name}.log'}")
    (results,) = (out / "cache").rglob("results.csv")
    with results.open() as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    return {"rows": rows, "weights": weights_digest(out / "out" / "rounds" / "r000" / "weights" / "best.pt"),
            "seconds": round(time.perf_counter() - t0, 1)}


def weights_digest(path: Path) -> str:
    import torch

    from ssl_ray.ray_trainer import parameters_digest

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return parameters_digest((checkpoint.get("ema") or checkpoint["model"]).float())


def first_difference(rows: list[dict], reference: list[dict]) -> int | None:
    """The first epoch whose row differs from the reference's in anything but time; None if none does."""
    for row, ref in zip(rows, reference):
        if {k: v for k, v in row.items() if k != "time"} != {k: v for k, v in ref.items() if k != "time"}:
            return int(row["epoch"])
    return None if len(rows) == len(reference) else min(len(rows), len(reference)) + 1


def compare(run: dict, reference: dict) -> dict:
    last = run["rows"][-1]
    return {"first_different_epoch": first_difference(run["rows"], reference["rows"]),
            "same_weights": run["weights"] == reference["weights"], "weights": run["weights"],
            "seconds": run["seconds"], "epochs_run": len(run["rows"]),
            "last_epoch": {k: last[k] for k in LAST_EPOCH_KEYS if k in last}}


def snapshot(commit: str, work: Path) -> Path:
    tree = work / f"tree-{commit}"
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=10, help="600 trains the whole of ssl_gain's round 0")
    ap.add_argument("--patience", type=int, default=50, help="early stopping, as ssl_gain's round 0")
    ap.add_argument("--commits", nargs="*", default=[], help="also train from these commits' code")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (a run uses one core)")
    ap.add_argument("--work", type=Path, help="keep the runs here (default: a temporary directory)")
    ap.add_argument("--json")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from provenance import environment

    measured_on = environment()  # before anything here imports Ultralytics, which sets OMP_NUM_THREADS
    work = args.work or Path(tempfile.mkdtemp(prefix="ssl_ray-determinism-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {"same-a": (ROOT, {}), "same-b": (ROOT, {}), "isa-avx2": (ROOT, AVX2),
            **{f"commit-{c}": (snapshot(c, work), {}) for c in args.commits}}
    with ThreadPoolExecutor(args.jobs) as pool:
        done = {name: pool.submit(train, name, tree, env, work, args.seed, args.epochs, args.patience)
                for name, (tree, env) in runs.items()}
        trained = {name: future.result() for name, future in done.items()}
    reference = trained["same-a"]
    results = {"environment": measured_on, "seed": args.seed, "epochs": args.epochs, "patience": args.patience,
               "runs": {name: compare(run, reference) for name, run in trained.items()}}
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
