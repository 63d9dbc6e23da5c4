"""Which Ray processes the label stage's memory is in, for a pool of N and 4N images.

The same stage and pools as `bench/label_throughput.py` (untimed), with each Ray process's
peak PSS recorded and summed by what it runs (the inference actor, decode tasks, idle
workers, Ray Data's metadata tasks, raylet, ...). A worker's title changes with what it
runs, so one process is counted under each kind it ran as, and a sum of per-process peaks
overstates the simultaneous total: compare a kind between N and 4N, not the sums.

    .venv/bin/python bench/label_memory_by_process.py --n 1000
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import label_throughput as lt  # noqa: E402  (the same pools, teacher and fresh clusters)

KINDS = ("MapWorker", "ray::IDLE", "ray::Map", "ray::Write", "raylet", "gcs_server", "dashboard", "log_monitor")


def kind_of(cmd: str) -> str:
    return next((k for k in KINDS if k in cmd), cmd.split()[0][:48])


class PeakByKind(lt.RayMemory):
    """Peak PSS of every Ray process while running, by kind (RayMemory's sampling thread)."""

    def __init__(self, period: float = 0.25):
        self.by_process: collections.Counter = collections.Counter()  # (kind, pid) -> peak PSS
        super().__init__(period)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            for p in psutil.process_iter(["cmdline", "pid"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if self.is_ray(cmd):
                    try:
                        pss = p.memory_full_info().pss
                    except (psutil.Error, OSError):
                        continue
                    key = (kind_of(cmd), p.info["pid"])
                    self.by_process[key] = max(self.by_process[key], pss)
            self._stop.wait(self.period)

    def by_kind(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for (kind, _), pss in self.by_process.items():
            entry = out.setdefault(kind, {"processes": 0, "mib": 0})
            entry["processes"] += 1
            entry["mib"] += round(pss / 2**20)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["mib"]))


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
            lt.fresh_cluster(8)
            with PeakByKind() as peak:
                label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights, names=lt.teacher_classes(weights))
            result[f"{tag}={n}"] = peak.by_kind()
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
