"""The label stage's last step: raw inference rows -> the round's Parquet, at any pool size.

The passes (`ssl_ray.core.finalize`, pure) run here bucket by bucket, each a task that reads
and writes one bucket's Parquet. `finalize` decides what runs; *how* the tasks run is the
`mapper` it is given: `ray_mapper` (parallel Ray tasks, each reserving memory for one bucket)
in the label stage, or `local_map` (in this process) in tests and tools.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ssl_ray.config import Config, SelectConfig
from ssl_ray.core.accounting import significant
from ssl_ray.core.finalize import Candidates, Cutoffs, bucket_of, classify_bucket, cutoffs, dedupe_bucket, keep_bucket
from ssl_ray.core.schema import RAW_SCHEMA, ROW_SCHEMA
from ssl_ray.core.select import class_thresholds
from ssl_ray.io.storage import Store

TASK_BYTES_PER_ITEM = 8192  # memory a finalize task reserves per item (measured ~6 KB with 8 boxes)

Mapper = Callable[[Callable, list[tuple]], list]  # (fn, [args, ...]) -> [fn(*args), ...], in order


def local_map(fn: Callable, calls: list[tuple]) -> list:
    return [fn(*args) for args in calls]


def ray_mapper(cfg: Config) -> Mapper:
    """Finalize tasks on Ray, each reserving the memory of one bucket, so a node runs only
    the tasks it can hold."""
    from ssl_ray.adapters.runtime import ray_map

    return lambda fn, calls: ray_map(fn, calls, num_cpus=1, memory=cfg.label.finalize_rows * TASK_BYTES_PER_ITEM)


def finalize(
    cfg: Config,
    stage: Store,
    names: list[str],
    round: int,
    teacher: str,
    conf: float | None,
    listed: int,
    class_conf: list[float] | None,
    mapper: Mapper = local_map,
) -> dict:
    """raw/ -> predictions/, rejects/, selection/, pseudo/, review/; the stage's summary."""
    import pyarrow.parquet as pq

    from ssl_ray.io.export import write_parquet

    files = [e.rel for e in stage.list("raw") if e.rel.endswith(".parquet")]
    sizes = [pq.ParquetFile(stage.fs.open_input_file(stage.path(f))).metadata.num_rows for f in files]
    buckets = max(1, math.ceil(sum(sizes) / cfg.label.finalize_rows))
    if buckets > 1:
        mapper(scatter, [(stage, group, i, buckets) for i, group in enumerate(_groups(files, sizes, cfg))])
    sources = [f"scatter/b{k:05d}" for k in range(buckets)] if buckets > 1 else ["raw"]
    stats = mapper(pass1, [(stage, src, k, round, teacher) for k, src in enumerate(sources)])
    thresholds = class_thresholds(cfg.select, names, conf, class_conf)
    parts = mapper(pass2, [(stage, k, cfg.select, thresholds, round) for k in range(buckets)])
    cut = cutoffs(parts, cfg.select)
    review = [
        r for rows in mapper(pass3, [(stage, k, cut, cfg.select, thresholds) for k in range(buckets)]) for r in rows
    ]
    write_parquet(stage, "review/part-000000.parquet", [row for _, row in sorted(review, key=lambda t: t[0])])
    stage.delete_prefix("scatter")
    return _summary(
        stats,
        parts,
        cut,
        names,
        thresholds,
        round=round,
        teacher=teacher,
        listed=listed,
        buckets=buckets,
        conf=cfg.select.conf if conf is None else conf,
    )


def _groups(files: list[str], sizes: list[int], cfg: Config) -> list[list[str]]:
    """Raw files in groups of about `label.finalize_rows` rows: one scatter task each."""
    groups, group, rows = [], [], 0
    for f, size in zip(files, sizes):
        group.append(f)
        rows += size
        if rows >= cfg.label.finalize_rows:
            groups.append(group)
            group, rows = [], 0
    return groups + ([group] if group else [])


def _summary(
    stats: list[dict], parts: list[Candidates], cut: Cutoffs, names: list[str], thresholds: list[float], **head
) -> dict:
    reasons: dict[str, int] = {}
    for s in stats:
        for reason, count in s["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count

    def total(key):
        return sum(s[key] for s in stats)

    return {
        "round": head["round"],
        "teacher": head["teacher"],
        "conf": head["conf"],
        "files_listed": head["listed"],
        "finalize_tasks": head["buckets"],
        "items": total("items"),
        "videos_frames": total("videos_frames"),
        **{k: sum(p.counts[k] for p in parts) for k in ("pseudo", "negative", "uncertain")},
        "negative_used": cut.negative_used,
        "pseudo_used": cut.pseudo_used,
        "rejected": total("rejected"),
        "rejected_by_reason": reasons,
        "retried_copies_dropped": total("retried_copies_dropped"),
        "pseudo_boxes_per_class": dict(zip(names, (sum(p.pseudo_boxes[c] for p in parts) for c in range(len(names))))),
        "score_histogram": [sum(h) for h in zip(*(s["score_histogram"] for s in stats))],  # 20 bins over [0, 1]
        "class_thresholds": dict(zip(names, (significant(t) for t in thresholds))),
    }


# ------------------------------------------------------------------ the tasks (one bucket each)


def _read(stage: Store, rel: str, schema) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(stage.path(rel), filesystem=stage.fs, schema=schema).to_pylist()


def scatter(stage: Store, files: list[str], group: int, buckets: int) -> None:
    """Raw files -> scatter/bNNNNN/gGGGGG.parquet: each row to the bucket of its image."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_ray.io.export import write_table

    table = pa.concat_tables([pq.read_table(stage.path(f), filesystem=stage.fs, schema=RAW_SCHEMA) for f in files])
    ids, uris = table.column("image_id").to_pylist(), table.column("uri").to_pylist()
    of = np.array([bucket_of({"image_id": i, "uri": u}, buckets) for i, u in zip(ids, uris)], np.int64)
    order = np.argsort(of, kind="stable")
    bounds = np.searchsorted(of[order], np.arange(buckets + 1))
    for k in range(buckets):
        if bounds[k] < bounds[k + 1]:
            write_table(stage, f"scatter/b{k:05d}/g{group:05d}.parquet", table.take(order[bounds[k] : bounds[k + 1]]))


def pass1(stage: Store, source: str, k: int, round: int, teacher: str) -> dict:
    from ssl_ray.io.export import write_parquet, write_rejects

    raw = _read(stage, source, RAW_SCHEMA) if stage.exists(source) else []
    preds, rejects, stats = dedupe_bucket(raw, round, teacher)
    write_parquet(stage, f"predictions/part-{k:06d}.parquet", preds)
    write_rejects(stage, f"rejects/part-{k:06d}.parquet", rejects)
    return stats


def pass2(stage: Store, k: int, cfg: SelectConfig, thresholds: list[float], round: int) -> Candidates:
    from ssl_ray.io.export import write_parquet

    preds = _read(stage, f"predictions/part-{k:06d}.parquet", ROW_SCHEMA)
    selection, cand = classify_bucket(preds, cfg, thresholds, round)
    write_parquet(stage, f"selection/part-{k:06d}.parquet", selection)
    return cand


def pass3(stage: Store, k: int, cut: Cutoffs, cfg: SelectConfig, thresholds: list[float]) -> list[tuple]:
    from ssl_ray.io.export import write_parquet

    selection = _read(stage, f"selection/part-{k:06d}.parquet", ROW_SCHEMA)
    training, review = keep_bucket(selection, cut, cfg, thresholds)
    write_parquet(stage, f"pseudo/part-{k:06d}.parquet", training)
    return review
