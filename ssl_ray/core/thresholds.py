"""Adaptive per-class confidence thresholds (pure), derived from data every round instead of
one global number (`select.adaptive: val_precision`).

The teacher's detections on the held-out labeled val set are matched to the ground truth
(same class, IoU ≥ 0.5, greedy by score); per class, the threshold is the lowest score at
which the precision of everything scoring at least that much reaches the target. A class
whose precision never reaches it, or with fewer than `min_support` true positives above the
threshold, falls back to the round's global threshold. Thresholds are clamped to [floor, 1].
"""

from __future__ import annotations

from ssl_ray.core.geometry import iou, xyxy_of, xyxy_of_boxes


def match_detections(
    preds: dict[str, list[dict]], truth: dict[str, list[dict]], n_classes: int, iou_thr: float = 0.5
) -> tuple[list[list[tuple[float, bool]]], list[int]]:
    """Per class: (score, is true positive) of every detection, and the ground-truth count.
    `preds` and `truth` map image ids to boxes (normalized xywh; IoU does not depend on the
    image's size)."""
    scored: list[list[tuple[float, bool]]] = [[] for _ in range(n_classes)]
    n_truth = [0] * n_classes
    for image_id in set(preds) | set(truth):
        gts = truth.get(image_id, [])
        for g in gts:
            n_truth[g["cls"]] += 1
        taken = [False] * len(gts)
        gt_boxes = xyxy_of_boxes(gts)
        for p in sorted(preds.get(image_id, []), key=lambda b: -b["score"]):
            best, best_iou = -1, iou_thr
            if len(gts):
                overlaps = iou(xyxy_of(p), gt_boxes)
                for j, (g, o) in enumerate(zip(gts, overlaps)):
                    if not taken[j] and g["cls"] == p["cls"] and o >= best_iou:
                        best, best_iou = j, o
            if best >= 0:
                taken[best] = True
            scored[p["cls"]].append((float(p["score"]), best >= 0))
    return scored, n_truth


def precision_thresholds(
    scored: list[list[tuple[float, bool]]], target: float, fallback: float, floor: float, min_support: int = 3
) -> list[float]:
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
