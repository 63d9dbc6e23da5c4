"""Consistency under test-time augmentation (pure numpy): a teacher should find the same
objects on an image and on a transformed copy of it.

Views are transforms of the square letterboxed canvas; those of the canvas's size share
its forward batch:

- `flip`: horizontal mirror;
- `scale:S` (0 < S < 1): the canvas shrunk by S about its centre, padded with grey;
- `zoom:Z` (Z > 1): the whole canvas enlarged Z times, a larger canvas with a forward of its
  own. Small objects get more pixels; whether a teacher then boxes them more tightly depends
  on the sizes it was trained on (`bench/view_tightness.py`).

Each is an axis-aligned affine map x' = a·x + b (and y' = c·y + d), so boxes predicted on a
view map back exactly. A base box *agrees* with a view when that view has a box of the same
class with IoU ≥ `iou` after the map back. Boxes are matched greedily, highest score first,
each view box used once. An agreeing box is fused: coordinates are the score-weighted mean of
the matched boxes, its score the mean of their scores; its `agree` is the fraction of the
*counted* views that agree (1.0 = all). A view that is not counted (label.refine_views) only
refines the coordinates and score of the boxes it matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_ray.boxes import PAD_VALUE


@dataclass(frozen=True, slots=True)
class View:
    name: str
    a: float = 1.0  # x' = a*x + b
    b: float = 0.0
    c: float = 1.0  # y' = c*y + d
    d: float = 0.0


def parse_views(specs: list[str], size: int) -> list[View]:
    """`["flip", "scale:0.8", "zoom:2"]` -> views for a `size` x `size` canvas."""
    views = []
    for spec in specs:
        name, _, arg = spec.partition(":")
        if name == "flip" and not arg:
            views.append(View(spec, a=-1.0, b=float(size)))
        elif name == "scale" and arg:
            s = _factor(spec, arg)
            if not 0 < s < 1:
                raise ValueError(f"{spec!r}: the scale must be between 0 and 1")
            off = (1 - s) * size / 2
            views.append(View(spec, a=s, b=off, c=s, d=off))
        elif name == "zoom" and arg:
            z = _factor(spec, arg)
            if not 1 < z <= 4:
                raise ValueError(f"{spec!r}: the zoom must be above 1 and at most 4")
            z = round(size * z) / size  # the canvas is a whole number of pixels: map back exactly
            views.append(View(spec, a=z, c=z))
        else:
            raise ValueError(f"{spec!r}: unknown view (expected 'flip', 'scale:S' or 'zoom:Z')")
    return views


def _factor(spec: str, arg: str) -> float:
    try:
        return float(arg)
    except ValueError:
        raise ValueError(f"{spec!r}: {arg!r} is not a number") from None


def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """The view of a batch of square canvases (N, S, S, 3) uint8: (N, S, S, 3), or for a zoom
    (N, round(S·Z), round(S·Z), 3)."""
    if view.a == -1.0:
        return np.ascontiguousarray(images[:, :, ::-1])
    import cv2

    n, size = images.shape[0], images.shape[1]
    if view.a > 1:
        big = round(size * view.a)
        return np.stack([cv2.resize(im, (big, big), interpolation=cv2.INTER_LINEAR) for im in images])
    inner = max(1, round(size * view.a))
    off = int(round(view.b))
    out = np.full_like(images, PAD_VALUE)
    for i in range(n):
        out[i, off:off + inner, off:off + inner] = cv2.resize(images[i], (inner, inner), interpolation=cv2.INTER_AREA)
    return out


def undo_view(dets: np.ndarray, view: View) -> np.ndarray:
    """Detections (k, 6: x1, y1, x2, y2, score, cls) predicted on a view, in canvas coordinates."""
    out = np.array(dets, dtype=np.float64, copy=True).reshape(-1, 6)
    xs = (out[:, [0, 2]] - view.b) / view.a
    ys = (out[:, [1, 3]] - view.d) / view.c
    out[:, 0], out[:, 2] = xs.min(axis=1), xs.max(axis=1)  # a flip swaps the edges
    out[:, 1], out[:, 3] = ys.min(axis=1), ys.max(axis=1)
    return out


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of (k, 4) boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def fuse(base: np.ndarray, others: list[np.ndarray], iou_thr: float,
         counted: list[bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fused detections (k, 6), agreement (k,)) for the base view's k detections, given each
    other view's detections already mapped back (`undo_view`). Every base box is kept; only
    matched ones are fused. Agreement is over the views `counted` marks (default: all); with
    none, it is 1."""
    base = np.asarray(base, dtype=np.float64).reshape(-1, 6)
    counted = np.ones(len(others), bool) if counted is None else np.asarray(counted, bool)
    if len(counted) != len(others):
        raise ValueError(f"{len(counted)} counted flags for {len(others)} views")
    fused = base.copy()
    agree = np.ones(len(base)) if not counted.any() else np.zeros(len(base))
    if not others or not len(base):
        return fused, agree
    used = [np.zeros(len(o), dtype=bool) for o in others]
    for i in np.argsort(-base[:, 4], kind="stable"):
        matches, agreeing = [base[i]], 0
        for v, other in enumerate(others):
            if not len(other):
                continue
            overlap = iou(base[i, :4], other[:, :4])
            overlap[(other[:, 5] != base[i, 5]) | used[v]] = -1.0
            j = int(np.argmax(overlap))
            if overlap[j] >= iou_thr:
                used[v][j] = True
                matches.append(other[j])
                agreeing += bool(counted[v])
        if counted.any():
            agree[i] = agreeing / counted.sum()
        if len(matches) > 1:
            m = np.stack(matches)
            weights = m[:, 4] / max(m[:, 4].sum(), 1e-12)
            fused[i, :4] = (m[:, :4] * weights[:, None]).sum(axis=0)
            fused[i, 4] = m[:, 4].mean()
    return fused, agree


def detect_with_views(predict, images: np.ndarray, views: list[View], counted: list[bool],
                      iou_thr: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(fused detections (k, 6), agreement (k,) or None when no view is counted) per canvas.

    `predict(batch) -> [(k, 6) per canvas]` runs the teacher; the canvases and every view of
    them of the same size go through it in one call (a zoom is larger: its own call)."""
    if not views:
        return [(d, None) for d in predict(images)]
    n = len(images)
    canvases = [images] + [apply_view(images, v) for v in views]
    out: list[list[np.ndarray]] = [[] for _ in canvases]
    for shape in dict.fromkeys(c.shape for c in canvases):
        same = [k for k, c in enumerate(canvases) if c.shape == shape]
        dets = predict(np.concatenate([canvases[k] for k in same]))
        for j, k in enumerate(same):
            out[k] = dets[j * n:(j + 1) * n]
    results = [fuse(out[0][i], [undo_view(out[k + 1][i], v) for k, v in enumerate(views)], iou_thr, counted)
               for i in range(n)]
    return results if any(counted) else [(d, None) for d, _ in results]
