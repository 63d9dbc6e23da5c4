"""The online teacher–student inside one Ray Train rank (`train.ssl: online`), in torch.

The teacher is Ultralytics' own EMA model of the trainer (`trainer.ema.ema`), with a constant
decay (`core.online.teacher_decay`) instead of Ultralytics' ramp: it is updated once per
optimizer step, after the step, by Ultralytics' `optimizer_step`; it is what every epoch
validates and what `best.pt` holds. Each step, `OnlineBatch.extend` adds to the labeled batch:

- a weak view of this rank's next unlabeled images (`UnlabeledStream`: letterboxed, random
  horizontal flip), on which the teacher detects; with `train.teacher_consistency` also on
  `label.consistency_views` of it, its boxes fused over them as the label stage fuses them
  (`core.consistency`); with `train.refine_pseudo` the box refiner (`adapters.refiner`)
  then moves each box scoring at least `refine.min_score`;
- the student's view: `geometric_view` scales and shifts each image and maps the teacher's
  boxes with it (`core.online.scale_translate`), then `strong_view` changes it photometrically
  (colour, blur, erased patches; no pixel moves);
- the targets `core.online.pseudo_targets` makes of the mapped boxes.

The loss over labeled + unlabeled images is `ssl_ray.adapters.online_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssl_ray.core.geometry import PAD_VALUE as PAD
from ssl_ray.core.online import PseudoTargets, pseudo_targets, scale_translate, unsup_weight

if TYPE_CHECKING:  # torch is imported where it is used: importing this module stays light
    import torch


class UnlabeledImages:
    """Node-local image files, each decoded and letterboxed to a `size` x `size` uint8 CHW tensor
    (a map-style dataset for torch's DataLoader)."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        import torch

        from ssl_ray.io.images import decode_letterboxed

        canvas = decode_letterboxed(Path(self.paths[i]).read_bytes(), self.size)[0]
        return torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)))


def shard_batches(n: int, batch: int, seed: int, rank: int, start: int = 0) -> Iterator[list[int]]:
    """Endless batches of indices into a shard of `n` items: pass after pass, each a fresh
    permutation (seeded by seed, rank and pass), batches running on across passes. `start`
    skips that many batches (a resumed rank picks up where its epoch began)."""
    if n == 0:
        raise ValueError("the unlabeled shard is empty")
    position = start * batch  # index into the endless stream of permutations
    while True:
        k, offset = divmod(position, n)
        order = np.random.default_rng([seed, rank, k]).permutation(n)
        out = order[offset : offset + batch].tolist()
        while len(out) < batch:  # runs into the next pass
            k += 1
            order = np.random.default_rng([seed, rank, k]).permutation(n)
            out += order[: batch - len(out)].tolist()
        position += batch
        yield out


class UnlabeledStream:
    """This rank's unlabeled images (its tree holds only its share: `core.shards`), as endless
    uint8 batches in an order seeded by `seed` and `rank`; decoding runs in `workers` loader
    processes."""

    def __init__(self, paths: list[str], size: int, batch: int, *, seed: int, rank: int, start: int = 0, workers=0):
        import torch

        shard = sorted(paths)
        loader = torch.utils.data.DataLoader(
            UnlabeledImages(shard, size),
            batch_sampler=_Batches(len(shard), batch, seed, rank, start),
            num_workers=workers,
            collate_fn=torch.stack,
            persistent_workers=workers > 0,
        )
        self._it = iter(loader)

    def __next__(self) -> torch.Tensor:
        return next(self._it)


class _Batches:  # a batch sampler: an iterable of index lists
    def __init__(self, n, batch, seed, rank, start):
        self.args = (n, batch, seed, rank, start)

    def __iter__(self):
        return shard_batches(*self.args)


def strong_view(x: torch.Tensor, gen: torch.Generator, erase: int = 3) -> torch.Tensor:
    """A photometrically strong copy of a float batch in [0, 1] (N, 3, H, W), geometry untouched:
    brightness, contrast and saturation jitter (x0.6..1.4), a Gaussian blur on half of the
    images, and on each image up to `erase` erased patches of 2-10 % of its area, grey-filled."""
    import torch

    n, _, h, w = x.shape

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen).to(x.device)

    x = x * uniform(0.6, 1.4, n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(0.6, 1.4, n, 1, 1, 1) + mean
    grey = x.mean(dim=1, keepdim=True)
    x = ((x - grey) * uniform(0.6, 1.4, n, 1, 1, 1) + grey).clamp_(0, 1)
    out = []
    for i in range(n):
        img = x[i]
        if torch.rand(1, generator=gen).item() < 0.5:
            sigma = float(uniform(0.1, 1.5, 1))
            img = _blur(img, sigma)
        for _ in range(erase):
            if torch.rand(1, generator=gen).item() < 0.5:
                area = float(uniform(0.02, 0.10, 1)) * h * w
                aspect = math.exp(float(uniform(math.log(0.3), math.log(3.3), 1)))
                ph, pw = (
                    min(h, max(1, round(math.sqrt(area / aspect)))),
                    min(w, max(1, round(math.sqrt(area * aspect)))),
                )
                top = int(torch.randint(0, h - ph + 1, (1,), generator=gen))
                left = int(torch.randint(0, w - pw + 1, (1,), generator=gen))
                img = img.clone()
                img[:, top : top + ph, left : left + pw] = float(uniform(0.2, 0.8, 1))
        out.append(img)
    return torch.stack(out)


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    import torch

    radius = max(1, round(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = img.shape[0]
    y = torch.nn.functional.conv2d(
        torch.nn.functional.pad(img[None], (radius, radius, 0, 0), mode="replicate"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    y = torch.nn.functional.conv2d(
        torch.nn.functional.pad(y, (0, 0, radius, radius), mode="replicate"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return y[0]


def flip_some(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The weak view: each image flipped left-right with probability 1/2."""
    import torch

    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def geometric_view(
    x: torch.Tensor, detections: list[np.ndarray], gen: torch.Generator, scale=(0.5, 1.5), translate: float = 0.1
):
    """The student's geometry: each image scaled about its centre (x `scale` range) and
    shifted (up to `translate` of its side), grey where it uncovers the canvas, as
    Ultralytics' own scale/translate augmentation does; the teacher's detections (on the
    unmoved weak view) mapped the same way. Returns (images, detections)."""
    import torch

    n, _, h, w = x.shape
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * translate * torch.tensor([w, h])
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, 0, 2] = -2 * t[:, 0] / (w * s)
    theta[:, 1, 2] = -2 * t[:, 1] / (h * s)
    grid = torch.nn.functional.affine_grid(theta.to(x), (n, 3, h, w), align_corners=False)
    pad = PAD / 255
    moved = torch.nn.functional.grid_sample(x - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    boxes = [scale_translate(d, float(s[i]), float(t[i, 0]), float(t[i, 1]), (h, w)) for i, d in enumerate(detections)]
    return moved + pad, boxes


def teacher_detections(teacher, x: torch.Tensor, conf: float, max_det: int = 300) -> list[np.ndarray]:
    """The teacher's detections on a float batch: per image (k, 6) x1 y1 x2 y2 score class,
    canvas pixels; Ultralytics' own post-processing (end-to-end heads and NMS heads alike)."""
    import torch
    from ultralytics.utils import nms

    head = teacher.model[-1]
    with torch.no_grad():
        out = teacher(x.to(next(teacher.parameters()).dtype))
        dets = nms.non_max_suppression(
            out, conf, 0.7, max_det=max_det, nc=0, end2end=bool(getattr(head, "end2end", False))
        )
    counts = [len(d) for d in dets]
    every = torch.cat(dets).float().cpu().numpy() if dets else np.zeros((0, 6))  # one copy to the host
    return np.split(every, np.cumsum(counts)[:-1])


def detect_with_teacher_views(teacher, x: torch.Tensor, conf: float, views: list, iou_thr: float):
    """The teacher's detections on the float batch `x` (per image (k, 6), canvas pixels) fused
    over `views` of it (`core.consistency`: one forward for the images and all their views),
    and per image the share of the views that found each box (None without views)."""
    if not views:
        return teacher_detections(teacher, x, conf), None
    import torch

    from ssl_ray.adapters.decode import apply_view
    from ssl_ray.core.consistency import detect_with_views
    from ssl_ray.core.detections import Detections

    def predict(canvases):  # (N, H, W, 3) uint8 -> Detections per canvas
        found = teacher_detections(teacher, canvases.permute(0, 3, 1, 2).float() / 255, conf)
        return [Detections.from_array(d) for d in found]

    canvases = (x * 255).round_().to(torch.uint8).permute(0, 2, 3, 1)
    fused = detect_with_views(predict, canvases, views, iou_thr, apply=apply_view, concat=torch.cat)
    return [np.column_stack([d.xyxy, d.score, d.cls]) for d in fused], [d.agree for d in fused]


def refine_boxes(refiner, x: torch.Tensor, detections: list[np.ndarray]) -> list[np.ndarray]:
    """The teacher's detections (per image (k, 6), canvas pixels) on the float batch `x`, moved
    by the box refiner as the label stage moves them (`stages.refine.refine_detections`)."""
    import torch

    from ssl_ray.core.detections import Detections
    from ssl_ray.stages.refine import refine_detections

    pixels = (x * 255).round_().to(torch.uint8)
    moved = refine_detections(refiner, pixels, [Detections.from_array(d) for d in detections])
    return [np.column_stack([d.xyxy, d.score, d.cls]) for d in moved]


class OnlineBatch:
    """Adds an unlabeled batch and its pseudo-targets to each labeled batch (see the module)."""

    def __init__(
        self,
        stream: UnlabeledStream,
        high: list[float],
        low: float | None,
        weight: float,
        warmup: int,
        seed: int,
        refiner=None,
        views: list | None = None,
        view_iou: float = 0.5,
        min_agree: float = 1.0,
    ):
        self.stream, self.high, self.low = stream, list(high), low
        self.weight, self.warmup, self.refiner = weight, warmup, refiner
        self.views, self.view_iou, self.min_agree = list(views or []), view_iou, min_agree
        import torch

        self.gen = torch.Generator().manual_seed(seed)
        self.stats = {"images": 0, "reliable": 0, "uncertain": 0, **({"refined": 0} if refiner is not None else {})}

    def extend(self, batch: dict, teacher, step: int) -> dict:
        import torch

        imgs = batch["img"]
        weak = flip_some(next(self.stream).to(imgs.device, non_blocking=True).float() / 255, self.gen)
        conf = min([*self.high, *([self.low] if self.low is not None else [])])
        found, agree = detect_with_teacher_views(teacher, weak, conf, self.views, self.view_iou)
        if self.refiner is not None:
            found = refine_boxes(self.refiner, weak, found)
            self.stats["refined"] += sum(int((d[:, 4] >= self.refiner.cfg.min_score).sum()) for d in found)
        moved, found = geometric_view(weak, found, self.gen)
        targets = pseudo_targets(
            found, self.high, self.low, tuple(weak.shape[2:]), agree=agree, min_agree=self.min_agree
        )
        self.stats["images"] += len(weak)
        self.stats["reliable"] += targets.n_reliable
        self.stats["uncertain"] += targets.n_uncertain
        batch["img"] = torch.cat([imgs, strong_view(moved, self.gen).to(imgs.dtype)])
        batch["online"] = {
            "n_labeled": len(imgs),
            "weight": unsup_weight(step, self.weight, self.warmup),
            **_as_tensors(targets, imgs.device),
        }
        return batch

    def epoch_stats(self) -> dict:
        """Pseudo-boxes per unlabeled image since the last call (then reset)."""
        n = max(self.stats["images"], 1)
        out = {"unlabeled_images": self.stats["images"], **{k: v / n for k, v in self.stats.items() if k != "images"}}
        self.stats = dict.fromkeys(self.stats, 0)
        return out


def _as_tensors(t: PseudoTargets, device) -> dict:
    import torch

    return {
        "batch_idx": torch.as_tensor(t.batch_idx, dtype=torch.float32, device=device),
        "cls": torch.as_tensor(t.cls, dtype=torch.float32, device=device).view(-1, 1),
        "bboxes": torch.as_tensor(t.xywhn, dtype=torch.float32, device=device).view(-1, 4),
        "gt_weight": torch.as_tensor(t.weight, dtype=torch.float32, device=device),
        "gt_box": torch.as_tensor(t.box, dtype=torch.bool, device=device),
    }
