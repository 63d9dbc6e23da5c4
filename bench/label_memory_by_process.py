"""Which Ray processes the label stage's memory and CPU are in, for a pool of N and 4N images.

The same stage and pools as `bench/label_throughput.py` (untimed). Every Ray process's PSS
is sampled as `RayMemory` samples it, and at the sample where their sum peaks (the figure
the throughput bench reports) the sum is split by what each process runs then: the
inference actor, decode tasks, idle workers, Ray Data's metadata tasks, raylet, ... Beside
it, the CPU seconds each kind used during the run (the driver, which runs Ray Data's
executor, included; so is this sampler, which runs in it), against the stage's inference
span: is the actor ever short of CPU? A worker is counted under the kind it ran as when
last sampled.

    .venv/bin/python bench/label_memory_by_process.py --n 1000
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
import label_throughput as lt  # noqa: E402  (the same pools, teacher and fresh clusters)

KINDS = ("MapWorker", "ray::IDLE", "ray::Map", "ray::Write", "raylet", "gcs_server", "dashboard", "log_monitor")


def kind_of(cmd: str) -> str:
    return next((k for k in KINDS if k in cmd), cmd.split()[0][:48])


class PeakByKind(lt.RayMemory):
    """RayMemory's sampling, keeping the split by kind of the sample with the highest sum."""

    def __init__(self, period: float = 0.25):
        self.at_peak: dict[str, dict] = {}
        self.cpu: dict[int, list] = {}  # pid -> [kind, CPU seconds at the start or 0, when last seen]
        self._since = time.time()
        super().__init__(period)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            split: dict[str, dict] = {}
            for p in psutil.process_iter(["cmdline", "pid"]):
                cmd = " ".join(p.info["cmdline"] or [])
                driver = p.info["pid"] == os.getpid()
                if not (driver or self.is_ray(cmd)):
                    continue
                try:
                    times = p.cpu_times()
                    pss = p.memory_full_info().pss
                except (psutil.Error, OSError):
                    continue
                kind, used = "driver" if driver else kind_of(cmd), times.user + times.system
                seen = self.cpu.setdefault(p.info["pid"], [kind, used if p.create_time() < self._since else 0.0, 0.0])
                seen[0], seen[2] = kind, used
                if not driver:  # the peak is of Ray's processes, as RayMemory's
                    entry = split.setdefault(kind, {"processes": 0, "bytes": 0})
                    entry["processes"] += 1
                    entry["bytes"] += pss
            total = sum(e["bytes"] for e in split.values())
            if total > self.peak:
                self.peak, self.at_peak = total, split
            self.timeline.append((time.perf_counter(), total))
            self._stop.wait(self.period)

    def summary(self) -> dict:
        kinds = sorted(self.at_peak.items(), key=lambda kv: -kv[1]["bytes"])
        cpu: dict[str, float] = {}
        for kind, first, last in self.cpu.values():
            cpu[kind] = cpu.get(kind, 0.0) + last - first
        return {"peak_mib": round(self.peak / 2**20),
                "at_peak": {k: {"processes": e["processes"], "mib": round(e["bytes"] / 2**20)} for k, e in kinds},
                "cpu_s": {k: round(v, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.1}}


def main() -> int:
    from ssl_ray.config import load_config
    from ssl_ray.label import label_pool
    from ssl_ray.storage import Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-bench-"))
    try:
        weights = lt.untrained_teacher(work)
        demo = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
        result = {}
        for tag, n in (("n", args.n), ("4n", 4 * args.n)):
            pool = lt.make_pool(work / tag, n, args.imgsz)
            cfg = load_config(demo, [f"pool.sources=[{pool}]", f"output.dir={work / f'run_{tag}'}",
                                     f"output.cache_dir={work / 'cache'}", f"model.imgsz={args.imgsz}",
                                     f"label.batch_size={args.batch}", *args.set])
            lt.fresh_cluster(8, cfg.ray.num_workers_soft_limit)
            with PeakByKind() as peak:
                time.sleep(2 * peak.period)  # every process's CPU so far is sampled before the stage
                start = time.perf_counter()
                summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights,
                                     names=lt.teacher_classes(weights))
                seconds = time.perf_counter() - start
            result[f"{tag}={n}"] = {"seconds": round(seconds, 1), "inference_seconds": summary["inference_seconds"],
                                    **peak.summary()}
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
