"""Box geometry (pure numpy): the one place for box formats, IoU and the letterbox mapping.

Two box formats meet here: contract boxes (dicts of normalized centre xywh on the original
image, as Parquet rows and YOLO label files hold them) and detection boxes (xyxy pixels on
the letterboxed canvas the teacher sees). `Letterbox` records how an image was placed on
its canvas, so detections map back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114  # Ultralytics' letterbox grey


@dataclass(frozen=True, slots=True)
class Letterbox:
    ratio: float  # original -> canvas scale (fields may also be arrays, one per box)
    pad_x: float  # left padding, canvas pixels
    pad_y: float  # top padding


def letterbox_params(width: int, height: int, size: int, stride: int = 0) -> tuple[int, int, Letterbox]:
    """(resized width, resized height, placement) of a width x height image, aspect ratio kept,
    its long side `size`, centred on its canvas (`canvas_size`), as Ultralytics letterboxes."""
    ratio = min(size / height, size / width)
    nw, nh = max(1, round(width * ratio)), max(1, round(height * ratio))
    cw, ch = canvas_size(nw, nh, size, stride)
    return nw, nh, Letterbox(ratio, float((cw - nw) // 2), float((ch - nh) // 2))


def canvas_size(nw: int, nh: int, size: int, stride: int = 0) -> tuple[int, int]:
    """(width, height) of the canvas for an image resized to nw x nh: size x size (`stride`
    0), or the smallest padding that keeps each side's padding a multiple of `stride` (a
    rectangle, as Ultralytics' predict letterboxes: 1280x720 at 640 is 640x384)."""
    if not stride:
        return size, size
    return nw + (size - nw) % stride, nh + (size - nh) % stride


def xyxy_of(box: dict) -> np.ndarray:
    """A contract box (normalized centre xywh) as normalized xyxy."""
    return np.array(
        [box["x"] - box["w"] / 2, box["y"] - box["h"] / 2, box["x"] + box["w"] / 2, box["y"] + box["h"] / 2]
    )


def xyxy_of_boxes(boxes: list[dict]) -> np.ndarray:
    """Contract boxes as a (k, 4) normalized xyxy array."""
    return np.array([xyxy_of(b) for b in boxes], dtype=np.float64).reshape(-1, 4)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of (k, 4) xyxy boxes; 0 where the union is empty."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def to_normalized_xywh(xyxy: np.ndarray, lb: Letterbox, width, height) -> np.ndarray:
    """Canvas-pixel xyxy (N, 4) -> normalized centre xywh on the original image, clipped.

    Broadcasts: `lb`'s fields, `width` and `height` may be arrays of N, one per box (the
    boxes of several images at once)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip((xyxy[:, 0] - lb.pad_x) / lb.ratio, 0, width)
    y0 = np.clip((xyxy[:, 1] - lb.pad_y) / lb.ratio, 0, height)
    x1 = np.clip((xyxy[:, 2] - lb.pad_x) / lb.ratio, 0, width)
    y1 = np.clip((xyxy[:, 3] - lb.pad_y) / lb.ratio, 0, height)
    return np.stack([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height], axis=1)


def to_canvas_xyxy(boxes: list[dict], lb: Letterbox, width: int, height: int) -> np.ndarray:
    """Contract boxes of a width x height image -> (k, 4) xyxy pixels on its canvas
    (the inverse of `to_normalized_xywh`)."""
    scale = np.array([width, height, width, height]) * lb.ratio
    return xyxy_of_boxes(boxes) * scale + [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]


def pad_to_stride(images: np.ndarray, stride: int) -> np.ndarray:
    """A batch (N, H, W, 3) padded at the bottom and right (grey, as a letterbox) to a multiple
    of the model's stride; pixel coordinates are unchanged. The same array when it fits."""
    h, w = images.shape[1:3]
    ph, pw = -h % stride, -w % stride
    if not ph and not pw:
        return images
    out = np.full((images.shape[0], h + ph, w + pw, images.shape[3]), PAD_VALUE, images.dtype)
    out[:, :h, :w] = images
    return out
