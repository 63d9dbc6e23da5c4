"""Adaptive per-class confidence thresholds (pure): derived from data every round instead of
one global number.

- `val_precision`: run the teacher on the held-out labeled val set, match its detections to
  the ground truth (same class, IoU ≥ 0.5, greedy by score), and take per class the lowest
  score at which the precision of everything scoring at least that much reaches the target.
  A class whose precision never reaches it, or with fewer than `min_support` true positives
  above the threshold, falls back to the round's global threshold.
- `pool_quantile`: per class, the score above which the top `keep_fraction` of that class's
  detections on the pool lie: every class keeps the same share of its own detections, so a
  class the teacher is shy about is not starved by one global number.

Both are clamped to [floor, 1].
"""

from __future__ import annotations

import numpy as np


def xyxy(box: dict) -> np.ndarray:
    return np.array([box["x"] - box["w"] / 2, box["y"] - box["h"] / 2, box["x"] + box["w"] / 2,
                     box["y"] + box["h"] / 2])


def match_detections(preds: dict[str, list[dict]], truth: dict[str, list[dict]], n_classes: int,
                     iou_thr: float = 0.5) -> tuple[list[list[tuple[float, bool]]], list[int]]:
    """Per class: (score, is true positive) of every detection, and the ground-truth count.
    `preds` and `truth` map image ids to boxes (normalized xywh; IoU does not depend on the
    image's size)."""
    from ssl_ray.consistency import iou

    scored: list[list[tuple[float, bool]]] = [[] for _ in range(n_classes)]
    n_truth = [0] * n_classes
    for image_id in set(preds) | set(truth):
        gts = truth.get(image_id, [])
        for g in gts:
            n_truth[g["cls"]] += 1
        taken = [False] * len(gts)
        gt_boxes = np.array([xyxy(g) for g in gts]).reshape(-1, 4)
        for p in sorted(preds.get(image_id, []), key=lambda b: -b["score"]):
            best, best_iou = -1, iou_thr
            if len(gts):
                overlaps = iou(xyxy(p), gt_boxes)
                for j, (g, o) in enumerate(zip(gts, overlaps)):
                    if not taken[j] and g["cls"] == p["cls"] and o >= best_iou:
                        best, best_iou = j, o
            if best >= 0:
                taken[best] = True
            scored[p["cls"]].append((float(p["score"]), best >= 0))
    return scored, n_truth


def precision_thresholds(scored: list[list[tuple[float, bool]]], target: float, fallback: float, floor: float,
                         min_support: int = 3) -> list[float]:
    """Per class: the lowest score s such that precision(score ≥ s) ≥ target, with at least
    `min_support` true positives at or above s; else `fallback`. Clamped to [floor, 1]."""
    out = []
    for pairs in scored:
        chosen = None
        pairs = sorted(pairs, key=lambda p: -p[0])
        tp = fp = 0
        for i, (score, hit) in enumerate(pairs):
            tp, fp = tp + hit, fp + (not hit)
            if i + 1 < len(pairs) and pairs[i + 1][0] == score:
                continue  # ties: a threshold keeps all of them or none
            if tp / (tp + fp) >= target and tp >= min_support:
                chosen = score
        out.append(min(1.0, max(floor, fallback if chosen is None else chosen)))
    return out


def quantile_thresholds(rows: list[dict], n_classes: int, keep_fraction: float, fallback: float,
                        floor: float) -> list[float]:
    """Per class: the score above which the top `keep_fraction` of its pool detections lie
    (only detections scoring at least `floor` count); `fallback` for a class never detected."""
    return thresholds_from_scores(class_scores(rows, n_classes, floor), keep_fraction, fallback, floor)


def class_scores(rows: list[dict], n_classes: int, floor: float) -> list[list[float]]:
    """Each class's detection scores at or above `floor`."""
    scores: list[list[float]] = [[] for _ in range(n_classes)]
    for r in rows:
        for b in r["boxes"] or []:
            if b["score"] >= floor:
                scores[b["cls"]].append(b["score"])
    return scores


def thresholds_from_scores(scores: list, keep_fraction: float, fallback: float, floor: float) -> list[float]:
    """`quantile_thresholds` from each class's detection scores (those >= floor)."""
    out = []
    for s in scores:
        t = float(np.quantile(s, 1.0 - keep_fraction, method="higher")) if len(s) else fallback
        out.append(min(1.0, max(floor, t)))
    return out
