"""Pseudo-label selection: pure functions over prediction rows, no Ray, no model.

Each image gets exactly one outcome:

- **pseudo**: at least one box passes its class threshold (and the size filter); only those
  boxes are kept, the `max_boxes` highest-scoring ones.
- **negative**: no detection scores at or above `negative_max_score`: background. Only a
  bounded share of the training selection (`max_negative_fraction`) is used; the rest stay
  counted as negatives but are not trained on.
- **uncertain**: everything else (detections between the low and high thresholds). Ranked by
  uncertainty for human review.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ssl_ray.config import SelectConfig
from ssl_ray.errors import ConfigError


@dataclass
class Selection:
    pseudo: list[dict] = field(default_factory=list)
    negative: list[dict] = field(default_factory=list)  # every negative, used or not
    uncertain: list[dict] = field(default_factory=list)  # most uncertain first
    negatives_used: list[dict] = field(default_factory=list)

    @property
    def training(self) -> list[dict]:
        """The rows that go into training: pseudo-labeled images plus the capped negatives."""
        return self.pseudo + self.negatives_used

    def counts(self) -> dict[str, int]:
        return {"pseudo": len(self.pseudo), "negative": len(self.negative), "uncertain": len(self.uncertain),
                "negative_used": len(self.negatives_used)}


def class_thresholds(cfg: SelectConfig, names: list[str], conf: float | None = None) -> list[float]:
    """Threshold per class id: `per_class` (by name or id) over the global `conf`."""
    base = cfg.conf if conf is None else conf
    out = [base] * len(names)
    for key, value in cfg.per_class.items():
        if key in names:
            out[names.index(key)] = value
        elif key.isdigit() and int(key) < len(names):
            out[int(key)] = value
        else:
            raise ConfigError(f"select.per_class.{key}: no such class (names: {', '.join(names)})")
    return out


def classify(row: dict, cfg: SelectConfig, thresholds: list[float]) -> tuple[str, list[dict], float]:
    """(outcome, boxes to keep, uncertainty) for one prediction row."""
    boxes = row["boxes"] or []
    w, h = row["width"], row["height"]
    confident = [
        b for b in boxes
        if b["score"] >= thresholds[b["cls"]] and min(b["w"] * w, b["h"] * h) >= cfg.min_box_px
    ]
    if confident:
        confident.sort(key=lambda b: -b["score"])
        return "pseudo", confident[: cfg.max_boxes], 0.0
    best = max((b["score"] for b in boxes), default=0.0)
    if best < cfg.negative_max_score:
        return "negative", [], 0.0
    return "uncertain", boxes, uncertainty(boxes, cfg.negative_max_score, thresholds)


def uncertainty(boxes: list[dict], low: float, thresholds: list[float]) -> float:
    """Sum over boxes in the (low, class threshold) band of how close each is to the band's
    middle (1 at the middle, 0 at its edges): many ambiguous boxes rank first."""
    total = 0.0
    for b in boxes:
        high = thresholds[b["cls"]]
        if low <= b["score"] < high:
            half = (high - low) / 2
            total += 1.0 - abs(b["score"] - (low + half)) / half
    return total


def select(rows: list[dict], cfg: SelectConfig, names: list[str], *, round: int, conf: float | None = None) -> Selection:
    """Split prediction rows into pseudo / negative / uncertain; cap negatives; rank uncertain."""
    thresholds = class_thresholds(cfg, names, conf)
    result = Selection()
    ranked = []
    for row in rows:
        outcome, boxes, score = classify(row, cfg, thresholds)
        out = {**row, "source": outcome, "round": round, "boxes": boxes}
        if outcome == "uncertain":
            ranked.append((-score, row["image_id"], out))
        else:
            getattr(result, outcome).append(out)
    result.uncertain = [r for *_, r in sorted(ranked, key=lambda t: t[:2])]
    result.negatives_used = cap_negatives(result.negative, len(result.pseudo), cfg.max_negative_fraction)
    return result


def cap_negatives(negatives: list[dict], n_pseudo: int, fraction: float) -> list[dict]:
    """At most `fraction` of (pseudo + negatives used); a stable, content-based choice."""
    limit = len(negatives) if fraction >= 1.0 else int(fraction * n_pseudo / (1.0 - fraction))
    ordered = sorted(negatives, key=lambda r: hashlib.blake2b(r["image_id"].encode(), digest_size=8).digest())
    return ordered[:limit]
