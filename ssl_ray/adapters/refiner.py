"""A learned box refiner (torch and torchvision's RoIAlign): a small CNN that moves a box's
edges onto the object.

A detector trained on a few dozen images finds objects long before it boxes them tightly,
and mAP50-95 punishes a pseudo-box a pixel loose on every image it is trained on. The refiner
is a second stage, like the box head of a two-stage detector, trained on what the labeled set
has plenty of: its true boxes, each jittered many times. It sees a crop around a box (the box
enlarged by `context`, resampled to `crop` x `crop` with bilinear RoIAlign, so sub-pixel
positions survive) and predicts where the object's four edges are in that crop. Applied to a
teacher's boxes, it can be iterated: each pass starts from the last one's box.

Class-agnostic: it learns edges, not classes. Coordinates are canvas pixels (the letterboxed
canvas the label stage runs the teacher on), boxes xyxy. Its settings are `RefineConfig`'s;
what the network's shape needs (crop, context) travels with its saved state.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ssl_ray.config import RefineConfig
from ssl_ray.core.geometry import iou

JITTER = 0.06  # training: each edge of a true box moved by a normal share of its side (std 0.03, at most 0.06)
LEARNING_RATE = 2e-3


def crop_windows(boxes: np.ndarray, context: float) -> np.ndarray:
    """(K, 4) xyxy -> the (K, 4) xyxy windows the refiner sees: each box enlarged about its centre."""
    c = (boxes[:, :2] + boxes[:, 2:4]) / 2
    half = np.maximum(boxes[:, 2:4] - boxes[:, :2], 1.0) * context / 2
    return np.concatenate([c - half, c + half], axis=1)


def encode(windows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """True xyxy boxes -> their edges as fractions of each window (0 = left/top, 1 = right/bottom)."""
    wh = windows[:, 2:4] - windows[:, :2]
    return (targets - np.tile(windows[:, :2], 2)) / np.tile(wh, 2)


def decode(windows: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Inverse of `encode`."""
    wh = windows[:, 2:4] - windows[:, :2]
    return fractions * np.tile(wh, 2) + np.tile(windows[:, :2], 2)


def _net(crop: int):
    """Side-aware edge localization (after SABL, Wang et al. 2020): a fully convolutional
    stack at the crop's resolution, pooled along one axis into a profile per side, whose
    softmax over positions gives each edge's expected position. Translation-equivariant, so
    an edge learned at one place is found at every other: it learns from few boxes."""
    import torch
    import torch.nn as nn

    class EdgeNet(nn.Module):
        def __init__(self, width: int = 16):
            super().__init__()
            layers, cin = [], 3
            for dilation in (1, 2, 4, 1):
                layers += [
                    nn.Conv2d(cin, width, 3, padding=dilation, dilation=dilation),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                cin = width
            self.features = nn.Sequential(*layers)
            self.attend = nn.Conv2d(width, 2, 1)  # where along the other axis to look, for x- and y-sides
            self.x_sides = nn.Conv1d(width, 2, 3, padding=1)  # per column: logits of (left, right)
            self.y_sides = nn.Conv1d(width, 2, 3, padding=1)  # per row: logits of (top, bottom)
            self.register_buffer("centres", (torch.arange(crop) + 0.5) / crop)

        def forward(self, x):
            f = self.features(x)
            a = self.attend(f)
            along_x = (f * a[:, :1].softmax(dim=2)).sum(dim=2)  # (N, C, W): pooled over rows
            along_y = (f * a[:, 1:].softmax(dim=3)).sum(dim=3)  # (N, C, H)
            px = self.x_sides(along_x).softmax(dim=2) @ self.centres  # (N, 2): x1, x2
            py = self.y_sides(along_y).softmax(dim=2) @ self.centres  # (N, 2): y1, y2
            return torch.stack([px[:, 0], py[:, 0], px[:, 1], py[:, 1]], dim=1)

    return EdgeNet()


def _crops(images, index: np.ndarray, windows: np.ndarray, crop: int):
    """Bilinear RoIAlign crops from uint8 canvases `images` (N, 3, H, W): one per window, of
    image `index[i]`; float (K, 3, crop, crop) in 0..1."""
    import torch
    from torchvision.ops import roi_align

    used, local = np.unique(index, return_inverse=True)
    pixels = images[torch.from_numpy(used)].float().div_(255.0)
    rois = torch.from_numpy(np.concatenate([local[:, None], windows], axis=1)).to(pixels)
    return roi_align(pixels, rois, output_size=crop, spatial_scale=1.0, sampling_ratio=2, aligned=True)


def _canvases(images, device: str):
    """Same-size (H, W, 3) uint8 canvases -> one uint8 tensor (N, 3, H, W) on `device`."""
    import torch

    if len({im.shape for im in images}) > 1:
        raise ValueError("the box refiner works on same-size canvases (letterbox them to model.imgsz)")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)


def _flatten(boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image (k, 4+) box arrays -> (image index (K,), xyxy (K, 4))."""
    index = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)] + [np.zeros(0)]).astype(np.int64)
    xyxy = np.concatenate([np.asarray(b, np.float64)[:, :4] for b in boxes] + [np.zeros((0, 4))])
    return index, xyxy


class BoxRefiner:
    """Train with `BoxRefiner.fit(images, boxes, cfg)`, apply with `refiner(images, boxes)`;
    `state()` / `from_state()` to save and load (a plain dict for `torch.save`). How it is
    applied (passes, blend) is `cfg`'s: a loaded refiner follows the config of the run using it."""

    def __init__(self, cfg: RefineConfig, state: dict | None = None, device: str = "cpu"):
        self.cfg, self.device = cfg, device
        self.net = _net(cfg.crop)
        if state is not None:
            self.net.load_state_dict(state)
        self.net.to(device).eval()

    @classmethod
    def fit(
        cls,
        images: list[np.ndarray],
        boxes: list[np.ndarray],
        cfg: RefineConfig,
        seed: int = 0,
        device: str = "cpu",
        log=None,
        jitter: float = JITTER,
        lr: float = LEARNING_RATE,
    ) -> BoxRefiner:
        """Train on same-size canvases (H, W, 3) uint8 and their true xyxy boxes (k, 4) each:
        crops around each true box moved by up to `jitter` of its side, the box as target."""
        import torch

        index, truth = _flatten(boxes)
        if not len(truth):
            raise ValueError("the box refiner needs at least one labeled box to train on")
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        pixels = _canvases(images, device)
        refiner = cls(cfg, device=device)
        net = refiner.net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=cfg.steps)
        for step in range(cfg.steps):
            pick = rng.integers(0, len(truth), cfg.batch)
            windows = crop_windows(_jitter(truth[pick], jitter, rng), cfg.context)
            x, y = _augment(_crops(pixels, index[pick], windows, cfg.crop), encode(windows, truth[pick]), rng)
            loss = torch.nn.functional.smooth_l1_loss(net(_photometric(x, rng)), torch.from_numpy(y).to(x), beta=0.02)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if log and (step % 500 == 0 or step == cfg.steps - 1):
                log(f"box refiner step {step + 1}/{cfg.steps}: loss {loss.item():.5f}")
        net.eval()
        return refiner

    def __call__(self, images, boxes: list[np.ndarray]) -> list[np.ndarray]:
        """Refined copies of `boxes` (per image, (k, 4+) with xyxy first; other columns kept):
        `cfg.passes` passes, each from the last one's box, then blended with the given box.
        `images`: same-size (H, W, 3) uint8 canvases, or one uint8 tensor (N, 3, H, W)."""
        import torch

        out = [np.array(b, dtype=np.float64) for b in boxes]
        index, start = _flatten(out)
        if not len(index):
            return out
        if isinstance(images, torch.Tensor):
            pixels = images.to(self.device)
        else:
            pixels = _canvases(list(images), self.device)
        xyxy = start
        with torch.no_grad():
            for _ in range(self.cfg.passes):
                windows = crop_windows(xyxy, self.cfg.context)
                edges = self.net(_crops(pixels, index, windows, self.cfg.crop)).double().cpu().numpy()
                moved = decode(windows, edges)
                xyxy = np.concatenate(
                    [np.minimum(moved[:, :2], moved[:, 2:]), np.maximum(moved[:, :2], moved[:, 2:])], 1
                )
        h, w = pixels.shape[2:]
        xyxy = np.clip(self.cfg.blend * xyxy + (1 - self.cfg.blend) * start, 0, [w, h, w, h])
        for i, b in enumerate(out):
            b[:, :4] = xyxy[index == i]
        return out

    def state(self) -> dict:
        return {
            "crop": self.cfg.crop,
            "context": self.cfg.context,
            "net": {k: v.cpu() for k, v in self.net.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict, cfg: RefineConfig, device: str = "cpu") -> BoxRefiner:
        """The saved refiner, applied as `cfg` says; its crop and context are the saved ones."""
        return cls(dataclasses.replace(cfg, crop=state["crop"], context=state["context"]), state["net"], device)


def jitter_check(
    refiner: BoxRefiner, images: list[np.ndarray], boxes: list[np.ndarray], seed: int = 0, jitter: float = JITTER
) -> dict:
    """Held-out check: true boxes jittered as in training, then refined. Median IoU with the
    truth before and after, and the shares at IoU >= 0.9 and >= 0.95 after."""
    rng = np.random.default_rng(seed)
    index, truth = _flatten(boxes)  # in image order, as the refiner returns them
    if not len(truth):
        return {"boxes": 0}
    jittered = _jitter(truth, jitter, rng)
    refined = np.concatenate(refiner(images, [jittered[index == i] for i in range(len(images))]))
    before = np.array([iou(t, j[None])[0] for t, j in zip(truth, jittered)])
    after = np.array([iou(t, r[None])[0] for t, r in zip(truth, refined)])
    return {
        "boxes": len(truth),
        "jittered_median_iou": round(float(np.median(before)), 3),
        "refined_median_iou": round(float(np.median(after)), 3),
        "refined_iou_at_least_0.9": round(float((after >= 0.9).mean()), 3),
        "refined_iou_at_least_0.95": round(float((after >= 0.95).mean()), 3),
    }


def _jitter(boxes: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Each edge moved independently by a normal share (std scale/2, clipped at scale) of the box side."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, :2], 2)
    moved = boxes + np.clip(rng.normal(0, scale / 2, boxes.shape), -scale, scale) * wh
    return np.concatenate([np.minimum(moved[:, :2], moved[:, 2:] - 1), np.maximum(moved[:, 2:], moved[:, :2] + 1)], 1)


def _flip_crops(x, op: str):
    """Crops (N, C, S, S) mirrored ("h"), flipped upside down ("v") or transposed ("t")."""
    return x.flip(-1) if op == "h" else x.flip(-2) if op == "v" else x.transpose(-1, -2)


def _flip_fractions(y: np.ndarray, op: str) -> np.ndarray:
    """Edge fractions (N, 4: x1, y1, x2, y2) of crops, as the same edges read in the crops
    transformed by `_flip_crops(op)`."""
    if op == "h":
        return np.stack([1 - y[:, 2], y[:, 1], 1 - y[:, 0], y[:, 3]], 1)
    if op == "v":
        return np.stack([y[:, 0], 1 - y[:, 3], y[:, 2], 1 - y[:, 1]], 1)
    return y[:, [1, 0, 3, 2]]


def _augment(x, y: np.ndarray, rng: np.random.Generator):
    """Mirror each crop with even odds, flip it upside down and transpose it, each with even
    odds, its target with it (square crops: the eight symmetries of the square)."""
    import torch

    y = y.copy()
    for op in ("h", "v", "t"):
        pick = rng.random(len(y)) < 0.5
        if not pick.any():
            continue
        mask = torch.from_numpy(pick).to(x.device)
        x[mask] = _flip_crops(x[mask], op)
        y[pick] = _flip_fractions(y[pick], op)
    return x, y


def _photometric(x, rng: np.random.Generator):
    """Brightness, contrast and a little noise, per crop."""
    import torch

    n = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.7, 1.3, (n, 1, 1, 1))).to(x)
    bias = torch.from_numpy(rng.uniform(-0.15, 0.15, (n, 1, 1, 1))).to(x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * gain + mean + bias + torch.randn_like(x) * 0.02).clamp_(0, 1)
