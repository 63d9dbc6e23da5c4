"""Box math (pure numpy): letterboxing images for batched inference and mapping detections
back to normalized xywh on the original image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True, slots=True)
class Letterbox:
    ratio: float  # original -> letterboxed scale
    pad_x: float  # left padding, letterboxed pixels
    pad_y: float  # top padding


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio into a size x size canvas, centered (as Ultralytics does)."""
    import cv2

    h, w = image.shape[:2]
    ratio = min(size / h, size / w)
    nw, nh = max(1, round(w * ratio)), max(1, round(h * ratio))
    resized = image if (nw, nh) == (w, h) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return canvas, Letterbox(ratio, float(left), float(top))


def to_normalized_xywh(xyxy: np.ndarray, lb: Letterbox, width: int | np.ndarray, height: int | np.ndarray) -> np.ndarray:
    """Letterboxed-pixel xyxy (N, 4) -> normalized center xywh on the original image, clipped.

    Broadcasts: `lb`'s fields, `width` and `height` may also be arrays of N, one per box
    (boxes of several images at once)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip((xyxy[:, 0] - lb.pad_x) / lb.ratio, 0, width)
    y0 = np.clip((xyxy[:, 1] - lb.pad_y) / lb.ratio, 0, height)
    x1 = np.clip((xyxy[:, 2] - lb.pad_x) / lb.ratio, 0, width)
    y1 = np.clip((xyxy[:, 3] - lb.pad_y) / lb.ratio, 0, height)
    return np.stack([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], axis=1)


def pixel_window(box: dict, width: int, height: int) -> tuple[int, int, int, int]:
    """A normalized xywh box's pixels as (x0, y0, x1, y1) slice bounds, every pixel it
    touches included (rounded outward, past float noise), clipped to the image."""
    eps = 1e-6
    x0 = int(np.floor((box["x"] - box["w"] / 2) * width + eps))
    y0 = int(np.floor((box["y"] - box["h"] / 2) * height + eps))
    x1 = int(np.ceil((box["x"] + box["w"] / 2) * width - eps))
    y1 = int(np.ceil((box["y"] + box["h"] / 2) * height - eps))
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def paint_out(image: np.ndarray, regions: list[dict], keep: list[dict], fill: int = PAD_VALUE) -> np.ndarray:
    """A copy of an HxWxC image with each region (normalized xywh box) filled with `fill`,
    except the pixels of the `keep` boxes, which stay as they were: a region that overlaps a
    labeled object never erases any of it."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    for box in regions:
        x0, y0, x1, y1 = pixel_window(box, w, h)
        mask[y0:y1, x0:x1] = True
    for box in keep:
        x0, y0, x1, y1 = pixel_window(box, w, h)
        mask[y0:y1, x0:x1] = False
    out = image.copy()
    out[mask] = fill
    return out
