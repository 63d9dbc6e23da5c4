"""How steady is the bare model forward on this machine, alone and beside other work?

The label bench's b/c compares two timings taken minutes apart. This script measures what
such a comparison can resolve, with label_throughput.py's model, images and threads:

  drift       (c)'s figure (one batch size, 1,024 images a timing) several times in a row,
              in one process: how far two timings of the same work differ
  neighbours  the forward of one batch, timed again and again while a second process on
              the other core is switched on and off every other timing: spin (a pure
              Python loop), decode (decoding and letterboxing the pool's JPEGs, the stage's
              decode tasks' work) or memory (numpy passes over a 64 MiB array). Each
              neighbour's figure is the median forward time with it on over with it off.

    .venv/bin/python bench/forward_neighbours.py --json docs/results/forward-neighbours.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import label_throughput  # noqa: E402  (the same pool, teacher and forward timing)

NEIGHBOURS = ("spin", "decode", "memory")


def neighbour(kind: str, on, files: list[str], imgsz: int) -> None:
    """Works while `on` is set, idles (5 ms sleeps) while it is not."""
    import numpy as np

    from ssl_ray.boxes import letterbox
    from ssl_ray.images import decode_rgb

    blobs = [Path(f).read_bytes() for f in files]
    array = np.ones(2**24, np.float32)
    while True:
        if not on.is_set():
            time.sleep(0.005)
        elif kind == "spin":
            sum(range(20_000))
        elif kind == "decode":
            for blob in blobs[:8]:
                letterbox(decode_rgb(blob), imgsz)
        else:
            array *= 1.0001


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--drift", type=int, default=6, help="timings of (c) in a row")
    ap.add_argument("--toggles", type=int, default=24, help="forward timings per neighbour, half with it on")
    ap.add_argument("--json")
    args = ap.parse_args()
    import numpy as np
    import torch

    from ssl_ray.boxes import letterbox
    from ssl_ray.images import decode_rgb
    from ssl_ray.teacher import Teacher

    work = Path(tempfile.mkdtemp(prefix="ssl_ray-neighbours-"))
    try:
        weights = label_throughput.untrained_teacher(work)
        pool = label_throughput.make_pool(work / "n", 256, args.imgsz)
        # glibc's default heap, as in this process below and as recorded (docs/results/forward-neighbours.json)
        drift = [round(label_throughput.bench_forward(weights, pool, args.imgsz, work, args.threads, "cpu",
                                                      keep_heap=False, batch=args.batch)[0], 1)
                 for _ in range(args.drift)]
        files = [str(p) for p in sorted(pool.iterdir())]
        teacher = Teacher(weights, str(work), device="cpu", threads=args.threads)
        images = np.stack([letterbox(decode_rgb(Path(f).read_bytes()), args.imgsz)[0] for f in files[:args.batch]])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        ratios, times = {}, {}
        for kind in NEIGHBOURS:
            on = mp.Event()
            proc = mp.Process(target=neighbour, args=(kind, on, files, args.imgsz), daemon=True)
            proc.start()
            ms = {True: [], False: []}
            with torch.inference_mode():
                teacher.backend(x)  # warm-up
                for k in range(args.toggles):
                    state = k % 2 == 1
                    (on.set if state else on.clear)()
                    time.sleep(0.3)  # the neighbour is running (or idle) before the timing starts
                    start = time.perf_counter()
                    teacher.backend(x)
                    ms[state].append(1000 * (time.perf_counter() - start) / args.batch)
            proc.terminate()
            off, with_it = statistics.median(ms[False]), statistics.median(ms[True])
            times[kind] = {"off_ms_per_image": round(off, 2), "on_ms_per_image": round(with_it, 2)}
            ratios[kind] = round(with_it / off, 3)
        figures = {"imgsz": args.imgsz, "batch": args.batch, "threads": args.threads, "cores": os.cpu_count(),
                   "drift_img_s": drift, "drift_max_over_min": round(max(drift) / min(drift), 3),
                   "neighbour_slowdown": ratios, "neighbour_ms": times}
        label_throughput.emit(figures, args.json)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
