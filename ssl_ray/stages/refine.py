"""Stage: train the box refiner (`ssl_ray.adapters.refiner`) on the labeled set, once per run.

The refiner learns from the labeled training images, letterboxed to `model.imgsz` as the
label stage letterboxes the pool, so that it sees objects at the scale it will refine them.
It does not depend on any teacher: the driver trains it before round 1 (a CPU task: a small
network on small crops) and every round uses it. Outputs under `<out>/refiner/`:

    refiner.json   what it trained on, how long, and the held-out check on the val set
                   (true boxes jittered as in training, then refined: median IoU before/after)
    refiner.pt     `torch.save` of `BoxRefiner.state()`
    _COMMITTED     the unit's marker, written last: a resumed run reuses the refiner
"""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np

from ssl_ray.config import Config, RefineConfig, StorageConfig
from ssl_ray.core.detections import Detections
from ssl_ray.core.units import STEP_SETTINGS, Unit, pick
from ssl_ray.io.storage import Store
from ssl_ray.typed import result_settings

log = logging.getLogger(__name__)

REFINER = "refiner/refiner.pt"


def refiner_unit(cfg: Config) -> Unit:
    return Unit("refiner", settings=pick(result_settings(cfg), STEP_SETTINGS["refiner"]))


def fit_refiner(cfg: Config, out: Store) -> str:
    """Train (or reuse) the run's box refiner; its URI."""
    unit = refiner_unit(cfg)
    if out.done(unit) is not None:
        return out.uri_of(REFINER)
    import torch

    from ssl_ray.adapters.refiner import BoxRefiner, jitter_check
    from ssl_ray.io.export import read_parquet_rows

    start = time.perf_counter()
    torch.set_num_threads(max(1, int(cfg.refine.num_cpus)))
    images, boxes = labeled_canvases(cfg, read_parquet_rows(out, "labeled/train.parquet"))
    refiner = BoxRefiner.fit(images, boxes, cfg.refine, seed=cfg.seed, log=log.info)
    fit_s = time.perf_counter() - start
    val_images, val_boxes = labeled_canvases(cfg, read_parquet_rows(out, "labeled/val.parquet"))
    summary = {
        "images": len(images),
        "boxes": int(sum(map(len, boxes))),
        "fit_seconds": round(fit_s, 1),
        "val_check": jitter_check(refiner, val_images, val_boxes, cfg.seed),
    }
    log.info("box refiner: %s", summary)
    out.write_text("refiner/refiner.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    buffer = io.BytesIO()
    torch.save(refiner.state(), buffer)
    out.write_bytes(REFINER, buffer.getvalue())
    out.commit(unit, summary)
    return out.uri_of(REFINER)


def load_refiner(uri: str, storage: StorageConfig, device: str, cfg: RefineConfig):
    """The `BoxRefiner` saved at `uri` (local path or s3://), applied as `cfg` says."""
    import torch

    from ssl_ray.adapters.refiner import BoxRefiner

    folder, _, name = uri.rpartition("/")
    state = torch.load(
        io.BytesIO(Store(folder or ".", storage).read_bytes(name)), map_location="cpu", weights_only=True
    )
    return BoxRefiner.from_state(state, cfg, device)


def labeled_canvases(cfg: Config, rows: list[dict]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labeled rows -> their images letterboxed to model.imgsz and their boxes in canvas pixels
    (xyxy); at most refine.max_images of them (a seeded sample), images without boxes skipped."""
    from ssl_ray.core.geometry import to_canvas_xyxy
    from ssl_ray.io.export import UriReader
    from ssl_ray.io.images import decode_letterboxed

    rows = [r for r in rows if r["boxes"]]
    if len(rows) > cfg.refine.max_images:
        keep = np.random.default_rng(cfg.seed).choice(len(rows), cfg.refine.max_images, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    reader = UriReader(cfg.storage)
    images, boxes = [], []
    for row in rows:
        canvas, lb, width, height = decode_letterboxed(reader(row), cfg.model.imgsz, max_pixels=cfg.pool.max_pixels)
        images.append(canvas)
        boxes.append(to_canvas_xyxy(row["boxes"], lb, width, height))
    return images, boxes


def refine_detections(refiner, images: np.ndarray, dets: list[Detections]) -> list[Detections]:
    """Each canvas's detections with the boxes scoring at least `refine.min_score` refined; the
    others, and every score and class, as they were."""
    keep = [d.score >= refiner.cfg.min_score for d in dets]
    moved = refiner(images, [d.xyxy[k] for d, k in zip(dets, keep)])
    out = []
    for d, k, m in zip(dets, keep, moved):
        xyxy = d.xyxy.copy()
        xyxy[k] = m
        out.append(d.with_boxes(xyxy))
    return out
