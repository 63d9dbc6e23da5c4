"""Round planning (pure): thresholds per round, early stopping, the best round, and the
merge of labeled and pseudo-labeled rows. The driver (`ssl_ray.driver`) does the I/O."""

from __future__ import annotations

from ssl_ray.config import RoundsConfig, SelectConfig


def threshold_for(round: int, rounds: RoundsConfig, select: SelectConfig) -> float:
    """Confidence threshold of round r >= 1: `rounds.conf_schedule[r-1]`, its last entry once
    the schedule runs out, or `select.conf` without a schedule."""
    if round < 1:
        raise ValueError("round 0 trains on labeled data only: it has no threshold")
    schedule = rounds.conf_schedule
    return schedule[min(round, len(schedule)) - 1] if schedule else select.conf


def should_stop(scores: list[float], patience: int) -> bool:
    """True when the last `patience` rounds did not improve on the best score before them.
    `scores` are held-out mAP50-95 by round, round 0 first."""
    if len(scores) <= patience:
        return False
    best_before = max(scores[:-patience])
    return max(scores[-patience:]) <= best_before


def best_round(scores: list[float]) -> int:
    """Index of the best round; the earliest one on ties (fewer pseudo-labels, same score)."""
    return max(range(len(scores)), key=lambda r: (scores[r], -r))


def merge(labeled: list[dict], selected: list[dict]) -> list[dict]:
    """Labeled rows plus selected pseudo/negative rows, one row per image_id: a labeled image
    keeps its human labels even if the pool holds the same bytes."""
    seen = {r["image_id"] for r in labeled}
    out = list(labeled)
    for row in selected:
        if row["image_id"] not in seen:
            seen.add(row["image_id"])
            out.append(row)
    return out


def labeled_copies(fraction: float | None, n_labeled: int, n_other: int) -> int:
    """How many times each labeled image appears so that labeled images make up about
    `fraction` of an epoch next to `n_other` pseudo-labeled and negative images (at least 1)."""
    if fraction is None or n_labeled == 0 or n_other == 0:
        return 1
    return max(1, round(fraction / (1 - fraction) * n_other / n_labeled))
