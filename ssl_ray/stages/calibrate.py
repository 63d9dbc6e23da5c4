"""Thresholds calibrated on the held-out labeled val set: the teacher's detections there,
matched to the truth, give each class the lowest score that reaches a target precision
(`ssl_ray.core.thresholds` holds the pure part). Runs as a Ray task, on a GPU when labeling uses one.
"""

from __future__ import annotations

from ssl_ray.adapters.runtime import ray_map
from ssl_ray.config import Config, with_absolute_paths
from ssl_ray.core import schema
from ssl_ray.io.storage import Store


def val_class_thresholds(cfg: Config, out: Store, weights: str, names: list[str], fallback: float) -> list[float]:
    """Per-class thresholds reaching `select.target_precision` on the labeled val set, from
    `weights`' detections; `fallback` for a class that never reaches it."""
    (thresholds,) = ray_map(
        _val_thresholds,
        [(with_absolute_paths(cfg), out, weights, names, fallback)],
        num_cpus=max(1.0, cfg.label.num_cpus_per_actor),
        num_gpus=min(1.0, cfg.label.num_gpus_per_actor),
    )
    return thresholds


def _val_thresholds(cfg: Config, out: Store, weights: str, names: list[str], fallback: float) -> list[float]:
    from pathlib import Path

    from ssl_ray.adapters.teacher import Teacher, resolve_weights
    from ssl_ray.core.consistency import detect_by_shape
    from ssl_ray.core.geometry import to_normalized_xywh
    from ssl_ray.core.thresholds import match_detections, precision_thresholds
    from ssl_ray.io.export import ImageCache, UriReader, read_parquet_rows
    from ssl_ray.io.images import decode_letterboxed
    from ssl_ray.stages.label_workers import canvas_stride

    rows = read_parquet_rows(out, "labeled/val.parquet")
    threads = max(1, int(cfg.label.num_cpus_per_actor)) if cfg.label.num_gpus_per_actor == 0 else None
    teacher = Teacher(
        resolve_weights(weights, cfg.output.cache_dir, cfg.storage), cfg.output.cache_dir, threads=threads
    )
    cache, reader = ImageCache(Path(cfg.output.cache_dir).expanduser() / "images"), UriReader(cfg.storage)
    preds: dict[str, list[dict]] = {}
    for start in range(0, len(rows), cfg.label.batch_size):
        chunk = rows[start : start + cfg.label.batch_size]
        boxed = [
            decode_letterboxed(  # the canvases the label stage will score the pool on
                cache.ensure(r["image_id"], lambda r=r: reader(r)).read_bytes(),
                cfg.model.imgsz,
                canvas_stride(cfg),
                cfg.pool.max_pixels,
            )[:2]
            for r in chunk
        ]
        canvases = [canvas for canvas, _ in boxed]
        dets = detect_by_shape(lambda batch: teacher.predict(batch, cfg.select.adaptive_floor), canvases)
        for r, (_, lb), d in zip(chunk, boxed, dets):
            xywh = to_normalized_xywh(d.xyxy, lb, r["width"], r["height"])
            preds[r["image_id"]] = [schema.box(int(c), *xy, score=float(s)) for xy, s, c in zip(xywh, d.score, d.cls)]
    scored, _ = match_detections(preds, {r["image_id"]: r["boxes"] or [] for r in rows}, len(names))
    return precision_thresholds(scored, cfg.select.target_precision, fallback, cfg.select.adaptive_floor)
