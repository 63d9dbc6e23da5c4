"""The online teacher–student's decisions (pure): what a teacher's detection teaches the
student, how much the unlabeled loss weighs at a step, and the teacher's decay.

`train.ssl: online` trains each round with a mean teacher inside the Ray Train ranks
(`ssl_ray.adapters.online`): every step the teacher (an exponential moving average of the
student) detects on a weak view of an unlabeled batch, and the student learns, on a strong
view of the same images, what `pseudo_targets` makes of those detections:

    reliable     score >= its class's threshold (the round's adaptive per-class cut), and
                 with `train.teacher_consistency` agreed by at least select.min_agreement
                 of the teacher's views -> a full target: classification and box losses
    uncertain    train.soft_min_score <= score < the class's threshold
                 -> a soft classification target (its score), no box loss: the student is
                    not taught that a likely object is background, nor where its box is
    background   below both -> nothing (the loss treats the area as background)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PseudoTargets:
    """Targets for the student on one unlabeled batch, in Ultralytics' batch layout (one row
    per box, rows of an image together, images in order)."""

    batch_idx: np.ndarray  # (n,) image of each box in the batch
    cls: np.ndarray  # (n,) class id
    xywhn: np.ndarray  # (n, 4) centre x, y, width, height, normalized to the canvas
    weight: np.ndarray  # (n,) classification target scale: 1 reliable, the score uncertain
    box: np.ndarray  # (n,) bool: the box is trained (reliable boxes only)

    def __len__(self) -> int:
        return len(self.cls)

    @property
    def n_reliable(self) -> int:
        return int(self.box.sum())

    @property
    def n_uncertain(self) -> int:
        return int((~self.box).sum())


def pseudo_targets(
    detections: list[np.ndarray],
    high: list[float] | np.ndarray,
    low: float | None,
    size: tuple[int, int],
    min_side: float = 2.0,
    agree: list[np.ndarray] | None = None,
    min_agree: float = 1.0,
) -> PseudoTargets:
    """The student's targets from the teacher's detections on a batch.

    `detections`: per image, a (k, 6) array of x1, y1, x2, y2 (canvas pixels), score, class.
    `high`: the reliable threshold of each class; `low`: the uncertain floor (None = no
    uncertain boxes: below `high` is background). `size`: the canvas (height, width). Boxes
    are clipped to the canvas; a box with a side under `min_side` pixels after clipping is
    dropped (it is not an object the student can learn). `agree` (per image, (k,): the share
    of the teacher's views that found each box): a box above its threshold that fewer than
    `min_agree` of them found is uncertain, not reliable."""
    high = np.asarray(high, dtype=np.float64)
    h, w = size
    rows = []
    for i, det in enumerate(detections):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        if not len(det):
            continue
        cls = np.round(det[:, 5]).astype(np.int64)
        if (cls < 0).any() or (cls >= len(high)).any():
            raise ValueError(f"pseudo_targets: class ids {sorted(set(cls.tolist()))} outside 0..{len(high) - 1}")
        score = det[:, 4]
        cut = high[cls]
        reliable = score >= cut
        demoted = np.zeros(len(det), bool)
        if agree is not None:
            demoted = reliable & (np.asarray(agree[i], dtype=np.float64) < min_agree - 1e-9)
            reliable &= ~demoted
        uncertain = ~reliable & (demoted | (score >= low)) if low is not None else np.zeros(len(det), bool)
        x1, x2 = np.clip(det[:, 0], 0, w), np.clip(det[:, 2], 0, w)
        y1, y2 = np.clip(det[:, 1], 0, h), np.clip(det[:, 3], 0, h)
        keep = (reliable | uncertain) & (x2 - x1 >= min_side) & (y2 - y1 >= min_side)
        if not keep.any():
            continue
        xywhn = np.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], axis=1)
        weight = np.where(reliable, 1.0, score)
        rows.append((np.full(keep.sum(), i), cls[keep], xywhn[keep], weight[keep], reliable[keep]))
    if not rows:
        return PseudoTargets(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool)
        )
    return PseudoTargets(*(np.concatenate(parts) for parts in zip(*rows)))


def scale_translate(det: np.ndarray, scale: float, tx: float, ty: float, size: tuple[int, int]) -> np.ndarray:
    """Detections (k, 6) mapped by the student view's geometry: scaled by `scale` about the
    canvas centre, then shifted by (tx, ty) pixels; scores and classes unchanged."""
    h, w = size
    out = np.array(det, dtype=np.float64).reshape(-1, 6)
    out[:, [0, 2]] = scale * (out[:, [0, 2]] - w / 2) + w / 2 + tx
    out[:, [1, 3]] = scale * (out[:, [1, 3]] - h / 2) + h / 2 + ty
    return out


def unsup_weight(step: int, weight: float, warmup_steps: int) -> float:
    """The unlabeled loss's weight at optimizer step `step` (0-based): a linear ramp from 0
    to `weight` over the first `warmup_steps` steps (no ramp at 0)."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, (step + 1) / warmup_steps)


def teacher_decay(decay: float):
    """The teacher's EMA decay at every update: constant. Ultralytics' own EMA ramps its decay
    up from 0 over ~2,000 updates, which makes it follow the student closely for a whole short
    round; the teacher starts from the last round's weights (its burn-in) and moves slowly."""
    return lambda updates: decay
