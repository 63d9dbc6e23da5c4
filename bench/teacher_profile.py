"""Where an inference actor's call spends its time, per phase, for a trained teacher that finds
objects against an untrained one that finds nothing (the open question of the GPU runs: the
stage with a trained teacher at 640 px ran at 17-19 images/s on an H200, the untrained at
139-388).

The inference actor's call, phase by phase, on the same batch of 640-px source-domain scenes
(the bundled source-pretrained teacher finds ~40-50 boxes per scene at the 0.05 floor), each
phase timed on its own with the device synchronized before and after:

  upload    the uint8 batch to the device (pinned, as the teacher does it)
  forward   the model on the uploaded batch
  nms       Ultralytics' non_max_suppression at label.score_floor, and the one host copy
  predict   `Teacher.predict` whole (upload + forward + nms + host copy + split)
  views     `detect_with_views` with the flip view (the teacher on 2x the batch, then fusion)
  refine    `refine_detections` with an untrained box refiner, `refine.passes` 2
  rows      `raw_table`: the detections as the stage's raw rows

Per phase: milliseconds per image (the median of --repeat calls). The phases that depend on
the number of boxes (nms, views' fusion, refine, rows) are where a trained teacher can differ.

    .venv/bin/python -m bench.teacher_profile --batch 16
    python -m bench.teacher_profile --device cuda --batch 64 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SOURCE_TEACHER, emit, untrained_teacher


def scenes(n: int, imgsz: int):
    """n source-domain scenes at imgsz, uint8 (n, imgsz, imgsz, 3): what the bundled teacher
    was trained to find."""
    import numpy as np

    from ssl_ray.synth import TASK, SynthSpec, render

    spec = SynthSpec(imgsz=imgsz, domain="source", seed=0, **TASK)
    return np.stack([np.asarray(render(np.random.default_rng([0, 3, i]), spec)[0]) for i in range(n)])


def batch_columns(images) -> dict:
    """The decoded batch as the stage hands it to the actor: nothing rejected, no letterbox."""
    import numpy as np

    n, h, w = images.shape[:3]
    return {
        "image_id": np.array([f"{i:032x}" for i in range(n)]),
        "uri": np.array([f"scene_{i}.jpg" for i in range(n)]),
        "width": np.full(n, w, np.int32),
        "height": np.full(n, h, np.int32),
        "video_uri": np.array([""] * n),
        "frame_index": np.full(n, -1, np.int64),
        "timestamp_s": np.full(n, np.nan),
        "ratio": np.ones(n),
        "pad_x": np.zeros(n),
        "pad_y": np.zeros(n),
        "reject_reason": np.array([""] * n),
        "reject_detail": np.array([""] * n),
        "image": images,
    }


def profile(weights: str, images, device: str, floor: float, repeat: int, work: Path) -> dict:
    import torch
    from ultralytics.utils import nms

    from ssl_ray.adapters.refiner import BoxRefiner
    from ssl_ray.adapters.teacher import Teacher
    from ssl_ray.config import RefineConfig
    from ssl_ray.core.consistency import detect_with_views, parse_views
    from ssl_ray.core.raw import raw_table
    from ssl_ray.stages.refine import refine_detections

    teacher = Teacher(weights, str(work), device=device)
    dev = teacher.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n, h, w = images.shape[:3]
    views = parse_views(["flip"], w, h)
    refiner = BoxRefiner(RefineConfig(passes=2), device=str(dev))
    predict = lambda batch: teacher.predict(batch, floor)  # noqa: E731

    def upload():
        x = torch.from_numpy(images)
        return x.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else x

    with torch.inference_mode():
        x = upload().permute(0, 3, 1, 2)
        x = (x.half() if teacher.backend.fp16 else x.float()) / 255.0
        out = teacher.backend(x)
    dets = predict(images)
    fused = detect_with_views(predict, images, views, 0.5)
    phases = {
        "upload": upload,
        "forward": lambda: teacher.backend(x),
        "nms": lambda: [
            d.float().cpu()
            for d in nms.non_max_suppression(out, floor, 0.7, max_det=300, nc=0, end2end=teacher.backend.end2end)
        ],
        "predict": lambda: predict(images),
        "views": lambda: detect_with_views(predict, images, views, 0.5),
        "refine": lambda: refine_detections(refiner, images, fused),
        "rows": lambda: raw_table(batch_columns(images), fused),
    }
    ms = {}
    with torch.inference_mode():
        for name, fn in phases.items():
            fn()  # warm
            times = []
            for _ in range(repeat):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times.append(time.perf_counter() - t0)
            ms[name] = round(1000 * statistics.median(times) / n, 3)
    return {
        "boxes_per_image": round(sum(len(d) for d in dets) / n, 1),
        "fused_boxes_per_image": round(sum(len(d) for d in fused) / n, 1),
        "ms_per_image": ms,
    }


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.teacher_profile")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--floor", type=float, default=0.05, help="label.score_floor")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-teacher-profile-"))
    images = scenes(args.batch, args.imgsz)
    figures = {"device": args.device, "imgsz": args.imgsz, "batch": args.batch, "floor": args.floor}
    if args.device.startswith("cuda"):
        figures["device_name"] = torch.cuda.get_device_name(0)
    for name, weights in (("trained", str(SOURCE_TEACHER)), ("untrained", untrained_teacher(work))):
        figures[name] = profile(weights, images, args.device, args.floor, args.repeat, work)
        print(name, figures[name], flush=True)
    emit(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
