"""The label stage's last step at any pool size, its pure part: raw inference rows, one hash
bucket at a time -> the round's rows (`ssl_ray.stages.finalize` runs it on Ray).

Raw rows are hashed into buckets by `image_id` (rejects, which have none, by `uri`), so all
copies of an item land in one bucket. Each bucket is deduplicated, selected and written on
its own, in parallel Ray tasks that each hold one bucket (about `label.finalize_rows`
items), never the pool. What is global is decided from compact keys the buckets return and
applied bucket by bucket:

  scatter   raw/ -> scatter/bNNNNN/ (skipped when one bucket holds the pool)
  pass 1    per bucket: dedupe -> predictions/, rejects/; counts
  pass 2    per bucket: classify -> selection/; candidates: the best `max_images_per_class`
            pseudo images of each class, every negative's order key, the `review_max` most
            uncertain images
  driver    the cutoffs: the last key each cap keeps
  pass 3    per bucket: pseudo/ (the pseudo images and negatives within the cutoffs); its
            review rows
  driver    review/part-000000.parquet, most uncertain first

The outcome is the one `select.select` gives over the whole pool at once
(tests/test_finalize.py checks it). The steps below take and return rows.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from ssl_ray.config import SelectConfig
from ssl_ray.core import accounting
from ssl_ray.core.select import classify, negative_order, selected_row, uncertainty


def bucket_of(row: dict, buckets: int) -> int:
    key = row["image_id"] or row["uri"]
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % buckets


def dedupe_bucket(raw: list[dict], round: int, teacher: str) -> tuple[list[dict], list[dict], dict]:
    """Pass 1: (prediction rows, reject rows, stats)."""
    preds, rejects, retries = accounting.dedupe(raw, round, teacher)
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    stats = {
        "items": len(preds) + len(rejects),
        "rejected": len(rejects),
        "rejected_by_reason": reasons,
        "retried_copies_dropped": retries,
        "videos_frames": sum(1 for p in preds if p["video_uri"]),
        "score_histogram": accounting.score_histogram(preds),
    }
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
    pseudo: list[list[tuple]] = field(default_factory=list)  # per class: the best `cap` pseudo_key()s
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # negative_order()s
    review: list[tuple] = field(default_factory=list)  # the `review_max` smallest (-uncertainty, image_id)


def classify_bucket(
    preds: list[dict], cfg: SelectConfig, thresholds: list[float], round: int
) -> tuple[list[dict], Candidates]:
    """Pass 2: every row with its outcome (`select.classify`), and the bucket's candidates."""
    n = len(thresholds)
    out, cand = [], Candidates(pseudo_per_class=[0] * n, pseudo_boxes=[0] * n)
    pseudo: list[list[tuple]] = [[] for _ in range(n)]
    negatives, review = [], []
    for row in preds:
        outcome, boxes, score = classify(row, cfg, thresholds)
        sel = selected_row(row, outcome, boxes, round)
        out.append(sel)
        cand.counts[outcome] += 1
        if outcome == "pseudo":
            cand.pseudo_per_class[boxes[0]["cls"]] += 1
            for b in boxes:
                cand.pseudo_boxes[b["cls"]] += 1
            pseudo[boxes[0]["cls"]].append(pseudo_key(sel))
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
    return Cutoffs(
        pseudo=pseudo_cut,
        negative=negative_cut,
        review=review[-1] if review else None,
        pseudo_used=pseudo_used,
        negative_used=limit,
    )


def keep_bucket(
    selection: list[dict], cut: Cutoffs, cfg: SelectConfig, thresholds: list[float]
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
