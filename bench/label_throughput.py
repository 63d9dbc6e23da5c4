"""Label throughput on this machine: the same images, model, imgsz and threads, three ways.

  (a) the workflow users start from: YOLO(w).predict(source=dir, stream=True, save_txt=True, conf=...)
  (b) ssl_ray's label stage end to end (listing -> decode tasks -> actor pool -> Parquet, selection),
      and its steady state: the 4N run's rate from its first inference batch to its last; at
      label.batch_size's default of 64 (--stage-batch; "best": (c)'s best batch, as until 2026-11-26)
  (c) the model-forward bound: pre-decoded, pre-letterboxed uint8 batches, bare forward, best batch
      (picked by a short sweep), timed right before (b) and again right after it: the mean of the two;
      in a fresh process with glibc's heap set up as (b)'s inference actor has it (label.keep_freed_heap)

Also the peak memory (PSS, summed over every Ray process) of (b) for a pool of N and 4N images.

    .venv/bin/python bench/label_throughput.py --n 1000 --repeat 3   # docs/benchmarks.md's latest run

On a GPU machine (one inference actor per GPU share, fp16; (a) on the same GPU):

    python bench/label_throughput.py --device cuda --n 2000 --imgsz 640 --gpus-per-actor 1 --no-memory

The box refiner's cost (`--refiner`, with a trained teacher so that there are boxes to refine):

    .venv/bin/python bench/label_throughput.py --n 1000 --imgsz 96 --no-memory --views flip --set refine.passes=2 \
        --weights /tmp/gain/0-baseline-e600/rounds/r000/weights/best.pt --refiner RUN/refiner/refiner.pt
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("YOLO_OFFLINE", "1")

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"


def make_pool(root: Path, n: int, imgsz: int) -> Path:
    """n synthetic pool images (the generator's own seeds), rendered in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    folder = root / "images" / "pool"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = [(folder, imgsz, range(i, min(i + 250, n))) for i in range(0, n, 250)]
    with ProcessPoolExecutor(max(1, os.cpu_count() or 1)) as ex:
        list(ex.map(_render_chunk, chunks))
    return folder


def _render_chunk(job) -> None:
    import numpy as np

    from ssl_ray.synth import SynthSpec, render

    folder, imgsz, indices = job
    spec = SynthSpec(n_train=1, n_val=1, n_pool=1, imgsz=imgsz, seed=7)
    for i in indices:
        image, _ = render(np.random.default_rng([spec.seed, 2, i]), spec)
        image.save(folder / f"pool_{i:06d}.jpg", quality=90)


def bench_predict(weights: str, pool: Path, imgsz: int, floor: float, work: Path, device: str) -> tuple[float, int]:
    import torch

    from ssl_ray.runtime import prepare_ultralytics

    ultralytics = prepare_ultralytics(work / "ul", threads=max(1, (os.cpu_count() or 2) - 1))  # its default
    threads = torch.get_num_threads()
    start = time.perf_counter()
    model = ultralytics.YOLO(weights)
    n = 0
    for _ in model.predict(source=str(pool), stream=True, save_txt=True, conf=floor, imgsz=imgsz, device=device,
                           project=str(work / "predict"), name="p", exist_ok=True, verbose=False):
        n += 1
    return n / (time.perf_counter() - start), threads


def bench_forward(weights: str, pool: Path, imgsz: int, work: Path, threads: int,
                  device: str, keep_heap: bool, batch: int | None = None) -> tuple[float, int, float | None]:
    """(images/s, best batch, the sweep's own figure for it) of the bare model forward, in a
    fresh process set up as the stage's inference actor is (`keep_heap`: glibc keeps freed
    memory, `label.keep_freed_heap`); (a) in this process keeps glibc's defaults."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool_:
        return pool_.submit(_forward, weights, pool, imgsz, work, threads, device, keep_heap, batch).result()


def _forward(weights: str, pool: Path, imgsz: int, work: Path, threads: int,
             device: str, keep_heap: bool, batch: int | None) -> tuple[float, int, float | None]:
    """`bench_forward` inside its process.

    The batch sizes are swept with ~128 images each (1024 on a GPU), and the best one is then
    timed again on 8 times as many: the fastest of a sweep of short, noisy timings overstates
    that batch's rate (its winning sample was partly luck), so the sweep picks the batch and
    the fresh timing measures it. Given `batch`, only that batch is timed (no sweep)."""
    import numpy as np
    import torch

    from ssl_ray.boxes import letterbox
    from ssl_ray.images import decode_rgb
    from ssl_ray.runtime import keep_freed_heap
    from ssl_ray.teacher import Teacher

    if keep_heap:
        keep_freed_heap()

    teacher = Teacher(weights, str(work), device=device, threads=threads)
    images = np.stack([letterbox(decode_rgb(p.read_bytes()), imgsz)[0] for p in sorted(pool.iterdir())[:256]])
    gpu = teacher.device.type == "cuda"
    sync = torch.cuda.synchronize if gpu else (lambda: None)

    def rate(bs: int, n_images: int) -> float:
        x = torch.from_numpy(images[:bs]).to(teacher.device).permute(0, 3, 1, 2)  # on the device already
        x = (x.half() if teacher.backend.fp16 else x.float()) / 255
        with torch.inference_mode():
            teacher.backend(x)  # warm-up
            sync()
            reps = max(1, n_images // bs)
            start = time.perf_counter()
            for _ in range(reps):
                teacher.backend(x)
            sync()
        return reps * bs / (time.perf_counter() - start)

    sweep_n = 1024 if gpu else 128
    if batch:
        return rate(batch, 8 * sweep_n), batch, None
    sweep = {bs: rate(bs, sweep_n) for bs in (1, 8, 16, 32, 64) + ((128, 256) if gpu else ()) if bs <= len(images)}
    best = max(sweep, key=sweep.get)
    return rate(best, 8 * sweep_n), best, sweep[best]


class RayMemory:
    """Peak of the summed PSS of every Ray process (raylet, GCS, workers, actors), sampled."""

    def __init__(self, period: float = 0.25):
        self.peak, self.period, self._stop = 0, period, threading.Event()
        self.timeline: list[tuple[float, int]] = []  # (perf_counter, summed PSS) per sample
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in psutil.process_iter(["cmdline"]):
                if self.is_ray(" ".join(p.info["cmdline"] or [])):
                    try:
                        total += p.memory_full_info().pss
                    except (psutil.Error, OSError):
                        pass
            self.peak = max(self.peak, total)
            self.timeline.append((time.perf_counter(), total))
            self._stop.wait(self.period)

    @staticmethod
    def is_ray(cmd: str) -> bool:
        return "ray" in cmd and ("ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd or "ray/_private" in cmd
                                 or "default_worker" in cmd or "dashboard" in cmd)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def fresh_cluster(num_cpus: int | None = 8, workers_soft_limit: int | None = None) -> None:
    """Every measured run starts from the same state: a new local cluster, Ray Data warmed
    (its one-off first-use cost lands on no run). The peak memory depends on which worker
    processes are alive, and timings on which are already started. `workers_soft_limit`:
    the run's `ray.num_workers_soft_limit` (so `--also` can compare it)."""
    from ssl_ray.runtime import start_ray, stop_ray

    stop_ray()
    ray = start_ray(num_cpus=num_cpus, workers_soft_limit=workers_soft_limit, log_to_driver=False)
    ray.data.range(1).materialize()


def bench_stage(weights: str, pool: Path, args, batch: int, work: Path, tag: str,
                overrides: list[str] = (), refiner: str | None = None) -> tuple[float, float, int, dict]:
    """(seconds, images/s, peak Ray PSS bytes, summary) of one label-stage run; `overrides`
    change its config (e.g. consistency views); `refiner`: a saved box refiner the stage applies."""
    from ssl_ray.config import load_config
    from ssl_ray.label import label_pool
    from ssl_ray.storage import Store

    cfg = load_config(DEMO, [f"pool.sources=[{pool}]", f"output.dir={work / tag}", f"output.cache_dir={work / 'cache'}",
                             f"model.imgsz={args.imgsz}", f"label.score_floor={args.floor}",
                             f"label.batch_size={batch}", f"label.num_cpus_per_actor={args.threads}",
                             *(f"label.num_gpus_per_actor={args.gpus_per_actor}", f"label.min_actors={args.actors}",
                               f"label.max_actors={args.actors}", "label.decode_tasks=null")
                             * (args.device != "cpu"),
                             *overrides])
    num_cpus = 8 if args.device == "cpu" else None  # a GPU machine: all its cores
    names = teacher_classes(weights)
    fresh_cluster(num_cpus, cfg.ray.num_workers_soft_limit)
    start = time.perf_counter()
    summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights, names=names, refiner=refiner)
    seconds = time.perf_counter() - start
    if args.no_memory:
        return seconds, summary["items"] / seconds, 0, summary
    # Memory in a second, untimed run: sampling PSS reads every process's smaps (it would slow
    # a timed run here).
    fresh_cluster(num_cpus, cfg.ray.num_workers_soft_limit)
    with RayMemory() as mem:
        label_pool(cfg, Store(str(work / f"{tag}-mem")), round=1, weights=weights, names=names, refiner=refiner)
    return seconds, summary["items"] / seconds, mem.peak, summary


def side_runs(views: list[str], also: list[str], refiner: str | None) -> dict[str, tuple[list[str], str | None]]:
    """The stage runs timed after the plain one, in order: name -> (config overrides, refiner).
    The refiner runs with the same views as the `views` run, right after it, so that the two
    differ only by the refiner."""
    runs: dict[str, tuple[list[str], str | None]] = {}
    view_overrides = [f"label.consistency_views=[{', '.join(views)}]"] if views else []
    if views:
        runs["views"] = (view_overrides, None)
    if refiner:
        runs["refiner"] = (view_overrides, refiner)
    if also:
        runs["also"] = (list(also), None)
    return runs


def cpu_stage_args(imgsz: int) -> argparse.Namespace:
    """What `bench_stage` reads from the command line: one CPU actor on 1 thread, no memory runs."""
    return argparse.Namespace(imgsz=imgsz, floor=0.05, threads=1, device="cpu", gpus_per_actor=1.0, actors=1,
                              no_memory=True)


def emit(figures: dict, path: str | None, hide: tuple[str, ...] = ()) -> None:
    """Print the figures (less the keys in `hide`) and write all of them to `path` as JSON."""
    print(json.dumps({k: v for k, v in figures.items() if k not in hide}, indent=2))
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")


def untrained_teacher(work: Path) -> str:
    """YOLO26n from Ultralytics' bundled yaml, saved as a .pt (the path real checkpoints take)."""
    from ssl_ray.runtime import prepare_ultralytics

    weights = str(work / "yolo26n.pt")
    prepare_ultralytics(work / "ul").YOLO("yolo26n.yaml").save(weights)
    return weights


@functools.lru_cache
def teacher_classes(weights: str) -> list[str]:
    """The teacher's classes, passed to the stage as the rounds driver passes the labeled set's
    (the stage then checks them in its inference actors)."""
    from ssl_ray.runtime import prepare_ultralytics

    names = prepare_ultralytics(Path(weights).parent / "ul").YOLO(weights).names
    return [names[i] for i in sorted(names)]


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device != "cpu" else "cpu"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--floor", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for (b)'s actor and (c)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: (a), (b)'s actors and (c) on the GPU")
    ap.add_argument("--gpus-per-actor", type=float, default=1.0, help="with --device cuda")
    ap.add_argument("--actors", type=int, default=1, help="inference actors, with --device cuda")
    ap.add_argument("--stage-batch", default="64", help="(b)'s label.batch_size, or 'best': (c)'s best batch")
    ap.add_argument("--no-memory", action="store_true", help="skip the untimed memory runs")
    ap.add_argument("--views", nargs="*", default=[],
                    help="also time (b) with these consistency views (e.g. flip): their cost, side by side")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every (b) run (e.g. ray.data_object_store_gb=0.25)")
    ap.add_argument("--also", nargs="*", default=[], metavar="KEY=VALUE",
                    help="also run (b) at N and 4N with these config overrides (e.g. label.actor_calls=1), "
                         "side by side: steady state, end to end, memory growth")
    ap.add_argument("--weights", help="a teacher trained on the synthetic shapes at --imgsz, instead of an "
                                          "untrained YOLO26n (which finds nothing: no boxes to refine)")
    ap.add_argument("--refiner", help="also time (b) with --views and this saved box refiner (a run's "
                                      "refiner/refiner.pt; --set refine.passes=2 etc. apply), against --views alone")
    ap.add_argument("--repeat", type=int, default=1, help="measure (a), (c) and (b) this many times in turn; "
                                                            "medians are reported, with the ratios' ranges")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    from ssl_ray.config import load_config

    work = Path(tempfile.mkdtemp(prefix="ssl_ray-bench-"))
    try:
        weights = args.weights or untrained_teacher(work)
        # (c) runs as the stage's actor does: with its heap kept or not (docs/benchmarks.md)
        keep_heap = load_config(DEMO, args.set).label.keep_freed_heap
        pool_n = make_pool(work / "n", args.n, args.imgsz)
        pool_4n = make_pool(work / "4n", 4 * args.n, args.imgsz)

        reps = []  # each repetition measures (a), (c) and (b) at N and 4N, one after another
        for rep in range(args.repeat):  # each run its own output folder: a finished stage is only read back
            a, a_threads = bench_predict(weights, pool_n, args.imgsz, args.floor, work, args.device)
            c, best_bs, c_sweep = bench_forward(weights, pool_n, args.imgsz, work, args.threads, args.device, keep_heap)
            # The stage runs at its configured batch: it pays a fixed cost per batch outside the
            # forward (batch 16 ran at 0.75 of 64, bench/stage_batch.py), while (c)'s sweep is
            # flat within noise from 16 to 64 and picks among them by chance.
            stage_bs = best_bs if args.stage_batch == "best" else int(args.stage_batch)
            t_n, b, mem_n, _ = bench_stage(weights, pool_n, args, stage_bs, work, f"run_n{rep}", args.set)
            t_4n, b4, mem_4n, summary_4n = bench_stage(weights, pool_4n, args, stage_bs, work, f"run_4n{rep}",
                                                       args.set)
            # (c) again right after (b), same batch: this machine's speed drifts by ~10 % over
            # minutes (bench/forward_neighbours.py), so (b) is compared with the mean of (c)
            # before and after it.
            c_before = c
            c_after, _, _ = bench_forward(weights, pool_n, args.imgsz, work, args.threads, args.device, keep_heap,
                                          best_bs)
            c = (c_before + c_after) / 2
            # The steady state: the 4N run's rate from its first inference batch to its last (Ray
            # Data's stats), every part of the pipeline running; start-up and finalize excluded.
            # The marginal rate of the extra 3N images between two runs is printed beside it as a
            # cross-check; it carries both runs' start-up noise (0.84-1.24 of the steady state on
            # 2026-11-26, docs/benchmarks.md).
            steady = summary_4n["inference_items_per_s"]
            marginal = 3 * args.n / (t_4n - t_n)
            reps.append({
                "batch_b": stage_bs, "batch_c": best_bs, "a_predict_stream_save_txt_img_s": round(a, 1),
                "b_stage_end_to_end_n_img_s": round(b, 1), "b_stage_end_to_end_4n_img_s": round(b4, 1),
                "b_stage_seconds_n": round(t_n, 1), "b_stage_seconds_4n": round(t_4n, 1),
                "b_stage_steady_img_s": round(steady, 1), "b_stage_marginal_img_s": round(marginal, 1),
                # start-up (listing, Ray Data, the actor's import of torch and model load) + finalize
                "b_stage_outside_inference_s_4n": round(t_4n - summary_4n["inference_seconds"], 1),
                "c_forward_bound_img_s": round(c, 1), "c_before_img_s": round(c_before, 1),
                "c_after_img_s": round(c_after, 1), "c_sweep_best_img_s": round(c_sweep, 1),
                "b4n_over_a": round(b4 / a, 2), "b_steady_over_a": round(steady / a, 2),
                "b4n_over_c": round(b4 / c, 2), "b_steady_over_c": round(steady / c, 2),
                "b_steady_over_c_sweep": round(steady / c_sweep, 2),  # against the sweep's figure, as until 2026-11-26 17:00
                "b_steady_over_c_before": round(steady / c_before, 2),  # (c) before (b) alone, as until 2026-11-26 20:50
                "ray_peak_pss_mib_n": round(mem_n / 2**20), "ray_peak_pss_mib_4n": round(mem_4n / 2**20),
                "memory_growth": round(mem_4n / mem_n - 1, 3) if mem_n else None,
            })
        # Each figure is the median over the repetitions (ratios are taken within a repetition,
        # then their median); the spread of the ratios is reported beside them.
        figures = {"n": args.n, "imgsz": args.imgsz, "cores": os.cpu_count(), "device": device_name(args.device),
                   "teacher": args.weights or "yolo26n.yaml (untrained)", "refiner_weights": args.refiner,
                   "set": args.set,
                   "actors": args.actors if args.device != "cpu" else 1, "threads_a": a_threads,
                   "threads_b_c": args.threads, "keep_freed_heap_b_c": keep_heap, "repeat": args.repeat}
        figures.update({k: statistics.median(r[k] for r in reps) for k in reps[0] if reps[0][k] is not None})
        if args.repeat > 1:
            figures["range"] = {k: [min(r[k] for r in reps), max(r[k] for r in reps)]
                                for k in ("b4n_over_a", "b_steady_over_c", "b_steady_over_c_before",
                                          "b_steady_over_c_sweep", "memory_growth")
                                if reps[0][k] is not None}
            figures["repeats"] = reps
        stage_bs, steady, b4 = reps[-1]["batch_b"], figures["b_stage_steady_img_s"], figures["b_stage_end_to_end_4n_img_s"]
        # The same stage again, right after, with other settings: their effect, side by side.
        for name, (overrides, refiner) in side_runs(args.views, args.also, args.refiner).items():
            _, _, mem_vn, _ = bench_stage(weights, pool_n, args, stage_bs, work, f"{name}_n", [*args.set, *overrides],
                                          refiner)
            _, bv4, mem_v4n, summary_v = bench_stage(weights, pool_4n, args, stage_bs, work, f"{name}_4n",
                                                     [*args.set, *overrides], refiner)
            steady_v = summary_v["inference_items_per_s"]
            figures.update({name: overrides, f"b_{name}_end_to_end_4n_img_s": round(bv4, 1),
                            f"b_{name}_steady_img_s": round(steady_v, 1),
                            f"{name}_steady_over_plain": round(steady_v / steady, 2),
                            f"{name}_end_to_end_4n_over_plain": round(bv4 / b4, 2),
                            f"{name}_memory_growth": round(mem_v4n / mem_vn - 1, 3) if mem_vn else None})
            if name == "refiner" and args.views:  # its cost: against the same views without it, run just before
                figures.update({"refiner_steady_over_views": round(steady_v / figures["b_views_steady_img_s"], 2),
                                "refiner_end_to_end_4n_over_views":
                                    round(bv4 / figures["b_views_end_to_end_4n_img_s"], 2)})
        emit(figures, args.json)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
