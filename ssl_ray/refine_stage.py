"""Stage: train the box refiner (`ssl_ray.refine`) on the labeled set, once per run.

The refiner learns from the labeled training images, letterboxed to `model.imgsz` as the
label stage letterboxes the pool, so that it sees objects at the scale it will refine them.
It does not depend on any teacher: the driver trains it before round 1 (a CPU task: a small
network on small crops) and every round uses it. Outputs under `<out>/refiner/`:

    refiner.json   what it trained on, how long, and the held-out check on the val set
                   (true boxes jittered as in training, then refined: median IoU before/after)
    refiner.pt     `torch.save` of `BoxRefiner.state()`, written last: its presence marks the
                   stage done, and a resumed run reuses it
"""

from __future__ import annotations

import io
import json
import logging
import time

import numpy as np

from ssl_ray.config import Config, RefineConfig, StorageConfig
from ssl_ray.storage import Store

log = logging.getLogger(__name__)

REFINER = "refiner/refiner.pt"


def refine_spec(refine: RefineConfig, seed: int):
    from ssl_ray.refine import RefineSpec

    return RefineSpec(crop=refine.crop, context=refine.context, jitter=refine.jitter, flips=refine.flips,
                      steps=refine.steps, batch=refine.batch, passes=refine.passes, blend=refine.blend,
                      min_score=refine.min_score, tta=refine.tta, seed=seed)


def fit_refiner(cfg: Config, out: Store) -> str:
    """Train (or reuse) the run's box refiner; its URI."""
    if out.exists(REFINER):
        return out.uri_of(REFINER)
    import torch

    from ssl_ray.export import read_parquet_rows
    from ssl_ray.refine import BoxRefiner, jitter_check

    start = time.perf_counter()
    torch.set_num_threads(max(1, int(cfg.refine.num_cpus)))
    images, boxes = labeled_canvases(cfg, read_parquet_rows(out, "labeled/train.parquet"))
    refiner = BoxRefiner.fit(images, boxes, refine_spec(cfg.refine, cfg.seed), log=log.info)
    fit_s = time.perf_counter() - start
    val_images, val_boxes = labeled_canvases(cfg, read_parquet_rows(out, "labeled/val.parquet"))
    summary = {"images": len(images), "boxes": int(sum(map(len, boxes))),
               "fit_seconds": round(fit_s, 1), "val_check": jitter_check(refiner, val_images, val_boxes, cfg.seed)}
    log.info("box refiner: %s", summary)
    out.write_text("refiner/refiner.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    buffer = io.BytesIO()
    torch.save(refiner.state(), buffer)
    out.write_bytes(REFINER, buffer.getvalue())  # last: marks the stage done
    return out.uri_of(REFINER)


def load_refiner(uri: str, storage: StorageConfig, device: str = "cpu", apply: RefineConfig | None = None):
    """The `BoxRefiner` saved at `uri` (local path or s3://). With `apply`, how it is applied
    (passes, blend, min_score, tta) comes from that config, not from the run that trained it:
    a resumed or reused refiner follows the settings of the run using it."""
    import dataclasses

    import torch

    from ssl_ray.refine import BoxRefiner

    folder, _, name = uri.rpartition("/")
    state = torch.load(io.BytesIO(Store(folder or ".", storage).read_bytes(name)), map_location="cpu",
                       weights_only=True)
    refiner = BoxRefiner.from_state(state, device)
    if apply is not None:
        refiner.spec = dataclasses.replace(refiner.spec, passes=apply.passes, blend=apply.blend,
                                           min_score=apply.min_score, tta=apply.tta)
    return refiner


def labeled_canvases(cfg: Config, rows: list[dict]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labeled rows -> their images letterboxed to model.imgsz and their boxes in canvas pixels
    (xyxy); at most refine.max_images of them (a seeded sample), images without boxes skipped."""
    from ssl_ray.boxes import letterbox
    from ssl_ray.export import UriReader
    from ssl_ray.images import decode_rgb
    from ssl_ray.thresholds import xyxy

    rows = [r for r in rows if r["boxes"]]
    if len(rows) > cfg.refine.max_images:
        keep = np.random.default_rng(cfg.seed).choice(len(rows), cfg.refine.max_images, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    reader = UriReader(cfg.storage)
    images, boxes = [], []
    for row in rows:
        image = decode_rgb(reader(row), cfg.pool.max_pixels)
        canvas, lb = letterbox(image, cfg.model.imgsz)
        h, w = image.shape[:2]
        scale = np.array([w, h, w, h]) * lb.ratio
        images.append(canvas)
        boxes.append(np.array([xyxy(b) for b in row["boxes"]]) * scale + [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y])
    return images, boxes


def refine_detections(refiner, images: np.ndarray, dets: list[np.ndarray],
                      spread: bool = False) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Detections (k, 6: xyxy, score, class) per canvas with the boxes scoring at least the
    refiner's `min_score` refined; the others, and every score and class, as they were. With
    `spread`, each box's spread (`BoxRefiner.refine`) per canvas too, NaN where not refined."""
    keep = [d[:, 4] >= refiner.spec.min_score for d in dets]
    moved, spreads = refiner.refine(images, [d[k] for d, k in zip(dets, keep)], spread)
    out, out_spread = [], []
    for i, (d, k, m) in enumerate(zip(dets, keep, moved)):
        d = np.array(d, dtype=np.float64)
        d[k, :4] = m[:, :4]
        out.append(d)
        if spread:
            out_spread.append(np.full(len(d), np.nan))
            out_spread[-1][k] = spreads[i]
    return out, out_spread if spread else None
