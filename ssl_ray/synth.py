"""A seeded procedural "shapes" detection dataset, for tests, the demo and benchmarks.

Shapes on noisy, unevenly lit backgrounds, with YOLO labels, from one of two domains:

- `target` (the default): circle, square, triangle, diamond, cross, ring, hexagon, chevron,
  in saturated colours on smooth gradients. The demo, the tests and the SSL benchmark's task.
- `source`: other shapes (star, arrow, semicircle, tee, ell, octagon ring, trapezoid, bowtie),
  muted colours, striped and checkered backgrounds. The benchmark pretrains on it, as a
  stand-in for COCO weights: a detector that has learned objects, not these ones.

Harder variants of a domain come from the spec: more classes and objects, smaller objects,
overlap between objects (`max_overlap`), unlabeled clutter strokes and distractor blobs,
and per-image lighting (`lighting`: brightness and contrast). Layout written under `root`:

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

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "hexagon", "chevron")
SOURCE_SHAPES = ("star", "arrow", "semicircle", "tee", "ell", "octagon_ring", "trapezoid", "bowtie")
DOMAINS = {"target": SHAPES, "source": SOURCE_SHAPES}


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
    clutter: int = 0  # unlabeled strokes per image
    distractors: int = 0  # unlabeled random blobs per image, at most
    max_overlap: float = 0.1  # objects overlap at most this IoU (occlusion: the later one is on top)
    lighting: float = 0.0  # per-image brightness and contrast jitter, 0..1
    domain: str = "target"  # "target" or "source" (other shapes, colours and backgrounds)
    seed: int = 0

    def __post_init__(self):
        if self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {self.domain!r}")
        if not 1 <= self.n_classes <= len(DOMAINS[self.domain]):
            raise ValueError(f"n_classes must be 1..{len(DOMAINS[self.domain])}, got {self.n_classes}")
        if not 0 < self.min_size <= self.max_size < 1:
            raise ValueError("expected 0 < min_size <= max_size < 1")
        if not 0 <= self.max_overlap < 1 or not 0 <= self.lighting <= 1:
            raise ValueError("expected 0 <= max_overlap < 1 and 0 <= lighting <= 1")

    @property
    def names(self) -> list[str]:
        return list(DOMAINS[self.domain][: self.n_classes])


# The task of the SSL benchmark and the demo: 8 classes, up to 6 objects, small ones among
# them, overlap, clutter strokes and distractor blobs, per-image lighting. The benchmark's
# source domain has the same hardness with the other shapes.
TASK = {
    "n_classes": 8,
    "max_objects": 6,
    "min_size": 0.07,
    "max_size": 0.32,
    "clutter": 3,
    "distractors": 2,
    "max_overlap": 0.3,
    "lighting": 0.5,
}


def generate(root: str | Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write the dataset under `root` (idempotent: same spec, same bytes). Returns data.yaml."""
    root = Path(root)
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
        meta = {"path": ".", "train": train, "val": "images/val", "names": dict(enumerate(spec.names))}
        (root / fname).write_text(yaml.safe_dump(meta, sort_keys=False))
    return root / "data.yaml"


def render(rng: np.random.Generator, spec: SynthSpec) -> tuple[Image.Image, list[str]]:
    """One image and its YOLO label lines."""
    s = spec.imgsz
    source = spec.domain == "source"
    image = Image.fromarray(_textured(rng, s) if source else _background(rng, s))
    draw = ImageDraw.Draw(image)
    for _ in range(spec.clutter):
        pts = [tuple(int(v) for v in rng.integers(0, s, 2)) for _ in range(3)]
        draw.line(pts, fill=_color(rng), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(0, spec.distractors + 1)) if spec.distractors else 0):
        _draw_blob(draw, rng, s)
    placed: list[tuple[float, float, float, float]] = []
    lines = []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(10):
            size = rng.uniform(spec.min_size, spec.max_size) * s
            cx, cy = rng.uniform(size / 2, s - size / 2, 2)
            bbox = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
            if all(_iou(bbox, other) < spec.max_overlap for other in placed):
                break
        else:
            continue
        cls = int(rng.integers(0, spec.n_classes))
        color = _muted(rng) if source else _color(rng)
        _draw_shape(draw, DOMAINS[spec.domain][cls], bbox, color, rng)
        placed.append(bbox)
        x0, y0, x1, y1 = bbox
        lines.append(f"{cls} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} {(x1 - x0) / s:.6f} {(y1 - y0) / s:.6f}\n")
    if spec.lighting:
        image = _relight(image, rng, spec.lighting)
    return image, lines


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    base = rng.uniform(40, 200, 3)
    gy, gx = np.mgrid[0:s, 0:s] / s
    light = 0.6 + 0.4 * (gx * rng.uniform(-1, 1) + gy * rng.uniform(-1, 1) + 1) / 2
    img = base[None, None, :] * light[..., None] + rng.normal(0, 12, (s, s, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _textured(rng: np.random.Generator, s: int) -> np.ndarray:
    """The source domain's backgrounds: stripes or a checkerboard of two colours, with noise."""
    a, b = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    gy, gx = np.mgrid[0:s, 0:s]
    period = rng.uniform(6, 24)
    if rng.random() < 0.5:
        angle = rng.uniform(0, np.pi)
        mask = (np.sin((gx * np.cos(angle) + gy * np.sin(angle)) * 2 * np.pi / period) > 0)[..., None]
    else:
        mask = (((gx // period) + (gy // period)) % 2 == 0)[..., None]
    img = np.where(mask, a, b) + rng.normal(0, 10, (s, s, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _muted(rng: np.random.Generator) -> tuple[int, int, int]:
    grey = rng.uniform(60, 200)
    return tuple(int(v) for v in np.clip(grey + rng.normal(0, 25, 3), 0, 255))


def _relight(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness and contrast of the whole image moved by up to `strength` (0..1)."""
    arr = np.asarray(image, np.float32)
    gain = 1 + rng.uniform(-0.6, 0.6) * strength
    bias = rng.uniform(-60, 60) * strength
    mean = arr.mean()
    return Image.fromarray(np.clip((arr - mean) * gain + mean + bias, 0, 255).astype(np.uint8))


def _draw_blob(draw: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    """An unlabeled irregular polygon: something that is not any class."""
    cx, cy = rng.uniform(0, s, 2)
    r = rng.uniform(0.04, 0.15) * s
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
    radii = r * rng.uniform(0.4, 1.0, len(angles))
    draw.polygon([(cx + q * np.cos(a), cy + q * np.sin(a)) for a, q in zip(angles, radii)], fill=_color(rng))


def _regular(cx: float, cy: float, r: float, n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(cx + r * np.cos(phase + 2 * np.pi * k / n), cy + r * np.sin(phase + 2 * np.pi * k / n)) for k in range(n)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, bbox, color, rng) -> None:
    """One shape filling its square `bbox` (its label box)."""
    x0, y0, x1, y1 = bbox
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    t = r / 3
    if shape == "circle":
        draw.ellipse(bbox, fill=color)
    elif shape == "square":
        draw.rectangle(bbox, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "cross":
        draw.rectangle((cx - t, y0, cx + t, y1), fill=color)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=color)
    elif shape == "ring":
        draw.ellipse(bbox, outline=color, width=max(2, int(r / 3)))
    elif shape == "hexagon":  # flat top and bottom touch the box; the box is its bounding square
        draw.polygon(
            [(x0, cy), (cx - r / 2, y0), (cx + r / 2, y0), (x1, cy), (cx + r / 2, y1), (cx - r / 2, y1)], fill=color
        )
    elif shape == "chevron":
        draw.polygon([(x0, y0), (cx, cy - t), (x1, y0), (x1, y0 + 2 * t), (cx, y1), (x0, y0 + 2 * t)], fill=color)
    elif shape == "star":  # five points, stretched to fill the box
        outer, inner = _regular(0, 0, 1, 5, -np.pi / 2), _regular(0, 0, 0.45, 5, -np.pi / 2 + np.pi / 5)
        pts = np.array([p for pair in zip(outer, inner) for p in pair])
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - lo) / (hi - lo) * [x1 - x0, y1 - y0] + [x0, y0]
        draw.polygon([tuple(p) for p in pts], fill=color)
    elif shape == "arrow":
        draw.polygon([(x0, cy - t), (cx, cy - t), (cx, y0), (x1, cy), (cx, y1), (cx, cy + t), (x0, cy + t)], fill=color)
    elif shape == "semicircle":  # the left half of an ellipse twice as wide: it fills the box
        draw.pieslice((x0, y0, x1 + (x1 - x0), y1), 90, 270, fill=color)
    elif shape == "tee":
        draw.rectangle((x0, y0, x1, y0 + 2 * t), fill=color)
        draw.rectangle((cx - t, y0, cx + t, y1), fill=color)
    elif shape == "ell":
        draw.rectangle((x0, y0, x0 + 2 * t, y1), fill=color)
        draw.rectangle((x0, y1 - 2 * t, x1, y1), fill=color)
    elif shape == "octagon_ring":
        draw.polygon(_regular(cx, cy, r / np.cos(np.pi / 8), 8, np.pi / 8), outline=color, width=max(2, int(r / 4)))
    elif shape == "trapezoid":
        draw.polygon([(cx - r / 2, y0), (cx + r / 2, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "bowtie":
        draw.polygon([(x0, y0), (cx, cy), (x0, y1)], fill=color)
        draw.polygon([(x1, y0), (cx, cy), (x1, y1)], fill=color)
    else:  # pragma: no cover - the domains are closed
        raise ValueError(shape)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
