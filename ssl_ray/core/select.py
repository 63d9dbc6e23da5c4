"""Pseudo-label selection: pure functions over prediction rows, no Ray, no model.

Each image gets exactly one outcome:

- **pseudo**: at least one box passes its class threshold, the size filter and (when
  consistency views ran) the agreement filter; only those boxes are kept, the `max_boxes`
  highest-scoring ones. With `max_images_per_class`, each class (of an image's best box)
  trains on at most that many pseudo-labeled images, the highest-scoring first: frequent
  classes do not drown rare ones. The rest stay counted as pseudo but are not trained on.
- **negative**: no detection scores at or above `negative_max_score`: background. Only a
  bounded share of the training selection (`max_negative_fraction`) is used; the rest stay
  counted as negatives but are not trained on.
- **uncertain**: everything else (detections between the low and high thresholds, or
  confident ones the other views disagree with). Ranked by uncertainty for human review.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ssl_ray.config import SelectConfig
from ssl_ray.errors import ConfigError


@dataclass
class Selection:
    pseudo: list[dict] = field(default_factory=list)  # every pseudo-labeled image, used or not
    negative: list[dict] = field(default_factory=list)  # every negative, used or not
    uncertain: list[dict] = field(default_factory=list)  # most uncertain first
    negatives_used: list[dict] = field(default_factory=list)
    pseudo_used: list[dict] = field(default_factory=list)  # after the per-class cap
    thresholds: list[float] = field(default_factory=list)  # the threshold of each class

    @property
    def training(self) -> list[dict]:
        """The rows that go into training: the capped pseudo-labeled images and negatives."""
        return self.pseudo_used + self.negatives_used

    def counts(self) -> dict[str, int]:
        return {
            "pseudo": len(self.pseudo),
            "negative": len(self.negative),
            "uncertain": len(self.uncertain),
            "negative_used": len(self.negatives_used),
            "pseudo_used": len(self.pseudo_used),
        }


def class_thresholds(
    cfg: SelectConfig, names: list[str], conf: float | None = None, class_conf: list[float] | None = None
) -> list[float]:
    """Threshold per class id: `per_class` (by name or id) over `class_conf` (one per class,
    e.g. adaptive ones), else over the global `conf` (default `select.conf`)."""
    if class_conf is not None and len(class_conf) != len(names):
        raise ValueError(f"class_conf has {len(class_conf)} thresholds for {len(names)} classes")
    out = list(class_conf) if class_conf is not None else [cfg.conf if conf is None else conf] * len(names)
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
        b
        for b in boxes
        if b["score"] >= thresholds[b["cls"]]
        and min(b["w"] * w, b["h"] * h) >= cfg.min_box_px
        and agrees(b, cfg.min_agreement)
    ]
    if confident:
        confident.sort(key=lambda b: -b["score"])
        return "pseudo", confident[: cfg.max_boxes], 0.0
    best = max((b["score"] for b in boxes), default=0.0)
    if best < cfg.negative_max_score:
        return "negative", [], 0.0
    return "uncertain", boxes, uncertainty(boxes, cfg.negative_max_score, thresholds)


def selected_row(row: dict, outcome: str, boxes: list[dict], round: int) -> dict:
    """A prediction row with its outcome and its kept boxes."""
    return {**row, "source": outcome, "round": round, "boxes": boxes}


def agrees(b: dict, min_agreement: float) -> bool:
    """A box without an agreement value (no consistency views ran) always agrees."""
    return b.get("agree") is None or b["agree"] >= min_agreement


def uncertainty(boxes: list[dict], low: float, thresholds: list[float]) -> float:
    """Sum over boxes of how ambiguous each is: in the (low, class threshold) band, how close
    it is to the band's middle (1 at the middle, 0 at its edges); above its threshold, the
    share of views that disagree with it. Many ambiguous boxes rank first."""
    total = 0.0
    for b in boxes:
        high = thresholds[b["cls"]]
        if low <= b["score"] < high:
            half = (high - low) / 2
            total += 1.0 - abs(b["score"] - (low + half)) / half
        elif b["score"] >= high and b.get("agree") is not None:
            total += 1.0 - b["agree"]
    return total


def select(
    rows: list[dict],
    cfg: SelectConfig,
    names: list[str],
    *,
    round: int,
    conf: float | None = None,
    class_conf: list[float] | None = None,
) -> Selection:
    """Split prediction rows into pseudo / negative / uncertain; cap pseudo images per class
    and negatives; rank uncertain. `class_conf` (one threshold per class, e.g. adaptive ones)
    replaces the global `conf`; `select.per_class` still overrides both."""
    thresholds = class_thresholds(cfg, names, conf, class_conf)
    result = Selection(thresholds=thresholds)
    ranked = []
    for row in rows:
        outcome, boxes, score = classify(row, cfg, thresholds)
        out = selected_row(row, outcome, boxes, round)
        if outcome == "uncertain":
            ranked.append((-score, row["image_id"], out))
        else:
            getattr(result, outcome).append(out)
    result.uncertain = [r for *_, r in sorted(ranked, key=lambda t: t[:2])]
    result.pseudo_used = cap_per_class(result.pseudo, cfg.max_images_per_class)
    result.negatives_used = cap_negatives(result.negative, len(result.pseudo_used), cfg.max_negative_fraction)
    return result


def cap_per_class(pseudo: list[dict], cap: int | None) -> list[dict]:
    """At most `cap` images per class, an image counting for the class of its best box (its
    boxes are sorted best first); the highest-scoring images are kept. Order is preserved."""
    if cap is None:
        return list(pseudo)
    ranked = sorted(range(len(pseudo)), key=lambda i: (-pseudo[i]["boxes"][0]["score"], pseudo[i]["image_id"]))
    taken: dict[int, int] = {}
    keep = set()
    for i in ranked:
        cls = pseudo[i]["boxes"][0]["cls"]
        if taken.get(cls, 0) < cap:
            taken[cls] = taken.get(cls, 0) + 1
            keep.add(i)
    return [row for i, row in enumerate(pseudo) if i in keep]


def cap_negatives(negatives: list[dict], n_pseudo: int, fraction: float) -> list[dict]:
    """At most `fraction` of (pseudo + negatives used); a stable, content-based choice."""
    limit = len(negatives) if fraction >= 1.0 else int(fraction * n_pseudo / (1.0 - fraction))
    return sorted(negatives, key=lambda r: negative_order(r["image_id"]))[:limit]


def negative_order(image_id: str) -> int:
    """The order negatives are taken in: a hash of the content, so the choice is stable."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "big")
