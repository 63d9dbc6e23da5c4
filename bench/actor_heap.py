"""`label.keep_freed_heap` in the label stage itself: on and off, side by side.

One pool of --n images; the stage at batch 64 on a fresh local cluster, the heap kept and
not, in alternating order over --repeat repetitions. Per run: steady-state and end-to-end
images/s (as `bench/label_throughput.py` defines them), and the inference actor's minor
page faults and CPU seconds, read from /proc while it runs (its last reading).

    .venv/bin/python bench/actor_heap.py --n 4000 --repeat 2 --json docs/results/actor-heap-n4000.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import label_throughput as lt  # noqa: E402


class ActorCounters(threading.Thread):
    """The last (minor faults, CPU seconds) of the inference actor started after `since`."""

    def __init__(self, since: float):
        super().__init__(daemon=True)
        self.since, self.last, self.stop = since, None, threading.Event()

    def run(self):
        import psutil

        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            for p in psutil.process_iter(["cmdline", "create_time"]):
                if "MapBatches(_Predict)" in " ".join(p.info["cmdline"] or []) and p.info["create_time"] >= self.since:
                    try:
                        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    self.last = (int(fields[7]), (int(fields[11]) + int(fields[12])) / tick)  # minflt, utime + stime
            time.sleep(0.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    stage_args = lt.cpu_stage_args(args.imgsz)
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-actor-heap-"))
    try:
        weights = lt.untrained_teacher(work)
        pool = lt.make_pool(work / "pool", args.n, args.imgsz)
        runs = []
        for rep in range(args.repeat):
            for keep in (True, False) if rep % 2 == 0 else (False, True):
                counters = ActorCounters(time.time() - 1)
                counters.start()
                _, rate, _, summary = lt.bench_stage(weights, pool, stage_args, args.batch, work, f"r{rep}-{keep}",
                                                     [f"label.keep_freed_heap={str(keep).lower()}"])
                counters.stop.set()
                counters.join()
                faults, cpu = counters.last or (None, None)
                runs.append({"rep": rep, "keep_freed_heap": keep, "steady_img_s": round(summary["inference_items_per_s"], 1),
                             "end_to_end_img_s": round(rate, 1), "actor_minor_faults": faults, "actor_cpu_s": cpu})
                print(json.dumps(runs[-1]), flush=True)
        pairs = [(k, d) for k in runs if k["keep_freed_heap"] for d in runs
                 if not d["keep_freed_heap"] and d["rep"] == k["rep"]]
        figures = {"n": args.n, "imgsz": args.imgsz, "batch": args.batch, "runs": runs,
                   "steady_keep_over_default": [round(k["steady_img_s"] / d["steady_img_s"], 2) for k, d in pairs],
                   "end_to_end_keep_over_default": [round(k["end_to_end_img_s"] / d["end_to_end_img_s"], 2)
                                                    for k, d in pairs],
                   "median_steady_keep_over_default": statistics.median(k["steady_img_s"] / d["steady_img_s"]
                                                                        for k, d in pairs)}
        lt.emit(figures, args.json, hide=("runs",))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
