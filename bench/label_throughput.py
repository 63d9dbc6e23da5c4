"""Label throughput on this machine: the same images, model, imgsz and threads, three ways.

  (a) the workflow users start from: YOLO(w).predict(source=dir, stream=True, save_txt=True, conf=...)
  (b) ssl_ray's label stage end to end (listing -> decode tasks -> actor pool -> Parquet, selection)
  (c) the model-forward bound: pre-decoded, pre-letterboxed uint8 batches, bare forward, best batch

Also the peak memory (PSS, summed over every Ray process) of (b) for a pool of N and 4N images.

    .venv/bin/python bench/label_throughput.py --n 400 --imgsz 160
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("YOLO_OFFLINE", "1")


def make_pool(root: Path, n: int, imgsz: int) -> Path:
    from ssl_ray.synth import SynthSpec, generate

    generate(root, SynthSpec(n_train=1, n_val=1, n_pool=n, imgsz=imgsz, seed=7))
    return root / "images" / "pool"


def bench_predict(weights: str, pool: Path, imgsz: int, floor: float, work: Path) -> float:
    from ssl_ray.runtime import prepare_ultralytics

    ultralytics = prepare_ultralytics(work / "ul", threads=1)
    start = time.perf_counter()
    model = ultralytics.YOLO(weights)
    n = 0
    for _ in model.predict(source=str(pool), stream=True, save_txt=True, conf=floor, imgsz=imgsz, device="cpu",
                           project=str(work / "predict"), name="p", exist_ok=True, verbose=False):
        n += 1
    return n / (time.perf_counter() - start)


def bench_forward(weights: str, pool: Path, imgsz: int, work: Path) -> tuple[float, int]:
    import numpy as np
    import torch

    from ssl_ray.boxes import letterbox
    from ssl_ray.images import decode_rgb
    from ssl_ray.teacher import Teacher

    teacher = Teacher(weights, str(work), threads=1)
    images = np.stack([letterbox(decode_rgb(p.read_bytes()), imgsz)[0] for p in sorted(pool.iterdir())])
    best = (0.0, 0)
    for bs in (1, 8, 16, 32, 64):
        x = torch.from_numpy(images[:bs]).permute(0, 3, 1, 2).float() / 255
        with torch.inference_mode():
            teacher.backend(x)  # warm-up
            reps = max(1, 128 // bs)
            start = time.perf_counter()
            for _ in range(reps):
                teacher.backend(x)
        best = max(best, (reps * bs / (time.perf_counter() - start), bs))
    return best


class RayMemory:
    """Peak of the summed PSS of every Ray process (raylet, GCS, workers, actors), sampled."""

    def __init__(self, period: float = 0.25):
        self.peak, self.period, self._stop = 0, period, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in psutil.process_iter(["cmdline"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if "ray" in cmd and ("ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "ray/_private" in cmd
                                     or "default_worker" in cmd or "dashboard" in cmd):
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.Error, OSError):
                        pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def bench_stage(weights: str, pool: Path, imgsz: int, floor: float, work: Path, tag: str) -> tuple[float, int, dict]:
    from ssl_ray.config import load_config
    from ssl_ray.label import label_pool
    from ssl_ray.storage import Store

    demo = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
    cfg = load_config(demo, [f"pool.sources=[{pool}]", f"output.dir={work / tag}", f"output.cache_dir={work / 'cache'}",
                             f"model.imgsz={imgsz}", f"label.score_floor={floor}", "label.batch_size=32"])
    with RayMemory() as mem:
        summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights)
    return summary["items_per_s"], mem.peak, summary


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--floor", type=float, default=0.05)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-bench-"))
    try:
        from ssl_ray.runtime import prepare_ultralytics, start_ray

        ultralytics = prepare_ultralytics(work / "ul", threads=1)
        weights = str(work / "yolo26n.pt")
        ultralytics.YOLO("yolo26n.yaml").save(weights)
        pool_n = make_pool(work / "n", args.n, args.imgsz)
        pool_4n = make_pool(work / "4n", 4 * args.n, args.imgsz)

        a = bench_predict(weights, pool_n, args.imgsz, args.floor, work)
        c, best_bs = bench_forward(weights, pool_n, args.imgsz, work)
        start_ray(num_cpus=8, log_to_driver=False)
        b, mem_n, _ = bench_stage(weights, pool_n, args.imgsz, args.floor, work, "run_n")
        b4, mem_4n, _ = bench_stage(weights, pool_4n, args.imgsz, args.floor, work, "run_4n")
        figures = {
            "n": args.n, "imgsz": args.imgsz, "cores": os.cpu_count(),
            "a_predict_stream_save_txt_img_s": round(a, 1), "b_ssl_ray_stage_img_s": round(b, 1),
            "b_ssl_ray_stage_4n_img_s": round(b4, 1), "c_forward_bound_img_s": round(c, 1), "c_best_batch": best_bs,
            "b_over_a": round(b / a, 2), "b_over_c": round(b / c, 2), "b4n_over_c": round(b4 / c, 2),
            "ray_peak_pss_mib_n": round(mem_n / 2**20), "ray_peak_pss_mib_4n": round(mem_4n / 2**20),
            "memory_growth": round(mem_4n / mem_n - 1, 3),
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
