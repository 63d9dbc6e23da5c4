"""A seeded procedural "shapes" detection dataset, for tests, the demo and benchmarks.

Shapes (circle, square, triangle, ...) on noisy, unevenly lit backgrounds, with YOLO labels.
Layout written under `root`:

    data.yaml            train: images/train, val: images/val   (the labeled set)
    data_oracle.yaml     train: [images/train, images/pool]      (as if the pool were labeled)
    images/{train,val,pool}/*.jpg
    labels/{train,val,pool}/*.txt   (pool labels are ground truth, for oracles and scoring)

The pool folder `images/pool` holds only images: point `pool.sources` at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")


@dataclass(frozen=True, slots=True)
class SynthSpec:
    n_train: int = 40
    n_val: int = 32
    n_pool: int = 200
    imgsz: int = 160
    n_classes: int = 3
    max_objects: int = 4
    min_size: float = 0.12  # object size as a fraction of the image side
    max_size: float = 0.35
    clutter: int = 0  # distractor strokes per image (not labeled)
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.n_classes <= len(SHAPES):
            raise ValueError(f"n_classes must be 1..{len(SHAPES)}, got {self.n_classes}")
        if not 0 < self.min_size <= self.max_size < 1:
            raise ValueError("expected 0 < min_size <= max_size < 1")


def generate(root: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write the dataset under `root` (idempotent: same spec, same bytes). Returns data.yaml."""
    root = Path(root)
    names = list(SHAPES[: spec.n_classes])
    for split, count, offset in (("train", spec.n_train, 0), ("val", spec.n_val, 1), ("pool", spec.n_pool, 2)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([spec.seed, offset, i])
            image, lines = render(rng, spec)
            image.save(img_dir / f"{split}_{i:06d}.jpg", quality=90)
            (lbl_dir / f"{split}_{i:06d}.txt").write_text("".join(lines))
    for fname, train in (("data.yaml", "images/train"), ("data_oracle.yaml", ["images/train", "images/pool"])):
        meta = {"path": ".", "train": train, "val": "images/val", "names": dict(enumerate(names))}
        (root / fname).write_text(yaml.safe_dump(meta, sort_keys=False))
    return root / "data.yaml"


def render(rng: np.random.Generator, spec: SynthSpec) -> tuple[Image.Image, list[str]]:
    """One image and its YOLO label lines."""
    s = spec.imgsz
    image = Image.fromarray(_background(rng, s))
    draw = ImageDraw.Draw(image)
    for _ in range(spec.clutter):
        pts = [tuple(int(v) for v in rng.integers(0, s, 2)) for _ in range(3)]
        draw.line(pts, fill=_color(rng), width=int(rng.integers(1, 3)))
    placed: list[tuple[float, float, float, float]] = []
    lines = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(10):
            size = rng.uniform(spec.min_size, spec.max_size) * s
            cx, cy = rng.uniform(size / 2, s - size / 2, 2)
            bbox = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
            if all(_iou(bbox, other) < 0.1 for other in placed):
                break
        else:
            continue
        cls = int(rng.integers(0, spec.n_classes))
        _draw_shape(draw, SHAPES[cls], bbox, _color(rng), rng)
        placed.append(bbox)
        x0, y0, x1, y1 = bbox
        lines.append(f"{cls} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} {(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}\n")
    return image, lines


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    base = rng.uniform(40, 200, 3)
    gy, gx = np.mgrid[0:s, 0:s] / s
    light = 0.6 + 0.4 * (gx * rng.uniform(-1, 1) + gy * rng.uniform(-1, 1) + 1) / 2
    img = base[None, None, :] * light[..., None] + rng.normal(0, 12, (s, s, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, bbox, color, rng) -> None:
    x0, y0, x1, y1 = bbox
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(bbox, fill=color)
    elif shape == "square":
        draw.rectangle(bbox, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "cross":
        t = r / 3
        draw.rectangle((cx - t, y0, cx + t, y1), fill=color)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=color)
    elif shape == "ring":
        draw.ellipse(bbox, outline=color, width=max(2, int(r / 3)))
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
