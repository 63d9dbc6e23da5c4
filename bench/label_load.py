"""The label stage under load: a pool of 20,000 small images on this machine, with exact
accounting checked and the memory of every Ray process sampled the whole time.

    .venv/bin/python bench/label_load.py --n 20000 --imgsz 64

Prints images/s, the peak summed PSS of all Ray processes, and that peak over each quarter
of the run: flat quarters mean memory does not grow with the pool.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("YOLO_OFFLINE", "1")

from label_throughput import RayMemory, fresh_cluster, make_pool, teacher_classes, untrained_teacher  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-load-"))
    try:
        import pyarrow.parquet as pq

        from ssl_ray.config import load_config
        from ssl_ray.label import label_pool
        from ssl_ray.storage import Store

        weights = untrained_teacher(work)
        t0 = time.perf_counter()
        pool = make_pool(work / "pool", args.n, args.imgsz)
        generated = time.perf_counter() - t0

        demo = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
        cfg = load_config(demo, [f"pool.sources=[{pool}]", f"output.dir={work / 'run'}",
                                 f"output.cache_dir={work / 'cache'}", f"model.imgsz={args.imgsz}"])
        names = teacher_classes(weights)
        fresh_cluster()
        with RayMemory(period=1.0) as mem:
            start = time.perf_counter()
            summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights, names=names)
            seconds = time.perf_counter() - start

        stage = work / "run" / "rounds" / "r001"
        ids = pq.read_table(stage / "predictions", columns=["image_id"]).column("image_id").to_pylist()
        rejects = pq.read_table(stage / "rejects").num_rows
        selection = pq.read_table(stage / "selection", columns=["image_id"]).num_rows
        exact = (summary["items"] == args.n == len(ids) + rejects and len(set(ids)) == len(ids)
                 and selection == len(ids)
                 and summary["pseudo"] + summary["negative"] + summary["uncertain"] + summary["rejected"] == args.n)
        quarters = [max((pss for t, pss in mem.timeline if q * seconds / 4 <= t - start < (q + 1) * seconds / 4),
                        default=0) for q in range(4)]
        figures = {
            "n": args.n, "imgsz": args.imgsz, "cores": os.cpu_count(), "generate_s": round(generated, 1),
            "stage_s": round(seconds, 1), "img_s": round(args.n / seconds, 1),
            "ray_peak_pss_mib": round(mem.peak / 2**20), "peak_pss_mib_by_quarter": [round(q / 2**20) for q in quarters],
            "items": summary["items"], "predictions": len(ids), "rejects": rejects, "accounting_exact": exact,
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if exact else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
