"""Exactly-once accounting over the label stage's raw output (pure, no Ray).

Ray Data retries blocks after actor failures, so raw output is at-least-once: the same item
can appear more than once. Here each pool item is reduced to exactly one outcome:

- the same `image_id` from the same `uri` again is a retry: dropped;
- the same `image_id` from another `uri` is duplicate content: that item is a reject
  ('duplicate'), so every listed item still has exactly one outcome;
- rejects are keyed by `uri`.

Order does not matter: rows are sorted first, so the kept copy is always the same.
"""

from __future__ import annotations

from ssl_ray.core import schema
from ssl_ray.core.schema import REASONS

PRED_FIELDS = [f.name for f in schema.ROW_SCHEMA]


def dedupe(raw: list[dict], round: int, teacher: str) -> tuple[list[dict], list[dict], int]:
    """(prediction rows, reject rows, retried copies dropped)."""
    raw = sorted(raw, key=lambda r: (r["uri"], r["reject_reason"], r["image_id"]))
    owner: dict[str, str] = {}
    rejected: set[str] = set()
    preds, rejects, retries = [], [], 0
    for r in raw:
        uri = r["uri"]
        if r["reject_reason"]:
            if uri in rejected:
                retries += 1
                continue
            rejected.add(uri)
            rejects.append(schema.make_reject(uri, r["reject_reason"], r["reject_detail"], round))
            continue
        first = owner.get(r["image_id"])
        if first == uri:
            retries += 1
            continue
        if first is not None:
            if uri not in rejected:
                rejected.add(uri)
                rejects.append(schema.make_reject(uri, "duplicate", f"{REASONS['duplicate']}: {first}", round))
            continue
        owner[r["image_id"]] = uri
        preds.append({**{k: r.get(k) for k in PRED_FIELDS}, "source": None, "round": round, "teacher": teacher})
    return preds, rejects, retries


def quarantined(rejected_by_reason: dict[str, int]) -> int:
    """Rejects for bad input: all but the items skipped by choice (near-duplicate frames)."""
    return sum(n for reason, n in rejected_by_reason.items() if reason not in schema.SKIPPED_REASONS)


def reject_fraction_error(n_rejected: int, n_items: int, limit: float) -> str | None:
    """A message when too much of the pool was quarantined, else None."""
    if n_items and n_rejected / n_items > limit:
        return (
            f"{n_rejected} of {n_items} pool items ({n_rejected / n_items:.1%}) were quarantined, more than "
            f"pool.max_reject_fraction ({limit:.1%}); see the rejects Parquet for reasons"
        )
    return None


def boxes_per_class(rows: list[dict], names: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for r in rows:
        for b in r["boxes"] or []:
            counts[names[b["cls"]]] += 1
    return counts


HISTOGRAM_BINS = 20


def score_histogram(rows: list[dict], bins: int = HISTOGRAM_BINS) -> list[int]:
    """Counts of every kept detection score in `bins` equal bins over [0, 1] (1.0 in the last)."""
    counts = [0] * bins
    for r in rows:
        for b in r["boxes"] or []:
            counts[min(int(b["score"] * bins), bins - 1)] += 1
    return counts


def significant(x: float, digits: int = 4) -> float:
    """`x` to `digits` significant digits, for summaries people read."""
    return float(f"{x:.{digits}g}")
