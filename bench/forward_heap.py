"""What glibc's heap settings cost a CPU forward: `label.keep_freed_heap` on and off.

Each timing runs in a fresh process (glibc's state is per process): the teacher's `predict`
(uint8 batch in, detections out, as the inference actor calls it) on the same batch, after
a warm-up, with glibc's defaults ("default") or after `runtime.keep_freed_heap()` ("keep").
The two alternate, --repeat times, so that both see the same drift of this machine; per
process, the median time per image and the minor page faults per batch are printed, and
per repetition the ratio of the two.

    .venv/bin/python bench/forward_heap.py --repeat 5 --json docs/results/forward-heap.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import label_throughput as lt  # noqa: E402


def timed(weights: str, work: str, keep: bool, batch: int, imgsz: int, threads: int, calls: int) -> dict:
    """In a fresh process: ms per image (median over `calls`) and minor faults per call."""
    import resource
    import time

    import numpy as np

    from ssl_ray.runtime import keep_freed_heap
    from ssl_ray.teacher import Teacher

    applied = keep_freed_heap() if keep else False
    teacher = Teacher(weights, work, device="cpu", threads=threads)
    images = np.random.default_rng(0).integers(0, 256, (batch, imgsz, imgsz, 3), dtype=np.uint8)
    teacher.predict(images, 0.05)  # warm-up
    seconds = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        start = time.perf_counter()
        teacher.predict(images, 0.05)
        seconds.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"ms_per_image": round(statistics.median(seconds) * 1000 / batch, 3),
            "faults_per_call": faults // calls, "applied": applied}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=8, help="timed calls per process")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-heap-"))
    try:
        from ssl_ray.runtime import prepare_ultralytics

        weights = str(work / "yolo26n.pt")
        prepare_ultralytics(work / "ul").YOLO("yolo26n.yaml").save(weights)
        spawn = multiprocessing.get_context("spawn")
        reps = []
        for rep in range(args.repeat):
            modes = ("default", "keep") if rep % 2 == 0 else ("keep", "default")
            got = {}
            for mode in modes:
                with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    got[mode] = pool.submit(timed, weights, str(work), mode == "keep", args.batch, args.imgsz,
                                            args.threads, args.calls).result()
            got["default_over_keep"] = round(got["default"]["ms_per_image"] / got["keep"]["ms_per_image"], 3)
            reps.append(got)
            print(json.dumps(got), flush=True)
        figures = {"batch": args.batch, "imgsz": args.imgsz, "threads": args.threads, "cores": os.cpu_count(),
                   "calls": args.calls, "repeat": args.repeat,
                   **{f"{mode}_{k}": statistics.median(r[mode][k] for r in reps)
                      for mode in ("default", "keep") for k in ("ms_per_image", "faults_per_call")},
                   "speedup_median": statistics.median(r["default_over_keep"] for r in reps),
                   "speedup_range": [min(r["default_over_keep"] for r in reps), max(r["default_over_keep"] for r in reps)],
                   "repeats": reps}
        lt.emit(figures, args.json, hide=("repeats",))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
