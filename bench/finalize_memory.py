"""Memory of the label stage's finalize step as the pool grows: the whole pool in one task
(one bucket, as before hash buckets) against buckets of --rows-per-task items.

Raw rows are generated as the inference actors write them (Parquet parts of 10,000 rows,
--boxes detections each). Each mode runs in a fresh process, which runs `finalize.finalize`
with its Ray tasks called in turn in that process: its peak RSS is the largest task's
working set plus the driver side (the global caps' keys). Printed per mode: peak RSS above
the process's start, and seconds.

    .venv/bin/python bench/finalize_memory.py --n 200000 --boxes 8 --rows-per-task 25000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"


def make_raw(root: Path, n: int, boxes: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_ray.label import RAW_SCHEMA

    rng = np.random.default_rng(0)
    (root / "raw").mkdir(parents=True)
    for start in range(0, n, 10_000):
        rows = []
        for i in range(start, min(n, start + 10_000)):
            scores, classes = rng.random(boxes), rng.integers(0, 3, boxes)
            rows.append({"image_id": f"{i:032x}", "uri": f"s3://fleet/2026-11/cam_{i % 8}/frame_{i:09d}.jpg",
                         "width": 1920, "height": 1080, "round": 0, "reject_reason": "", "reject_detail": "",
                         "boxes": [{"cls": int(c), "x": 0.5, "y": 0.5, "w": 0.1, "h": 0.1, "score": float(s)}
                                   for c, s in zip(classes, scores)]})
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), root / "raw" / f"part-{start:09d}.parquet")


def run_mode(root: str, n: int, rows_per_task: int) -> dict:
    """Child process: finalize with its Ray tasks run in this process, one after another."""
    import ssl_ray.finalize as fin
    from ssl_ray.config import load_config
    from ssl_ray.storage import Store

    for task in (fin._scatter, fin._pass1, fin._pass2, fin._pass3):
        task.options = lambda fn=task.fn, **_: SimpleNamespace(remote=fn)
    fin.ray_get = lambda refs: refs
    cfg = load_config(DEMO, [f"output.dir={root}", f"label.finalize_rows={rows_per_task}"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    summary = fin.finalize(cfg, Store(root), ["a", "b", "c"], 1, "teacher.pt", None, n, None)
    return {"tasks": summary["finalize_tasks"], "seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024),
            "items": summary["items"], "pseudo": summary["pseudo"], "uncertain": summary["uncertain"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--boxes", type=int, default=8, help="detections per raw row")
    ap.add_argument("--rows-per-task", type=int, default=25_000)
    ap.add_argument("--json")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # root, n, rows per task
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child[0], int(args.child[1]), int(args.child[2]))))
        return 0
    with tempfile.TemporaryDirectory(prefix="ssl_ray-finalize-") as tmp:
        t0 = time.perf_counter()
        make_raw(Path(tmp) / "pool", args.n, args.boxes)
        print(f"{args.n} raw rows written in {time.perf_counter() - t0:.0f} s", flush=True)
        out = {"n": args.n, "boxes": args.boxes}
        for name, per_task in (("one_task", args.n), ("buckets", args.rows_per_task)):
            for sub in ("predictions", "rejects", "selection", "pseudo", "review", "scatter"):
                subprocess.run(["rm", "-rf", str(Path(tmp) / "pool" / sub)], check=True)
            child = subprocess.run([sys.executable, __file__, "--child", str(Path(tmp) / "pool"), str(args.n),
                                    str(per_task)], capture_output=True, text=True, check=True)
            out[name] = json.loads(child.stdout.strip().splitlines()[-1])
            print(name, out[name], flush=True)
        out["memory_ratio"] = round(out["one_task"]["peak_rss_mib"] / max(1, out["buckets"]["peak_rss_mib"]), 1)
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
