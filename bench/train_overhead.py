"""Training overhead of ssl_ray's Ray Train stage against plain Ultralytics.

The same data (the YOLO tree the stage builds from Parquet), model, hyper-parameters and
torch threads, trained by (a) `YOLO(model).train(...)` and (b) `train_detector` with one Ray
Train worker. Epoch times come from each run's own results.csv (Ultralytics writes the
cumulative time after every epoch); the first epoch (start-up, dataloader warm-up) is
excluded and the median of the rest compared. Target: b/a <= 1.05.

`--online` also trains (c) the same stage in online mode (`train.ssl: online`: every step a
labeled batch plus an unlabeled batch of as many images, which the teacher labels first),
the held-out images as its unlabeled pool and every teacher box scoring `--online-conf` or
more reliable; c/b is the cost of an online step against a supervised one (same steps per
epoch), printed with the pseudo-boxes per unlabeled image it trained on.

    .venv/bin/python -m bench.train_overhead --epochs 6 --imgsz 128

On a GPU machine (one Ray Train worker on one GPU against `YOLO.train(device=0)`, AMP on):

    python -m bench.train_overhead --device cuda --epochs 4 --imgsz 640 --n-train 1024 --batch 32 --threads 8
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import emit


def epoch_times(results_csv: Path) -> list[float]:
    with open(results_csv) as f:
        cumulative = [float(row["time"]) for row in csv.DictReader(f)]
    return [b - a for a, b in zip([0.0] + cumulative, cumulative)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (1 GPU, AMP on)")
    ap.add_argument("--data-imgsz", type=int, default=160, help="side of the generated images")
    ap.add_argument("--online", action="store_true", help="also (c): the stage in online mode")
    ap.add_argument("--online-conf", type=float, default=0.01, help="(c): reliable teacher boxes from this score")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ssl_ray-bench-train-"))
    try:
        from ssl_ray.adapters.runtime import prepare_ultralytics, start_ray
        from ssl_ray.config import load_config
        from ssl_ray.io.storage import Store
        from ssl_ray.stages.ingest import ingest_labeled
        from ssl_ray.stages.train import TrainSpec, train_detector, work_dir
        from ssl_ray.synth import SynthSpec, generate

        gpu = args.device != "cpu"
        data = generate(
            work / "data", SynthSpec(n_train=args.n_train, n_val=32, n_pool=1, imgsz=args.data_imgsz, seed=3)
        )
        hyper = {"amp": gpu, "plots": False, "mosaic": 1.0, "seed": 0, "deterministic": not gpu}
        demo = Path(__file__).parents[1] / "ssl_ray" / "configs" / "demo.yaml"
        cfg = load_config(
            demo,
            [
                f"labeled.data={data}",
                f"output.dir={work / 'run'}",
                f"output.cache_dir={work / 'cache'}",
                f"model.imgsz={args.imgsz}",
                f"train.epochs={args.epochs}",
                f"train.batch={args.batch}",
                "train.num_workers=1",
                f"train.cpus_per_worker={args.threads}",
                f"train.use_gpu={str(gpu).lower()}",
                f"train.dataloader_workers={args.threads if gpu else 0}",
                f"train.extra={json.dumps(hyper)}",
            ],
        )
        out = Store(cfg.output.dir)
        labeled = ingest_labeled(cfg, out)

        start_ray(num_cpus=8, log_to_driver=False)
        t0 = time.perf_counter()
        train_detector(
            cfg,
            out,
            TrainSpec(
                name="bench",
                train=["labeled/train.parquet"],
                val=["labeled/val.parquet"],
                names=labeled.names,
                weights="yolo26n.yaml",
            ),
        )
        b_total = time.perf_counter() - t0
        online = None
        if args.online:
            import dataclasses

            t0 = time.perf_counter()
            spec = TrainSpec(
                name="bench-online",
                train=["labeled/train.parquet"],
                val=["labeled/val.parquet"],
                names=labeled.names,
                weights="yolo26n.yaml",
                unlabeled=["labeled/val.parquet"],
                class_conf=[args.online_conf] * len(labeled.names),
            )
            train_detector(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ssl="online")), out, spec)
            c_folder = work_dir(cfg, out, "train", "bench-online") / "run"
            audit = [json.loads(line) for line in (c_folder / "ranks" / "rank0.jsonl").read_text().splitlines()]
            online = {
                "epochs_s": epoch_times(c_folder / "results.csv"),
                "total_s": time.perf_counter() - t0,
                "boxes": audit[-1]["pseudo_boxes_per_image"],
            }
        folder = work_dir(cfg, out, "train", "bench")
        tree = folder / "data" / "data.yaml"
        b_epochs = epoch_times(folder / "run" / "results.csv")

        ultralytics = prepare_ultralytics(work / "ul", threads=args.threads)
        if gpu:  # the same AMP decision as the Ray worker (no download of the check's weights)
            import ultralytics.engine.trainer as plain_trainer

            from ssl_ray.adapters.trainer import offline_check_amp

            plain_trainer.check_amp = offline_check_amp(plain_trainer.check_amp)
        t0 = time.perf_counter()
        ultralytics.YOLO("yolo26n.yaml").train(
            data=str(tree),
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            device=0 if gpu else "cpu",
            workers=args.threads if gpu else 0,
            project=str(work / "plain"),
            name="run",
            exist_ok=True,
            verbose=False,
            **hyper,
        )
        a_total = time.perf_counter() - t0
        a_epochs = epoch_times(work / "plain" / "run" / "results.csv")

        a, b = statistics.median(a_epochs[1:]), statistics.median(b_epochs[1:])
        figures = {
            "device": args.device,
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "n_train": len(labeled.train),
            "batch": args.batch,
            "threads": args.threads,
            "a_plain_epoch_s": round(a, 2),
            "b_ray_train_epoch_s": round(b, 2),
            "b_over_a": round(b / a, 3),
            "a_img_s": round(len(labeled.train) / a, 1),
            "b_img_s": round(len(labeled.train) / b, 1),
            "a_total_s": round(a_total, 1),
            "b_total_s": round(b_total, 1),
            "a_epochs_s": [round(x, 2) for x in a_epochs],
            "b_epochs_s": [round(x, 2) for x in b_epochs],
        }
        if online:
            c = statistics.median(online["epochs_s"][1:])
            figures.update(
                c_online_epoch_s=round(c, 2),
                c_over_b=round(c / b, 3),
                c_total_s=round(online["total_s"], 1),
                c_epochs_s=[round(x, 2) for x in online["epochs_s"]],
                c_pseudo_boxes_per_image=online["boxes"],
            )
        emit(figures, args.json)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
