"""Does the data path scale with the pool: finalize -> merge -> export of generated pools of
10^4 to 10^6 rows on this machine, on Ray.

Per pool size N: raw rows as the inference actors write them (unique image ids, `--boxes`
detections with random scores, each row pointing at one of 64 small real JPEGs), a labeled
set of 1,000 images, then one after another, each step in a fresh local cluster of its own (a
worker that kept memory from an earlier step would count in the next one's peak):

  finalize  the label stage's last step (dedupe, select, write; Ray tasks of one bucket each)
  merge     the labeled rows and the selection -> rounds/r001/merged.parquet/ (Ray Data)
  export    final/dataset.parquet/ and the YOLO tree final/yolo/: every image and label file
            written (Ray Data)
  shares    the training trees of 2 ranks of the merged rows, as Ray Train's ranks build them
            (`stages.rank_data.materialize`), side by side, each rank on a "node" of its own (its
            own image cache): the rows, images and bytes each holds against the whole set

Printed per N and step: seconds and microseconds per row (for shares: rows over both ranks,
side by side on the 2 cores); the peak PSS of the largest single
Ray worker process, the peak heap of one (its anonymous memory: what one task holds, without
the object-store pages it mapped), of all Ray processes together, and the growth of the
driver's own peak RSS; then, from the smallest N to the largest, how time per row and
each peak grew. Flat peaks and a flat time per row: nothing holds the pool.

    .venv/bin/python -m bench.scale --sizes 10000 100000 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RayMemory, emit, fresh_cluster
from bench.label_throughput import make_raw

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
NAMES = ["a", "b", "c"]
FILES = 64  # the real images the rows point at


def make_images(folder: Path) -> list[str]:
    """FILES small JPEGs of noise (they only need to be real images)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(FILES):
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path, quality=80)
        paths.append(str(path))
    return paths


def make_labeled(out, files: list[str], n_train: int = 1000, n_val: int = 100) -> None:
    from ssl_ray.core.schema import box, make_row
    from ssl_ray.io.export import write_parquet

    def rows(offset, n):
        return [
            make_row(
                image_id=f"{offset + i:032x}",
                uri=files[i % FILES],
                width=96,
                height=64,
                source="labeled",
                round=0,
                boxes=[box(i % len(NAMES), 0.5, 0.5, 0.2, 0.2)],
            )
            for i in range(n)
        ]

    write_parquet(out, "labeled/train.parquet", rows(1 << 100, n_train))
    write_parquet(out, "labeled/val.parquet", rows(1 << 101, n_val))


def measure(fn) -> tuple[object, dict]:
    """fn()'s result and its seconds, Ray peaks and the driver's peak RSS growth, in a fresh
    cluster: the peaks are fn's own processes."""
    fresh_cluster()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with RayMemory(period=0.5) as mem:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, {
        "seconds": round(seconds, 1),
        "largest_worker_mib": round(mem.largest / 2**20),
        "largest_worker_heap_mib": round(mem.largest_heap / 2**20),
        "ray_total_mib": round(mem.peak / 2**20),
        "driver_growth_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024),
    }


def one_size(n: int, boxes: int, work: Path) -> dict:
    from ssl_ray.config import load_config
    from ssl_ray.io.export import parquet_num_rows
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.datasets import export_final, merge_round
    from ssl_ray.stages.finalize import finalize, ray_mapper

    root = work / f"n{n}"
    files = make_images(root / "images")
    t0 = time.perf_counter()
    make_raw(root / "run" / "rounds" / "r001", n, boxes, files, len(NAMES))
    print(f"[{time.strftime('%H:%M:%S')}] {n:,} raw rows written in {time.perf_counter() - t0:.0f} s", flush=True)
    out = Store(str(root / "run"))
    make_labeled(out, files)
    cfg = load_config(DEMO, [f"output.dir={out.root}", "select.adaptive=global"])
    steps = {}
    summary, steps["finalize"] = measure(
        lambda: finalize(cfg, out.child("rounds/r001"), NAMES, 1, "teacher.pt", None, n, None, ray_mapper(cfg))
    )
    merged, steps["merge"] = measure(lambda: merge_round(out, "rounds/r001"))
    exported, steps["export"] = measure(lambda: export_final(cfg, out, "rounds/r001/merged.parquet", NAMES))
    images, whole = files_and_bytes(root / "run" / "final" / "yolo" / "images" / "train")
    if not (merged == exported == images == parquet_num_rows(out, "final/dataset.parquet")):
        raise SystemExit(f"n={n}: merged {merged}, exported {exported}, images {images}: rows went missing")
    shutil.rmtree(root / "run" / "final")
    split, steps["shares"] = measure(lambda: shares(out, "rounds/r001/merged.parquet", root / "shares"))
    for rank in split["ranks"]:  # a share of the rows, of the bytes and of what the node copied
        rank["share_of_rows"] = round(rank["train_images"] / merged, 3)
        rank["share_of_bytes"] = round(rank["train_image_bytes"] / whole, 3)
        rank["node_cache_share"] = round(rank["node_cache_bytes"] / whole, 3)
    steps["shares"].update(split)
    for name, rows in (("finalize", n), ("merge", merged), ("export", exported), ("shares", merged)):
        steps[name]["rows"] = rows
        steps[name]["us_per_row"] = round(1e6 * steps[name]["seconds"] / max(rows, 1), 1)
    row = {
        "n": n,
        "finalize_tasks": summary["finalize_tasks"],
        "pseudo": summary["pseudo"],
        "negative_used": summary["negative_used"],
        "merged_rows": merged,
        "merged_files": len(out.names("rounds/r001/merged.parquet", folders=False)),
        "steps": steps,
    }
    print(row, flush=True)
    shutil.rmtree(root)
    return row


def shares(out, merged: str, root: Path, world: int = 2) -> dict:
    """Every rank's tree of `merged`, as Ray tasks side by side, each with a cache of its own
    (as on separate nodes): per rank its images and the bytes its node copied."""
    import ray

    from ssl_ray.config import load_config
    from ssl_ray.stages.rank_data import materialize
    from ssl_ray.stages.train import TrainSpec

    spec = TrainSpec(name="r001", train=[merged], val=["labeled/val.parquet"], names=NAMES, weights="yolo26n.yaml")

    def one(rank: int) -> dict:
        node = root / f"node{rank}"
        cfg = load_config(DEMO, [f"output.dir={out.root}", f"output.cache_dir={node / 'cache'}"])
        materialize(cfg, out, spec, node / "tree", rank, world)
        images, image_bytes = files_and_bytes(node / "tree" / "images" / "train")
        cache = node / "cache" / "images"
        cached_bytes = sum(files_and_bytes(folder)[1] for folder in cache.iterdir() if folder.is_dir())
        return {
            "rank": rank,
            "train_images": images,
            "train_image_bytes": image_bytes,
            "node_cache_bytes": cached_bytes,
        }

    task = ray.remote(num_cpus=1)(one)
    return {"ranks": ray.get([task.remote(rank) for rank in range(world)])}


def files_and_bytes(folder: Path) -> tuple[int, int]:
    """How many files `folder` holds and their bytes, without holding their names (the
    measurement must not be what grows)."""
    count = size = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                count, size = count + 1, size + entry.stat().st_size
    return count, size


def growth(rows: list[dict]) -> dict:
    """Largest N's figure over the smallest's, per step."""
    first, last = rows[0]["steps"], rows[-1]["steps"]
    keys = ("us_per_row", "largest_worker_mib", "largest_worker_heap_mib", "ray_total_mib")
    return {step: {k: round(last[step][k] / max(first[step][k], 1e-9), 2) for k in keys} for step in first}


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--boxes", type=int, default=5, help="detections per raw row (fleet video: ~5)")
    ap.add_argument("--work", help="working folder (default: a temp folder, removed)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="ssl_ray-scale-"))
    try:
        rows = [one_size(n, args.boxes, work) for n in sorted(args.sizes)]
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    emit({"mode": "scale", "boxes": args.boxes, "sizes": rows, "growth_largest_over_smallest": growth(rows)}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
