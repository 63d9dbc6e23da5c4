"""Stage: score given weights on the held-out set without training (`rounds.round0: evaluate`:
a trained teacher starts the rounds). One Ray task, on a GPU when training uses one. It writes
what a training stage writes (`weights/best.pt`, the metrics, the unit's marker), so the
rounds that follow read it like a trained round 0.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssl_ray.config import Config
from ssl_ray.io.storage import Store
from ssl_ray.stages.train import TrainSpec, spec_unit, validation_metrics, work_dir


def evaluate_detector(cfg: Config, out: Store, spec: TrainSpec) -> dict:
    """No training: `spec.weights` become the stage's weights/best.pt, scored on the held-out
    rows (`rounds.round0: evaluate`). A Ray task, on a GPU when training uses one."""
    from ssl_ray.adapters.runtime import ray_map

    unit = spec_unit(cfg, spec, "evaluate")
    if (done := out.done(unit)) is not None:
        return done["result"]
    (metrics,) = ray_map(
        _evaluate_impl, [(cfg, out, spec)], num_cpus=cfg.train.cpus_per_worker, num_gpus=1 if cfg.train.use_gpu else 0
    )
    out.child(spec.folder).write_text("eval_metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    out.commit(unit, metrics)
    return metrics


def _evaluate_impl(cfg: Config, out: Store, spec: TrainSpec) -> dict:
    from ssl_ray.adapters.runtime import prepare_ultralytics
    from ssl_ray.adapters.teacher import load_yolo, resolve_weights
    from ssl_ray.io.export import ImageCache, UriReader, read_parquet_rows, write_yolo_tree

    work = work_dir(cfg, out, "eval", spec.name)
    val = [row for rel in spec.val for row in read_parquet_rows(out, rel)]
    cache = ImageCache(Path(cfg.output.cache_dir).expanduser() / "images")
    # Ultralytics' dataset check wants a train entry even to validate: an empty one.
    data_yaml = write_yolo_tree(work / "data", {"train": [], "val": val}, spec.names, cache, UriReader(cfg.storage))
    prepare_ultralytics(cfg.output.cache_dir, threads=max(1, int(cfg.train.cpus_per_worker)))
    weights = resolve_weights(spec.weights, cfg.output.cache_dir, cfg.storage)
    model = load_yolo(weights, cfg.output.cache_dir)
    if [model.names[i] for i in sorted(model.names)] != list(spec.names):
        from ssl_ray.errors import ConfigError

        raise ConfigError(
            f"model.weights: {spec.weights} predicts {list(model.names.values())[:10]}, "
            f"but the labeled set has {spec.names}"
        )
    results = model.val(
        data=str(data_yaml),
        imgsz=cfg.model.imgsz,
        batch=cfg.train.batch,
        split="val",
        device="0" if cfg.train.use_gpu else "cpu",
        workers=0,
        plots=False,
        verbose=False,
        project=str(work),
        name="val",
        exist_ok=True,
    )
    out.child(spec.folder).write_bytes("weights/best.pt", Path(weights).read_bytes())
    return {**validation_metrics(results, spec.names), "evaluated": spec.weights}
