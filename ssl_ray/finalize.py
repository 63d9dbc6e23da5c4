"""The label stage's last step, at any pool size: raw inference rows -> the round's Parquet.

Raw rows are hashed into buckets by `image_id` (rejects, which have none, by `uri`), so all
copies of an item land in one bucket. Each bucket is deduplicated, selected and written on
its own, in parallel Ray tasks that each hold one bucket (about `label.finalize_rows`
items), never the pool. What is global is decided from compact keys the buckets return and
applied bucket by bucket:

  scatter   raw/ -> scatter/bNNNNN/ (skipped when one bucket holds the pool)
  pass 1    per bucket: dedupe -> predictions/, rejects/; counts; per-class scores when the
            thresholds are pool quantiles
  driver    the class thresholds
  pass 2    per bucket: classify -> selection/; candidates: the best `max_images_per_class`
            pseudo images of each class, every negative's order key, the `review_max` most
            uncertain images
  driver    the cutoffs: the last key each cap keeps
  pass 3    per bucket: pseudo/ (the pseudo images and negatives within the cutoffs); its
            review rows
  driver    review/part-000000.parquet, most uncertain first

The outcome is the one `select.select` gives over the whole pool at once
(tests/test_finalize.py checks it). The pure steps below take and return rows; `finalize`
at the end is the thin Ray adapter.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from ssl_ray import accounting
from ssl_ray.config import Config, SelectConfig
from ssl_ray.runtime import LazyRemote, ray_get
from ssl_ray.select import classify, negative_order, selected_row, uncertainty
from ssl_ray.storage import Store
from ssl_ray.thresholds import class_scores, thresholds_from_scores

TASK_BYTES_PER_ITEM = 8192  # memory a finalize task reserves per item (measured ~6 KB with 8 boxes)


def bucket_of(row: dict, buckets: int) -> int:
    key = row["image_id"] or row["uri"]
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % buckets


def dedupe_bucket(raw: list[dict], round: int, teacher: str, n_classes: int, floor: float | None) -> tuple:
    """Pass 1: (prediction rows, reject rows, stats); stats carry each class's scores >=
    `floor` (as float32 arrays) when `floor` is given (pool-quantile thresholds)."""
    preds, rejects, retries = accounting.dedupe(raw, round, teacher)
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    stats = {"items": len(preds) + len(rejects), "rejected": len(rejects), "rejected_by_reason": reasons,
             "retried_copies_dropped": retries, "videos_frames": sum(1 for p in preds if p["video_uri"]),
             "score_histogram": accounting.score_histogram(preds), "scores": None}
    if floor is not None:
        stats["scores"] = [np.asarray(s, np.float32) for s in class_scores(preds, n_classes, floor)]
    return preds, rejects, stats


def pseudo_key(row: dict) -> tuple[float, str]:
    """The per-class cap's order (`select.cap_per_class`): best box score, then image_id."""
    return -row["boxes"][0]["score"], row["image_id"]


@dataclass
class Candidates:
    """What pass 2 of one bucket returns: counts and the keys the global caps choose among."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("pseudo", "negative", "uncertain"), 0))
    pseudo_per_class: list[int] = field(default_factory=list)  # pseudo images by the class of their best box
    pseudo_boxes: list[int] = field(default_factory=list)  # pseudo boxes by class
    masked: list[int] = field(default_factory=lambda: [0, 0])  # pseudo images with ignore regions, regions
    pseudo: list[list[tuple]] = field(default_factory=list)  # per class: the best `cap` pseudo_key()s
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # negative_order()s
    review: list[tuple] = field(default_factory=list)  # the `review_max` smallest (-uncertainty, image_id)


def classify_bucket(preds: list[dict], cfg: SelectConfig, thresholds: list[float], round: int
                    ) -> tuple[list[dict], Candidates]:
    """Pass 2: every row with its outcome (`select.classify`), and the bucket's candidates."""
    n = len(thresholds)
    out, cand = [], Candidates(pseudo_per_class=[0] * n, pseudo_boxes=[0] * n)
    pseudo: list[list[tuple]] = [[] for _ in range(n)]
    negatives, review = [], []
    for row in preds:
        outcome, boxes, score = classify(row, cfg, thresholds)
        sel = selected_row(row, outcome, boxes, cfg, round)
        out.append(sel)
        cand.counts[outcome] += 1
        if outcome == "pseudo":
            cand.pseudo_per_class[boxes[0]["cls"]] += 1
            for b in boxes:
                cand.pseudo_boxes[b["cls"]] += 1
            pseudo[boxes[0]["cls"]].append(pseudo_key(sel))
            if sel["ignore"]:
                cand.masked[0] += 1
                cand.masked[1] += len(sel["ignore"])
        elif outcome == "negative":
            negatives.append(negative_order(row["image_id"]))
        else:
            review.append((-score, row["image_id"]))
    cap = cfg.max_images_per_class
    cand.pseudo = [heapq.nsmallest(cap, keys) if cap is not None else [] for keys in pseudo]
    cand.negatives = np.asarray(negatives, np.uint64)
    cand.review = heapq.nsmallest(cfg.review_max, review)
    return out, cand


@dataclass
class Cutoffs:
    """The last key each global cap keeps (None: the cap keeps everything)."""
    pseudo: list[tuple | None]
    negative: int | None  # keep negatives whose order is <= this; -1 keeps none
    review: tuple | None  # keep uncertain images whose (-uncertainty, image_id) is <= this; None: none
    pseudo_used: int
    negative_used: int


def cutoffs(parts: list[Candidates], cfg: SelectConfig) -> Cutoffs:
    """The global caps from every bucket's candidates: the same images `select.select` keeps."""
    n = len(parts[0].pseudo_per_class)
    cap = cfg.max_images_per_class
    per_class = [sum(p.pseudo_per_class[c] for p in parts) for c in range(n)]
    pseudo_cut: list[tuple | None] = [None] * n
    for c in range(n if cap is not None else 0):
        best = heapq.nsmallest(cap, (k for p in parts for k in p.pseudo[c]))
        if per_class[c] > cap:  # the cap binds: keep up to its last key
            pseudo_cut[c] = best[-1] if best else (-math.inf, "")
    pseudo_used = sum(per_class) if cap is None else sum(min(cap, k) for k in per_class)
    negatives = np.concatenate([p.negatives for p in parts])
    fraction = cfg.max_negative_fraction
    limit = len(negatives) if fraction >= 1.0 else min(len(negatives), int(fraction * pseudo_used / (1.0 - fraction)))
    if limit == len(negatives):
        negative_cut = None
    elif limit == 0:
        negative_cut = -1
    else:
        negative_cut = int(np.partition(negatives, limit - 1)[limit - 1])
    review = heapq.nsmallest(cfg.review_max, (k for p in parts for k in p.review))
    return Cutoffs(pseudo=pseudo_cut, negative=negative_cut, review=review[-1] if review else None,
                   pseudo_used=pseudo_used, negative_used=limit)


def keep_bucket(selection: list[dict], cut: Cutoffs, cfg: SelectConfig, thresholds: list[float]
                ) -> tuple[list[dict], list[tuple]]:
    """Pass 3: (training rows: pseudo used, then negatives used; [(review key, row)])."""
    pseudo, negatives, review = [], [], []
    for row in selection:
        if row["source"] == "pseudo":
            limit = cut.pseudo[row["boxes"][0]["cls"]]
            if limit is None or pseudo_key(row) <= limit:
                pseudo.append(row)
        elif row["source"] == "negative":
            if cut.negative is None or negative_order(row["image_id"]) <= cut.negative:
                negatives.append(row)
        elif cut.review is not None:
            key = (-uncertainty(row["boxes"], cfg.negative_max_score, thresholds), row["image_id"])
            if key <= cut.review:
                review.append((key, row))
    return pseudo + negatives, review


# ----------------------------------------------------------------------------- Ray adapter


def finalize(cfg: Config, stage: Store, names: list[str], round: int, teacher: str,
             conf: float | None, listed: int, class_conf: list[float] | None) -> dict:
    """raw/ -> predictions/, rejects/, selection/, pseudo/, review/; the stage's summary."""
    import pyarrow.parquet as pq

    from ssl_ray.export import write_parquet
    from ssl_ray.label import round_
    from ssl_ray.select import class_thresholds

    files = [e.rel for e in stage.list("raw") if e.rel.endswith(".parquet")]
    sizes = [pq.ParquetFile(stage.fs.open_input_file(stage.path(f))).metadata.num_rows for f in files]
    buckets = max(1, math.ceil(sum(sizes) / cfg.label.finalize_rows))
    opts = {"memory": cfg.label.finalize_rows * TASK_BYTES_PER_ITEM}  # a node runs only the tasks it can hold
    if buckets > 1:
        groups, group, rows = [], [], 0
        for f, size in zip(files, sizes):
            group.append(f)
            rows += size
            if rows >= cfg.label.finalize_rows:
                groups.append(group)
                group, rows = [], 0
        groups += [group] if group else []
        ray_get([_scatter.options(**opts).remote(stage, g, i, buckets) for i, g in enumerate(groups)])
    sources = [f"scatter/b{k:05d}" for k in range(buckets)] if buckets > 1 else ["raw"]
    quantile = class_conf is None and cfg.select.adaptive == "pool_quantile"
    floor = cfg.select.adaptive_floor if quantile else None
    stats = ray_get([_pass1.options(**opts).remote(stage, src, k, round, teacher, len(names), floor) for k, src in enumerate(sources)])
    base = cfg.select.conf if conf is None else conf
    if quantile:
        scores = [np.concatenate([s["scores"][c] for s in stats]) for c in range(len(names))]
        class_conf = thresholds_from_scores(scores, cfg.select.keep_fraction, base, cfg.select.adaptive_floor)
    thresholds = class_thresholds(cfg.select, names, conf, class_conf)
    parts = ray_get([_pass2.options(**opts).remote(stage, k, cfg.select, thresholds, round) for k in range(buckets)])
    cut = cutoffs(parts, cfg.select)
    review = [r for rows in ray_get([_pass3.options(**opts).remote(stage, k, cut, cfg.select, thresholds) for k in range(buckets)])
              for r in rows]
    write_parquet(stage, "review/part-000000.parquet", [row for _, row in sorted(review, key=lambda t: t[0])])
    stage.delete_prefix("scatter")
    reasons: dict[str, int] = {}
    for s in stats:
        for reason, count in s["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    total = lambda key: sum(s[key] for s in stats)  # noqa: E731
    return {
        "round": round, "teacher": teacher, "conf": base, "files_listed": listed, "finalize_tasks": buckets,
        "items": total("items"), "videos_frames": total("videos_frames"),
        **{k: sum(p.counts[k] for p in parts) for k in ("pseudo", "negative", "uncertain")},
        "negative_used": cut.negative_used, "pseudo_used": cut.pseudo_used,
        "pseudo_masked": {"images": sum(p.masked[0] for p in parts), "regions": sum(p.masked[1] for p in parts)},
        "rejected": total("rejected"),
        "rejected_by_reason": reasons, "retried_copies_dropped": total("retried_copies_dropped"),
        "pseudo_boxes_per_class": dict(zip(names, (sum(p.pseudo_boxes[c] for p in parts) for c in range(len(names))))),
        "score_histogram": [sum(h) for h in zip(*(s["score_histogram"] for s in stats))],  # 20 bins over [0, 1]
        "class_thresholds": dict(zip(names, (round_(t) for t in thresholds))),
    }


def _read(stage: Store, rel: str, schema) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(stage.path(rel), filesystem=stage.fs, schema=schema).to_pylist()


def _scatter_impl(stage: Store, files: list[str], group: int, buckets: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_ray.export import write_table
    from ssl_ray.label import RAW_SCHEMA

    table = pa.concat_tables([pq.read_table(stage.path(f), filesystem=stage.fs, schema=RAW_SCHEMA)
                              for f in files])
    ids, uris = table.column("image_id").to_pylist(), table.column("uri").to_pylist()
    of = np.array([bucket_of({"image_id": i, "uri": u}, buckets) for i, u in zip(ids, uris)], np.int64)
    order = np.argsort(of, kind="stable")
    bounds = np.searchsorted(of[order], np.arange(buckets + 1))
    for k in range(buckets):
        if bounds[k] < bounds[k + 1]:
            write_table(stage, f"scatter/b{k:05d}/g{group:05d}.parquet", table.take(order[bounds[k]:bounds[k + 1]]))


def _pass1_impl(stage: Store, source: str, k: int, round: int, teacher: str, n_classes: int,
                floor: float | None) -> dict:
    from ssl_ray.export import write_parquet, write_rejects
    from ssl_ray.label import RAW_SCHEMA

    raw = _read(stage, source, RAW_SCHEMA) if stage.exists(source) else []
    preds, rejects, stats = dedupe_bucket(raw, round, teacher, n_classes, floor)
    write_parquet(stage, f"predictions/part-{k:06d}.parquet", preds)
    write_rejects(stage, f"rejects/part-{k:06d}.parquet", rejects)
    return stats


def _pass2_impl(stage: Store, k: int, cfg: SelectConfig, thresholds: list[float], round: int) -> Candidates:
    from ssl_ray.export import write_parquet
    from ssl_ray.schema import ROW_SCHEMA

    selection, cand = classify_bucket(_read(stage, f"predictions/part-{k:06d}.parquet", ROW_SCHEMA), cfg,
                                      thresholds, round)
    write_parquet(stage, f"selection/part-{k:06d}.parquet", selection)
    return cand


def _pass3_impl(stage: Store, k: int, cut: Cutoffs, cfg: SelectConfig, thresholds: list[float]) -> list[tuple]:
    from ssl_ray.export import write_parquet
    from ssl_ray.schema import ROW_SCHEMA

    training, review = keep_bucket(_read(stage, f"selection/part-{k:06d}.parquet", ROW_SCHEMA), cut, cfg, thresholds)
    write_parquet(stage, f"pseudo/part-{k:06d}.parquet", training)
    return review


_scatter = LazyRemote(_scatter_impl, num_cpus=1)
_pass1 = LazyRemote(_pass1_impl, num_cpus=1)
_pass2 = LazyRemote(_pass2_impl, num_cpus=1)
_pass3 = LazyRemote(_pass3_impl, num_cpus=1)
