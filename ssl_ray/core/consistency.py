"""Consistency under test-time augmentation (pure numpy): a teacher should find the same
objects on an image and on a transformed copy of it.

Views are transforms of the letterboxed canvas, of the canvas's size, so they share its
forward batch:

- `flip`: horizontal mirror;
- `scale:S` (0 < S < 1): the canvas shrunk by S about its centre, padded with grey.

Canvases of several shapes (`label.canvas: rect`) are predicted one shape at a time
(`detect_by_shape`), each group with views of its own size.

Each is an axis-aligned affine map x' = a·x + b (and y' = c·y + d), so boxes predicted on a
view map back exactly. A base box *agrees* with a view when that view has a box of the same
class with IoU ≥ `iou` after the map back. Boxes are matched greedily, highest score first,
each view box used once. An agreeing box is fused: its coordinates are the score-weighted
mean of the matched boxes, its score the mean of their scores; its `agree` is the share of
the views that agree (1.0 = all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_ray.core.detections import Detections
from ssl_ray.core.geometry import PAD_VALUE, iou


@dataclass(frozen=True, slots=True)
class View:
    name: str
    a: float = 1.0  # x' = a*x + b
    b: float = 0.0
    c: float = 1.0  # y' = c*y + d
    d: float = 0.0


def parse_views(specs: list[str], width: int, height: int | None = None) -> list[View]:
    """`["flip", "scale:0.8"]` -> views for a canvas `width` x `height` pixels (square when
    `height` is not given)."""
    height = width if height is None else height
    views = []
    for spec in specs:
        name, _, arg = spec.partition(":")
        if name == "flip" and not arg:
            views.append(View(spec, a=-1.0, b=float(width)))
        elif name == "scale" and arg:
            try:
                s = float(arg)
            except ValueError:
                raise ValueError(f"{spec!r}: {arg!r} is not a number") from None
            if not 0 < s < 1:
                raise ValueError(f"{spec!r}: the scale must be between 0 and 1")
            views.append(View(spec, a=s, b=(1 - s) * width / 2, c=s, d=(1 - s) * height / 2))
        else:
            raise ValueError(f"{spec!r}: unknown view (expected 'flip' or 'scale:S')")
    return views


def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """The view of a batch of canvases (N, H, W, 3) uint8, of the same shape."""
    if view.a == -1.0:
        return np.ascontiguousarray(images[:, :, ::-1])
    import cv2

    h, w = images.shape[1:3]
    inner_w, inner_h = max(1, round(w * view.a)), max(1, round(h * view.c))
    left, top = int(round(view.b)), int(round(view.d))
    out = np.full_like(images, PAD_VALUE)
    for i in range(len(images)):
        out[i, top : top + inner_h, left : left + inner_w] = cv2.resize(
            images[i], (inner_w, inner_h), interpolation=cv2.INTER_AREA
        )
    return out


def undo_view(dets: Detections, view: View) -> Detections:
    """Detections predicted on a view, in canvas coordinates."""
    xs = (dets.xyxy[:, [0, 2]] - view.b) / view.a
    ys = (dets.xyxy[:, [1, 3]] - view.d) / view.c
    # a flip swaps the edges
    return dets.with_boxes(np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1))


def fuse(base: Detections, others: list[Detections], iou_thr: float) -> Detections:
    """The base view's detections, fused with each other view's (already mapped back with
    `undo_view`), with their agreement. Every base box is kept; only matched ones move."""
    xyxy, score = base.xyxy.copy(), base.score.copy()
    agree = np.zeros(len(base))
    used = [np.zeros(len(o), dtype=bool) for o in others]
    for i in np.argsort(-base.score, kind="stable"):
        boxes, scores = [base.xyxy[i]], [base.score[i]]
        for v, other in enumerate(others):
            if not len(other):
                continue
            overlap = iou(base.xyxy[i], other.xyxy)
            overlap[(other.cls != base.cls[i]) | used[v]] = -1.0
            j = int(np.argmax(overlap))
            if overlap[j] >= iou_thr:
                used[v][j] = True
                boxes.append(other.xyxy[j])
                scores.append(other.score[j])
        agree[i] = (len(boxes) - 1) / max(len(others), 1)
        if len(boxes) > 1:
            weights = np.asarray(scores) / max(sum(scores), 1e-12)
            xyxy[i] = (np.stack(boxes) * weights[:, None]).sum(axis=0)
            score[i] = np.mean(scores)
    return Detections(xyxy, score, base.cls, agree if others else None)


def detect_with_views(
    predict, images: np.ndarray, views: list[View], iou_thr: float, *, apply=apply_view, concat=np.concatenate
) -> list[Detections]:
    """Each canvas's detections, fused over `views` (with agreement; none without views).

    `predict(batch) -> [Detections per canvas]` runs the teacher; the canvases and all their
    views go through it in one call. `apply` and `concat` make the views and join the batch
    (numpy's here; `adapters.decode.apply_view` and `torch.cat` for canvases on a device)."""
    if not views:
        return predict(images)
    n = len(images)
    found = predict(concat([images] + [apply(images, v) for v in views]))
    return [
        fuse(found[i], [undo_view(found[(k + 1) * n + i], v) for k, v in enumerate(views)], iou_thr) for i in range(n)
    ]


def detect_by_shape(detect, images, stack=np.stack) -> list[Detections]:
    """`detect(batch of one shape) -> [Detections per canvas]` over canvases that may differ
    in shape (an (N, H, W, 3) array, or a sequence of (H, W, 3) arrays or, with `stack=torch.stack`,
    tensors): one call per shape, the results in the canvases' order."""
    if isinstance(images, np.ndarray) and images.dtype != object:
        return detect(images)
    groups: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(image.shape, []).append(i)
    found: list[Detections | None] = [None] * len(images)
    for members in groups.values():
        for i, dets in zip(members, detect(stack([images[i] for i in members])), strict=True):
            found[i] = dets
    return found
